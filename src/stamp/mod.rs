//! `--if-newer` by content, with reasons: the stamp a build leaves in its
//! output, and the decision whether the output is still what a build would
//! make now.
//!
//! Upstream's rule compares times: the output must be newer than every
//! input and the package database's file.  Any `apt-get install`, even of
//! a package the appliance does not contain, then forces a rebuild, and
//! nobody is told why.  The stamp records what the output was made from:
//! this program (version and mini init), the options, each input file
//! (size, time and SHA-256, read before the build reads it), the kernel and
//! its `modules.dep`, the state of the database's files, and the closure's
//! names, versions and architectures.  A build is skipped when all of these
//! still hold; a changed database costs resolving the closure again, and
//! when it is the same the stamp is refreshed so that the next check is
//! stat() calls again.  When the output has no stamp (upstream wrote it, or
//! an older version of this project), upstream's rule decides; a stamp that
//! cannot be read means a rebuild.
//!
//! The stamp is `OUT/.supermin-stamp` for formats whose output is a set of
//! files (ext2, initramfs, tar), and the extended attribute
//! `user.supermin.stamp` of `OUT` for a chroot, whose every file is part
//! of the appliance.  Either is written into the staging output, so it is
//! swapped in with the output it describes, and a refresh goes through the
//! descriptor of the directory it was read from.  Where the filesystem
//! takes no user attributes (tmpfs before Linux 6.6), a chroot falls back
//! to upstream's rule.
//!
//! The stamp also carries the quick record the native launcher
//! (`launcher/main.rs`) reads: see [`Quick`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{AtFlags, Mode, OFlags};
use sha2::{Digest, Sha256};

use crate::backend::alternatives::Link;
use crate::format::Format;
use crate::package::Package;
use crate::rootfs::RootFs;

mod layout;
pub use layout::FILE_NAME;
use layout::{field_count, HEADER, MADE_BY, MAX_STAMP};

