//! A package file's payload, a tar stream, read the same way for every
//! format that carries one (`.deb`'s `data.tar`, pacman's `.pkg.tar.*`):
//! its listing, and its config files with size limits.  The formats
//! differ only in how the stream is wrapped and named.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{ConfigFile, CONFIG_FILE_LIMIT, CONFIG_TOTAL_LIMIT};
use crate::appliance::{for_each_tar_member, SparseBudget};
use crate::error::{Error, Result};
use crate::package::{File, FileKind};

/// `./etc/foo` or `etc/foo` (as a payload names it) -> `/etc/foo`.
pub fn package_path(entry_path: &Path) -> PathBuf {
    let rel = entry_path.strip_prefix(".").unwrap_or(entry_path);
    // Rebuilt from components: `etc/` (a directory member) is `/etc`.
    Path::new("/")
        .join(rel.strip_prefix("/").unwrap_or(rel))
        .components()
        .collect()
}

/// The stream inside a compressed payload, by its first bytes: zstd, xz,
/// gzip, or a plain tar.
pub fn decompressed<'a>(
    mut reader: impl Read + 'a,
    corrupt: &dyn Fn(String) -> Error,
) -> Result<Box<dyn Read + 'a>> {
    let mut magic = [0u8; 6];
    let mut n = 0;
    while n < magic.len() {
        match reader.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(corrupt(e.to_string())),
        }
    }
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let whole = head.chain(reader);
    Ok(match &magic[..n] {
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            Box::new(zstd::stream::read::Decoder::new(whole).map_err(|e| corrupt(e.to_string()))?)
        }
        [0xfd, b'7', b'z', b'X', b'Z', 0] => Box::new(liblzma::read::XzDecoder::new(whole)),
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        _ => Box::new(whole),
    })
}

/// Every path of the payload `data` with its kind and mode, but the
/// members `metadata` takes (a format's own, such as pacman's `.PKGINFO`:
/// it is handed each member first, and returns whether it took it).
/// Config flags are false: the caller knows which are.
pub fn list(
    data: &mut dyn Read,
    corrupt: &dyn Fn(String) -> Error,
    metadata: &mut dyn FnMut(&Path, &mut dyn Read) -> Result<bool>,
) -> Result<Vec<File>> {
    let mut out = Vec::new();
    for_each_tar_member(
        data,
        |e| corrupt(e.to_string()),
        &SparseBudget::default(),
        |entry| {
            let path = package_path(&entry.path().map_err(|e| corrupt(e.to_string()))?);
            if path == Path::new("/") || metadata(&path, entry)? {
                return Ok(());
            }
            if !super::stays_inside(&path) {
                return Err(corrupt(format!(
                    "member {} leaves the root",
                    path.display()
                )));
            }
            let t = entry.header().entry_type();
            let kind = if t.is_dir() {
                FileKind::Directory
            } else if t.is_symlink() {
                FileKind::Symlink
            } else if t.is_file() || t.is_hard_link() {
                FileKind::Regular
            } else {
                FileKind::Special
            };
            let mode = entry.header().mode().map_err(|e| corrupt(e.to_string()))?;
            out.push(File {
                path,
                source: None,
                kind,
                mode,
                is_config: false,
            });
            Ok(())
        },
    )?;
    Ok(out)
}

/// Hand `visit` each regular file of the payload `data`: its path (never
/// leaving the root), permission bits and bytes.
pub fn for_each_file(
    data: &mut dyn Read,
    corrupt: &dyn Fn(String) -> Error,
    skip: &dyn Fn(&Path) -> bool,
    visit: &mut super::VisitFile<'_>,
) -> Result<()> {
    for_each_tar_member(
        data,
        |e| corrupt(e.to_string()),
        &SparseBudget::default(),
        |entry| {
            let path = package_path(&entry.path().map_err(|e| corrupt(e.to_string()))?);
            if !entry.header().entry_type().is_file() || skip(&path) {
                return Ok(());
            }
            if !super::stays_inside(&path) {
                return Err(corrupt(format!(
                    "member {} leaves the root",
                    path.display()
                )));
            }
            let mode = entry.header().mode().map_err(|e| corrupt(e.to_string()))?;
            visit(&path, mode, entry)
        },
    )?;
    Ok(())
}

/// The regular files among `wanted` (absolute paths) in the payload
/// `data`, each at most [`CONFIG_FILE_LIMIT`] bytes and all of them
/// [`CONFIG_TOTAL_LIMIT`] (a config file is small; a member claiming
/// gigabytes is refused before it is read).
pub fn config_files(
    data: &mut dyn Read,
    wanted: &HashSet<&Path>,
    corrupt: &dyn Fn(String) -> Error,
) -> Result<Vec<ConfigFile>> {
    let mut out = Vec::new();
    let mut total = 0u64;
    for_each_tar_member(
        data,
        |e| corrupt(e.to_string()),
        &SparseBudget::default(),
        |entry| {
            let path = package_path(&entry.path().map_err(|e| corrupt(e.to_string()))?);
            if !entry.header().entry_type().is_file() || !wanted.contains(path.as_path()) {
                return Ok(());
            }
            let header = entry.header();
            let mode = header.mode().map_err(|e| corrupt(e.to_string()))?;
            let mtime = header.mtime().map_err(|e| corrupt(e.to_string()))?;
            let size = entry.size();
            total += size;
            if size > CONFIG_FILE_LIMIT || total > CONFIG_TOTAL_LIMIT {
                return Err(corrupt(format!(
                    "config file {} is {size} bytes (at most {CONFIG_FILE_LIMIT} each, {CONFIG_TOTAL_LIMIT} in all)",
                    path.display()
                )));
            }
            let mut data = Vec::with_capacity(size as usize);
            entry
                .take(size)
                .read_to_end(&mut data)
                .map_err(|e| corrupt(format!("{}: {e}", path.display())))?;
            out.push(ConfigFile {
                path,
                mode,
                mtime,
                data,
            });
            Ok(())
        },
    )?;
    Ok(out)
}
