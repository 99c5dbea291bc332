//! `--if-newer` by content, with reasons: the stamp a build leaves in its
//! output, and the decision whether the output is still what a build would
//! make now.
//!
//! Upstream's rule compares times: the output must be newer than every
//! input and the package database's file.  Any `apt-get install`, even of
//! a package the appliance does not contain, then forces a rebuild, and
//! nobody is told why.  The stamp records what the output was made from:
//! this program (version and mini init), the options, each input file
//! (size, time and SHA-256), the kernel, the state of the database's files,
//! and the closure's names, versions and architectures.  A build is
//! skipped when all of these still hold; a changed database costs one read
//! of it to compare the closure's versions, and when they hold the stamp is
//! refreshed so that the next check is stat() calls again.  When the output
//! has no stamp (upstream wrote it, or an older version of this project),
//! upstream's rule decides; a stamp that cannot be read means a rebuild.
//!
//! The stamp is `OUT/.supermin-stamp` for formats whose output is a set of
//! files (ext2, initramfs, tar), and the extended attribute
//! `user.supermin.stamp` of `OUT` for a chroot, whose every file is part
//! of the appliance.  Either is written into the staging output, so it is
//! swapped in with the output it describes.  Where the filesystem takes no
//! user attributes (tmpfs before Linux 6.6), a chroot falls back to
//! upstream's rule.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{Mode, OFlags};
use sha2::{Digest, Sha256};

use crate::backend::Backend;
use crate::format::Format;
use crate::outdir::OutDir;
use crate::package::Package;
use crate::rootfs::RootFs;

/// The stamp file in an output of named files.
pub const FILE_NAME: &str = ".supermin-stamp";
/// The stamp attribute of a chroot output.
const ATTRIBUTE: &str = "user.supermin.stamp";
/// The first line; a stamp of another layout is not read.
const HEADER: &str = "supermin-stamp 1";
/// The largest stamp read (a closure of thousands of packages is ~200 KB).
const MAX_STAMP: u64 = 8 << 20;
/// This program: its version and its mini init.
const MADE_BY: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " init-",
    env!("SUPERMIN_INIT_DIGEST")
);

/// Size, modification time and inode of a file: what says, without
/// reading it, that it has not changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileState {
    size: u64,
    mtime_ns: i128,
    ino: u64,
}

impl FileState {
    fn of(meta: &fs::Metadata) -> FileState {
        FileState {
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ino: meta.ino(),
        }
    }

    fn text(&self) -> String {
        format!("{}\t{}\t{}", self.size, self.mtime_ns, self.ino)
    }
}

/// The state of the package database's files (missing ones left out),
/// taken before the database is read: a change while it is read then shows
/// at the next check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DatabaseState {
    files: Vec<(PathBuf, FileState)>,
}

impl DatabaseState {
    /// The state of `files` (paths inside `root`).
    pub fn of(root: &RootFs, files: &[PathBuf]) -> DatabaseState {
        DatabaseState {
            files: files
                .iter()
                .filter_map(|f| Some((f.clone(), FileState::of(&root.metadata(f).ok()?))))
                .collect(),
        }
    }

    /// The newest modification time, for upstream's rule.
    pub fn newest(&self) -> Option<SystemTime> {
        self.files
            .iter()
            .map(|(_, s)| {
                let ns = s.mtime_ns.max(0) as u128;
                SystemTime::UNIX_EPOCH
                    + std::time::Duration::new(
                        (ns / 1_000_000_000) as u64,
                        (ns % 1_000_000_000) as u32,
                    )
            })
            .max()
    }
}

/// An input file: a supermin appliance's `packages`, `base.tar.gz`,
/// `hostfiles`...
#[derive(Debug, Clone)]
struct InputFile {
    path: PathBuf,
    state: FileState,
    /// SHA-256, in hex; computed only when needed.
    digest: Option<String>,
}

/// The kernel a bootable format would use now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelIdentity {
    pub version: String,
    pub path: PathBuf,
    state: FileState,
}

impl KernelIdentity {
    pub fn of(kernel: &crate::boot::Kernel) -> io::Result<KernelIdentity> {
        Ok(KernelIdentity {
            version: kernel.version.clone(),
            path: kernel.path.clone(),
            state: FileState::of(&fs::metadata(&kernel.path)?),
        })
    }
}

