//! A root directory (the host's `/`, or another system's `--root`) whose
//! files are read as that system would see them.
//!
//! Every path is resolved *inside* the root: absolute symlinks and `..`
//! stop at it, as in a chroot (`openat2(RESOLVE_IN_ROOT)`, or a checked
//! walk of our own where the kernel lacks it).  Files are opened once,
//! without following a symlink in the last component, and their kind,
//! owner, mode and size are taken from `fstat` of that descriptor: a path
//! checked earlier and opened later could be swapped for a symlink to a
//! secret in between.  Nothing here writes.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// The kernel's own limit on symlinks followed in one lookup.
const MAX_SYMLINKS: usize = 40;

/// Which inode a path named when it was checked, so that opening it again
/// later can prove it is still the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(meta: &fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Does this process run as root (so owners can be kept and any file
/// read)?
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A root directory held open by descriptor.
#[derive(Debug)]
pub struct RootFs {
    path: PathBuf,
    dir: OwnedFd,
    /// Which devices hold a pseudo filesystem (asked once per device).
    pseudo: std::sync::Mutex<std::collections::HashMap<u64, Option<&'static str>>>,
}

impl RootFs {
    /// Open the root directory `path` (symlinks in `path` itself are the
    /// caller's choice and are followed).
    pub fn open(path: &Path) -> io::Result<RootFs> {
        let dir = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(RootFs::from_fd(path.to_path_buf(), dir))
    }

    /// The directory `dir` (a descriptor already held) as a root, shown
    /// as `path`.
    pub fn from_fd(path: PathBuf, dir: OwnedFd) -> RootFs {
        RootFs {
            path,
            dir,
            pseudo: Default::default(),
        }
    }

    /// The host's own root.
    pub fn host() -> io::Result<RootFs> {
        RootFs::open(Path::new("/"))
    }

    /// The root as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Is this the host's `/`?
    pub fn is_host(&self) -> bool {
        self.path == Path::new("/")
    }

    /// Where `path` (absolute inside the root) is when named from outside
    /// it, for messages: `ROOT/usr/bin/bash`.
    pub fn display_path(&self, path: &Path) -> PathBuf {
        self.path.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// The object at `path` itself (a symlink is not followed), opened
    /// with `O_PATH`: good for `fstat` and `readlink`, not for reading.
    fn open_path(&self, path: &Path, follow: bool) -> io::Result<OwnedFd> {
        let flags = OFlags::PATH | OFlags::CLOEXEC;
        self.resolve(path, flags, follow)
    }

    /// `lstat` inside the root.
    pub fn symlink_metadata(&self, path: &Path) -> io::Result<fs::Metadata> {
        if self.is_host() {
            // Inside `/` is where the kernel resolves anyway: one call.
            return fs::symlink_metadata(self.display_path(path));
        }
        fs::File::from(self.open_path(path, false)?).metadata()
    }

    /// `stat` inside the root: a symlink in the last component is
    /// followed, inside the root.
    pub fn metadata(&self, path: &Path) -> io::Result<fs::Metadata> {
        if self.is_host() {
            return fs::metadata(self.display_path(path));
        }
        fs::File::from(self.open_path(path, true)?).metadata()
    }

    /// The target of the symlink at `path`.
    pub fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        if self.is_host() {
            return fs::read_link(self.display_path(path));
        }
        let fd = self.open_path(path, false)?;
        let target = rustix::fs::readlinkat(&fd, "", Vec::new())?;
        Ok(PathBuf::from(OsStr::from_bytes(target.as_bytes())))
    }