/// The stamp attribute of a chroot output.
const ATTRIBUTE: &str = "user.supermin.stamp";
/// The most input files a stamp records (a supermin appliance has a few).
const MAX_INPUT_FILES: usize = 100_000;
/// Where kernels are looked for: a kernel installed or removed changes
/// one of these directories (the quick record notes their state).
const KERNEL_PLACES: &[&str] = &["/boot", "/lib/modules", "/usr/lib/modules"];

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

    /// The state of `path` (followed), or `None` if there is nothing.
    fn at(path: &Path) -> Option<FileState> {
        fs::metadata(path).ok().map(|m| FileState::of(&m))
    }

    fn text(&self) -> String {
        format!("{}\t{}\t{}", self.size, self.mtime_ns, self.ino)
    }

    fn parse(fields: &[&str]) -> Option<FileState> {
        match fields {
            [size, mtime, ino] => Some(FileState {
                size: size.parse().ok()?,
                mtime_ns: mtime.parse().ok()?,
                ino: ino.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// The state of the package database's files, taken before the database is
/// read: a change while it is read then shows at the next check.
#[derive(Debug, Clone, Default)]
pub struct DatabaseState {
    files: Vec<(PathBuf, FileState)>,
    /// Files the database may have that are not there (an rpm `-wal`).
    missing: Vec<PathBuf>,
    /// The host's own database (`/`): only then is a quick record made.
    host: bool,
}

/// Two states are the same if their files are (whose database it is is
/// not part of the stamp).
impl PartialEq for DatabaseState {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files && self.missing == other.missing
    }
}

impl Eq for DatabaseState {}

impl DatabaseState {
    /// The state of `files` (paths inside `root`).
    pub fn of(root: &RootFs, files: &[PathBuf]) -> DatabaseState {
        let mut state = DatabaseState {
            host: root.is_host(),
            ..DatabaseState::default()
        };
        for f in files {
            match root.metadata(f) {
                Ok(m) => state.files.push((f.clone(), FileState::of(&m))),
                Err(_) => state.missing.push(f.clone()),
            }
        }
        state
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
    /// SHA-256, in hex, of the file in that state; computed when needed.
    digest: Option<String>,
}

/// The kernel a bootable format would use now, and its module index (a
/// module added or removed rewrites `modules.dep`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelIdentity {
    pub version: String,
    pub path: PathBuf,
    state: FileState,
    modules_dep: Option<FileState>,
}

impl KernelIdentity {
    pub fn of(kernel: &crate::boot::Kernel) -> io::Result<KernelIdentity> {
        Ok(KernelIdentity {
            version: kernel.version.clone(),
            path: kernel.path.clone(),
            state: FileState::of(&fs::metadata(&kernel.path)?),
            modules_dep: FileState::at(&kernel.modules.join("modules.dep")),
        })
    }
}

/// A command line as the native launcher (`launcher/main.rs`) will see it
/// again: its arguments, working directory and the environment variables
/// that matter to it (`None`: unset).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invocation {
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, Option<String>)>,
}

/// What a build would be made from now (all but the closure, which needs
/// the database read).
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
    /// The kernel places and the running kernel, as the decision saw them.
    places: Vec<(PathBuf, Option<FileState>)>,
    release: String,
}

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
        // Before the kernel is looked at again by the build.
        let places = KERNEL_PLACES
            .iter()
            .map(|p| (PathBuf::from(p), FileState::at(Path::new(p))))
            .collect();
        let release = fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
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
            places,
            release,
        })
    }

    /// The command line that asked (see [`Invocation`]).
    pub fn set_invocation(&mut self, invocation: Option<Invocation>) {
        self.invocation = invocation;
    }

    /// The kernel the build used: kept only if it is the one identified
    /// before the build (a kernel that changed meanwhile is recorded as
    /// unknown, and the next check rebuilds).
    pub fn confirm_kernel(&mut self, used: &crate::boot::Kernel) {
        if let Some(Ok(before)) = &self.kernel {
            if KernelIdentity::of(used).ok().as_ref() == Some(before) {
                return;
            }
        }
        self.kernel = Some(Err("changed during the build".into()));
    }

    /// Digest every input file now, before the build reads it, each
    /// through a descriptor checked to be the file in the state listed.
    /// One that changed since it was listed is left without a digest (no
    /// stamp is then written, and the next check rebuilds).
    pub fn digest_inputs(&mut self) {
        for input in &mut self.inputs {
            if input.digest.is_none() {
                input.digest = sha256_of(&input.path, &input.state).ok();
            }
        }
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
    let mut seen = HashSet::new();
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

/// SHA-256 of the file at `path`, opened without blocking (a FIFO put
/// there is not waited on) and checked to be in `state`.
fn sha256_of(path: &Path, state: &FileState) -> io::Result<String> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || FileState::of(&meta) != *state {
        return Err(io::Error::other("changed since it was listed"));
    }
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
    if FileState::of(&file.metadata()?) != *state {
        return Err(io::Error::other("changed while read"));
    }
    Ok(crate::backend::hex(&hasher.finalize()))
}

/// name, version, architecture
type PackageId = (String, String, String);

fn package_ids(packages: &[Package]) -> Vec<PackageId> {
    packages
        .iter()
        .map(|p| (p.name.clone(), p.version.clone(), p.arch.clone()))
        .collect()
}

/// A stamp as written and read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp {
    made_by: String,
    options: String,
    /// path, state, digest
    inputs: Vec<(PathBuf, FileState, String)>,
    /// version, path, state, modules.dep state
    kernel: Option<(String, PathBuf, FileState, Option<FileState>)>,
    database: Option<DatabaseState>,
    packages: Vec<PackageId>,
    /// Alternatives links made: path, target.
    links: Vec<(PathBuf, PathBuf)>,
    /// What the native launcher checks, without this library, to find a
    /// `--build --if-newer` command line with nothing to do.
    quick: Option<Quick>,
}