/// What a build would be made from now (all but the closure's versions,
/// which need the database read).
#[derive(Debug, Clone)]
pub struct Current {
    /// The inputs as given (directories or files).
    pub(crate) input_roots: Vec<PathBuf>,
    options: String,
    inputs: Vec<InputFile>,
    /// The directories of the inputs (a file added there changes them).
    input_dirs: Vec<(PathBuf, FileState)>,
    kernel: Option<Result<KernelIdentity, String>>,
    database: Option<DatabaseState>,
    /// The command line that asked for the build, for the quick record.
    invocation: Option<Invocation>,
}

/// A command line as the native launcher (`launcher/main.rs`) will see it
/// again: its arguments, working directory and the environment variables
/// the command line reads (`None`: unset).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invocation {
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, Option<String>)>,
}

/// Where kernels are looked for: a kernel installed or removed changes
/// one of these directories (the quick record notes their state).
const KERNEL_PLACES: &[&str] = &["/boot", "/lib/modules", "/usr/lib/modules"];

impl Current {
    /// `options`: the build's options as text (any change rebuilds);
    /// `kernel`: for bootable formats, the kernel found now (or why none);
    /// `database`: `None` if unknown (every check then reads the database).
    pub fn new(
        options: String,
        inputs: &[PathBuf],
        kernel: Option<Result<KernelIdentity, String>>,
        database: Option<DatabaseState>,
    ) -> io::Result<Current> {
        let (mut files, mut dirs) = (Vec::new(), Vec::new());
        for input in inputs {
            list_input_files(input, &mut files, &mut dirs)?;
        }
        Ok(Current {
            input_roots: inputs.to_vec(),
            options,
            inputs: files,
            input_dirs: dirs,
            kernel,
            database,
            invocation: None,
        })
    }
}

impl Current {
    /// The command line that asked (see [`Invocation`]).
    pub fn set_invocation(&mut self, invocation: Option<Invocation>) {
        self.invocation = invocation;
    }

    /// The kernel the build used (for the stamp it writes).
    pub fn set_kernel(&mut self, kernel: Option<Result<KernelIdentity, String>>) {
        self.kernel = kernel;
    }

    /// The newest time of the database's files, for upstream's rule.
    pub fn database_newest(&self) -> Option<SystemTime> {
        self.database.as_ref().and_then(DatabaseState::newest)
    }
}

/// The regular files of an input (itself, or those under it, sorted),
/// following symlinks as a build reads them, each directory once:
/// symlinks that fan out (`d0/{x,y} -> d1`, `d1/{x,y} -> d2`...) would
/// otherwise make the walk exponential (the build then refuses them).
fn list_input_files(
    input: &Path,
    out: &mut Vec<InputFile>,
    dirs: &mut Vec<(PathBuf, FileState)>,
) -> io::Result<()> {
    let mut seen = std::collections::HashSet::new();
    let walk = walkdir::WalkDir::new(input)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(move |e| {
            !e.file_type().is_dir() || e.metadata().is_ok_and(|m| seen.insert((m.dev(), m.ino())))
        });
    for entry in walk {
        let entry = entry.map_err(io::Error::other)?;
        let meta = entry.metadata().map_err(io::Error::other)?;
        if meta.is_dir() {
            dirs.push((entry.path().to_path_buf(), FileState::of(&meta)));
        }
        if meta.is_file() {
            if out.len() >= MAX_INPUT_FILES {
                return Err(io::Error::other(format!(
                    "more than {MAX_INPUT_FILES} files in the inputs"
                )));
            }
            out.push(InputFile {
                path: entry.path().to_path_buf(),
                state: FileState::of(&meta),
                digest: None,
            });
        }
    }
    Ok(())
}

/// The most input files a stamp records (a supermin appliance has a few).
const MAX_INPUT_FILES: usize = 100_000;

fn sha256_of(path: &Path) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buffer[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(crate::backend::hex(&hasher.finalize()))
}

/// A stamp as written and read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp {
    made_by: String,
    options: String,
    /// path, state, digest
    inputs: Vec<(PathBuf, FileState, String)>,
    kernel: Option<(String, PathBuf, FileState)>,
    database: Option<DatabaseState>,
    /// name, version, architecture
    packages: Vec<(String, String, String)>,
    /// What the native launcher checks, without this library, to find a
    /// `--build --if-newer` command line with nothing to do.
    quick: Option<Quick>,
}

