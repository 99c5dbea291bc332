//! The appliance as one format-neutral tree, built once per build.
//!
//! [`crate::assemble`] fills a [`Tree`] with the base images' members,
//! the packages' files, the hostfiles and `/packagelist`: every entry's
//! kind, owner, mode, times, link target, the names it is reached by (hard
//! links), where its bytes come from and why it is there.  Every format
//! ([`crate::format`]) writes the same tree, so the rules that decide what
//! the appliance holds (later base images win, a base image's symlink is
//! kept over a host file, unreadable host files are skipped, a member's
//! path follows symlinks only inside the tree) exist once, here and in
//! `assemble`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::rootfs::{FileId, RootFs};

/// The longest name in a directory (Linux's `NAME_MAX`; ext2's
/// `name_len` is one byte).
pub const MAX_NAME: usize = 255;
/// The longest symlink target (Linux's `PATH_MAX - 1`; one ext2 block).
pub const MAX_SYMLINK: usize = 4095;
/// Symlinks followed in one lookup inside the tree (Linux's
/// `MAXSYMLINKS`).
const MAX_HOPS: usize = 40;

/// Owner, permissions and times of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits (`0o7777`).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub atime: i64,
    pub atime_nsec: u32,
}

impl Meta {
    /// Whole seconds, the access time equal to the modification time.
    pub fn new(perm: u16, uid: u32, gid: u32, mtime: i64) -> Meta {
        Meta {
            perm,
            uid,
            gid,
            mtime,
            mtime_nsec: 0,
            atime: mtime,
            atime_nsec: 0,
        }
    }

    /// A host file's owner, permissions and times.
    pub fn of(m: &fs::Metadata) -> Meta {
        Meta {
            perm: (m.mode() & 0o7777) as u16,
            uid: m.uid(),
            gid: m.gid(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec() as u32,
            atime: m.atime(),
            atime_nsec: m.atime_nsec() as u32,
        }
    }
}

/// Why an entry is in the appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A member of the base image [`Tree::image`] names (`base.tar.gz`
    /// or another tarball).
    BaseImage(u32),
    /// A file a package lists.
    Package,
    /// A path a `hostfiles` line matched.
    Hostfile,
    /// A parent directory, or a directory symlink and its target, added
    /// so that the listed paths have somewhere to be.
    Implied,
    /// Made by the build itself (`/packagelist`).
    Generated,
    /// An alternatives link (`/usr/bin/awk → /etc/alternatives/awk`),
    /// which no package lists.
    Alternative,
    /// Part of the kernel's module tree (bootable formats).
    Kernel,
}

impl Origin {
    /// How `Appliance.files()` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::BaseImage(_) => "base image",
            Origin::Package => "package",
            Origin::Hostfile => "hostfiles",
            Origin::Implied => "directory",
            Origin::Generated => "generated",
            Origin::Alternative => "alternatives",
            Origin::Kernel => "kernel",
        }
    }

    /// Read from the host (or `--root`) rather than from a tarball or
    /// made by the build.
    pub fn is_host(self) -> bool {
        matches!(self, Origin::Package | Origin::Hostfile | Origin::Implied)
    }
}

/// Where a regular file's bytes come from.
#[derive(Debug, Clone)]
pub enum Data {
    /// A file of this size at `path` inside one of the [`Sources`], read
    /// when the format is written: opened again without following a
    /// symlink and proved to be the file `id` that was listed.
    Host {
        from: ReadFrom,
        path: PathBuf,
        id: FileId,
        size: u64,
    },
    /// Held in memory (small base-image members, `/packagelist`).
    Bytes(Vec<u8>),
    /// A base-image member kept in the tree's spill file, at `offset`.
    Spilled { offset: u64, size: u64 },
}

impl Data {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> u64 {
        match self {
            Data::Host { size, .. } | Data::Spilled { size, .. } => *size,
            Data::Bytes(b) => b.len() as u64,
        }
    }
}

