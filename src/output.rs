//! Output safety: build into `OUT.<random>` beside OUT and swap it in, so a
//! failed or interrupted build never leaves a half-written OUT or loses the
//! previous one; `--lock`; `--if-newer`.
//!
//! OUT's directory may belong to someone else, who can rename and replace
//! what is in it at any moment.  So everything here works on descriptors:
//! the staging directory is created, checked empty, marked and locked
//! through its own descriptor, written through it (see [`crate::outdir`]),
//! and swapped in by name only after checking the name still leads to it.
//! Nothing is ever written, listed or removed through a path that a symlink
//! could redirect.
//!
//! What this program deletes it has provably made, or was asked to
//! replace: a directory left by a killed build is removed only if it has
//! the staging name, is owned by this user, holds the [`MARKER`] file and
//! no live process holds its lock.  A user's `app.20240601` or another
//! user's scratch directory is never touched.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};
use crate::report::Reporter;

/// The file that marks a directory as made by this program: a staging
/// output, a scratch directory, or a replaced output being removed.  It is
/// removed from a staging directory just before that becomes the output.
pub const MARKER: &str = ".supermin-staging";

/// A hidden `.PREFIX<8 random>` exists only between creating and locking,
/// microseconds; one older than this was left by a process killed then.
const HIDDEN_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// `path`'s parent directory, opened (the user chose the path: symlinks in
/// it are followed), and the last name.
fn open_parent(path: &Path) -> io::Result<(OwnedFd, OsString)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a valid directory name"))?;
    let parent = path.parent().unwrap_or(Path::new("/"));
    let fd = rustix::fs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok((fd, name.to_os_string()))
}