    /// Open the regular file at `path` for reading.  A symlink, a FIFO, a
    /// device or a directory there is an error (the open neither follows
    /// nor blocks), and the metadata is that of the file opened.  So is a
    /// file of a kernel pseudo filesystem ([`is_pseudo_file`]).
    pub fn open_regular(&self, path: &Path) -> io::Result<(fs::File, fs::Metadata)> {
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let file = fs::File::from(self.resolve(path, flags, false).map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(io::ErrorKind::InvalidInput, "is a symlink, not a file")
            } else {
                e
            }
        })?);
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "is not a regular file",
            ));
        }
        let pseudo = match self.known_pseudo(meta.dev()) {
            Some(answer) => answer,
            None => {
                let answer = is_pseudo_file(&file);
                self.pseudo
                    .lock()
                    .expect("not poisoned")
                    .insert(meta.dev(), answer);
                answer
            }
        };
        if let Some(fs_name) = pseudo {
            return Err(pseudo_file_error(fs_name));
        }
        Ok((file, meta))
    }

    /// What [`RootFs::open_regular`] learnt about device `dev`: `None` if
    /// it has not met it yet, else the pseudo filesystem it holds, if any.
    fn known_pseudo(&self, dev: u64) -> Option<Option<&'static str>> {
        self.pseudo.lock().expect("not poisoned").get(&dev).copied()
    }

    /// Open `path` again, proving it is still the file `id` named when
    /// it was listed (not a symlink, not another file renamed over it).
    pub fn open_same(&self, path: &Path, id: FileId) -> io::Result<(fs::File, fs::Metadata)> {
        let (file, meta) = self.open_regular(path)?;
        if FileId::of(&meta) != id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "was replaced by another file while the build ran",
            ));
        }
        Ok((file, meta))
    }

    /// Can the file `id` at `path` be read?  Asked while the appliance is
    /// planned, so that every format skips the same unreadable files; the
    /// bytes are read later through [`RootFs::open_same`].  Root can read
    /// anything on a device already known to hold no pseudo filesystem:
    /// no system call then.
    pub fn check_readable(&self, path: &Path, id: FileId) -> io::Result<()> {
        if is_root() && self.known_pseudo(id.dev) == Some(None) {
            return Ok(());
        }
        self.open_same(path, id).map(drop)
    }

    /// The whole content of the regular file at `path`, refused if it is
    /// larger than `limit` bytes (package databases are other people's
    /// data; a hostile one must not exhaust memory).
    pub fn read(&self, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
        let (file, meta) = self.open_regular(path)?;
        read_bounded(file, meta.len(), limit)
    }

    /// The names in directory `path` (a symlink to a directory is
    /// followed, inside the root), without `.` and `..`, unsorted.
    pub fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = self.resolve(path, flags, true)?;
        let mut dir = rustix::fs::Dir::read_from(&fd)?;
        let mut names = Vec::new();
        while let Some(entry) = dir.read() {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(&name).to_os_string());
            }
        }
        Ok(names)
    }

    /// `path` with every symlink resolved inside the root, as a path the
    /// rest of the system can open (`ROOT/...`).  For libraries that only
    /// take paths (SQLite); the answer is only as fresh as the call.
    pub fn resolved_host_path(&self, path: &Path) -> io::Result<PathBuf> {
        let fd = self.open_path(path, true)?;
        let link = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        let real = fs::read_link(link)?;
        let root = fs::canonicalize(&self.path)?;
        if !real.starts_with(&root) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "resolves outside the root",
            ));
        }
        Ok(real)
    }

    /// `path` (absolute inside the root) with every symlink resolved
    /// inside the root, as a path inside it (`/usr/bin` for `/bin` on a
    /// merged-/usr system).
    pub fn canonical(&self, path: &Path) -> io::Result<PathBuf> {
        let real = self.resolved_host_path(path)?;
        let root = fs::canonicalize(&self.path)?;
        let inside = real.strip_prefix(&root).map_err(|_| {
            io::Error::new(io::ErrorKind::PermissionDenied, "resolves outside the root")
        })?;
        Ok(Path::new("/").join(inside))
    }

    /// Open `path` (absolute inside the root) with `flags`; the last
    /// component is followed only with `follow`.
    fn resolve(&self, path: &Path, flags: OFlags, follow: bool) -> io::Result<OwnedFd> {
        open_in_root(&self.dir, &relative(path), flags, follow)
    }
}

