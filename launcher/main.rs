//! The `supermin` command: a small native launcher in front of the Python
//! command line (`supermin.cli`).
//!
//! libguestfs runs `supermin --build --if-newer ...` before every appliance
//! launch, and nearly always there is nothing to do.  Starting Python and
//! importing the package costs 70-100 ms; upstream's no-op costs about
//! 8 ms.  So this program answers that one case itself, from the quick
//! record of the output's `--if-newer` stamp (`src/stamp/`; its layout,
//! `src/stamp/layout.rs`, is included below): the same
//! arguments, working directory and environment as the command line that
//! wrote it, the same running kernel, the outputs present, and every file
//! and directory the full decision read unchanged (size, time, inode).
//! Then it prints upstream's line and exits.  Anything else -- another
//! command, no stamp or record, a stamp of another build of supermin, one
//! changed file, a lock someone holds -- goes to Python, which decides in
//! full (reading the package database if it must), says why, and writes a
//! fresh record.  It never decides "up to date" on anything less.
//!
//! Python is the interpreter beside this program (a venv's `bin/`), else
//! `python3` on PATH (`SUPERMIN_PYTHON` overrides), started the way a
//! console script is: without the working directory on `sys.path`.
//!
//! Built by `build.rs` with plain `rustc` (only `std`), static.

use std::ffi::{c_int, c_short, OsStr, OsString};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

// The stamp's layout, shared with the library.
#[path = "../src/stamp/layout.rs"]
mod layout;

use layout::{field_count, FILE_NAME as STAMP, HEADER, MADE_BY, MAX_STAMP};

#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
const O_NOFOLLOW: i32 = 0o100000;
#[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
const O_NOFOLLOW: i32 = 0o400000;
const O_NONBLOCK: i32 = 0o4000;
const F_SETLK: c_int = 6;
const F_WRLCK: c_short = 1;

/// `struct flock` on Linux x86_64 and aarch64.
#[repr(C)]
struct Flock {
    l_type: c_short,
    l_whence: c_short,
    l_start: i64,
    l_len: i64,
    l_pid: i32,
}

extern "C" {
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if let Some(_lock) = nothing_to_do(&args) {
        eprintln!("supermin: if-newer: output does not need rebuilding");
        exit(0);
    }
    run_python(&args);
}