/// Open the directory `name` in `parent` for reading, never through a
/// symlink.
fn open_dir_at(parent: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// (device, inode) of a descriptor, or of `name` in `parent` (not followed).
fn identity(fd: &OwnedFd) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

fn identity_at(parent: &OwnedFd, name: &OsStr) -> io::Result<(u64, u64)> {
    let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok((st.st_dev, st.st_ino))
}

/// Try to take the flock of a directory descriptor.
fn try_lock(dir: &OwnedFd) -> io::Result<bool> {
    match rustix::fs::flock(dir, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Create [`MARKER`] in `dir` (a descriptor): never through a symlink, and
/// replacing whatever a previous owner of the directory left by that name.
fn mark(dir: &OwnedFd) -> io::Result<()> {
    let _ = rustix::fs::unlinkat(dir, MARKER, AtFlags::empty());
    let fd = rustix::fs::openat(
        dir,
        MARKER,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    rustix::io::write(
        &fd,
        b"made by supermin; removed when no supermin process holds it\n",
    )?;
    Ok(())
}

/// Is the directory `dir` ours: owned by this user and holding a regular
/// [`MARKER`] of this user?
fn is_ours(dir: &OwnedFd) -> bool {
    let uid = euid();
    let Ok(st) = rustix::fs::fstat(dir) else {
        return false;
    };
    if st.st_uid != uid {
        return false;
    }
    matches!(
        rustix::fs::statat(dir, MARKER, AtFlags::SYMLINK_NOFOLLOW),
        Ok(m) if rustix::fs::FileType::from_raw_mode(m.st_mode) == rustix::fs::FileType::RegularFile
            && m.st_uid == uid
    )
}

/// Remove everything inside the directory `dir`, through descriptors only
/// (a symlink inside is removed, never followed), [`MARKER`] last, so that
/// a run killed half-way still leaves it recognisably ours.  Directories
/// this user owns but cannot enter (a chroot's 0555 ones, for a non-root
/// builder) are made accessible first; others' are left as they are.
fn remove_contents(dir: &OwnedFd) -> io::Result<()> {
    // (directory, names left to remove in it): an explicit stack, for
    // trees of any depth.
    let mut stack: Vec<(OwnedFd, Vec<OsString>)> = vec![(dir.try_clone()?, list(dir)?)];
    while let Some((here, names)) = stack.last_mut() {
        let Some(name) = names.pop() else {
            stack.pop();
            continue;
        };
        match rustix::fs::unlinkat(&*here, name.as_os_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => continue,
            Err(Errno::ISDIR) | Err(Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
        // A directory: empty it first, then come back for it.
        let child = match open_dir_at(here, &name) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                make_accessible(here, &name)?;
                open_dir_at(here, &name)?
            }
            Err(e) => return Err(e),
        };
        let inner = list(&child)?;
        if inner.is_empty() {
            remove_dir_at(here, &name)?;
        } else {
            names.push(name);
            stack.push((child, inner));
        }
    }
    Ok(())
}

/// `rmdir` of `name` in `parent`; already gone is fine.
fn remove_dir_at(parent: &OwnedFd, name: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// chmod 0700 the directory `name` in `parent` if this user owns it (the
/// directory itself: it is opened without following a symlink, and changed
/// through its `/proc/self/fd` link).
fn make_accessible(parent: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if rustix::fs::fstat(&fd)?.st_uid != euid() {
        return Err(io::Error::from_raw_os_error(libc::EACCES));
    }
    let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(rustix::fs::chmod(
        proc.as_str(),
        Mode::from_raw_mode(0o700),
    )?)
}

/// The names in a directory descriptor (but `.` and `..`), [`MARKER`]
/// first so that it is removed last.
fn list(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    // A readable descriptor of the same directory (`dir` may be O_PATH).
    let readable = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut reader = rustix::fs::Dir::read_from(&readable)?;
    let mut names = Vec::new();
    while let Some(entry) = reader.read() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(&name).to_os_string());
        }
    }
    names.sort_by_key(|n| n != MARKER);
    Ok(names)
}

/// Remove the entry `name` of `parent`: a directory with everything in it
/// (through descriptors), anything else by unlinking the name itself.
fn remove_entry(parent: &OwnedFd, name: &OsStr) {
    match open_dir_at(parent, name) {
        Ok(dir) => remove_dir_held(parent, name, &dir),
        Err(_) => {
            let _ = rustix::fs::unlinkat(parent, name, AtFlags::empty());
        }
    }
}

/// Remove the directory `dir` (a descriptor, already checked by the
/// caller): its contents through that very descriptor, then `name` in
/// `parent` if the name still leads to it.  Whatever is renamed into
/// `name` meanwhile is never what gets emptied.
fn remove_dir_held(parent: &OwnedFd, name: &OsStr, dir: &OwnedFd) {
    if remove_contents(dir).is_ok() && identity(dir).ok() == identity_at(parent, name).ok() {
        let _ = remove_dir_at(parent, name);
    }
}

/// Remove what killed processes left in `parent`: directories named
/// `PREFIX<8 random>` (and, with `aside`, `PREFIX old.<pid>`) that are
/// ours ([`is_ours`]) and that no live process holds locked.  A process
/// locks such a directory before giving it that name (see
/// [`create_locked_dir`]), so an unlocked one has no live owner.
fn remove_stale(parent: &OwnedFd, prefix: &OsStr, aside: bool) {
    let Ok(names) = list(parent) else {
        return;
    };
    for name in names {
        let bytes = name.as_bytes();
        let hidden = bytes.first() == Some(&b'.');
        let Some(rest) = bytes
            .strip_prefix(b".")
            .unwrap_or(bytes)
            .strip_prefix(prefix.as_bytes())
        else {
            continue;
        };
        let random = rest.len() == 8 && rest.iter().all(u8::is_ascii_alphanumeric);
        let set_aside = aside
            && !hidden
            && rest
                .strip_prefix(b"old.")
                .is_some_and(|pid| !pid.is_empty() && pid.iter().all(u8::is_ascii_digit));
        if !random && !set_aside {
            continue;
        }
        let Ok(dir) = open_dir_at(parent, &name) else {
            continue;
        };
        let old_enough = !hidden
            || rustix::fs::fstat(&dir).is_ok_and(|st| {
                let mtime = std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(st.st_mtime.max(0) as u64);
                mtime.elapsed().is_ok_and(|age| age > HIDDEN_GRACE)
            });
        if old_enough && is_ours(&dir) && try_lock(&dir).unwrap_or(false) {
            remove_dir_held(parent, &name, &dir);
        } else if hidden && random && is_empty_and_mine(parent, &dir) {
            // A build killed between making its hidden directory and
            // marking it.  Empty, so nothing is lost; rmdir refuses
            // anything that gained an entry meanwhile, and a live builder
            // whose directory this was takes another name.
            let _ = rmdir_if_same(parent, &name, &dir);
        }
    }
}

/// Is `dir` (in `parent`) an empty directory of this user, on the same
/// filesystem as `parent` (not a mount point)?
fn is_empty_and_mine(parent: &OwnedFd, dir: &OwnedFd) -> bool {
    let (Ok(st), Ok(up)) = (rustix::fs::fstat(dir), rustix::fs::fstat(parent)) else {
        return false;
    };
    st.st_uid == euid() && st.st_dev == up.st_dev && list(dir).is_ok_and(|n| n.is_empty())
}

/// `rmdir` of `name` in `parent` if it still leads to `dir`.
fn rmdir_if_same(parent: &OwnedFd, name: &OsStr, dir: &OwnedFd) -> io::Result<()> {
    if identity(dir)? == identity_at(parent, name)? {
        rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
    }
    Ok(())
}

/// A directory this process made and holds: its parent, its name there,
/// and its own descriptor, which carries the flock.
#[derive(Debug)]
struct Held {
    parent: OwnedFd,
    name: OsString,
    dir: OwnedFd,
}

impl Held {
    /// Does `name` in `parent` still lead to our directory?
    fn in_place(&self) -> io::Result<bool> {
        Ok(identity(&self.dir)? == identity_at(&self.parent, &self.name)?)
    }

    /// Remove our directory: its contents through its descriptor, then the
    /// name, if the name still leads to it.
    fn remove(&self) {
        remove_dir_held(&self.parent, &self.name, &self.dir);
    }
}

/// Eight random letters and digits.
fn random_name() -> io::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 8];
    let mut filled = 0;
    while filled < bytes.len() {
        filled +=
            rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect())
}