/// Open `relative` under the directory `dir` as if `dir` were `/`; the
/// last component is followed only with `follow`.
pub(crate) fn open_in_root(
    dir: &OwnedFd,
    relative: &Path,
    flags: OFlags,
    follow: bool,
) -> io::Result<OwnedFd> {
    if openat2_works() {
        let flags = if follow {
            flags
        } else {
            flags | OFlags::NOFOLLOW
        };
        return openat2_in_root(dir, relative, flags);
    }
    walk_in_root(dir, relative, flags, follow)
}

/// `path` without its leading `/` (`.` for the root itself).
fn relative(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => out.push(".."),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

fn openat2_in_root(dir: &OwnedFd, relative: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    loop {
        match rustix::fs::openat2(dir, relative, flags, Mode::empty(), resolve) {
            // The kernel asks for a retry when a rename raced the lookup.
            Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Does `openat2(2)` work here?  Linux 5.6 added it; old kernels and some
/// container sandboxes (seccomp) refuse it, and then [`walk_in_root`] is
/// used instead.
pub(crate) fn openat2_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        let Ok(root) = rustix::fs::open("/", OFlags::PATH | OFlags::CLOEXEC, Mode::empty()) else {
            return false;
        };
        !matches!(
            openat2_in_root(&root, Path::new("."), OFlags::PATH | OFlags::CLOEXEC),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM))
        )
    })
}

/// `RESOLVE_IN_ROOT` done by hand, one component at a time: each step is
/// opened with `O_NOFOLLOW`; a symlink is read from the descriptor of the
/// link itself and its target resolved from the root (absolute) or the
/// current directory (relative); `..` never goes above the root; more
/// than 40 symlinks is `ELOOP`, never a partly resolved path.
fn walk_in_root(
    root: &OwnedFd,
    relative: &Path,
    flags: OFlags,
    follow: bool,
) -> io::Result<OwnedFd> {
    let dup = |fd: &OwnedFd| fd.try_clone();
    // The directories entered so far: `..` pops, the root is never popped.
    let mut stack: Vec<OwnedFd> = vec![dup(root)?];
    let mut pending: std::collections::VecDeque<OsString> = relative
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    let mut hops = 0usize;
    while let Some(name) = pending.pop_front() {
        let last = pending.is_empty();
        if name == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            if last {
                let here = stack.last().expect("root stays");
                return rustix::fs::openat(here, ".", flags, Mode::empty()).map_err(Into::into);
            }
            continue;
        }
        let here = stack.last().expect("root stays");
        if last && !follow {
            return rustix::fs::openat(
                here,
                name.as_os_str(),
                flags | OFlags::NOFOLLOW,
                Mode::empty(),
            )
            .map_err(Into::into);
        }
        let step = rustix::fs::openat(
            here,
            name.as_os_str(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let stat = rustix::fs::fstat(&step)?;
        let kind = rustix::fs::FileType::from_raw_mode(stat.st_mode);
        if kind == rustix::fs::FileType::Symlink {
            hops += 1;
            if hops > MAX_SYMLINKS {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            let target = rustix::fs::readlinkat(&step, "", Vec::new())?;
            let target = Path::new(OsStr::from_bytes(target.as_bytes()));
            if target.is_absolute() {
                stack.truncate(1);
            }
            for c in target.components().rev() {
                match c {
                    Component::Normal(n) => pending.push_front(n.to_os_string()),
                    Component::ParentDir => pending.push_front(OsString::from("..")),
                    _ => {}
                }
            }
            if pending.is_empty() {
                // A link to `/` (or to `.`): the directory we are in.
                let here = stack.last().expect("root stays");
                return rustix::fs::openat(here, ".", flags, Mode::empty()).map_err(Into::into);
            }
            continue;
        }
        if last {
            // Open what we checked: the same name, not followed, and it
            // must be the same inode as the step (no swap in between).
            let fd = rustix::fs::openat(
                here,
                name.as_os_str(),
                flags | OFlags::NOFOLLOW,
                Mode::empty(),
            )?;
            let again = rustix::fs::fstat(&fd)?;
            if (again.st_dev, again.st_ino) != (stat.st_dev, stat.st_ino) {
                return Err(io::Error::from_raw_os_error(libc::EAGAIN));
            }
            return Ok(fd);
        }
        if kind != rustix::fs::FileType::Directory {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        stack.push(step);
    }
    // An empty path: the root itself.
    rustix::fs::openat(root.as_fd(), ".", flags, Mode::empty()).map_err(Into::into)
}

/// The name of the kernel pseudo filesystem `file` is on, if it is on one:
/// procfs, sysfs and their kin, whose "regular files" are views of kernel
/// state with sizes that are not their contents (`/proc/self/pagemap`
/// says 0 bytes and reads without end, `/proc/kcore` says 128 TiB).  They
/// are never copied into an appliance.
pub fn is_pseudo_file(file: &fs::File) -> Option<&'static str> {
    let magic = rustix::fs::fstatfs(file).ok()?.f_type as i64;
    PSEUDO_FILESYSTEMS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

/// `statfs(2)` magic numbers (linux/magic.h) of pseudo filesystems.
const PSEUDO_FILESYSTEMS: &[(i64, &str)] = &[
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0xcafe_4a11, "bpf"),
    (0x6165_676c, "pstore"),
    (0xde5e_81e4, "efivarfs"),
    (0x6265_6570, "configfs"),
    (0x6573_5543, "fusectl"),
    (0x4249_4e4d, "binfmt_misc"),
];

/// The error [`RootFs::open_regular`] gives for a pseudo file; callers
/// skip such files with a warning ([`is_pseudo_file_error`]).
fn pseudo_file_error(fs_name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("is on the {fs_name} pseudo filesystem, whose files are views of kernel state"),
    )
}

/// Is `e` the error of a file on a pseudo filesystem?
pub fn is_pseudo_file_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
}

