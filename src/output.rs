//! Output safety: build into `OUT.<random>` beside OUT and swap it in, so a
//! failed or interrupted build never leaves a half-written OUT or loses the
//! previous one; `--lock`; `--if-newer`.
//!
//! What this program deletes it has provably made: a directory left by a
//! killed build is removed only if it has the staging name, is owned by
//! this user, holds the [`MARKER`] file and no live process holds its
//! lock.  A user's `app.20240601` or another user's scratch directory is
//! never touched.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Error, IoContext, Result};

/// A fresh `OUT.<random>` directory that becomes OUT on [`commit`]; it is
/// removed if dropped uncommitted (an error, or a panic unwinding).
///
/// [`commit`]: Staging::commit
#[derive(Debug)]
pub struct Staging {
    output: PathBuf,
    dir: Option<PathBuf>,
    /// An flock on the staging directory for as long as this process
    /// lives: the next builder removes `OUT.<random>` directories it can
    /// lock, which are exactly those left by a killed build.
    _alive: fs::File,
}

/// Lock `dir` (an flock, released by the kernel when its holder dies).
fn try_lock_dir(dir: &Path) -> io::Result<Option<fs::File>> {
    use std::os::unix::io::AsRawFd;
    let file = fs::File::open(dir)?;
    // SAFETY: a valid descriptor; flock does not touch memory.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        Ok(Some(file))
    } else {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(e)
        }
    }
}

/// The file that marks a directory as made by this program: a staging
/// output, a scratch directory, or a replaced output being removed.  It is
/// removed from a staging directory just before that becomes the output.
pub const MARKER: &str = ".supermin-staging";

/// Does `dir` (not followed if a symlink) belong to this program and this
/// user: a real directory owned by our effective uid, holding [`MARKER`]?
fn is_ours(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return false;
    };
    meta.is_dir()
        && meta.uid() == uid
        && fs::symlink_metadata(dir.join(MARKER)).is_ok_and(|m| m.is_file() && m.uid() == uid)
}

/// Remove what killed processes left in `parent`: directories named
/// `PREFIX<8 random>` (and, with `aside`, `PREFIX old.<pid>`) that are
/// ours ([`is_ours`]) and that no live process holds locked.  A process
/// locks such a directory before giving it that name (see
/// [`create_locked_dir`]), so an unlocked one has no live owner.  The
/// hidden `.PREFIX<8 random>` name exists only between creating and
/// locking, microseconds; one older than [`HIDDEN_GRACE`] was left by a
/// process killed in that instant.
fn remove_stale(parent: &Path, prefix: &std::ffi::OsStr, aside: bool) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.as_bytes();
        let hidden = name.first() == Some(&b'.');
        let Some(rest) = name
            .strip_prefix(b".")
            .unwrap_or(name)
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
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let old_enough = !hidden
            || meta
                .modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > HIDDEN_GRACE);
        if !meta.is_dir() || !old_enough || !is_ours(&path) {
            continue;
        }
        if let Ok(Some(_lock)) = try_lock_dir(&path) {
            remove_ours(&path);
        }
    }
}

/// Remove a directory this program made, [`MARKER`] last: if we are
/// killed half-way, the next run still knows it for ours and finishes.
fn remove_ours(path: &Path) {
    let Ok(entries) = fs::read_dir(path) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name() != MARKER {
            let child = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => remove_tree(&child),
                _ => {
                    let _ = fs::remove_file(&child);
                }
            }
        }
    }
    let _ = fs::remove_file(path.join(MARKER));
    let _ = fs::remove_dir(path);
}

/// Put [`MARKER`] in `dir`.
fn mark(dir: &Path) -> io::Result<()> {
    fs::write(
        dir.join(MARKER),
        "made by supermin; removed when no supermin process holds it\n",
    )
}