/// A new directory `PREFIX<8 random>` in `parent`, locked for as long as
/// this process keeps it.  It is made under a hidden name no cleaner acts
/// on within [`HIDDEN_GRACE`], opened without following a symlink, checked
/// to be ours and empty (whatever someone swapped in meanwhile is refused),
/// marked, locked, and only then given its name; the name is checked to
/// lead to it afterwards.
fn create_locked_dir(mut parent: OwnedFd, prefix: &OsStr, mode: u32) -> io::Result<Held> {
    let tampered = || io::Error::other("was replaced by someone else while being created");
    for _ in 0..100 {
        let random = random_name()?;
        let mut hidden = OsString::from(".");
        hidden.push(prefix);
        hidden.push(&random);
        match rustix::fs::mkdirat(&parent, hidden.as_os_str(), Mode::from_raw_mode(mode)) {
            Ok(()) => {}
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
        // Another builder's sweep may remove the directory while it is
        // still empty: then take another name.
        let dir = match open_dir_at(&parent, &hidden) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            other => other?,
        };
        let st = rustix::fs::fstat(&dir)?;
        if st.st_uid != euid() || !list(&dir)?.is_empty() {
            return Err(tampered());
        }
        let held = Held {
            parent,
            name: hidden,
            dir,
        };
        let made = mark(&held.dir).and_then(|()| {
            if try_lock(&held.dir)? {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "locked by another process",
                ))
            }
        });
        match made {
            Ok(()) => {}
            // Swept while empty (see above): another name.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                parent = held.parent;
                continue;
            }
            Err(e) => {
                held.remove();
                return Err(e);
            }
        }
        let mut name = prefix.to_os_string();
        name.push(&random);
        let renamed = rustix::fs::renameat_with(
            &held.parent,
            held.name.as_os_str(),
            &held.parent,
            name.as_os_str(),
            rustix::fs::RenameFlags::NOREPLACE,
        );
        let held = Held { name, ..held };
        return match renamed {
            Ok(()) if held.in_place()? => Ok(held),
            Ok(()) => {
                // Ours, moved elsewhere: emptied (marker included) so
                // that it is never taken for a killed build's leftover.
                held.remove();
                Err(tampered())
            }
            Err(e) => {
                held.remove();
                Err(e.into())
            }
        };
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free random name after 100 tries",
    ))
}

/// A fresh `OUT.<random>` directory that becomes OUT on [`commit`]; it is
/// removed if dropped uncommitted (an error, or a panic unwinding).
///
/// [`commit`]: Staging::commit
#[derive(Debug)]
pub struct Staging {
    output: PathBuf,
    out_name: OsString,
    held: Option<Held>,
}