/// The quick record: the same command line, working directory and
/// environment, the same running kernel, the outputs present, and every
/// file and directory the decision read unchanged (size, time, inode; or
/// still absent) mean the same decision.  Anything else goes to the full
/// check.  Made only for the host's own database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Quick {
    invocation: Invocation,
    /// `/proc/sys/kernel/osrelease`: the running kernel can be chosen.
    release: String,
    files: Vec<(PathBuf, Option<FileState>)>,
    outputs: Vec<String>,
}

impl Quick {
    /// The quick record of `current` for an output of `format`.
    fn of(current: &Current, format: &dyn Format) -> Option<Quick> {
        let invocation = current.invocation.clone()?;
        let database = current.database.as_ref().filter(|d| d.host)?;
        let mut files: Vec<(PathBuf, Option<FileState>)> = current
            .inputs
            .iter()
            .map(|i| (i.path.clone(), Some(i.state.clone())))
            .chain(
                current
                    .input_dirs
                    .iter()
                    .map(|(p, s)| (p.clone(), Some(s.clone()))),
            )
            .chain(
                database
                    .files
                    .iter()
                    .map(|(p, s)| (p.clone(), Some(s.clone()))),
            )
            .chain(database.missing.iter().map(|p| (p.clone(), None)))
            .chain(current.places.iter().cloned())
            .collect();
        match &current.kernel {
            Some(Ok(kernel)) => {
                files.push((kernel.path.clone(), Some(kernel.state.clone())));
                for place in &KERNEL_PLACES[1..] {
                    let dir = Path::new(place).join(&kernel.version);
                    files.push((dir.join("modules.dep"), kernel.modules_dep.clone()));
                }
            }
            Some(Err(_)) => return None,
            None => {}
        }
        Some(Quick {
            invocation,
            release: current.release.clone(),
            files,
            outputs: format.outputs().iter().map(|s| s.to_string()).collect(),
        })
    }

    fn lines(&self, path: impl Fn(&Path) -> String) -> Vec<String> {
        let inv = &self.invocation;
        let mut lines: Vec<String> = inv.args.iter().map(|a| format!("quick-arg\t{a}")).collect();
        lines.push(format!("quick-cwd\t{}", path(&inv.cwd)));
        for (name, value) in &inv.env {
            lines.push(match value {
                Some(v) => format!("quick-env\t{name}\t{v}"),
                None => format!("quick-unset\t{name}"),
            });
        }
        lines.push(format!("quick-release\t{}", self.release));
        for (p, s) in &self.files {
            lines.push(match s {
                Some(s) => format!("quick-file\t{}\t{}", path(p), s.text()),
                None => format!("quick-absent\t{}", path(p)),
            });
        }
        lines.extend(self.outputs.iter().map(|o| format!("quick-output\t{o}")));
        lines
    }
}

/// Can `lines` be written and read back as themselves: UTF-8 paths, and
/// no field holding a tab, a newline or a carriage return?
fn clean(lines: &[String], paths: &[&Path]) -> bool {
    paths
        .iter()
        .all(|p| std::str::from_utf8(p.as_os_str().as_bytes()).is_ok())
        && lines.iter().all(|l| {
            !l.contains(['\n', '\r'])
                && field_count(l.split('\t').next().unwrap_or("")) == Some(l.split('\t').count())
        })
}

impl Stamp {
    fn database_mut(&mut self) -> &mut DatabaseState {
        self.database.get_or_insert_with(DatabaseState::default)
    }

    /// The stamp of a build made from `current` with the closure
    /// `packages` and alternatives `links`; `None` if an input has no
    /// digest (it changed while the build listed it).
    pub fn new(
        current: &Current,
        packages: &[Package],
        links: &[Link],
        format: &dyn Format,
    ) -> Option<Stamp> {
        let inputs = current
            .inputs
            .iter()
            .map(|i| Some((i.path.clone(), i.state.clone(), i.digest.clone()?)))
            .collect::<Option<_>>()?;
        let kernel = match &current.kernel {
            Some(Ok(k)) => Some((
                k.version.clone(),
                k.path.clone(),
                k.state.clone(),
                k.modules_dep.clone(),
            )),
            Some(Err(_)) => return None,
            None => None,
        };
        Some(Stamp {
            made_by: MADE_BY.to_string(),
            options: current.options.clone(),
            inputs,
            kernel,
            database: current.database.clone(),
            packages: package_ids(packages),
            links: link_pairs(links),
            quick: Quick::of(current, format),
        })
    }