/// See [`remove_stale`].
const HIDDEN_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// A new directory `PREFIX<8 random>` in `parent`, locked (the returned
/// file holds the flock) for as long as this process keeps it.  It is
/// created under a hidden name no cleaner looks at, locked, then renamed:
/// a directory with the final name is always either locked by a live
/// process or abandoned.
fn create_locked_dir(
    parent: &Path,
    prefix: &std::ffi::OsStr,
    mode: u32,
) -> io::Result<(PathBuf, fs::File)> {
    let mut hidden = std::ffi::OsString::from(".");
    hidden.push(prefix);
    let fresh = tempfile::Builder::new()
        .prefix(&hidden)
        .rand_bytes(8)
        .permissions(fs::Permissions::from_mode(mode))
        .tempdir_in(parent)?
        .keep();
    if let Err(e) = mark(&fresh) {
        remove_tree(&fresh);
        return Err(e);
    }
    let alive = match try_lock_dir(&fresh) {
        Ok(Some(lock)) => lock,
        other => {
            remove_tree(&fresh);
            return Err(match other {
                Err(e) => e,
                _ => io::Error::new(io::ErrorKind::WouldBlock, "locked by another process"),
            });
        }
    };
    let random = fresh.file_name().expect("named").as_bytes()[hidden.len()..].to_vec();
    let mut name = prefix.to_os_string();
    name.push(std::ffi::OsStr::from_bytes(&random));
    let dir = parent.join(name);
    if let Err(e) = renameat2(&fresh, &dir, libc::RENAME_NOREPLACE) {
        remove_tree(&fresh);
        return Err(e);
    }
    Ok((dir, alive))
}

impl Staging {
    /// A staging directory for `output`, which must not be, or contain,
    /// the current directory or any of `inputs` ([`check_location`]).
    pub fn new(output: &Path, inputs: &[PathBuf]) -> Result<Staging> {
        let output = check_location(output, inputs)?;
        if let Ok(meta) = fs::symlink_metadata(&output) {
            if !meta.is_dir() {
                return Err(Error::output(
                    &output,
                    "exists and is not a directory; refusing to replace it",
                ));
            }
        }
        let parent = output.parent().unwrap_or(Path::new("/"));
        let name = output
            .file_name()
            .ok_or_else(|| Error::output(&output, "not a valid output directory name"))?;
        let mut prefix = name.to_os_string();
        prefix.push(".");
        remove_stale(parent, &prefix, true);
        let (dir, alive) = create_locked_dir(parent, &prefix, 0o755).map_err(|e| {
            Error::output(
                &output,
                format!(
                    "cannot create the output beside it in {}: {e}",
                    parent.display()
                ),
            )
        })?;
        Ok(Staging {
            output,
            dir: Some(dir),
            _alive: alive,
        })
    }

    /// Where to write.
    pub fn path(&self) -> &Path {
        self.dir
            .as_deref()
            .expect("staging directory exists until commit")
    }

    /// The final output path.
    pub fn output(&self) -> &Path {
        &self.output
    }

    /// Swap the finished output in.  With `renameat2(RENAME_EXCHANGE)` OUT
    /// is never missing, not even for an instant; where that is not
    /// supported, OUT is renamed aside first, then the new one renamed in.
    pub fn commit(mut self) -> Result<PathBuf> {
        let new = self.dir.take().expect("commit once");
        // From here on the directory is the user's output, not ours.
        if let Err(e) = fs::remove_file(new.join(MARKER)) {
            remove_ours(&new);
            return Err(Error::io("removing", new.join(MARKER), e));
        }
        // A fresh mtime on OUT itself, for --if-newer.
        let now = filetime::FileTime::now();
        filetime::set_file_times(&new, now, now).at("setting times of", &new)?;
        let result = if fs::symlink_metadata(&self.output).is_ok() {
            match renameat2(&new, &self.output, libc::RENAME_EXCHANGE) {
                Ok(()) => {
                    // `new` now names the previous output, unlocked and
                    // marked ours: if we are killed while removing it, the
                    // next build finishes.
                    let _ = mark(&new);
                    remove_ours(&new);
                    Ok(())
                }
                Err(_) => {
                    let aside = aside_name(&self.output);
                    let _ = mark(&self.output);
                    fs::rename(&self.output, &aside)
                        .and_then(|()| fs::rename(&new, &self.output))
                        .map_err(|e| {
                            let _ = fs::remove_file(self.output.join(MARKER));
                            Error::output(&self.output, format!("cannot replace: {e}"))
                        })?;
                    remove_ours(&aside);
                    Ok(())
                }
            }
        } else {
            fs::rename(&new, &self.output)
                .map_err(|e| Error::output(&self.output, format!("cannot create: {e}")))
        };
        if result.is_err() && new.exists() {
            let _ = mark(&new);
            remove_ours(&new);
        }
        result.map(|()| self.output.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            remove_ours(&dir);
        }
    }
}

