//! The staging output directory, written by descriptor.
//!
//! A chroot build creates thousands of entries under `OUT.<random>`.  If
//! it named them by path, a symlink in the way (planted by a base image,
//! or by a host tree changing while the build runs) would make the kernel
//! follow it and write outside the output, as root.  So every entry is
//! made relative to a descriptor of its parent directory, and parents are
//! found in one of two ways:
//!
//! - [`Parents::Existing`] for the file set, which is laid out so that no
//!   entry goes through a symlink: every parent must already be a real
//!   directory (`RESOLVE_NO_SYMLINKS`); anything else is an error.
//! - [`Parents::InRoot`] for base images (tar semantics): missing parents
//!   are created, and symlinks that earlier entries made are followed
//!   *inside* the output, as the appliance itself will see them.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::rootfs;

/// How the parent directories of an entry are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parents {
    /// They exist, and none is a symlink.
    Existing,
    /// Missing ones are created; symlinks are followed inside the output.
    InRoot,
}

/// The staging output, held open.
#[derive(Debug)]
pub struct OutDir {
    path: PathBuf,
    dir: OwnedFd,
    /// The last directory found with [`Parents::Existing`]: entries come
    /// in tree order, so the next one is usually in the same directory.
    /// (Safe to keep: only this build writes the staging directory, and a
    /// directory found so has no symlink above it.)
    last_existing: std::sync::Mutex<Option<(PathBuf, Arc<OwnedFd>)>>,
}

/// One name in one directory of the output: where an entry goes.
#[derive(Debug, Clone)]
pub struct Place {
    dir: Arc<OwnedFd>,
    name: OsString,
}

/// The metadata of what is at a [`Place`] already.
pub type Existing = Option<FileType>;

impl OutDir {
    pub fn open(path: &Path) -> io::Result<OutDir> {
        let dir = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )?;
        Ok(OutDir::from_fd(path.to_path_buf(), dir))
    }

    /// The directory `dir` (a descriptor already held), shown as `path`.
    pub fn from_fd(path: PathBuf, dir: OwnedFd) -> OutDir {
        OutDir {
            path,
            dir,
            last_existing: std::sync::Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new file in the output that has no name (`O_TMPFILE`), for data
    /// the build keeps only while it runs: it disappears with its last
    /// descriptor, whatever kills the build.  Where the filesystem cannot
    /// make one, a named file is made and unlinked at once.
    pub fn unnamed_file(&self) -> io::Result<fs::File> {
        let flags = OFlags::RDWR | OFlags::CLOEXEC;
        match rustix::fs::openat(
            &self.dir,
            ".",
            flags | OFlags::TMPFILE,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => return Ok(fs::File::from(fd)),
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => {}
            Err(e) => return Err(e.into()),
        }
        let name = format!(".supermin-unnamed.{}", std::process::id());
        let fd = rustix::fs::openat(
            &self.dir,
            name.as_str(),
            flags | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o600),
        )?;
        rustix::fs::unlinkat(&self.dir, name.as_str(), AtFlags::empty())?;
        Ok(fs::File::from(fd))
    }

    /// The directory `path` (absolute inside the output; `/` is the output
    /// itself), found as `parents` says.
    pub fn dir(&self, path: &Path, parents: Parents) -> io::Result<Arc<OwnedFd>> {
        let relative = relative(path);
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = match parents {
            Parents::Existing => {
                let mut last = self.last_existing.lock().expect("not poisoned");
                if let Some((p, fd)) = last.as_ref() {
                    if p == path {
                        return Ok(fd.clone());
                    }
                }
                let fd = Arc::new(open_beneath(&self.dir, &relative, flags)?);
                *last = Some((path.to_path_buf(), fd.clone()));
                return Ok(fd);
            }
            Parents::InRoot => match rootfs::open_in_root(&self.dir, &relative, flags, true) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.create_dirs(&relative)?,
                other => other?,
            },
        };
        Ok(Arc::new(fd))
    }

    /// Where `path` (absolute inside the output, not `/`) goes.
    pub fn place(&self, path: &Path, parents: Parents) -> io::Result<Place> {
        let (parent, name) = split(path)?;
        Ok(Place {
            dir: self.dir(&parent, parents)?,
            name,
        })
    }

    /// Create the missing directories of `relative`, one component at a
    /// time, each looked up inside the output.
    fn create_dirs(&self, relative: &Path) -> io::Result<OwnedFd> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut here = rootfs::open_in_root(&self.dir, Path::new("."), flags, true)?;
        let mut prefix = PathBuf::new();
        for c in relative.components() {
            prefix.push(c);
            here = match rootfs::open_in_root(&self.dir, &prefix, flags, true) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let Component::Normal(name) = c else {
                        return Err(e);
                    };
                    match rustix::fs::mkdirat(&here, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    rustix::fs::openat(&here, name, flags | OFlags::NOFOLLOW, Mode::empty())?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(here)
    }
}