    /// The text, or `None` if a field cannot be written (such a stamp is
    /// not written: the output falls back to upstream's rule).  A quick
    /// record that cannot be written is left out alone.
    fn text(&self) -> Option<String> {
        let path = |p: &Path| String::from_utf8_lossy(p.as_os_str().as_bytes()).into_owned();
        let mut lines: Vec<String> = vec![
            format!("made-by\t{}", self.made_by),
            format!("options\t{}", self.options),
        ];
        if let Some(db) = &self.database {
            for (p, s) in &db.files {
                lines.push(format!("database\t{}\t{}", path(p), s.text()));
            }
            for p in &db.missing {
                lines.push(format!("database-missing\t{}", path(p)));
            }
        }
        for (p, s, d) in &self.inputs {
            lines.push(format!("input\t{}\t{}\t{d}", path(p), s.text()));
        }
        if let Some((v, p, s, m)) = &self.kernel {
            lines.push(format!("kernel\t{v}\t{}\t{}", path(p), s.text()));
            lines.push(match m {
                Some(m) => format!("kernel-modules\t{}", m.text()),
                None => "kernel-modules-missing".to_string(),
            });
        }
        for (n, v, a) in &self.packages {
            lines.push(format!("package\t{n}\t{v}\t{a}"));
        }
        for (p, t) in &self.links {
            lines.push(format!("link\t{}\t{}", path(p), path(t)));
        }
        let mut paths: Vec<&Path> = self.inputs.iter().map(|i| i.0.as_path()).collect();
        paths.extend(self.kernel.iter().map(|k| k.1.as_path()));
        for (p, t) in &self.links {
            paths.extend([p.as_path(), t.as_path()]);
        }
        if let Some(db) = &self.database {
            paths.extend(db.files.iter().map(|f| f.0.as_path()));
            paths.extend(db.missing.iter().map(PathBuf::as_path));
        }
        if !clean(&lines, &paths) {
            return None;
        }
        if let Some(quick) = &self.quick {
            let quick_lines = quick.lines(path);
            let mut quick_paths: Vec<&Path> = quick.files.iter().map(|f| f.0.as_path()).collect();
            quick_paths.push(&quick.invocation.cwd);
            if clean(&quick_lines, &quick_paths) {
                lines.extend(quick_lines);
            }
        }
        let mut text = format!("{HEADER}\n");
        for line in lines.iter().chain([&"end".to_string()]) {
            let _ = writeln!(text, "{line}");
        }
        Some(text)
    }