impl Staging {
    /// A staging directory for `output`, which must not be, or contain,
    /// the current directory or any of `inputs` ([`check_location`]).
    pub fn new(output: &Path, inputs: &[PathBuf]) -> Result<Staging> {
        let output = check_location(output, inputs)?;
        let (parent, out_name) = open_parent(&output).map_err(|e| {
            Error::output(
                &output,
                format!("cannot open the directory it goes in: {e}"),
            )
        })?;
        match rustix::fs::statat(&parent, out_name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st)
                if rustix::fs::FileType::from_raw_mode(st.st_mode)
                    != rustix::fs::FileType::Directory =>
            {
                return Err(Error::output(
                    &output,
                    "exists and is not a directory; refusing to replace it",
                ));
            }
            _ => {}
        }
        let mut prefix = out_name.clone();
        prefix.push(".");
        remove_stale(&parent, &prefix, true);
        let held = create_locked_dir(parent, &prefix, 0o755).map_err(|e| {
            Error::output(
                &output,
                format!(
                    "cannot create the output beside it in {}: {e}",
                    output.parent().unwrap_or(Path::new("/")).display()
                ),
            )
        })?;
        Ok(Staging {
            output,
            out_name,
            held: Some(held),
        })
    }

    fn held(&self) -> &Held {
        self.held
            .as_ref()
            .expect("staging directory exists until commit")
    }

    /// Where the output is being written, for messages.  Write through
    /// [`Staging::outdir`], never through this path.
    pub fn path(&self) -> PathBuf {
        self.output
            .parent()
            .unwrap_or(Path::new("/"))
            .join(&self.held().name)
    }

    /// The staging directory, to write into by descriptor.
    pub fn outdir(&self) -> Result<crate::outdir::OutDir> {
        Ok(crate::outdir::OutDir::from_fd(self.path(), self.dir()?))
    }

    /// The staging directory's own descriptor (read-only, for what is set
    /// on the directory itself, such as the stamp's attribute).
    pub fn dir(&self) -> Result<OwnedFd> {
        self.held().dir.try_clone().at("opening", self.path())
    }

    /// The final output path.
    pub fn output(&self) -> &Path {
        &self.output
    }

    /// Swap the finished output in.  With `renameat2(RENAME_EXCHANGE)` OUT
    /// is never missing, not even for an instant; where that is not
    /// supported, OUT is renamed aside first, then the new one renamed in.
    /// What was at OUT is then removed through descriptors: if it was a
    /// symlink, the symlink itself.
    pub fn commit(mut self) -> Result<PathBuf> {
        let shown = self.path();
        let held = self.held.take().expect("commit once");
        let out = self.output.clone();
        let fail = |what: &str, e: io::Error| Error::output(&out, format!("{what}: {e}"));
        let result = (|| {
            // From here on the directory is the user's output, not ours.
            rustix::fs::unlinkat(&held.dir, MARKER, AtFlags::empty())
                .map_err(|e| fail("cannot finish the output", e.into()))?;
            // A fresh mtime on OUT itself, for --if-newer.
            rustix::fs::futimens(
                &held.dir,
                &rustix::fs::Timestamps {
                    last_access: now(),
                    last_modification: now(),
                },
            )
            .map_err(|e| fail("cannot set its times", e.into()))?;
            if !held.in_place().unwrap_or(false) {
                return Err(fail(
                    "cannot replace it",
                    io::Error::other(format!(
                        "{} was moved or replaced while the build ran",
                        shown.display()
                    )),
                ));
            }
            let (parent, name, out_name) = (
                &held.parent,
                held.name.as_os_str(),
                self.out_name.as_os_str(),
            );
            let exists = rustix::fs::statat(parent, out_name, AtFlags::SYMLINK_NOFOLLOW).is_ok();
            if !exists {
                match rustix::fs::renameat_with(
                    parent,
                    name,
                    parent,
                    out_name,
                    rustix::fs::RenameFlags::NOREPLACE,
                ) {
                    Ok(()) => return Ok(()),
                    Err(Errno::EXIST) => {}
                    Err(e) => return Err(fail("cannot create", e.into())),
                }
            }
            match rustix::fs::renameat_with(
                parent,
                name,
                parent,
                out_name,
                rustix::fs::RenameFlags::EXCHANGE,
            ) {
                Ok(()) => {
                    // `name` now holds the previous output (or whatever
                    // was at OUT).  It is marked ours where it is ours, so
                    // that a kill while removing it is finished later.
                    match open_dir_at(parent, name) {
                        Ok(old) => {
                            if rustix::fs::fstat(&old).is_ok_and(|st| st.st_uid == euid()) {
                                let _ = mark(&old);
                            }
                            remove_dir_held(parent, name, &old);
                        }
                        Err(_) => {
                            let _ = rustix::fs::unlinkat(parent, name, AtFlags::empty());
                        }
                    }
                    Ok(())
                }
                Err(_) => {
                    let mut aside = self.out_name.clone();
                    aside.push(format!(".old.{}", std::process::id()));
                    if let Ok(old) = open_dir_at(parent, out_name) {
                        if rustix::fs::fstat(&old).is_ok_and(|st| st.st_uid == euid()) {
                            let _ = mark(&old);
                        }
                    }
                    rustix::fs::renameat(parent, out_name, parent, aside.as_os_str())
                        .and_then(|()| rustix::fs::renameat(parent, name, parent, out_name))
                        .map_err(|e| fail("cannot replace", e.into()))?;
                    remove_entry(parent, &aside);
                    Ok(())
                }
            }
        })();
        if result.is_err() {
            held.remove();
        }
        result.map(|()| self.output.clone())
    }
}