/// The quick record: the same command line, working directory and
/// environment, the same running kernel, the outputs present, and every
/// file and directory the decision read unchanged (size, time, inode)
/// mean the same decision.  Anything else goes to the full check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Quick {
    invocation: Invocation,
    /// `/proc/sys/kernel/osrelease`: the running kernel can be chosen.
    release: String,
    files: Vec<(PathBuf, FileState)>,
    outputs: Vec<String>,
}

impl Quick {
    /// The quick record of `current` for an output of `format`; `None`
    /// without a command line to record.
    fn of(current: &Current, format: &dyn Format) -> Option<Quick> {
        let invocation = current.invocation.clone()?;
        let state = |p: &Path| {
            fs::metadata(p)
                .ok()
                .map(|m| (p.to_path_buf(), FileState::of(&m)))
        };
        let mut files: Vec<(PathBuf, FileState)> = current
            .inputs
            .iter()
            .map(|i| (i.path.clone(), i.state.clone()))
            .chain(current.input_dirs.iter().cloned())
            .collect();
        if let Some(db) = &current.database {
            files.extend(db.files.iter().cloned());
        }
        if let Some(Ok(kernel)) = &current.kernel {
            files.push((kernel.path.clone(), kernel.state.clone()));
            files.extend(KERNEL_PLACES.iter().filter_map(|p| state(Path::new(p))));
            for dir in KERNEL_PLACES.iter().skip(1) {
                files.extend(state(&Path::new(dir).join(&kernel.version)));
            }
        }
        Some(Quick {
            invocation,
            release: fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            files,
            outputs: format.outputs().iter().map(|s| s.to_string()).collect(),
        })
    }
}

impl Stamp {
    /// The stamp of a build made from `current` with the closure
    /// `packages`: input digests are computed now.
    pub fn new(current: &Current, packages: &[Package], format: &dyn Format) -> io::Result<Stamp> {
        let inputs = current
            .inputs
            .iter()
            .map(|i| {
                let digest = match &i.digest {
                    Some(d) => d.clone(),
                    None => sha256_of(&i.path)?,
                };
                Ok((i.path.clone(), i.state.clone(), digest))
            })
            .collect::<io::Result<_>>()?;
        let kernel = match &current.kernel {
            Some(Ok(k)) => Some((k.version.clone(), k.path.clone(), k.state.clone())),
            _ => None,
        };
        Ok(Stamp {
            made_by: MADE_BY.to_string(),
            options: current.options.clone(),
            inputs,
            kernel,
            database: current.database.clone(),
            packages: packages
                .iter()
                .map(|p| (p.name.clone(), p.version.clone(), p.arch.clone()))
                .collect(),
            quick: Quick::of(current, format),
        })
    }

    /// The text, or `None` if a field holds a tab or a newline (such a
    /// path is not stamped: the output falls back to upstream's rule).
    fn text(&self) -> Option<String> {
        let mut fields: Vec<String> = vec![
            HEADER.to_string(),
            format!("made-by\t{}", self.made_by),
            format!("options\t{}", self.options),
        ];
        let path = |p: &Path| String::from_utf8_lossy(p.as_os_str().as_bytes()).into_owned();
        if let Some(db) = &self.database {
            for (p, s) in &db.files {
                fields.push(format!("database\t{}\t{}", path(p), s.text()));
            }
        }
        for (p, s, d) in &self.inputs {
            fields.push(format!("input\t{}\t{}\t{d}", path(p), s.text()));
        }
        if let Some((v, p, s)) = &self.kernel {
            fields.push(format!("kernel\t{v}\t{}\t{}", path(p), s.text()));
        }
        for (n, v, a) in &self.packages {
            fields.push(format!("package\t{n}\t{v}\t{a}"));
        }
        if let Some(quick) = &self.quick {
            let inv = &quick.invocation;
            fields.extend(inv.args.iter().map(|a| format!("quick-arg\t{a}")));
            fields.push(format!("quick-cwd\t{}", path(&inv.cwd)));
            for (name, value) in &inv.env {
                fields.push(match value {
                    Some(v) => format!("quick-env\t{name}\t{v}"),
                    None => format!("quick-unset\t{name}"),
                });
            }
            fields.push(format!("quick-release\t{}", quick.release));
            for (p, s) in &quick.files {
                fields.push(format!("quick-file\t{}\t{}", path(p), s.text()));
            }
            fields.extend(quick.outputs.iter().map(|o| format!("quick-output\t{o}")));
        }
        fields.push("end".into());
        // A path that is not UTF-8 would not read back as itself.
        let lossless = self
            .inputs
            .iter()
            .map(|i| &i.0)
            .chain(self.kernel.iter().map(|k| &k.1))
            .chain(
                self.quick
                    .iter()
                    .flat_map(|q| q.files.iter().map(|f| &f.0).chain([&q.invocation.cwd])),
            )
            .all(|p| std::str::from_utf8(p.as_os_str().as_bytes()).is_ok());
        let mut text = String::new();
        for line in &fields {
            let _ = writeln!(text, "{line}");
        }
        let expected_tabs = |line: &str| match line.split('\t').next() {
            Some("made-by" | "options" | "quick-arg" | "quick-cwd" | "quick-unset") => 1,
            Some("quick-release" | "quick-output") => 1,
            Some("quick-env") => 2,
            Some("quick-file") => 4,
            Some("database") => 4,
            Some("input") => 5,
            Some("kernel") => 5,
            Some("package") => 3,
            _ => 0,
        };
        let clean = fields
            .iter()
            .all(|l| !l.contains('\n') && l.matches('\t').count() == expected_tabs(l));
        (lossless && clean).then_some(text)
    }