    /// Parse a stamp's text; `Err` says what is wrong.
    fn parse(text: &str) -> Result<Stamp, String> {
        // Lines end at '\n' only: a '\r' is data, and refused as such.
        let body = text.strip_suffix('\n').ok_or("cut short")?;
        let mut lines = body.split('\n');
        if lines.next() != Some(HEADER) {
            return Err("not a stamp of this layout".into());
        }
        let mut stamp = Stamp::default();
        let mut ended = false;
        for line in lines {
            if ended {
                return Err("text after its end".into());
            }
            let bad = || format!("bad line {:?}", crate::error::capped(line));
            let f: Vec<&str> = line.split('\t').collect();
            if line.contains('\r') || field_count(f[0]) != Some(f.len()) {
                return Err(bad());
            }
            let state = |s: &[&str]| FileState::parse(s).ok_or_else(bad);
            match f.as_slice() {
                ["made-by", v] => stamp.made_by = v.to_string(),
                ["options", v] => stamp.options = v.to_string(),
                ["database", p, s @ ..] => {
                    let state = state(s)?;
                    stamp.database_mut().files.push((PathBuf::from(p), state))
                }
                ["database-missing", p] => stamp.database_mut().missing.push(PathBuf::from(p)),
                ["input", p, s0, s1, s2, d] => {
                    stamp
                        .inputs
                        .push((PathBuf::from(p), state(&[s0, s1, s2])?, d.to_string()))
                }
                ["kernel", v, p, s @ ..] => {
                    stamp.kernel = Some((v.to_string(), PathBuf::from(p), state(s)?, None))
                }
                ["kernel-modules", s @ ..] => {
                    let m = state(s)?;
                    stamp.kernel.as_mut().ok_or_else(bad)?.3 = Some(m);
                }
                ["kernel-modules-missing"] => {
                    stamp.kernel.as_ref().ok_or_else(bad)?;
                }
                ["package", n, v, a] => {
                    stamp
                        .packages
                        .push((n.to_string(), v.to_string(), a.to_string()))
                }
                ["link", p, t] => stamp.links.push((PathBuf::from(p), PathBuf::from(t))),
                [kind, rest @ ..] if kind.starts_with("quick-") => {
                    let quick = stamp.quick.get_or_insert_with(Quick::default);
                    let inv = &mut quick.invocation;
                    match (*kind, rest) {
                        ("quick-arg", [a]) => inv.args.push(a.to_string()),
                        ("quick-cwd", [p]) => inv.cwd = PathBuf::from(p),
                        ("quick-env", [n, v]) => inv.env.push((n.to_string(), Some(v.to_string()))),
                        ("quick-unset", [n]) => inv.env.push((n.to_string(), None)),
                        ("quick-release", [r]) => quick.release = r.to_string(),
                        ("quick-file", [p, s @ ..]) => {
                            quick.files.push((PathBuf::from(p), Some(state(s)?)))
                        }
                        ("quick-absent", [p]) => quick.files.push((PathBuf::from(p), None)),
                        ("quick-output", [o]) => quick.outputs.push(o.to_string()),
                        _ => return Err(bad()),
                    }
                }
                ["end"] => ended = true,
                _ => return Err(bad()),
            }
        }
        if !ended {
            return Err("cut short".into());
        }
        Ok(stamp)
    }

