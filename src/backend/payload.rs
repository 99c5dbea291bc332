//! A package file's payload, a tar stream, read the same way for every
//! format that carries one (`.deb`'s `data.tar`, pacman's `.pkg.tar.*`,
//! apk's `.apk`): its listing, and its config files with size limits.
//! The formats differ only in how the stream is wrapped and named.
//! pacman's and apk's files are alike down to the `.PKGINFO` of
//! `key = value` lines at the top of the tar stream (apk's is split into
//! concatenated gzip streams, which read as one): both are read here.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{ConfigFile, CONFIG_FILE_LIMIT, CONFIG_TOTAL_LIMIT};
use crate::appliance::{for_each_tar_member, SparseBudget};
use crate::error::{Error, Result};
use crate::package::File;

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
            out.push(File::of_tar_member(path, entry).map_err(|e| corrupt(e.to_string()))?);
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

/// The decompressed tar stream of a package file that is one (pacman's
/// `.pkg.tar.*`, apk's `.apk`).
pub fn open<'a>(file: &Path, corrupt: &'a dyn Fn(String) -> Error) -> Result<Box<dyn Read + 'a>> {
    let opened = std::fs::File::open(file).map_err(|e| corrupt(e.to_string()))?;
    decompressed(std::io::BufReader::new(opened), corrupt)
}

/// The metadata members at the top of a package's tar stream (`.PKGINFO`,
/// `.MTREE`, apk's `.SIGN.RSA.*` and `.pre-install`...): not installed.
pub fn is_metadata(path: &Path) -> bool {
    path.parent() == Some(Path::new("/"))
        && path
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
}

/// Hand `visit` each regular file of a package file that is a tar stream,
/// its metadata members left out.
pub fn unpack(
    file: &Path,
    corrupt: &dyn Fn(String) -> Error,
    visit: &mut super::VisitFile<'_>,
) -> Result<()> {
    let mut data = open(file, corrupt)?;
    for_each_file(&mut data, corrupt, &is_metadata, visit)
}

/// The files `paths` (config files) from a package file that is a tar
/// stream.
pub fn extract(
    file: &Path,
    paths: &[PathBuf],
    corrupt: &dyn Fn(String) -> Error,
) -> Result<Vec<ConfigFile>> {
    let wanted: HashSet<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let mut data = open(file, corrupt)?;
    config_files(&mut data, &wanted, corrupt)
}

/// The most metadata members [`leading_metadata`] reads.
const MAX_METADATA: usize = 64;

/// The most a `.PKGINFO` may hold.
const PKGINFO_LIMIT: u64 = 1 << 20;

/// A `.PKGINFO`: `key = value` lines, a key given any number of times.
#[derive(Debug, Default)]
pub struct PkgInfo {
    fields: HashMap<String, Vec<String>>,
}

impl PkgInfo {
    pub fn parse(text: &str) -> PkgInfo {
        let mut fields: HashMap<String, Vec<String>> = HashMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some((key, value)) = line.split_once(" = ") {
                fields
                    .entry(key.trim().to_string())
                    .or_default()
                    .push(value.trim().to_string());
            }
        }
        PkgInfo { fields }
    }

    /// The first value of `key`, or "".
    pub fn one(&self, key: &str) -> &str {
        self.all(key).next().unwrap_or("")
    }

    /// Every value of `key`, in order.
    pub fn all<'a>(&'a self, key: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .get(key)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }
}

/// A package file's `.PKGINFO` and every path it would install (config
/// flags false), the whole stream read (which checks the compressor's
/// own checksums).
pub fn read_with_pkginfo(
    file: &Path,
    corrupt: &dyn Fn(String) -> Error,
) -> Result<(PkgInfo, Vec<File>)> {
    let mut data = open(file, corrupt)?;
    let mut pkginfo: Option<String> = None;
    // Metadata leads the stream (apk's control stream, makepkg's first
    // members); a dotfile after the first installed path is installed
    // too, and never says what the package is.
    let mut leading = true;
    let files = list(&mut data, corrupt, &mut |path, member| {
        leading &= is_metadata(path);
        if !leading {
            return Ok(false);
        }
        if path == Path::new("/.PKGINFO") {
            if pkginfo.is_some() {
                return Err(corrupt("a second .PKGINFO".to_string()));
            }
            pkginfo = Some(read_pkginfo(member, corrupt)?);
        }
        Ok(true)
    })?;
    std::io::copy(&mut data, &mut std::io::sink()).map_err(|e| corrupt(e.to_string()))?;
    let pkginfo = pkginfo.ok_or_else(|| corrupt("no .PKGINFO".to_string()))?;
    Ok((PkgInfo::parse(&pkginfo), files))
}

fn read_pkginfo(member: &mut dyn Read, corrupt: &dyn Fn(String) -> Error) -> Result<String> {
    let mut text = String::new();
    member
        .take(PKGINFO_LIMIT)
        .read_to_string(&mut text)
        .map_err(|e| corrupt(format!(".PKGINFO: {e}")))?;
    Ok(text)
}

/// The metadata members that open a package file's tar stream, up to the
/// first installed path: their names, and the `.PKGINFO` among them.
/// Enough to tell apk's files from pacman's without reading the rest;
/// `None` if it is no tar stream or has no `.PKGINFO` up front.
pub fn leading_metadata(file: &Path) -> Option<(Vec<PathBuf>, PkgInfo)> {
    let corrupt = |e: String| Error::backend("package file", e);
    let mut data = open(file, &corrupt).ok()?;
    let mut names = Vec::new();
    let mut pkginfo = None;
    // Stopped at the first installed path by an error that is no failure.
    let _ = for_each_tar_member(
        &mut data,
        |e| corrupt(e.to_string()),
        &SparseBudget::default(),
        |entry| {
            let path = package_path(&entry.path().map_err(|e| corrupt(e.to_string()))?);
            // (Real packages have a handful of metadata members.)
            if !is_metadata(&path) || names.len() >= MAX_METADATA {
                return Err(corrupt("end of metadata".to_string()));
            }
            if path == Path::new("/.PKGINFO") {
                pkginfo = Some(read_pkginfo(entry, &corrupt)?);
            }
            names.push(path);
            Ok(())
        },
    );
    Some((names, PkgInfo::parse(&pkginfo?)))
}
