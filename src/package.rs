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
    /// Backend-private index of the package in its database.
    pub(crate) id: usize,
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
    /// A configuration file: taken from the base image, never from the host.
    pub is_config: bool,
}

impl File {
    /// The path to read on the host (relative to the root).
    pub fn source_path(&self) -> &std::path::Path {
        self.source.as_deref().unwrap_or(&self.path)
    }
}