fn now() -> rustix::fs::Timespec {
    let d = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rustix::fs::Timespec {
        tv_sec: d.as_secs() as _,
        tv_nsec: d.subsec_nanos() as _,
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            held.remove();
        }
    }
}

/// An absolute path without resolving symlinks of the last component.
pub fn absolute(path: &Path) -> Result<PathBuf> {
    let path = std::path::absolute(path).at("resolving", path)?;
    let trimmed = path.as_os_str().as_bytes();
    let trimmed = if trimmed.len() > 1 {
        trimmed.strip_suffix(b"/").unwrap_or(trimmed)
    } else {
        trimmed
    };
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(trimmed)))
}

/// Where `output` really is: its parent with symlinks resolved, then its
/// own name (not resolved: a symlink there is refused later).  `.`, `..`
/// and trailing slashes are resolved first, so `-o .` names the current
/// directory itself, not an entry of its parent.
fn real_location(output: &Path) -> Result<PathBuf> {
    let lexical = absolute(output)?;
    let ends_in_dots = matches!(
        output.components().next_back(),
        Some(std::path::Component::CurDir | std::path::Component::ParentDir)
    ) || lexical.file_name().is_none();
    if ends_in_dots {
        return fs::canonicalize(&lexical).at("resolving", output);
    }
    match (lexical.parent(), lexical.file_name()) {
        (Some(parent), Some(name)) => Ok(fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or(lexical.clone())),
        _ => Ok(lexical),
    }
}

/// Check where an output may go, and return its absolute path.  Replacing
/// OUT removes what was there, so OUT may not be `/`, the current
/// directory or one of its ancestors (`-o .` would swap the user's
/// working directory out and delete it), nor contain an input (`-o outer`
/// for the input `outer/sd` would delete the input), nor be inside one
/// (the build would read itself).
pub fn check_location(output: &Path, inputs: &[PathBuf]) -> Result<PathBuf> {
    let out = real_location(output)?;
    let refuse = |why: String| Err(Error::output(&out, why));
    if out.parent().is_none() {
        return refuse("is the root directory; choose a new directory for the output".into());
    }
    if let Ok(cwd) = std::env::current_dir().and_then(fs::canonicalize) {
        if cwd.starts_with(&out) {
            let what = if cwd == out {
                "is the current directory"
            } else {
                "contains the current directory"
            };
            return refuse(format!(
                "{what}, which replacing it would delete; choose a new directory for the output"
            ));
        }
    }
    for input in inputs {
        let Ok(input) = fs::canonicalize(input) else {
            continue;
        };
        if out.starts_with(&input) {
            return refuse(format!(
                "is inside the input {}; choose an output outside it",
                input.display()
            ));
        }
        if input.starts_with(&out) {
            return refuse(format!(
                "contains the input {}, which replacing it would delete; choose another output",
                input.display()
            ));
        }
    }
    Ok(out)
}