    /// Parse a stamp's text; `Err` says what is wrong.
    fn parse(text: &str) -> Result<Stamp, String> {
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err("not a stamp of this layout".into());
        }
        let mut stamp = Stamp::default();
        let mut ended = false;
        for line in lines {
            let f: Vec<&str> = line.split('\t').collect();
            let state = |s: &[&str]| -> Result<FileState, String> {
                let bad = || format!("bad line {line:?}");
                Ok(FileState {
                    size: s[0].parse().map_err(|_| bad())?,
                    mtime_ns: s[1].parse().map_err(|_| bad())?,
                    ino: s[2].parse().map_err(|_| bad())?,
                })
            };
            match f.as_slice() {
                ["made-by", v] => stamp.made_by = v.to_string(),
                ["options", v] => stamp.options = v.to_string(),
                ["database", p, s @ ..] if s.len() == 3 => stamp
                    .database
                    .get_or_insert_with(Default::default)
                    .files
                    .push((PathBuf::from(p), state(s)?)),
                ["input", p, s0, s1, s2, d] => {
                    stamp
                        .inputs
                        .push((PathBuf::from(p), state(&[s0, s1, s2])?, d.to_string()))
                }
                ["kernel", v, p, s @ ..] if s.len() == 3 => {
                    stamp.kernel = Some((v.to_string(), PathBuf::from(p), state(s)?))
                }
                ["package", n, v, a] => {
                    stamp
                        .packages
                        .push((n.to_string(), v.to_string(), a.to_string()))
                }
                [kind, rest @ ..] if kind.starts_with("quick-") => {
                    let quick = stamp.quick.get_or_insert_with(Quick::default);
                    let inv = &mut quick.invocation;
                    match (*kind, rest) {
                        ("quick-arg", [a]) => inv.args.push(a.to_string()),
                        ("quick-cwd", [p]) => inv.cwd = PathBuf::from(p),
                        ("quick-env", [n, v]) => inv.env.push((n.to_string(), Some(v.to_string()))),
                        ("quick-unset", [n]) => inv.env.push((n.to_string(), None)),
                        ("quick-release", [r]) => quick.release = r.to_string(),
                        ("quick-file", [p, s @ ..]) if s.len() == 3 => {
                            quick.files.push((PathBuf::from(p), state(s)?))
                        }
                        ("quick-output", [o]) => quick.outputs.push(o.to_string()),
                        _ => return Err(format!("bad line {:?}", crate::error::capped(line))),
                    }
                }
                ["end"] => ended = true,
                _ => return Err(format!("bad line {:?}", crate::error::capped(line))),
            }
        }
        if !ended {
            return Err("cut short".into());
        }
        Ok(stamp)
    }

    /// Store the stamp in the staging output `out` of `format`.  `false`
    /// if it could not be (no stampable text, no user attributes): the
    /// output then falls back to upstream's rule.
    pub fn store(&self, out: &OutDir, format: &dyn Format) -> io::Result<bool> {
        let Some(text) = self.text() else {
            return Ok(false);
        };
        if format.outputs().is_empty() {
            let dir = open_dir(out)?;
            return match rustix::fs::fsetxattr(
                &dir,
                ATTRIBUTE,
                &compress(text.as_bytes())?,
                rustix::fs::XattrFlags::empty(),
            ) {
                Ok(()) => Ok(true),
                // No user attributes here, or too large for one.
                Err(
                    rustix::io::Errno::NOTSUP
                    | rustix::io::Errno::TOOBIG
                    | rustix::io::Errno::NOSPC
                    | rustix::io::Errno::RANGE,
                ) => Ok(false),
                Err(e) => Err(e.into()),
            };
        }
        // A new name, then renamed over the old stamp: readers see either.
        let temp = format!("{FILE_NAME}.{}", std::process::id());
        let place = out.place(
            &Path::new("/").join(&temp),
            crate::outdir::Parents::Existing,
        )?;
        let mut file = place.create_file()?;
        io::Write::write_all(&mut file, text.as_bytes())?;
        file.sync_data()?;
        place.chmod(0o644)?;
        let dir = open_dir(out)?;
        rustix::fs::renameat(&dir, temp.as_str(), &dir, FILE_NAME)?;
        Ok(true)
    }

    /// The stamp of the output `output` of `format`: `Ok(None)` if it has
    /// none, `Err` (why) if it has one that cannot be read.
    pub fn load(output: &Path, format: &dyn Format) -> Result<Option<Stamp>, String> {
        let dir = rustix::fs::open(
            output,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| e.to_string())?;
        let bytes = if format.outputs().is_empty() {
            let mut buffer = vec![0u8; 64 << 10];
            match rustix::fs::fgetxattr(&dir, ATTRIBUTE, &mut buffer) {
                Ok(n) => decompress(&buffer[..n]).map_err(|e| e.to_string())?,
                Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            }
        } else {
            let file = match rustix::fs::openat(
                &dir,
                FILE_NAME,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fs::File::from(fd),
                Err(rustix::io::Errno::NOENT) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            };
            let meta = file.metadata().map_err(|e| e.to_string())?;
            if !meta.is_file() {
                return Err("not a regular file".into());
            }
            crate::rootfs::read_bounded(file, meta.len(), MAX_STAMP).map_err(|e| e.to_string())?
        };
        let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
        Stamp::parse(&text).map(Some)
    }
}