/// Read a file of `size` bytes (as `fstat` said) but never more than
/// `limit`: a file that claims or grows past it is an error.
pub fn read_bounded(file: fs::File, size: u64, limit: u64) -> io::Result<Vec<u8>> {
    if size > limit {
        return Err(too_large(limit));
    }
    let mut data = Vec::with_capacity(size as usize);
    file.take(limit + 1).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(too_large(limit));
    }
    Ok(data)
}

fn too_large(limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("is larger than {limit} bytes"),
    )
}

/// Lexically clean an absolute path: drop `.`, apply `..` (not above `/`).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn normalize_stops_at_root() {
        assert_eq!(
            normalize(Path::new("/a/../../b/./c")),
            PathBuf::from("/b/c")
        );
    }

    /// A root with symlinks that lead out of it if followed by the kernel.
    fn hostile_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("usr/lib")).unwrap();
        fs::create_dir_all(r.join("etc")).unwrap();
        fs::write(r.join("usr/lib/inside"), "inside").unwrap();
        fs::write(r.join("etc/shadow"), "root's own shadow").unwrap();
        symlink("/usr/lib", r.join("lib")).unwrap();
        symlink("/etc", r.join("evil")).unwrap();
        symlink("../../../../../../etc", r.join("usr/up")).unwrap();
        symlink("/etc/shadow", r.join("etc/link")).unwrap();
        // A chain of 45 links ending at /etc: the kernel's limit is 40.
        for i in 0..45 {
            let next = if i == 44 {
                "/etc".to_string()
            } else {
                format!("/c{}", i + 1)
            };
            symlink(next, r.join(format!("c{i}"))).unwrap();
        }
        root
    }

    fn both_ways(f: impl Fn(&dyn Fn(&RootFs, &Path, OFlags, bool) -> io::Result<OwnedFd>)) {
        f(&|r, p, fl, follow| {
            let rel = relative(p);
            let fl = if follow { fl } else { fl | OFlags::NOFOLLOW };
            openat2_in_root(&r.dir, &rel, fl)
        });
        f(&|r, p, fl, follow| walk_in_root(&r.dir, &relative(p), fl, follow));
    }

    fn content(fd: io::Result<OwnedFd>) -> io::Result<String> {
        let mut s = String::new();
        fs::File::from(fd?).read_to_string(&mut s)?;
        Ok(s)
    }

    #[test]
    fn symlinks_and_dotdot_resolve_inside_the_root() {
        let root = hostile_root();
        let r = RootFs::open(root.path()).unwrap();
        both_ways(|open| {
            let read = |p: &str| content(open(&r, Path::new(p), OFlags::RDONLY, true));
            assert_eq!(read("/lib/inside").unwrap(), "inside");
            assert_eq!(read("/evil/shadow").unwrap(), "root's own shadow");
            assert_eq!(read("/usr/up/shadow").unwrap(), "root's own shadow");
            assert_eq!(read("/../../etc/shadow").unwrap(), "root's own shadow");
            assert_eq!(read("/etc/link").unwrap(), "root's own shadow");
            // Past the kernel's symlink limit: an error, never the host.
            let err = read("/c0/shadow").unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
            // Without following, the last symlink is itself opened.
            let fd = open(&r, Path::new("/etc/link"), OFlags::PATH, false).unwrap();
            assert!(fs::File::from(fd)
                .metadata()
                .unwrap()
                .file_type()
                .is_symlink());
        });
    }

    #[test]
    fn open_regular_refuses_symlinks_fifos_and_directories() {
        let root = hostile_root();
        let r = RootFs::open(root.path()).unwrap();
        let fifo = root.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        for bad in ["/etc/link", "/fifo", "/etc", "/lib"] {
            assert!(r.open_regular(Path::new(bad)).is_err(), "{bad}");
        }
        let host = RootFs::host().unwrap();
        for pseudo in [
            "/proc/self/pagemap",
            "/proc/self/status",
            "/sys/kernel/mm/transparent_hugepage/enabled",
        ] {
            if Path::new(pseudo).exists() {
                let e = host.open_regular(Path::new(pseudo)).unwrap_err();
                assert!(is_pseudo_file_error(&e), "{pseudo}: {e}");
            }
        }
        let (_, meta) = r.open_regular(Path::new("/lib/inside")).unwrap();
        assert_eq!(meta.len(), 6);
        assert!(
            r.read(Path::new("/lib/inside"), 5).is_err(),
            "over the limit"
        );
        assert_eq!(r.read(Path::new("/lib/inside"), 6).unwrap(), b"inside");
    }

    #[test]
    fn open_same_notices_a_swap() {
        let root = hostile_root();
        let r = RootFs::open(root.path()).unwrap();
        let p = root.path().join("usr/lib/inside");
        let id = FileId::of(&fs::symlink_metadata(&p).unwrap());
        assert!(r.open_same(Path::new("/usr/lib/inside"), id).is_ok());
        // Renamed aside, not removed: a freed inode number can be reused.
        fs::rename(&p, root.path().join("aside")).unwrap();
        symlink("/etc/shadow", &p).unwrap();
        assert!(r.open_same(Path::new("/usr/lib/inside"), id).is_err());
        fs::remove_file(&p).unwrap();
        fs::write(&p, "another file").unwrap();
        assert!(r.open_same(Path::new("/usr/lib/inside"), id).is_err());
    }

    #[test]
    fn metadata_links_and_directories() {
        let root = hostile_root();
        let r = RootFs::open(root.path()).unwrap();
        assert!(r
            .symlink_metadata(Path::new("/lib"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(r.metadata(Path::new("/lib")).unwrap().is_dir());
        assert!(r.metadata(Path::new("/evil")).unwrap().is_dir());
        assert_eq!(
            r.read_link(Path::new("/lib")).unwrap(),
            PathBuf::from("/usr/lib")
        );
        let mut names = r.read_dir(Path::new("/lib")).unwrap();
        names.sort();
        assert_eq!(names, vec![OsString::from("inside")]);
        let real = r.resolved_host_path(Path::new("/evil")).unwrap();
        assert_eq!(real, fs::canonicalize(root.path().join("etc")).unwrap());
    }
}