/// A POSIX (fcntl) write lock on a file, held until dropped.  fcntl locks
/// are what upstream supermin takes (`lockf`), so the two exclude each other.
#[derive(Debug)]
pub struct Lock {
    _file: fs::File,
}

impl Lock {
    /// Wait until the lock on `path` (created if needed) is ours, or the
    /// caller cancels.  The lock file must be a regular file: a FIFO would
    /// block the open forever and a device could act on it, so what is
    /// there is checked first, the open neither follows a symlink nor
    /// blocks, and the file opened is checked again.
    pub fn acquire(path: &Path, reporter: &Reporter) -> Result<Lock> {
        use std::os::unix::fs::OpenOptionsExt;
        let not_regular = || {
            Error::output(
                path,
                "the lock file exists and is not a regular file (a FIFO, device, directory or symlink)",
            )
        };
        if fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
            return Err(not_regular());
        }
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) | Some(libc::ENXIO) => not_regular(),
                _ => Error::output(path, format!("cannot open lock file: {e}")),
            })?;
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(not_regular());
        }
        // SAFETY: flock is plain data; F_SETLKW on a valid fd.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        // Polled rather than blocking (F_SETLKW), so that a cancel is
        // heard while another builder holds the lock.
        loop {
            reporter.check()?;
            // SAFETY: F_SETLK on a valid descriptor with a valid flock.
            let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) };
            if rc == 0 {
                return Ok(Lock { _file: file });
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EACCES) | Some(libc::EAGAIN) | Some(libc::EINTR) => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                _ => return Err(Error::output(path, format!("cannot lock: {err}"))),
            }
        }
    }
}

/// The newest mtime of `path`, looking inside directories (so a file
/// edited in place inside an input directory counts, unlike upstream).
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    // Directory symlinks are followed, each directory once: symlinks that
    // fan out (`d0/{x,y} -> d1`, `d1/{x,y} -> d2`, ...) would otherwise
    // make the walk exponential.
    let mut seen = std::collections::HashSet::new();
    walkdir::WalkDir::new(path)
        .follow_links(true)
        .into_iter()
        .filter_entry(move |e| {
            !e.file_type().is_dir() || e.metadata().is_ok_and(|m| seen.insert((m.dev(), m.ino())))
        })
        .flatten()
        .filter_map(|e| {
            let link = fs::symlink_metadata(e.path()).ok()?.modified().ok();
            let target = e.metadata().ok()?.modified().ok();
            link.max(target)
        })
        .max()
}

/// `--if-newer`: is OUT (and each of `files` inside it) newer than every
/// input and the package database?  Any missing output means rebuild.
pub fn is_up_to_date(
    output: &Path,
    files: &[&str],
    inputs: &[PathBuf],
    database: SystemTime,
) -> bool {
    // An output that is not a directory (a file someone put there) is
    // never up to date: the build then says why it cannot replace it.
    if !fs::symlink_metadata(output).is_ok_and(|m| m.is_dir()) {
        return false;
    }
    let mut outputs = vec![output.to_path_buf()];
    outputs.extend(files.iter().map(|f| output.join(f)));
    let Some(oldest_output) = outputs
        .iter()
        .map(|o| fs::symlink_metadata(o).and_then(|m| m.modified()).ok())
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().min())
    else {
        return false;
    };
    let mut newest_input = database;
    for input in inputs {
        match newest_mtime(input) {
            Some(t) => newest_input = newest_input.max(t),
            None => return false,
        }
    }
    newest_input < oldest_output
}

/// A private scratch directory, `supermin.<8 random>` in a
/// [`ScratchBase`], removed when dropped.  Like a staging output it is
/// marked and locked for its owner's life, so the next one made removes
/// any that killed processes left.  (Upstream's are `supermin*.tmpdir` and
/// are left alone.)
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    held: Held,
}

impl Scratch {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.held.remove();
    }
}

/// Where scratch directories are made: an absolute directory chosen by the
/// program's edge (`$TMPDIR` for the command line and the Python module,
/// see [`ScratchBase::from_env`]); `/var/tmp` by default, not `/tmp`,
/// which is often a small tmpfs and downloaded packages can be large.
/// The core itself never reads the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScratchBase(PathBuf);