impl Place {
    /// `name` in the directory `dir` (from [`OutDir::dir`]).
    pub fn new(dir: Arc<OwnedFd>, name: OsString) -> Place {
        Place { dir, name }
    }

    /// The kind of what is here, if anything.
    pub fn existing(&self) -> io::Result<Existing> {
        match rustix::fs::statat(&*self.dir, &self.name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Remove what is here unless it is a directory (a directory in the
    /// way is an error): what replaces it is never written through it.
    pub fn clear(&self) -> io::Result<()> {
        match self.existing()? {
            None => Ok(()),
            Some(FileType::Directory) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a directory is in the way",
            )),
            Some(_) => Ok(rustix::fs::unlinkat(
                &*self.dir,
                &self.name,
                AtFlags::empty(),
            )?),
        }
    }

    /// A directory here (mode 0700 until [`Place::chmod`]); a symlink or
    /// file here is replaced, an existing directory kept.
    pub fn make_dir(&self) -> io::Result<()> {
        match self.existing()? {
            Some(FileType::Directory) => return Ok(()),
            Some(_) => rustix::fs::unlinkat(&*self.dir, &self.name, AtFlags::empty())?,
            None => {}
        }
        Ok(rustix::fs::mkdirat(
            &*self.dir,
            &self.name,
            Mode::from_raw_mode(0o700),
        )?)
    }

    /// A new, empty regular file here (mode 0600), replacing a non-directory.
    pub fn create_file(&self) -> io::Result<fs::File> {
        self.create_file_replacing().map(|(file, _)| file)
    }

    /// [`Place::create_file`], and whether something was replaced.
    pub fn create_file_replacing(&self) -> io::Result<(fs::File, bool)> {
        let create = || {
            rustix::fs::openat(
                &*self.dir,
                &self.name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
        };
        // Usually nothing is there: one system call.
        let (fd, replaced) = match create() {
            Err(Errno::EXIST) => {
                self.clear()?;
                (create()?, true)
            }
            other => (other?, false),
        };
        Ok((fs::File::from(fd), replaced))
    }

    /// A symlink here to `target`, replacing a non-directory.
    pub fn symlink(&self, target: &Path) -> io::Result<()> {
        self.clear()?;
        Ok(rustix::fs::symlinkat(target, &*self.dir, &self.name)?)
    }

    /// A device node or FIFO here, replacing a non-directory.
    pub fn mknod(&self, kind: FileType, perm: u32, dev: u64) -> io::Result<()> {
        self.clear()?;
        Ok(rustix::fs::mknodat(
            &*self.dir,
            &self.name,
            kind,
            Mode::from_raw_mode(perm & 0o7777),
            dev,
        )?)
    }

    /// A hard link here to the entry at `existing`, replacing a
    /// non-directory.
    pub fn hard_link_to(&self, existing: &Place) -> io::Result<()> {
        self.clear()?;
        Ok(rustix::fs::linkat(
            &*existing.dir,
            &existing.name,
            &*self.dir,
            &self.name,
            AtFlags::empty(),
        )?)
    }

    /// Owner of the entry itself (a symlink is not followed).
    pub fn chown(&self, uid: u32, gid: u32) -> io::Result<()> {
        Ok(rustix::fs::chownat(
            &*self.dir,
            &self.name,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// Owner (when given), permission bits and times of the directory
    /// here, through one descriptor of it (never a symlink).
    pub fn set_dir_meta(
        &self,
        owner: Option<(u32, u32)>,
        perm: u32,
        atime: (i64, i64),
        mtime: (i64, i64),
    ) -> io::Result<()> {
        let fd = rustix::fs::openat(
            &*self.dir,
            &self.name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        if let Some((uid, gid)) = owner {
            rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )?;
        }
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(perm & 0o7777))?;
        let ts = |(sec, nsec): (i64, i64)| Timespec {
            tv_sec: sec,
            tv_nsec: nsec as _,
        };
        rustix::fs::futimens(
            &fd,
            &Timestamps {
                last_access: ts(atime),
                last_modification: ts(mtime),
            },
        )?;
        Ok(())
    }

    /// Permission bits of a directory, file or node here (never a
    /// symlink: the entry is opened without following one).
    pub fn chmod(&self, perm: u32) -> io::Result<()> {
        let fd = rustix::fs::openat(
            &*self.dir,
            &self.name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // fchmod refuses O_PATH descriptors; the /proc link of one names
        // exactly the inode opened.
        let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        match rustix::fs::chmod(proc.as_str(), Mode::from_raw_mode(perm & 0o7777)) {
            Err(Errno::NOENT) => {
                // No /proc (a bare container): by name, which is safe as
                // nothing else writes the output and symlinks are refused.
                if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) == FileType::Symlink {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                Ok(rustix::fs::chmodat(
                    &*self.dir,
                    &self.name,
                    Mode::from_raw_mode(perm & 0o7777),
                    AtFlags::empty(),
                )?)
            }
            other => Ok(other?),
        }
    }

    /// Access and modification times of the entry itself.
    pub fn set_times(&self, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
        let ts = |(sec, nsec): (i64, i64)| Timespec {
            tv_sec: sec,
            tv_nsec: nsec as _,
        };
        let times = Timestamps {
            last_access: ts(atime),
            last_modification: ts(mtime),
        };
        Ok(rustix::fs::utimensat(
            &*self.dir,
            &self.name,
            &times,
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// The directory this entry is in.
    pub fn parent(&self) -> &Arc<OwnedFd> {
        &self.dir
    }

    pub fn name(&self) -> &OsStr {
        &self.name
    }
}

/// `path`'s parent and last name; `/`, `..` and empty names are refused.
fn split(path: &Path) -> io::Result<(PathBuf, OsString)> {
    let mut parent = PathBuf::from("/");
    let mut last: Option<OsString> = None;
    for c in path.components() {
        match c {
            Component::Normal(n) => {
                if let Some(prev) = last.replace(n.to_os_string()) {
                    parent.push(prev);
                }
            }
            Component::RootDir | Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a '..' component",
                ))
            }
        }
    }
    last.map(|name| (parent, name))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))
}

/// `path` relative to the output (`.` for its top).
fn relative(path: &Path) -> PathBuf {
    let mut out = PathBuf::from(".");
    for c in path.components() {
        if let Component::Normal(n) = c {
            out.push(n);
        }
    }
    out
}

/// Open `relative` under `dir` where no component may be a symlink or
/// `..`: `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, or a walk of
/// `O_NOFOLLOW` opens where the kernel lacks it.
fn open_beneath(dir: &OwnedFd, relative: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    if rootfs::openat2_works() {
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        loop {
            match rustix::fs::openat2(dir, relative, flags, Mode::empty(), resolve) {
                Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
                other => return other.map_err(io::Error::from),
            }
        }
    }
    walk_beneath(dir, relative)
}

/// [`open_beneath`] by hand: each component opened `O_NOFOLLOW |
/// O_DIRECTORY` from the previous one (directories only: it finds
/// parents).
fn walk_beneath(dir: &OwnedFd, relative: &Path) -> io::Result<OwnedFd> {
    let mut here = dir.try_clone()?;
    for c in relative.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(name) => {
                here = rustix::fs::openat(
                    &here,
                    name,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
            }
            _ => return Err(io::Error::from_raw_os_error(libc::EXDEV)),
        }
    }
    Ok(here)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn existing_parents_never_go_through_a_symlink() {
        let out = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir(out.path().join("real")).unwrap();
        symlink(outside.path(), out.path().join("evil")).unwrap();
        symlink("real", out.path().join("inner")).unwrap();
        let o = OutDir::open(out.path()).unwrap();
        // The hand-made walk (kernels without openat2) agrees.
        for (path, ok) in [
            ("real", true),
            ("evil", false),
            ("inner", false),
            ("missing", false),
        ] {
            assert_eq!(
                walk_beneath(&o.dir, &relative(Path::new(path))).is_ok(),
                ok,
                "{path}"
            );
        }
        assert!(o.place(Path::new("/evil/x"), Parents::Existing).is_err());
        assert!(o.place(Path::new("/inner/x"), Parents::Existing).is_err());
        assert!(o.place(Path::new("/missing/x"), Parents::Existing).is_err());
        let p = o.place(Path::new("/real/x"), Parents::Existing).unwrap();
        p.create_file().unwrap();
        assert!(out.path().join("real/x").is_file());
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn in_root_parents_are_created_and_symlinks_stay_inside() {
        let out = tempfile::tempdir().unwrap();
        let o = OutDir::open(out.path()).unwrap();
        symlink("/tmp", out.path().join("evil")).unwrap();
        symlink("../../../../..", out.path().join("up")).unwrap();
        symlink("/nowhere", out.path().join("dangling")).unwrap();
        // Through a dangling symlink: an error, not a directory made at
        // its target (GNU tar refuses too).
        assert!(o.place(Path::new("/dangling/x"), Parents::InRoot).is_err());
        fs::create_dir(out.path().join("tmp")).unwrap();
        for (entry, lands) in [
            ("/evil/a/x", "tmp/a/x"),
            ("/up/etc/y", "etc/y"),
            ("/new/deep/dir/z", "new/deep/dir/z"),
        ] {
            let p = o.place(Path::new(entry), Parents::InRoot).unwrap();
            p.create_file().unwrap();
            assert!(out.path().join(lands).is_file(), "{entry}");
        }
        assert!(!Path::new("/tmp/a/x").exists());
    }

    #[test]
    fn entries_replace_what_is_in_the_way_but_directories() {
        let out = tempfile::tempdir().unwrap();
        let o = OutDir::open(out.path()).unwrap();
        symlink("/etc/passwd", out.path().join("link")).unwrap();
        let p = o.place(Path::new("/link"), Parents::Existing).unwrap();
        p.create_file().unwrap();
        assert!(!fs::symlink_metadata(out.path().join("link"))
            .unwrap()
            .file_type()
            .is_symlink());
        p.chmod(0o640).unwrap();
        p.set_times((5, 0), (7, 0)).unwrap();
        let m = fs::metadata(out.path().join("link")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((m.mode() & 0o7777, m.mtime()), (0o640, 7));
        symlink("/etc", out.path().join("dirlink")).unwrap();
        o.place(Path::new("/dirlink"), Parents::Existing)
            .unwrap()
            .make_dir()
            .unwrap();
        assert!(fs::symlink_metadata(out.path().join("dirlink"))
            .unwrap()
            .is_dir());
        fs::create_dir(out.path().join("d")).unwrap();
        assert!(o
            .place(Path::new("/d"), Parents::Existing)
            .unwrap()
            .create_file()
            .is_err());
        assert!(o.place(Path::new("/a/../b"), Parents::Existing).is_err());
    }
}