fn open_dir(out: &OutDir) -> io::Result<std::os::fd::OwnedFd> {
    Ok(rustix::fs::open(
        out.path(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn compress(bytes: &[u8]) -> io::Result<Vec<u8>> {
    zstd::bulk::compress(bytes, 19)
}

fn decompress(bytes: &[u8]) -> io::Result<Vec<u8>> {
    zstd::bulk::decompress(bytes, MAX_STAMP as usize)
}

/// What `--if-newer` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do.  `refresh`: the database's files changed but not the
    /// closure; store this stamp so that the next check need not read it.
    UpToDate { refresh: Option<Box<Stamp>> },
    /// Build, for these reasons.
    Rebuild(Vec<String>),
    /// The output has no stamp: upstream's rule decides.
    NoStamp,
    /// All holds but the database's files changed: read it (pass a
    /// backend) to compare the closure's versions.
    ReadDatabase,
}

/// Is the output `output` of `format` what a build from `current` would
/// make?  `backend`: the database, read, if already open (without it a
/// changed database gives [`Decision::ReadDatabase`]).
pub fn decide(
    output: &Path,
    format: &dyn Format,
    current: &mut Current,
    backend: Option<&dyn Backend>,
) -> Decision {
    let present = fs::symlink_metadata(output).is_ok_and(|m| m.is_dir())
        && format
            .outputs()
            .iter()
            .all(|f| fs::symlink_metadata(output.join(f)).is_ok());
    if !present {
        return Decision::Rebuild(vec!["output missing".into()]);
    }
    let stamp = match Stamp::load(output, format) {
        Ok(Some(stamp)) => stamp,
        Ok(None) => return Decision::NoStamp,
        Err(why) => return Decision::Rebuild(vec![format!("stamp unreadable ({why})")]),
    };
    if stamp.made_by != MADE_BY {
        return Decision::Rebuild(vec![format!(
            "made by another supermin ({}; this is {MADE_BY})",
            crate::error::capped(&stamp.made_by)
        )]);
    }
    let mut reasons = Vec::new();
    if stamp.options != current.options {
        reasons.push("options changed".to_string());
    }
    compare_inputs(&stamp, current, &mut reasons);
    match (&stamp.kernel, &current.kernel) {
        (None, None) => {}
        (Some((version, path, state)), Some(Ok(now))) => {
            if *version != now.version {
                reasons.push(format!("kernel {version} → {}", now.version));
            } else if *path != now.path || *state != now.state {
                reasons.push(format!("kernel {version} changed ({})", now.path.display()));
            }
        }
        (_, Some(Err(why))) => reasons.push(format!("kernel: {why}")),
        _ => reasons.push("kernel changed".into()),
    }
    let database_same = stamp.database.is_some() && stamp.database == current.database;
    if !database_same {
        let Some(backend) = backend else {
            return if reasons.is_empty() {
                Decision::ReadDatabase
            } else {
                Decision::Rebuild(reasons)
            };
        };
        compare_packages(&stamp, backend, &mut reasons);
    }
    if !reasons.is_empty() {
        return Decision::Rebuild(reasons);
    }
    // A new database state, or a command line the quick record does not
    // know yet (another spelling of the same build): record it.
    let quick = current
        .invocation
        .as_ref()
        .map(|_| Quick::of(current, format));
    let quick_stale = quick.is_some() && stamp.quick != quick.clone().flatten();
    let refresh = ((!database_same && current.database.is_some()) || quick_stale).then(|| {
        Box::new(Stamp {
            database: current.database.clone(),
            quick: quick.flatten(),
            ..stamp
        })
    });
    Decision::UpToDate { refresh }
}

/// Input files added, removed or changed (by content: a file whose size,
/// time or inode changed is hashed and compared).
fn compare_inputs(stamp: &Stamp, current: &mut Current, reasons: &mut Vec<String>) {
    let recorded: std::collections::HashMap<&Path, (&FileState, &String)> = stamp
        .inputs
        .iter()
        .map(|(p, s, d)| (p.as_path(), (s, d)))
        .collect();
    for input in &mut current.inputs {
        let shown = input.path.display();
        match recorded.get(input.path.as_path()) {
            None => reasons.push(format!("{shown} added")),
            Some((state, _)) if **state == input.state => {}
            Some((_, digest)) => match sha256_of(&input.path) {
                Ok(now) => {
                    if now != **digest {
                        reasons.push(format!("{shown} changed"));
                    }
                    input.digest = Some(now);
                }
                Err(e) => reasons.push(format!("{shown} unreadable ({e})")),
            },
        }
    }
    let now: std::collections::HashSet<&Path> =
        current.inputs.iter().map(|i| i.path.as_path()).collect();
    for (path, _, _) in &stamp.inputs {
        if !now.contains(path.as_path()) {
            reasons.push(format!("{} removed", path.display()));
        }
    }
}

/// The closure's packages whose version or architecture differs now, or
/// that are gone.
fn compare_packages(stamp: &Stamp, backend: &dyn Backend, reasons: &mut Vec<String>) {
    for (name, version, arch) in &stamp.packages {
        match backend.lookup(name) {
            None => reasons.push(format!("{name} {version} removed")),
            Some(now) if now.version != *version => {
                reasons.push(format!("{name} {version} → {}", now.version))
            }
            Some(now) if now.arch != *arch => reasons.push(format!("{name} {arch} → {}", now.arch)),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_as_written_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("packages");
        fs::write(&input, "bash\n").unwrap();
        let current =
            Current::new("ext2 x".into(), std::slice::from_ref(&input), None, None).unwrap();
        let stamp = Stamp::new(&current, &[], &crate::format::tar::Tar).unwrap();
        let text = stamp.text().unwrap();
        assert_eq!(Stamp::parse(&text).unwrap(), stamp);
        assert!(text.contains(&sha256_of(&input).unwrap()));
        let cut = &text[..text.len() - 4];
        assert_eq!(Stamp::parse(cut).unwrap_err(), "cut short");
        assert!(Stamp::parse("other\n").is_err());
        assert!(Stamp::parse(&text.replace("made-by", "made-by\tx")).is_err());
        // A field with a newline or tab is not stamped at all.
        let odd = Current::new("a\tb".into(), &[input], None, None).unwrap();
        assert!(Stamp::new(&odd, &[], &crate::format::tar::Tar)
            .unwrap()
            .text()
            .is_none());
    }
}