impl Default for ScratchBase {
    fn default() -> Self {
        ScratchBase(PathBuf::from("/var/tmp"))
    }
}

impl ScratchBase {
    /// `dir`, which must be absolute (a relative one would move with the
    /// working directory of whoever is handed a path inside it).
    pub fn new(dir: impl Into<PathBuf>) -> Result<ScratchBase> {
        let dir = dir.into();
        if !dir.is_absolute() {
            return Err(Error::Usage(format!(
                "TMPDIR ({}) must be an absolute path",
                dir.display()
            )));
        }
        Ok(ScratchBase(dir))
    }

    /// `$TMPDIR` if set and not empty, else the default, for programs
    /// reading their environment at their edge.
    pub fn from_env() -> Result<ScratchBase> {
        match std::env::var_os("TMPDIR") {
            Some(t) if !t.is_empty() => ScratchBase::new(t),
            _ => Ok(ScratchBase::default()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A new private scratch directory here.  The base and every directory
    /// above it must be safe (see [`check_trusted`]).
    pub fn create(&self) -> Result<Scratch> {
        let base = &self.0;
        check_trusted(base)?;
        let prefix = OsStr::new("supermin.");
        let open = || {
            rustix::fs::open(
                base,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        };
        let parent = open().map_err(io::Error::from).at("opening", base)?;
        remove_stale(&parent, prefix, false);
        let held =
            create_locked_dir(parent, prefix, 0o700).at("creating a scratch directory in", base)?;
        Ok(Scratch {
            path: base.join(&held.name),
            held,
        })
    }
}

/// Refuse a scratch base that someone else could rearrange: scratch
/// directories are handed by path to `apt-get` and `dnf` (see
/// [`no_one_else_can_change`]).
fn check_trusted(base: &Path) -> Result<()> {
    no_one_else_can_change(base).map_err(|why| {
        Error::Usage(format!(
            "TMPDIR {} is not safe for scratch files: {why} (someone else could replace them); \
             use a directory of your own or /var/tmp",
            base.display(),
        ))
    })
}

/// `dir`, made (mode 0700) if missing, when no one but root and this user
/// can change it or what its path leads to (see
/// [`no_one_else_can_change`]): a cache whose files are handed to others by
/// path.  The reason when not.
pub fn private_dir(dir: &Path) -> std::result::Result<(), String> {
    let mut existing = dir;
    while fs::symlink_metadata(existing).is_err() {
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    no_one_else_can_change(existing)?;
    std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    no_one_else_can_change(dir)
}

/// Can only root and this user change what `dir` holds, and what its path
/// leads to?  Every directory on the way, as written and as resolved,
/// must belong to root or this user and be writable by no one else unless
/// sticky (`/tmp`, `/var/tmp`: no one can rename what is not theirs), and
/// every symlink on the way must belong to root or this user.  Then files
/// in `dir` may be handed to others (`apt-get`, qemu) by path.  The reason
/// when not.
pub fn no_one_else_can_change(dir: &Path) -> std::result::Result<(), String> {
    let absolute = absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let real = fs::canonicalize(&absolute).map_err(|e| format!("{}: {e}", dir.display()))?;
    let uid = euid();
    for step in absolute.ancestors().chain(real.ancestors()) {
        let meta = fs::symlink_metadata(step).map_err(|e| format!("{}: {e}", step.display()))?;
        let why = if meta.uid() != 0 && meta.uid() != uid {
            format!("is owned by user {}", meta.uid())
        } else if !meta.file_type().is_symlink()
            && meta.mode() & 0o022 != 0
            && meta.mode() & 0o1000 == 0
        {
            "is writable by others and not sticky".to_string()
        } else {
            continue;
        };
        return Err(format!("{} {why}", step.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent_of(p: &Path) -> OwnedFd {
        open_parent(p).unwrap().0
    }

    #[test]
    fn scratch_directories_are_made_in_the_given_base_and_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let base = ScratchBase::new(dir.path()).unwrap();
        let scratch = base.create().unwrap();
        assert_eq!(scratch.path().parent(), Some(dir.path()));
        let meta = fs::metadata(scratch.path()).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        let path = scratch.path().to_path_buf();
        drop(scratch);
        assert!(!path.exists());
        let e = ScratchBase::new("relative").unwrap_err().to_string();
        assert!(e.contains("relative") && e.contains("absolute"), "{e}");
    }

    #[test]
    fn failed_staging_leaves_previous_output() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("good"), "1").unwrap();
        {
            let s = Staging::new(&out, &[]).unwrap();
            fs::write(s.path().join("half"), "x").unwrap();
        } // dropped: an error happened
        assert!(out.join("good").exists());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "staging dir removed"
        );
        let s = Staging::new(&out, &[]).unwrap();
        fs::write(s.path().join("new"), "2").unwrap();
        s.commit().unwrap();
        assert!(out.join("new").exists() && !out.join("good").exists());
        assert!(!out.join(MARKER).exists(), "the output is the user's");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "old output removed"
        );
    }

    #[test]
    fn refuses_to_replace_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::write(&out, "precious").unwrap();
        assert!(matches!(Staging::new(&out, &[]), Err(Error::Output { .. })));
    }

    #[test]
    fn only_abandoned_directories_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str, ours: bool| {
            let p = dir.path().join(name);
            fs::create_dir(&p).unwrap();
            fs::write(p.join("x"), "x").unwrap();
            if ours {
                mark(&open_dir_at(&parent_of(&p), p.file_name().unwrap()).unwrap()).unwrap();
            }
            p
        };
        let abandoned = make("out.Abc12345", true);
        let live = make("out.Live1234", true);
        let holder = open_dir_at(&parent_of(&live), live.file_name().unwrap()).unwrap();
        assert!(try_lock(&holder).unwrap(), "lockable");
        let aside = make("out.old.4242", true);
        let young_hidden = make(".out.Young123", true);
        let old_hidden = make(".out.Old12345", true);
        let long_ago = filetime::FileTime::from_unix_time(1_000_000_000, 0);
        filetime::set_file_mtime(&old_hidden, long_ago).unwrap();
        let unrelated = make("out.notrandomname", true);
        // A user's directories that only look like ours: never removed.
        let dated = make("out.20240601", false);
        let original = make("out.original", false);
        let old_copy = make("out.old.1234", false);
        let old_hidden_user = make(".out.Abcdefgh", false);
        filetime::set_file_mtime(&old_hidden_user, long_ago).unwrap();
        remove_stale(&parent_of(&abandoned), OsStr::new("out."), true);
        assert!(!abandoned.exists() && !aside.exists() && !old_hidden.exists());
        assert!(live.exists() && young_hidden.exists() && unrelated.exists());
        for kept in [&dated, &original, &old_copy, &old_hidden_user] {
            assert!(kept.join("x").exists(), "{}", kept.display());
        }
    }

    #[test]
    fn outputs_that_would_delete_the_cwd_or_an_input_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outer = dir.path().join("outer");
        fs::create_dir_all(outer.join("sd")).unwrap();
        let check = |out: &Path, inputs: &[PathBuf]| check_location(out, inputs);
        // Relative to the current directory of this process: the tests
        // run in the crate's directory, never inside `dir`.
        let cwd = std::env::current_dir().unwrap();
        for bad in [".", "./", "..", "../", "/"] {
            assert!(check(Path::new(bad), &[]).is_err(), "{bad}");
        }
        assert!(check(&cwd, &[]).is_err());
        assert!(check(cwd.parent().unwrap(), &[]).is_err());
        assert!(
            check(&outer, &[outer.join("sd")]).is_err(),
            "contains an input"
        );
        assert!(
            check(&outer.join("sd/out"), &[outer.join("sd")]).is_err(),
            "inside an input"
        );
        assert!(check(&outer.join("out"), &[outer.join("sd")]).is_ok());
        assert_eq!(
            check(&outer.join("new/"), &[]).unwrap(),
            fs::canonicalize(&outer).unwrap().join("new")
        );
    }

    #[test]
    fn lock_files_must_be_regular() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(
            Lock::acquire(&fifo, &Reporter::default()).is_err(),
            "a FIFO would block forever"
        );
        assert!(Lock::acquire(dir.path(), &Reporter::default()).is_err());
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        assert!(Lock::acquire(&dir.path().join("link"), &Reporter::default()).is_err());
        assert!(Lock::acquire(Path::new("/dev/null"), &Reporter::default()).is_err());
        assert!(Lock::acquire(&dir.path().join("lock"), &Reporter::default()).is_ok());
    }
}