/// Which root a [`Data::Host`] file is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// The build's root (`--root`): package files and hostfiles.
    Build,
    /// The host's `/`: kernel modules.
    Host,
}

/// The roots [`Data::Host`] files are read from.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    pub build: &'a RootFs,
    pub host: &'a RootFs,
}

/// An open regular file's bytes: `size` bytes of `file` from `offset`.
pub enum Contents<'a> {
    Bytes(&'a [u8]),
    File {
        file: OpenFile<'a>,
        offset: u64,
        size: u64,
    },
}

/// A file opened for one copy, or the tree's spill file (shared; read
/// with offsets only).
pub enum OpenFile<'a> {
    Owned(fs::File),
    Shared(&'a fs::File),
}

impl std::ops::Deref for OpenFile<'_> {
    type Target = fs::File;
    fn deref(&self) -> &fs::File {
        match self {
            OpenFile::Owned(f) => f,
            OpenFile::Shared(f) => f,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Kind {
    Dir(BTreeMap<Vec<u8>, usize>),
    File(Data),
    Symlink(Vec<u8>),
    /// Character or block device, FIFO or socket: the type bits and rdev.
    Special {
        file_type: u16,
        rdev: u64,
    },
}

#[derive(Debug, Clone)]
pub struct Node {
    pub meta: Meta,
    pub kind: Kind,
    pub origin: Origin,
}

/// The appliance as a tree of nodes; node 0 is `/`. A node reached by
/// several names is a hard link.
#[derive(Debug)]
pub struct Tree {
    nodes: Vec<Node>,
    /// Meta for directories created implicitly (missing parents).
    default_dir: Meta,
    /// Where [`Data::Spilled`] bytes are (an unnamed file in the staging
    /// output, gone with the last descriptor).
    spill: Option<fs::File>,
    /// The base images read into the tree, for [`Origin::BaseImage`].
    images: Vec<PathBuf>,
}

/// One name in a [`Tree::walk`]: the path, the node, and whether this is
/// the first name the walk met for the node (later ones are hard links).
pub struct Visit<'a> {
    pub path: &'a Path,
    pub index: usize,
    pub node: &'a Node,
    pub first: bool,
}

impl Tree {
    /// An empty tree; implied directories get `default_dir`.
    pub fn new(default_dir: Meta) -> Tree {
        Tree {
            nodes: vec![Node {
                meta: default_dir,
                kind: Kind::Dir(BTreeMap::new()),
                origin: Origin::Generated,
            }],
            default_dir,
            spill: None,
            images: Vec::new(),
        }
    }

    pub fn node(&self, index: usize) -> &Node {
        &self.nodes[index]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    /// The children of directory `dir`, by name.
    pub fn children(&self, dir: usize) -> &BTreeMap<Vec<u8>, usize> {
        match &self.nodes[dir].kind {
            Kind::Dir(c) => c,
            _ => unreachable!("not a directory"),
        }
    }

    fn children_mut(&mut self, dir: usize) -> &mut BTreeMap<Vec<u8>, usize> {
        match &mut self.nodes[dir].kind {
            Kind::Dir(c) => c,
            _ => unreachable!("not a directory"),
        }
    }

    /// Every name but `/`, depth first in byte order of names (a parent
    /// before its children): the order of a deterministic archive.
    pub fn walk(&self, mut visit: impl FnMut(Visit<'_>) -> Result<()>) -> Result<()> {
        let mut seen = vec![false; self.nodes.len()];
        let mut path = PathBuf::from("/");
        // Per directory being walked: its children in order, and the next.
        type Level<'t> = (Vec<(&'t [u8], usize)>, usize);
        let mut stack: Vec<Level<'_>> = vec![(self.sorted_children(0), 0)];
        while let Some((children, next)) = stack.last_mut() {
            let Some(&(name, index)) = children.get(*next) else {
                stack.pop();
                path.pop();
                continue;
            };
            *next += 1;
            path.push(std::ffi::OsStr::from_bytes(name));
            let first = !seen[index];
            seen[index] = true;
            visit(Visit {
                path: &path,
                index,
                node: &self.nodes[index],
                first,
            })?;
            if matches!(self.nodes[index].kind, Kind::Dir(_)) {
                stack.push((self.sorted_children(index), 0));
            } else {
                path.pop();
            }
        }
        Ok(())
    }

    fn sorted_children(&self, dir: usize) -> Vec<(&[u8], usize)> {
        self.children(dir)
            .iter()
            .map(|(name, &index)| (name.as_slice(), index))
            .collect()
    }

    /// The directory that holds `path`'s last component, following the
    /// tree's own symlinks (never leaving the tree) and creating missing
    /// directories; with the last component's name.
    fn parent_of(&mut self, path: &Path) -> Result<(usize, Vec<u8>)> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        for c in path.components() {
            match c {
                Component::Normal(n) => parts.push(n.as_bytes().to_vec()),
                Component::ParentDir => {
                    parts.pop();
                }
                _ => {}
            }
        }
        if let Some(long) = parts.iter().find(|p| p.len() > MAX_NAME) {
            return Err(Error::bad_input(
                path,
                format!("a name of {} bytes; at most {MAX_NAME}", long.len()),
            ));
        }
        let Some(name) = parts.pop() else {
            return Err(Error::bad_input(path, "names the root directory"));
        };
        let dir = self
            .walk_dirs(parts, 0)
            .map_err(|e| Error::bad_input(path, e))?;
        Ok((dir, name))
    }

    /// Walk (and create) directories named by `parts` from `start`.
    fn walk_dirs(
        &mut self,
        parts: Vec<Vec<u8>>,
        start: usize,
    ) -> std::result::Result<usize, String> {
        let mut stack: Vec<usize> = vec![0];
        let mut pending: Vec<Vec<u8>> = parts.into_iter().rev().collect();
        let mut current = start;
        let mut hops = 0;
        while let Some(name) = pending.pop() {
            if name == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                current = *stack.last().expect("root");
                continue;
            }
            match self.children(current).get(&name).copied() {
                Some(child) => match &self.nodes[child].kind {
                    Kind::Dir(_) => {
                        stack.push(child);
                        current = child;
                    }
                    Kind::Symlink(target) if hops < MAX_HOPS => {
                        hops += 1;
                        let target = target.clone();
                        if target.first() == Some(&b'/') {
                            stack.truncate(1);
                            current = 0;
                        }
                        for part in target.split(|&b| b == b'/').rev() {
                            if !part.is_empty() && part != b"." {
                                pending.push(part.to_vec());
                            }
                        }
                    }
                    _ => {
                        return Err(format!(
                            "{} is not a directory",
                            String::from_utf8_lossy(&name)
                        ))
                    }
                },
                None => {
                    let child = self.push(Node {
                        meta: self.default_dir,
                        kind: Kind::Dir(BTreeMap::new()),
                        origin: Origin::Implied,
                    });
                    self.children_mut(current).insert(name, child);
                    stack.push(child);
                    current = child;
                }
            }
        }
        Ok(current)
    }

    fn push(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The node at `path` (parents resolved through symlinks), if any.
    pub fn lookup(&mut self, path: &Path) -> Result<Option<usize>> {
        if path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::CurDir))
        {
            return Ok(Some(0));
        }
        let (dir, name) = self.parent_of(path)?;
        Ok(self.children(dir).get(&name).copied())
    }

    /// Put `node` at `path`, replacing a non-directory there. A directory
    /// over a directory only takes the new meta (its contents stay).
    /// Returns the node's index.
    pub fn insert(&mut self, path: &Path, node: Node) -> Result<usize> {
        if let Kind::Symlink(target) = &node.kind {
            if target.len() > MAX_SYMLINK {
                return Err(Error::bad_input(
                    path,
                    format!(
                        "a symlink target of {} bytes; at most {MAX_SYMLINK}",
                        target.len()
                    ),
                ));
            }
        }
        let (dir, name) = self.parent_of(path)?;
        if let Some(&existing) = self.children(dir).get(&name) {
            let existing_is_dir = matches!(self.nodes[existing].kind, Kind::Dir(_));
            match (&node.kind, existing_is_dir) {
                (Kind::Dir(_), true) => {
                    self.nodes[existing].meta = node.meta;
                    self.nodes[existing].origin = node.origin;
                    return Ok(existing);
                }
                (_, true) => return Err(Error::bad_input(path, "a directory is in the way")),
                _ => {}
            }
        }
        let index = self.push(node);
        self.children_mut(dir).insert(name, index);
        Ok(index)
    }

    /// A second name for node `target` (a hard link).
    pub fn link(&mut self, path: &Path, target: usize) -> Result<()> {
        if matches!(self.nodes[target].kind, Kind::Dir(_)) {
            return Err(Error::bad_input(path, "a hard link to a directory"));
        }
        let (dir, name) = self.parent_of(path)?;
        if let Some(&existing) = self.children(dir).get(&name) {
            if matches!(self.nodes[existing].kind, Kind::Dir(_)) {
                return Err(Error::bad_input(path, "a directory is in the way"));
            }
        }
        self.children_mut(dir).insert(name, target);
        Ok(())
    }

    /// Does `path` exist (as anything)?
    pub fn exists(&mut self, path: &Path) -> bool {
        matches!(self.lookup(path), Ok(Some(_)))
    }

    /// Make sure `path` is a directory, creating it (and parents) with the
    /// default meta; returns its index.
    pub fn mkdir_p(&mut self, path: &Path) -> Result<usize> {
        let parts = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.as_bytes().to_vec()),
                _ => None,
            })
            .collect();
        self.walk_dirs(parts, 0)
            .map_err(|e| Error::bad_input(path, e))
    }

    /// Clamp every time to `epoch` (reproducible builds).
    pub fn clamp_times(&mut self, epoch: i64) {
        for node in &mut self.nodes {
            if node.meta.mtime >= epoch {
                node.meta.mtime = epoch;
                node.meta.mtime_nsec = 0;
            }
            if node.meta.atime >= epoch {
                node.meta.atime = epoch;
                node.meta.atime_nsec = 0;
            }
        }
    }

    /// Could anyone read every file of the tree, were it unpacked: every
    /// regular file readable by others, every directory that holds
    /// anything readable and searchable by others?  (An empty 0700
    /// directory, such as `/lost+found`, hides nothing.)
    pub fn everything_world_readable(&self) -> bool {
        self.nodes.iter().all(|n| match &n.kind {
            Kind::File(_) => n.meta.perm & 0o004 != 0,
            Kind::Dir(children) => children.is_empty() || n.meta.perm & 0o005 == 0o005,
            Kind::Symlink(_) | Kind::Special { .. } => true,
        })
    }

    /// Set the meta of node `index`.
    pub fn set_meta(&mut self, index: usize, meta: Meta) {
        self.nodes[index].meta = meta;
    }

    /// Regular files (each inode once), their bytes, and their extra
    /// names (hard links).
    pub fn file_counts(&self) -> (u64, u64, u64) {
        let (mut files, mut bytes, mut names) = (0u64, 0u64, 0u64);
        for node in &self.nodes {
            match &node.kind {
                Kind::File(data) => {
                    files += 1;
                    bytes += data.len();
                }
                Kind::Dir(children) => {
                    names += children
                        .values()
                        .filter(|&&c| matches!(self.nodes[c].kind, Kind::File(_)))
                        .count() as u64;
                }
                _ => {}
            }
        }
        (files, bytes, names - files)
    }

    /// Record a base image read into the tree; its [`Origin::BaseImage`].
    pub fn add_image(&mut self, path: &Path) -> Origin {
        self.images.push(path.to_path_buf());
        Origin::BaseImage(self.images.len() as u32 - 1)
    }

    /// The base image of `origin`, if it is one.
    pub fn image(&self, origin: Origin) -> Option<&Path> {
        match origin {
            Origin::BaseImage(i) => self.images.get(i as usize).map(PathBuf::as_path),
            _ => None,
        }
    }

    /// Keep `data`'s bytes in the spill file; the tree then owns it.
    pub fn set_spill(&mut self, spill: fs::File) {
        self.spill = Some(spill);
    }

    /// The bytes of `data`, opened for reading: a host file is opened
    /// again inside its root, without following a symlink, and proved to
    /// be the file listed.
    pub fn open<'a>(&'a self, data: &'a Data, sources: Sources<'_>) -> io::Result<Contents<'a>> {
        match data {
            Data::Bytes(bytes) => Ok(Contents::Bytes(bytes)),
            Data::Spilled { offset, size } => {
                let file = self
                    .spill
                    .as_ref()
                    .ok_or_else(|| io::Error::other("no spill file"))?;
                Ok(Contents::File {
                    file: OpenFile::Shared(file),
                    offset: *offset,
                    size: *size,
                })
            }
            Data::Host {
                from,
                path,
                id,
                size,
            } => {
                let (file, _) = sources.root(*from).open_same(path, *id)?;
                Ok(Contents::File {
                    file: OpenFile::Owned(file),
                    offset: 0,
                    size: *size,
                })
            }
        }
    }

    /// Where `data` is, for messages.
    pub fn describe(&self, data: &Data, sources: Sources<'_>) -> PathBuf {
        match data {
            Data::Host { from, path, .. } => sources.root(*from).display_path(path),
            Data::Bytes(_) | Data::Spilled { .. } => PathBuf::from("(base image member)"),
        }
    }
}

