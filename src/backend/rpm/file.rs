//! `.rpm` files read in-process: their package and file list (`rpm -qlp`)
//! and the config files in their payload.

use std::path::{Path, PathBuf};

use super::header::{check_rpm_file, guarded};
use super::{backend_error, installed_from};
use crate::backend::ConfigFile;
use crate::error::Result;
use rpm::FileFlags;

use crate::package::{File, FileKind, Package};

/// The regular files among `paths` from an `.rpm`'s payload, unpacked
/// in-process.
pub(super) fn config_files_from_rpm(path: &Path, paths: &[PathBuf]) -> Result<Vec<ConfigFile>> {
    let corrupt = |e: &dyn std::fmt::Display| {
        backend_error(format!("{}: cannot unpack: {e}", path.display()))
    };
    check_rpm_file(path).map_err(|e| corrupt(&e))?;
    let package = guarded(|| rpm::Package::open(path)).map_err(|e| corrupt(&e))?;
    let entries = guarded(|| package.files()?.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| corrupt(&e))?;
    let mut out = Vec::new();
    for entry in entries {
        let meta = &entry.metadata;
        if paths.contains(&meta.path) && meta.mode.raw_mode() as u32 & 0o170000 == 0o100000 {
            out.push(ConfigFile {
                path: meta.path.clone(),
                mode: meta.mode.permissions() as u32,
                mtime: meta.modified_at.0 as u64,
                data: entry.content,
            });
        }
    }
    Ok(out)
}

/// Hand `visit` each regular file of a `.rpm` file (whose payload the
/// rpm crate holds in memory, one file's bytes at a time).
pub fn unpack(path: &Path, visit: &mut crate::backend::VisitFile<'_>) -> Result<()> {
    let corrupt = |e: &dyn std::fmt::Display| {
        backend_error(format!("{}: cannot unpack: {e}", path.display()))
    };
    check_rpm_file(path).map_err(|e| corrupt(&e))?;
    let package = guarded(|| rpm::Package::open(path)).map_err(|e| corrupt(&e))?;
    let mut entries = guarded(|| package.files()).map_err(|e| corrupt(&e))?;
    while let Some(entry) = guarded(|| entries.next().transpose()).map_err(|e| corrupt(&e))? {
        let meta = &entry.metadata;
        // A %ghost is listed, not shipped: its content is empty here.
        if meta.mode.raw_mode() as u32 & 0o170000 != 0o100000
            || meta.flags.contains(FileFlags::GHOST)
        {
            continue;
        }
        if !crate::backend::stays_inside(&meta.path) {
            return Err(corrupt(&format!(
                "member {} leaves the root",
                meta.path.display()
            )));
        }
        visit(
            &meta.path,
            meta.mode.permissions() as u32,
            &mut entry.content.as_slice(),
        )?;
    }
    Ok(())
}

/// A `.rpm` file: its package and files (the in-process `rpm -qlp`).
pub fn read_package_file(path: &Path) -> Result<(Package, Vec<File>)> {
    let corrupt = |e: &dyn std::fmt::Display| {
        backend_error(format!("{}: not a valid .rpm file: {e}", path.display()))
    };
    check_rpm_file(path).map_err(|e| corrupt(&e))?;
    let metadata = guarded(|| rpm::PackageMetadata::open(path)).map_err(|e| corrupt(&e))?;
    let installed = guarded(|| installed_from(&metadata)).map_err(|e| corrupt(&e))?;
    let entries = metadata.get_file_entries().unwrap_or_default();
    let files = entries
        .into_iter()
        .map(|f| {
            let mode = f.mode.raw_mode() as u32;
            let kind = match mode & 0o170000 {
                0o040000 => FileKind::Directory,
                0o120000 => FileKind::Symlink,
                0o100000 => FileKind::Regular,
                _ => FileKind::Special,
            };
            File {
                path: f.path,
                source: None,
                kind,
                mode,
                size: if kind == FileKind::Regular {
                    f.size as u64
                } else {
                    0
                },
                is_config: f.flags.contains(FileFlags::CONFIG),
            }
        })
        .collect();
    Ok((installed.package, files))
}