/// Some(lock held, if any) when the quick record says the output is up
/// to date; None for "ask Python".
fn nothing_to_do(args: &[OsString]) -> Option<Option<fs::File>> {
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if !has("--build") || !has("--if-newer") {
        return None;
    }
    let args: Vec<&str> = args.iter().map(|a| a.to_str()).collect::<Option<_>>()?;
    // Only the spellings read below: `-oOUT`, `--lock=L`, `-vo OUT`, `--`
    // go to Python, and so does -v (the full command says more).
    let plain = |a: &&str| {
        *a != "--"
            && !a.starts_with("--lock=")
            && !(a.starts_with('-') && !a.starts_with("--") && a.len() > 2)
            && !matches!(*a, "-v" | "--verbose")
    };
    if !args.iter().all(plain) {
        return None;
    }
    let value_of = |flag: &str| {
        args.iter()
            .rposition(|a| *a == flag)
            .and_then(|i| args.get(i + 1).copied())
    };
    // Upstream takes the lock before it checks; so do we, but without
    // waiting: a lock someone holds means a build may be under way.
    let lock = match value_of("--lock") {
        Some(path) => Some(try_lock(Path::new(path))?),
        None => None,
    };
    let output = Path::new(value_of("-o")?);
    // A real directory, as the build would accept it.
    if !fs::symlink_metadata(output).ok()?.is_dir() {
        return None;
    }
    let stamp = read_stamp(&output.join(STAMP))?;
    // Lines end at '\n' only, as the library writes and reads them.
    let body = stamp.strip_suffix("end\n")?;
    let mut lines = body.split_terminator('\n');
    if lines.next() != Some(HEADER) || stamp.contains('\r') {
        return None;
    }
    let mut recorded_args = Vec::new();
    let mut recorded_cwd = None;
    let mut made_by = None;
    let mut outputs = 0;
    for line in lines {
        let fields: Vec<&str> = line.split('\t').collect();
        // A line the layout does not have, or with other fields: a stamp
        // this program does not understand.
        if field_count(fields[0]) != Some(fields.len()) {
            return None;
        }
        match fields.as_slice() {
            ["made-by", v] => made_by = Some(*v),
            ["quick-arg", a] => recorded_args.push(*a),
            ["quick-cwd", c] => recorded_cwd = Some(*c),
            ["quick-env", name, value] => {
                if std::env::var_os(name)? != OsStr::new(value) {
                    return None;
                }
            }
            ["quick-unset", name] => {
                if std::env::var_os(name).is_some() {
                    return None;
                }
            }
            ["quick-release", release] => {
                let running = fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
                if running.trim() != *release {
                    return None;
                }
            }
            ["quick-file", path, size, mtime_ns, ino] => {
                let meta = fs::metadata(path).ok()?;
                let now = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
                if meta.len().to_string() != *size
                    || now.to_string() != *mtime_ns
                    || meta.ino().to_string() != *ino
                {
                    return None;
                }
            }
            ["quick-absent", path] => {
                if fs::symlink_metadata(path).is_ok() {
                    return None;
                }
            }
            ["quick-output", name] => {
                fs::symlink_metadata(output.join(name)).ok()?;
                outputs += 1;
            }
            // The full check's own lines, not read here.
            _ => {}
        }
    }
    // A stamp with no outputs to check (a chroot's) is not answered here.
    if outputs == 0 {
        return None;
    }
    let cwd = std::env::current_dir().ok()?;
    let same = made_by == Some(MADE_BY)
        && !recorded_args.is_empty()
        && recorded_args == args
        && recorded_cwd.map(Path::new) == Some(cwd.as_path());
    same.then_some(lock)
}

/// The stamp's text: a regular file, not followed through a symlink.
fn read_stamp(path: &Path) -> Option<String> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NOFOLLOW | O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_STAMP {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_STAMP).read_to_string(&mut text).ok()?;
    Some(text)
}

/// The fcntl write lock on `path` that the full command takes
/// (`src/output.rs`), if no one holds it; the file keeps it.
fn try_lock(path: &Path) -> Option<fs::File> {
    if fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
        return None;
    }
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(O_NOFOLLOW | O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let lock = Flock {
        l_type: F_WRLCK,
        l_whence: 0,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    use std::os::fd::AsRawFd;
    // SAFETY: F_SETLK on a valid descriptor with a valid struct flock.
    (unsafe { fcntl(file.as_raw_fd(), F_SETLK, &lock as *const Flock) } == 0).then_some(file)
}

/// Replace this process with the Python command line, given `args`.
fn run_python(args: &[OsString]) -> ! {
    let python = python();
    // As a console script runs: sys.path without the working directory
    // (a directory called `supermin` there must not be imported).
    let code = "import sys; sys.path = [p for p in sys.path if p != '']; \
                from supermin.cli import main; sys.exit(main())";
    let error = Command::new(&python).arg("-c").arg(code).args(args).exec();
    eprintln!(
        "supermin: cannot run {} for the supermin command line: {error} \
         (set SUPERMIN_PYTHON to the Python that has the supermin package)",
        python.display()
    );
    exit(127);
}

/// The Python that has the package: `SUPERMIN_PYTHON`, else the one beside
/// this program, else `python3` on PATH.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SUPERMIN_PYTHON") {
        return PathBuf::from(p);
    }
    let beside = std::env::current_exe().ok().and_then(|exe| {
        let dir = exe.parent()?.to_path_buf();
        ["python3", "python"]
            .iter()
            .map(|name| dir.join(name))
            .find(|p| p.exists())
    });
    beside.unwrap_or_else(|| PathBuf::from("python3"))
}