impl Sources<'_> {
    pub fn root(&self, from: ReadFrom) -> &RootFs {
        match from {
            ReadFrom::Build => self.build,
            ReadFrom::Host => self.host,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(bytes: &[u8]) -> Node {
        Node {
            meta: Meta::new(0o644, 0, 0, 1),
            kind: Kind::File(Data::Bytes(bytes.to_vec())),
            origin: Origin::BaseImage(0),
        }
    }

    #[test]
    fn symlinks_in_parents_are_followed_inside_the_tree() {
        let mut tree = Tree::new(Meta::new(0o755, 0, 0, 0));
        tree.mkdir_p(Path::new("/usr/lib")).unwrap();
        let link = Node {
            meta: Meta::new(0o777, 0, 0, 1),
            kind: Kind::Symlink(b"/usr/lib".to_vec()),
            origin: Origin::BaseImage(0),
        };
        tree.insert(Path::new("/lib"), link.clone()).unwrap();
        tree.insert(Path::new("/lib/a"), file(b"a")).unwrap();
        let escape = Node {
            kind: Kind::Symlink(b"../../../..".to_vec()),
            ..link
        };
        tree.insert(Path::new("/usr/up"), escape).unwrap();
        tree.insert(Path::new("/usr/up/etc/b"), file(b"b")).unwrap();
        let mut names = Vec::new();
        tree.walk(|v| {
            names.push(v.path.display().to_string());
            Ok(())
        })
        .unwrap();
        assert_eq!(
            names,
            [
                "/etc",
                "/etc/b",
                "/lib",
                "/usr",
                "/usr/lib",
                "/usr/lib/a",
                "/usr/up"
            ]
        );
    }

    #[test]
    fn a_walk_meets_a_hard_link_once_first() {
        let mut tree = Tree::new(Meta::new(0o755, 0, 0, 0));
        let a = tree.insert(Path::new("/b/x"), file(b"x")).unwrap();
        tree.link(Path::new("/a"), a).unwrap();
        let mut seen = Vec::new();
        tree.walk(|v| {
            seen.push((v.path.display().to_string(), v.first));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            [
                ("/a".to_string(), true),
                ("/b".to_string(), true),
                ("/b/x".to_string(), false)
            ]
        );
    }
}