fn aside_name(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_os_string();
    name.push(format!(".old.{}", std::process::id()));
    PathBuf::from(name)
}

/// `renameat2(2)` with `flags`: `RENAME_NOREPLACE` (fail rather than
/// replace `to`) or `RENAME_EXCHANGE` (swap the two atomically).
fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let cf = std::ffi::CString::new(from.as_os_str().as_bytes())?;
    let ct = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: valid NUL-terminated paths; renameat2 only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            cf.as_ptr(),
            libc::AT_FDCWD,
            ct.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Remove a tree we made, making read-only directories writable first
/// (a chroot can contain 0555 directories).  Best effort.
pub fn remove_tree(path: &Path) {
    if fs::remove_dir_all(path).is_ok() {
        return;
    }
    for entry in walkdir::WalkDir::new(path)
        .follow_links(false)
        .into_iter()
        .flatten()
    {
        if entry.file_type().is_dir() {
            let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o700));
        }
    }
    let _ = fs::remove_dir_all(path);
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
    /// Block until the lock on `path` (created if needed) is ours.  The
    /// lock file must be a regular file: a FIFO would block the open
    /// forever and a device could act on it, so what is there is checked
    /// first, the open neither follows a symlink nor blocks, and the file
    /// opened is checked again.
    pub fn acquire(path: &Path) -> Result<Lock> {
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::io::AsRawFd;
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
        loop {
            let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLKW, &fl) };
            if rc == 0 {
                return Ok(Lock { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(Error::output(path, format!("cannot lock: {err}")));
            }
        }
    }
}

/// The newest mtime of `path`, looking inside directories (so a file
/// edited in place inside an input directory counts, unlike upstream).
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    walkdir::WalkDir::new(path)
        .follow_links(true)
        .into_iter()
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

/// A private scratch directory, `supermin.<8 random>` in `$TMPDIR` (which
/// must be absolute) or `/var/tmp`, removed when dropped.  Like a staging
/// output it is locked for its owner's life, so the next one made removes
/// any that killed processes left.  (Upstream's are `supermin*.tmpdir`
/// and are left alone.)
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
    _alive: fs::File,
}

impl Scratch {
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove_ours(&self.dir);
    }
}

pub fn scratch_dir() -> Result<Scratch> {
    let base = match std::env::var_os("TMPDIR") {
        Some(t) if !t.is_empty() => {
            let t = PathBuf::from(t);
            if !t.is_absolute() {
                return Err(Error::Usage(format!(
                    "TMPDIR ({}) must be an absolute path",
                    t.display()
                )));
            }
            t
        }
        _ => PathBuf::from("/var/tmp"),
    };
    let prefix = std::ffi::OsStr::new("supermin.");
    remove_stale(&base, prefix, false);
    let (dir, alive) =
        create_locked_dir(&base, prefix, 0o700).at("creating a scratch directory in", &base)?;
    Ok(Scratch { dir, _alive: alive })
}

#[cfg(test)]
mod tests {
    use super::*;

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
                mark(&p).unwrap();
            }
            p
        };
        let abandoned = make("out.Abc12345", true);
        let live = make("out.Live1234", true);
        let _holder = try_lock_dir(&live).unwrap().expect("lockable");
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
        remove_stale(dir.path(), std::ffi::OsStr::new("out."), true);
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
        assert!(Lock::acquire(&fifo).is_err(), "a FIFO would block forever");
        assert!(Lock::acquire(dir.path()).is_err());
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        assert!(Lock::acquire(&dir.path().join("link")).is_err());
        assert!(Lock::acquire(Path::new("/dev/null")).is_err());
        assert!(Lock::acquire(&dir.path().join("lock")).is_ok());
    }
}
