//! Reading `.deb` files in-process: an `ar` archive whose `data.tar[.gz|.xz|.zst]`
//! member holds the files.  (The `debpkg` crate would do this too, but it
//! cannot be linked beside the `rpm` crate's xz support and is unmaintained;
//! see the README.)

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::ConfigFile;
use crate::error::{Error, Result};
use crate::package::{File, FileKind};

fn corrupt(deb: &Path, what: impl std::fmt::Display) -> Error {
    Error::backend(
        "deb",
        format!("{}: not a valid .deb file: {what}", deb.display()),
    )
}

/// Open the decompressed `data.tar` stream of a `.deb` and hand it to `f`.
fn with_data_tar<T>(deb: &Path, f: impl FnOnce(&mut dyn Read) -> Result<T>) -> Result<T> {
    let file = std::fs::File::open(deb)
        .map_err(|e| Error::backend("deb", format!("{}: {e}", deb.display())))?;
    let mut archive = ar::Archive::new(std::io::BufReader::new(file));
    while let Some(entry) = archive.next_entry() {
        let entry = entry.map_err(|e| corrupt(deb, e))?;
        let name = String::from_utf8_lossy(entry.header().identifier())
            .trim_end_matches('/')
            .to_string();
        if !name.starts_with("data.tar") {
            continue;
        }
        let mut reader: Box<dyn Read> = match name.as_str() {
            "data.tar" => Box::new(entry),
            "data.tar.gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            "data.tar.xz" => Box::new(liblzma::read::XzDecoder::new(entry)),
            "data.tar.zst" => {
                Box::new(zstd::stream::read::Decoder::new(entry).map_err(|e| corrupt(deb, e))?)
            }
            other => {
                return Err(corrupt(
                    deb,
                    format!("unsupported payload compression '{other}'"),
                ))
            }
        };
        return f(&mut reader);
    }
    Err(corrupt(deb, "no data.tar member"))
}

/// `./etc/foo` (as in a data.tar) -> `/etc/foo`.
fn package_path(entry_path: &Path) -> PathBuf {
    let rel = entry_path.strip_prefix(".").unwrap_or(entry_path);
    Path::new("/").join(rel.strip_prefix("/").unwrap_or(rel))
}

/// The contents of the regular files in `wanted` (absolute paths).
pub fn read_files(deb: &Path, wanted: &HashSet<&Path>) -> Result<Vec<ConfigFile>> {
    with_data_tar(deb, |data| {
        let mut out = Vec::new();
        let mut tar = tar::Archive::new(data);
        for entry in tar.entries().map_err(|e| corrupt(deb, e))? {
            let mut entry = entry.map_err(|e| corrupt(deb, e))?;
            let path = package_path(&entry.path().map_err(|e| corrupt(deb, e))?);
            if !entry.header().entry_type().is_file() || !wanted.contains(path.as_path()) {
                continue;
            }
            let header = entry.header();
            let mode = header.mode().map_err(|e| corrupt(deb, e))?;
            let mtime = header.mtime().map_err(|e| corrupt(deb, e))?;
            let mut data = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut data)
                .map_err(|e| corrupt(deb, format!("{}: {e}", path.display())))?;
            out.push(ConfigFile {
                path,
                mode,
                mtime,
                data,
            });
        }
        Ok(out)
    })
}

/// Every path in a `.deb`'s payload with its kind and mode (the dpkg
/// equivalent of `rpm -qlp`).  Config flags are unknown here and false.
pub fn list_files(deb: &Path) -> Result<Vec<File>> {
    with_data_tar(deb, |data| {
        let mut out = Vec::new();
        let mut tar = tar::Archive::new(data);
        for entry in tar.entries().map_err(|e| corrupt(deb, e))? {
            let entry = entry.map_err(|e| corrupt(deb, e))?;
            let path = package_path(&entry.path().map_err(|e| corrupt(deb, e))?);
            if path == Path::new("/") {
                continue;
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
            let mode = entry.header().mode().map_err(|e| corrupt(deb, e))?;
            out.push(File {
                path,
                source: None,
                kind,
                mode,
                is_config: false,
            });
        }
        Ok(out)
    })
}
