//! The package model shared by every backend.

use std::fmt;
use std::path::PathBuf;

/// One installed package, as a backend reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The name as upstream supermin prints it: `name_version_arch` for dpkg.
    pub full_name: String,
    /// Raw dependency clauses, as written in the database (one per clause).
    pub depends: Vec<String>,
    /// Its licence as the database records it (rpm `License`, pacman
    /// `%LICENSE%`, apk `L:`; dpkg records none), for SBOMs.
    pub license: Option<String>,
    /// Who supplies it as the database records it (dpkg `Maintainer`, rpm
    /// `Vendor` or `Packager`, pacman `%PACKAGER%`, apk `m:`), for SBOMs.
    pub supplier: Option<String>,
    /// Which opened database the package is from, and where in it;
    /// `None` for a package read from a package file.  A backend reads
    /// only its own packages' data ([`crate::Backend::index_of`]).
    pub(crate) id: Option<PackageId>,
}

/// A package's place in one opened database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PackageId {
    /// Unique to one opened database ([`new_database_id`]).
    pub database: u64,
    pub index: usize,
}

/// A number no other database opened by this process has.
pub(crate) fn new_database_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl fmt::Display for Package {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full_name)
    }
}

/// What a package path is on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    /// Device nodes, FIFOs, sockets.
    Special,
    /// Listed by the package but absent on the host.
    Missing,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Regular => "file",
            FileKind::Directory => "directory",
            FileKind::Symlink => "symlink",
            FileKind::Special => "special",
            FileKind::Missing => "missing",
        }
    }

    pub fn of(meta: &std::fs::Metadata) -> FileKind {
        let ft = meta.file_type();
        if ft.is_symlink() {
            FileKind::Symlink
        } else if ft.is_dir() {
            FileKind::Directory
        } else if ft.is_file() {
            FileKind::Regular
        } else {
            FileKind::Special
        }
    }
}

/// One path owned by a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Absolute path inside the appliance, e.g. `/usr/bin/bash`.
    pub path: PathBuf,
    /// Where the bytes live on the host, relative to the backend's root, when
    /// that differs from `path` (a dpkg diversion).
    pub source: Option<PathBuf>,
    pub kind: FileKind,
    /// `st_mode` permission bits (and type bits) on the host; 0 when missing.
    pub mode: u32,
    /// Its size in bytes (`st_size` on the host, or in the package file);
    /// 0 when missing.
    pub size: u64,
    /// A configuration file: taken from the base image, never from the host.
    pub is_config: bool,
}

impl File {
    /// A tar member (a package's payload, a base image) as the file it
    /// would make at `path`: kind and mode from its header, the size of a
    /// regular one; not a config file.
    pub fn of_tar_member<R: std::io::Read>(
        path: PathBuf,
        entry: &tar::Entry<'_, R>,
    ) -> std::io::Result<File> {
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
        Ok(File {
            path,
            source: None,
            kind,
            mode: entry.header().mode()?,
            size: if kind == FileKind::Regular {
                entry.size()
            } else {
                0
            },
            is_config: false,
        })
    }

    /// The path to read on the host (relative to the root).
    pub fn source_path(&self) -> &std::path::Path {
        self.source.as_deref().unwrap_or(&self.path)
    }
}