    /// Store the stamp in the directory `dir` (a build's staging output, or
    /// the output a refresh read it from) of `format`.  `false` if it could
    /// not be (no writable text, no user attributes): the output then falls
    /// back to upstream's rule.
    pub fn store(&self, dir: &OwnedFd, format: &dyn Format) -> io::Result<bool> {
        let Some(text) = self.text() else {
            return Ok(false);
        };
        if format.outputs().is_empty() {
            return match rustix::fs::fsetxattr(
                dir,
                ATTRIBUTE,
                &zstd::bulk::compress(text.as_bytes(), 19)?,
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
        let fd = rustix::fs::openat(
            dir,
            temp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )?;
        let mut file = fs::File::from(fd);
        let written = io::Write::write_all(&mut file, text.as_bytes())
            .and_then(|()| file.sync_data())
            .and_then(|()| Ok(rustix::fs::fchmod(&file, Mode::from_raw_mode(0o644))?))
            .and_then(|()| Ok(rustix::fs::renameat(dir, temp.as_str(), dir, FILE_NAME)?));
        if written.is_err() {
            let _ = rustix::fs::unlinkat(dir, temp.as_str(), AtFlags::empty());
        }
        written.map(|()| true)
    }

    /// The stamp in the output directory `dir` of `format`: `Ok(None)` if
    /// it has none, `Err` (why) if it has one that cannot be read.
    fn load(dir: &OwnedFd, format: &dyn Format) -> Result<Option<Stamp>, String> {
        let bytes = if format.outputs().is_empty() {
            let mut buffer = vec![0u8; 64 << 10];
            match rustix::fs::fgetxattr(dir, ATTRIBUTE, &mut buffer) {
                Ok(n) => zstd::bulk::decompress(&buffer[..n], MAX_STAMP as usize)
                    .map_err(|e| e.to_string())?,
                Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            }
        } else {
            let file = match rustix::fs::openat(
                dir,
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

/// What the stamp of the output `output` of `format` records: the
/// packages built (name, version, arch) and the kernel's version; `None`
/// where it has no stamp that can be read (for `BuildResult.from_output`).
pub fn recorded(output: &Path, format: &dyn Format) -> Option<(Vec<PackageId>, Option<String>)> {
    let dir = rustix::fs::open(
        output,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let stamp = Stamp::load(&dir, format).ok()??;
    Some((stamp.packages, stamp.kernel.map(|k| k.0)))
}

/// What `--if-newer` decided.
#[derive(Debug)]
pub enum Decision {
    /// Nothing to do.  `refresh`: the database's files or the command line
    /// changed but not what the build would make; store this stamp in this
    /// directory (the output it was read from) so that the next check need
    /// not read the database.
    UpToDate {
        refresh: Option<(Box<Stamp>, OwnedFd)>,
    },
    /// Build, for these reasons.
    Rebuild(Vec<String>),
    /// The output has no stamp: upstream's rule decides.
    NoStamp,
    /// All holds but the database's files changed: read it (pass a
    /// closure) to compare what the build would take.
    ReadDatabase,
}

/// The closure a build would take now (resolved from the database) and
/// the alternatives links it would make, or why they cannot be known.
pub type Closure<'a> = &'a mut dyn FnMut() -> Result<(Vec<Package>, Vec<Link>), String>;

/// Is the output `output` of `format` what a build from `current` would
/// make?  `closure`: resolves the closure now, if the database may be read
/// (without it a changed database gives [`Decision::ReadDatabase`]).
pub fn decide(
    output: &Path,
    format: &dyn Format,
    current: &mut Current,
    closure: Option<Closure<'_>>,
) -> Decision {
    // One descriptor of OUT (never a symlink) for everything below.
    let dir = match rustix::fs::open(
        output,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(dir) => dir,
        Err(_) => return Decision::Rebuild(vec!["output missing".into()]),
    };
    let present = format
        .outputs()
        .iter()
        .all(|f| rustix::fs::statat(&dir, *f, AtFlags::SYMLINK_NOFOLLOW).is_ok());
    if !present {
        return Decision::Rebuild(vec!["output missing".into()]);
    }
    let stamp = match Stamp::load(&dir, format) {
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
    compare_kernel(&stamp, current, &mut reasons);
    let database_same = stamp.database.is_some() && stamp.database == current.database;
    if !database_same {
        let Some(closure) = closure else {
            return if reasons.is_empty() {
                Decision::ReadDatabase
            } else {
                Decision::Rebuild(reasons)
            };
        };
        match closure() {
            Ok((packages, links)) => {
                compare_packages(&stamp.packages, &package_ids(&packages), &mut reasons);
                compare_links(&stamp.links, &link_pairs(&links), &mut reasons);
            }
            Err(why) => reasons.push(format!("the closure cannot be resolved ({why})")),
        }
    }
    if !reasons.is_empty() {
        return Decision::Rebuild(reasons);
    }
    // Record a new database state, or a command line the quick record does
    // not know yet (another spelling of the same build).
    let quick = Quick::of(current, format);
    let quick_stale = current.invocation.is_some() && stamp.quick != quick;
    let refresh = ((!database_same && current.database.is_some()) || quick_stale).then(|| {
        let stamp = Stamp {
            database: current.database.clone(),
            quick,
            ..stamp
        };
        (Box::new(stamp), dir)
    });
    Decision::UpToDate { refresh }
}

/// Input files added, removed or changed (by content: a file whose size,
/// time or inode changed is hashed and compared).
fn compare_inputs(stamp: &Stamp, current: &mut Current, reasons: &mut Vec<String>) {
    let recorded: HashMap<&Path, (&FileState, &String)> = stamp
        .inputs
        .iter()
        .map(|(p, s, d)| (p.as_path(), (s, d)))
        .collect();
    for input in &mut current.inputs {
        let shown = input.path.display();
        match recorded.get(input.path.as_path()) {
            None => reasons.push(format!("{shown} added")),
            Some((state, digest)) if **state == input.state => {
                input.digest = Some((*digest).clone());
            }
            Some((_, digest)) => match sha256_of(&input.path, &input.state) {
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
    let now: HashSet<&Path> = current.inputs.iter().map(|i| i.path.as_path()).collect();
    for (path, _, _) in &stamp.inputs {
        if !now.contains(path.as_path()) {
            reasons.push(format!("{} removed", path.display()));
        }
    }
}

fn compare_kernel(stamp: &Stamp, current: &Current, reasons: &mut Vec<String>) {
    match (&stamp.kernel, &current.kernel) {
        (None, None) => {}
        (Some((version, path, state, modules)), Some(Ok(now))) => {
            if *version != now.version {
                reasons.push(format!("kernel {version} → {}", now.version));
            } else if *path != now.path || *state != now.state {
                reasons.push(format!("kernel {version} changed ({})", now.path.display()));
            } else if *modules != now.modules_dep {
                reasons.push(format!("kernel {version}'s modules changed"));
            }
        }
        (_, Some(Err(why))) => reasons.push(format!("kernel: {why}")),
        _ => reasons.push("kernel changed".into()),
    }
}

fn link_pairs(links: &[Link]) -> Vec<(PathBuf, PathBuf)> {
    links
        .iter()
        .map(|l| (l.path.clone(), l.target.clone()))
        .collect()
}

/// Alternatives links added, removed or pointing elsewhere.
fn compare_links(
    before: &[(PathBuf, PathBuf)],
    now: &[(PathBuf, PathBuf)],
    reasons: &mut Vec<String>,
) {
    let before: BTreeMap<&PathBuf, &PathBuf> = before.iter().map(|(p, t)| (p, t)).collect();
    let now: BTreeMap<&PathBuf, &PathBuf> = now.iter().map(|(p, t)| (p, t)).collect();
    for (path, target) in &now {
        match before.get(path) {
            Some(was) if was == target => {}
            Some(was) => reasons.push(format!(
                "alternative {} → {} (was {})",
                path.display(),
                target.display(),
                was.display()
            )),
            None => reasons.push(format!(
                "alternative {} → {} added",
                path.display(),
                target.display()
            )),
        }
    }
    for path in before.keys().filter(|p| !now.contains_key(*p)) {
        reasons.push(format!("alternative {} removed", path.display()));
    }
}

/// The closure's packages added, removed or of another version or
/// architecture.
fn compare_packages(before: &[PackageId], now: &[PackageId], reasons: &mut Vec<String>) {
    let by_name = |list: &[PackageId]| -> HashMap<String, BTreeSet<(String, String)>> {
        let mut map: HashMap<String, BTreeSet<(String, String)>> = HashMap::new();
        for (n, v, a) in list {
            map.entry(n.clone())
                .or_default()
                .insert((v.clone(), a.clone()));
        }
        map
    };
    let (before_map, now_map) = (by_name(before), by_name(now));
    let mut names: Vec<&String> = before_map.keys().chain(now_map.keys()).collect();
    names.sort();
    names.dedup();
    let shown = |set: &BTreeSet<(String, String)>| {
        set.iter()
            .map(|(v, a)| format!("{v} ({a})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for name in names {
        match (before_map.get(name), now_map.get(name)) {
            (Some(b), Some(n)) if b == n => {}
            (Some(b), Some(n)) => {
                let versions = |s: &BTreeSet<(String, String)>| {
                    s.iter()
                        .map(|(v, _)| v.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                if versions(b) != versions(n) {
                    reasons.push(format!("{name} {} → {}", versions(b), versions(n)));
                } else {
                    reasons.push(format!("{name} {} → {}", shown(b), shown(n)));
                }
            }
            (Some(b), None) => reasons.push(format!("{name} {} removed", shown(b))),
            (None, Some(n)) => reasons.push(format!("{name} {} added", shown(n))),
            (None, None) => {}
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
        let tar = &crate::format::tar::Tar;
        let mut current =
            Current::new("tar x".into(), std::slice::from_ref(&input), None, None).unwrap();
        assert!(
            Stamp::new(&current, &[], &[], tar).is_none(),
            "no digest yet"
        );
        current.digest_inputs();
        let awk = Link {
            path: "/usr/bin/awk".into(),
            target: "/etc/alternatives/awk".into(),
        };
        let stamp = Stamp::new(&current, &[], std::slice::from_ref(&awk), tar).unwrap();
        let text = stamp.text().unwrap();
        assert!(text.contains("\nlink\t/usr/bin/awk\t/etc/alternatives/awk\n"));
        assert_eq!(Stamp::parse(&text).unwrap(), stamp);
        assert!(text.contains(&sha256_of(&input, &current.inputs[0].state).unwrap()));
        assert_eq!(
            Stamp::parse(&text[..text.len() - 4]).unwrap_err(),
            "cut short"
        );
        assert!(Stamp::parse("other\n").is_err());
        assert!(Stamp::parse(&text.replace("made-by", "made-by\tx")).is_err());
        assert!(Stamp::parse(&text.replace("\noptions", "\r\noptions")).is_err());
        // A field with a tab, newline or carriage return is not stamped.
        for odd in ["a\tb", "a\rb", "a\nb"] {
            let mut c = Current::new(odd.into(), std::slice::from_ref(&input), None, None).unwrap();
            c.digest_inputs();
            assert!(
                Stamp::new(&c, &[], &[], tar).unwrap().text().is_none(),
                "{odd:?}"
            );
        }
    }

    #[test]
    fn closures_are_compared_as_sets_and_said_by_name() {
        let p = |n: &str, v: &str, a: &str| (n.to_string(), v.to_string(), a.to_string());
        let before = [p("bash", "5.2", "amd64"), p("gawk", "1", "amd64")];
        let now = [p("bash", "5.3", "amd64"), p("mawk", "1.3", "amd64")];
        let mut reasons = Vec::new();
        compare_packages(&before, &now, &mut reasons);
        assert_eq!(
            reasons,
            [
                "bash 5.2 → 5.3",
                "gawk 1 (amd64) removed",
                "mawk 1.3 (amd64) added"
            ]
        );
    }

    #[test]
    fn alternatives_links_are_compared_by_path_and_said() {
        let l = |p: &str, t: &str| (PathBuf::from(p), PathBuf::from(t));
        let before = [
            l("/etc/alternatives/awk", "/usr/bin/mawk"),
            l("/etc/alternatives/pager", "/usr/bin/less"),
        ];
        let now = [
            l("/etc/alternatives/awk", "/usr/bin/gawk"),
            l("/etc/alternatives/vi", "/usr/bin/nvi"),
        ];
        let mut reasons = Vec::new();
        compare_links(&before, &now, &mut reasons);
        assert_eq!(
            reasons,
            [
                "alternative /etc/alternatives/awk → /usr/bin/gawk (was /usr/bin/mawk)",
                "alternative /etc/alternatives/vi → /usr/bin/nvi added",
                "alternative /etc/alternatives/pager removed",
            ]
        );
        let mut none = Vec::new();
        compare_links(&before, &before, &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn an_input_changed_after_it_was_listed_leaves_no_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("packages");
        fs::write(&input, "bash\n").unwrap();
        let mut current =
            Current::new("tar".into(), std::slice::from_ref(&input), None, None).unwrap();
        fs::write(&input, "bash\ngzip\n").unwrap(); // while the build runs
        current.digest_inputs();
        assert!(Stamp::new(&current, &[], &[], &crate::format::tar::Tar).is_none());
    }
}
