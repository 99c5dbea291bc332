//! The RPM backend: Fedora, RHEL and kin, openSUSE, CBL-Mariner/Azure Linux.
//!
//! The installed database is read in-process: `rpmdb.sqlite` (rpm >= 4.16)
//! holds one header blob per package, parsed with the `rpm` crate. Older
//! BerkeleyDB `Packages` and SUSE's NDB `Packages.db` databases are exported
//! with `rpmdb --exportdb` (one process, all headers) and parsed the same
//! way. Requires are resolved through provides and file paths, versions
//! compared in RPM EVR order, and rich (boolean) dependencies handled.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use rpm::{DependencyFlags, FileFlags};

use super::{ConfigFile, Driver};
use crate::backend::{hex, host_path, os_release_ids, stays_inside, Backend};
use crate::error::{Error, Result};
use crate::package::{File, FileKind, Package};
use crate::report::Reporter;
use crate::resolve::{self, Clause, Graph};
use crate::rootfs::RootFs;

/// `ID`/`ID_LIKE` words of the RPM family, as upstream's handlers and beyond.
const FEDORA_LIKE: &[&str] = &[
    "fedora",
    "rhel",
    "centos",
    "rocky",
    "almalinux",
    "ol",
    "amzn",
    "mariner",
    "azurelinux",
    "scientific",
    "redhat",
    "cloudlinux",
    "circle",
    "eurolinux",
    "navy",
    "miraclelinux",
];
const SUSE_LIKE: &[&str] = &[
    "suse",
    "opensuse",
    "sles",
    "sled",
    "opensuse-leap",
    "opensuse-tumbleweed",
];

pub const FEDORA: Driver = Driver {
    name: "fedora/rpm",
    kind: "rpm",
    detect: detect_fedora,
    open,
};

pub const SUSE: Driver = Driver {
    name: "suse/rpm",
    kind: "rpm",
    detect: detect_suse,
    open,
};

fn detect_with(root: &RootFs, family: &[&str]) -> bool {
    let ids = os_release_ids(root);
    ids.iter().any(|id| family.contains(&id.as_str())) && database_path(root).is_some()
}

fn detect_fedora(root: &RootFs) -> bool {
    detect_with(root, FEDORA_LIKE)
}

fn detect_suse(root: &RootFs) -> bool {
    detect_with(root, SUSE_LIKE)
}

fn open(root: RootFs) -> Result<Box<dyn Backend>> {
    Ok(Box::new(Rpm::open(root)?))
}

/// Where the database lives (inside the root), and which kind it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    /// BerkeleyDB `Packages` or NDB `Packages.db`: read through `rpmdb`.
    Legacy {
        dbpath: PathBuf,
    },
}

/// The database under `root`, newest layout first.
pub fn database_path(root: &RootFs) -> Option<Database> {
    let is_file = |p: &Path| root.metadata(p).is_ok_and(|m| m.is_file());
    const DIRS: [&str; 2] = ["/usr/lib/sysimage/rpm", "/var/lib/rpm"];
    for dir in DIRS {
        let sqlite = Path::new(dir).join("rpmdb.sqlite");
        if is_file(&sqlite) {
            return Some(Database::Sqlite(sqlite));
        }
    }
    for dir in DIRS {
        for name in ["Packages", "Packages.db"] {
            if is_file(&Path::new(dir).join(name)) {
                return Some(Database::Legacy {
                    dbpath: PathBuf::from(dir),
                });
            }
        }
    }
    None
}

fn backend_error(message: impl Into<String>) -> Error {
    Error::backend("rpm", message)
}

/// Check a header's index before the `rpm` crate sees it: the crate
/// trusts the counts and offsets (allocating what they say, slicing where
/// they point), so hostile input could exhaust memory or panic it.  Limits
/// are rpm's own: at most 0xffff entries and 256 MiB of data.  `bytes`
/// starts at the entry count; returns the header's length.
fn check_header(bytes: &[u8]) -> std::result::Result<usize, String> {
    let be32 = |at: usize| -> u32 { u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) };
    let total = header_length(bytes)?;
    if total > bytes.len() {
        return Err(format!(
            "header truncated ({} of {total} bytes)",
            bytes.len()
        ));
    }
    let data = be32(4) as usize;
    for i in 0..be32(0) as usize {
        let at = 8 + i * 16;
        let (kind, offset, count) = (be32(at + 4), be32(at + 8) as usize, be32(at + 12) as usize);
        if kind > 9 || offset > data || count > data.max(1) * 8 {
            return Err(format!(
                "header entry {i} is malformed (type {kind}, offset {offset}, count {count})"
            ));
        }
    }
    Ok(total)
}

/// A header's length from its entry count and data size (the 8 bytes
/// `bytes` starts with), within rpm's limits.
fn header_length(bytes: &[u8]) -> std::result::Result<usize, String> {
    if bytes.len() < 8 {
        return Err("header too short".into());
    }
    let entries = u32::from_be_bytes(bytes[0..4].try_into().unwrap()) as usize;
    let data = u32::from_be_bytes(bytes[4..8].try_into().unwrap()) as usize;
    if entries == 0 || entries > 0xffff {
        return Err(format!("header claims {entries} entries"));
    }
    if data > 256 << 20 {
        return Err(format!("header claims {data} bytes of data"));
    }
    Ok(8 + entries * 16 + data)
}

/// Run an `rpm` crate parser, turning a panic on input it did not expect
/// into an error (a last line of defence behind [`check_header`]).
fn guarded<T>(
    f: impl FnOnce() -> std::result::Result<T, rpm::Error>,
) -> std::result::Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("the header is malformed".into()),
    }
}

/// The `rpm` crate parses headers inside a package frame only; the
/// database stores bare headers (no magic). Frame one: a lead with the
/// package magic, an empty signature header, then the header with its magic.
fn metadata_from_header(bare: &[u8]) -> std::result::Result<rpm::PackageMetadata, String> {
    let length = check_header(bare)?;
    let bare = &bare[..length];
    let mut frame = Vec::with_capacity(96 + 16 + 8 + bare.len());
    frame.extend_from_slice(&[0xed, 0xab, 0xee, 0xdb, 3, 0]);
    frame.resize(96, 0);
    frame[78..80].copy_from_slice(&5u16.to_be_bytes()); // signature type: header
    frame.extend_from_slice(&[0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0]);
    frame.extend_from_slice(&[0u8; 8]); // no entries, no data
    frame.extend_from_slice(&[0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0]);
    frame.extend_from_slice(bare);
    guarded(|| rpm::PackageMetadata::parse(&mut std::io::Cursor::new(frame)))
}

/// A package from a bare header blob (as `rpmdb.sqlite` stores it).
pub fn package_from_header(blob: &[u8]) -> Result<Package> {
    let metadata =
        metadata_from_header(blob).map_err(|e| backend_error(format!("corrupt header: {e}")))?;
    guarded(|| installed_from(&metadata, 0))
        .map(|i| i.package)
        .map_err(|e| backend_error(format!("incomplete header: {e}")))
}

/// A requirement or provide: name, comparison, EVR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    pub flags: DependencyFlags,
    pub version: String,
}

impl Dep {
    fn from(d: rpm::Dependency) -> Dep {
        Dep {
            name: d.name,
            flags: d.flags,
            version: d.version,
        }
    }

    fn text(&self) -> String {
        let op = comparison(self.flags);
        if op.is_empty() || self.version.is_empty() {
            self.name.clone()
        } else {
            format!("{} {op} {}", self.name, self.version)
        }
    }
}

fn comparison(flags: DependencyFlags) -> &'static str {
    let less = flags.contains(DependencyFlags::LESS);
    let greater = flags.contains(DependencyFlags::GREATER);
    let equal = flags.contains(DependencyFlags::EQUAL);
    match (less, greater, equal) {
        (true, false, true) => "<=",
        (true, false, false) => "<",
        (false, true, true) => ">=",
        (false, true, false) => ">",
        (false, false, true) => "=",
        _ => "",
    }
}

/// Does a provide of version `provided` satisfy `op required`? Versions
/// compare in RPM EVR order; a missing epoch on the requirement side
/// matches any epoch, as rpm does.
pub fn version_satisfies(provided: &str, flags: DependencyFlags, required: &str) -> bool {
    let op = comparison(flags);
    if op.is_empty() || required.is_empty() || provided.is_empty() {
        return true;
    }
    let provided = if !required.contains(':') {
        provided.split_once(':').map_or(provided, |(_, rest)| rest)
    } else {
        provided
    };
    // A requirement without a release matches every release.
    let provided = if !required.contains('-') {
        provided.rsplit_once('-').map_or(provided, |(v, _)| v)
    } else {
        provided
    };
    let order = rpm::rpm_evr_compare(provided, required);
    use std::cmp::Ordering::*;
    match op {
        "<=" => order != Greater,
        "<" => order == Less,
        ">=" => order != Less,
        ">" => order == Greater,
        _ => order == Equal,
    }
}

/// One installed package as the backend keeps it.
#[derive(Debug, Clone)]
struct Installed {
    package: Package,
    provides: Vec<Dep>,
    requires: Vec<Dep>,
    /// Files, ghosts dropped.
    files: Vec<InstalledFile>,
}

/// One file as the header records it.
#[derive(Debug, Clone)]
struct InstalledFile {
    path: PathBuf,
    mode: u32,
    is_config: bool,
    mtime: u32,
    digest: Option<rpm::FileDigest>,
}

/// An RPM database, loaded.
#[derive(Debug)]
pub struct Rpm {
    root: RootFs,
    database: Database,
    installed: Vec<Installed>,
    /// Provide name -> (package, provide index).
    provides: HashMap<String, Vec<(usize, usize)>>,
    /// File path -> owning packages.
    owners: HashMap<PathBuf, Vec<usize>>,
    native_arch: String,
}

/// The EVR as `[epoch:]version-release`.
fn evr(epoch: u32, version: &str, release: &str) -> String {
    if epoch == 0 {
        format!("{version}-{release}")
    } else {
        format!("{epoch}:{version}-{release}")
    }
}

/// Turn one parsed header into the package model.
fn installed_from(
    metadata: &rpm::PackageMetadata,
    id: usize,
) -> std::result::Result<Installed, rpm::Error> {
    let name = metadata.get_name()?.to_string();
    let epoch = metadata.get_epoch().unwrap_or(0);
    let version = metadata.get_version()?.to_string();
    let release = metadata.get_release()?.to_string();
    let arch = metadata.get_arch().unwrap_or("").to_string();
    let full_name = if arch.is_empty() {
        format!("{name}-{}", evr(epoch, &version, &release))
    } else {
        format!("{name}-{}.{arch}", evr(epoch, &version, &release))
    };
    let requires: Vec<Dep> = metadata
        .get_requires()
        .unwrap_or_default()
        .into_iter()
        .map(Dep::from)
        .collect();
    let provides: Vec<Dep> = metadata
        .get_provides()
        .unwrap_or_default()
        .into_iter()
        .map(Dep::from)
        .collect();
    let files = metadata
        .get_file_entries()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| !f.flags.contains(FileFlags::GHOST))
        .map(|f| InstalledFile {
            mode: f.mode.raw_mode() as u32,
            is_config: f.flags.contains(FileFlags::CONFIG),
            mtime: f.modified_at.0,
            digest: f.digest,
            path: f.path,
        })
        .collect();
    Ok(Installed {
        package: Package {
            name,
            version: evr(epoch, &version, &release),
            arch,
            full_name,
            depends: requires.iter().map(Dep::text).collect(),
            id,
        },
        provides,
        requires,
        files,
    })
}

/// Read every header blob of an `rpmdb.sqlite`, read-only. A database in
/// WAL mode needs its `-shm` index; when the directory is not writable
/// (a non-root user, a read-only mount) and there is nothing in the WAL,
/// the file is opened immutable; otherwise a private copy is read.
fn sqlite_blobs(path: &Path) -> Result<Vec<Vec<u8>>> {
    use rusqlite::{Connection, OpenFlags};
    let query = |conn: &Connection| -> rusqlite::Result<Vec<Vec<u8>>> {
        let mut stmt = conn.prepare("SELECT blob FROM Packages ORDER BY hnum")?;
        let rows = stmt.query_map([], |row| row.get::<_, Vec<u8>>(0))?;
        rows.collect()
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let wal_empty = fs::metadata(&wal).map(|m| m.len() == 0).unwrap_or(true);
    let uri = |p: &Path, immutable: bool| {
        format!(
            "file:{}{}",
            p.display()
                .to_string()
                .replace('%', "%25")
                .replace('?', "%3f")
                .replace('#', "%23"),
            if immutable {
                "?immutable=1"
            } else {
                "?mode=ro"
            }
        )
    };
    let first = Connection::open_with_flags(uri(path, wal_empty), flags).and_then(|c| query(&c));
    match first {
        Ok(blobs) => Ok(blobs),
        Err(first_error) => {
            // A copy of the database and its WAL, in a directory we own.
            let scratch = crate::output::scratch_dir()?;
            let copy = scratch.path().join("rpmdb.sqlite");
            fs::copy(path, &copy).map_err(|e| Error::io("copying", path, e))?;
            if !wal_empty {
                fs::copy(&wal, scratch.path().join("rpmdb.sqlite-wal"))
                    .map_err(|e| Error::io("copying", &wal, e))?;
            }
            let conn = Connection::open_with_flags(&copy, OpenFlags::SQLITE_OPEN_READ_WRITE)
                .map_err(|e| {
                    backend_error(format!("{}: {e} (first: {first_error})", path.display()))
                })?;
            query(&conn)
                .map_err(|e| backend_error(format!("{}: not an rpm database: {e}", path.display())))
        }
    }
}

/// The most an rpm database directory copied out of another root may hold
/// (a distribution's full database is a few hundred megabytes).
const MAX_DATABASE_COPY: u64 = 1 << 30;

/// The regular files of the database directory `dir` of `root` (not
/// followed through symlinks, at most [`MAX_DATABASE_COPY`] bytes in all),
/// copied into a private scratch directory.
fn copy_database(root: &RootFs, dir: &Path) -> Result<crate::output::Scratch> {
    let scratch = crate::output::scratch_dir()?;
    let shown = root.display_path(dir);
    let mut left = MAX_DATABASE_COPY;
    let names = root
        .read_dir(dir)
        .map_err(|e| Error::io("listing", &shown, e))?;
    for name in names {
        let path = dir.join(&name);
        let Ok((file, meta)) = root.open_regular(&path) else {
            continue; // a directory, a symlink, a socket: not database data
        };
        left = left.checked_sub(meta.len()).ok_or_else(|| {
            backend_error(format!(
                "{}: the database files hold more than {MAX_DATABASE_COPY} bytes",
                shown.display()
            ))
        })?;
        let dest = scratch.path().join(&name);
        let mut out = fs::File::create(&dest).map_err(|e| Error::io("creating", &dest, e))?;
        std::io::copy(&mut std::io::Read::take(file, meta.len()), &mut out)
            .map_err(|e| Error::io("copying", root.display_path(&path), e))?;
    }
    Ok(scratch)
}

/// `rpmdb --exportdb` output: headers with their magic, one after another.
fn exported_blobs(root: &Path, dbpath: &Path) -> Result<Vec<Vec<u8>>> {
    let output = Command::new("rpmdb")
        .arg("--root")
        .arg(root)
        .arg("--dbpath")
        .arg(dbpath)
        .arg("--exportdb")
        .output()
        .map_err(|e| {
            backend_error(format!(
                "{}: a BerkeleyDB/NDB rpm database needs the rpm tools to read it ({e}); install rpm",
                host_path(root, dbpath).display()
            ))
        })?;
    if !output.status.success() {
        return Err(backend_error(format!(
            "rpmdb --exportdb of {}: {}",
            host_path(root, dbpath).display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let mut blobs = Vec::new();
    let mut rest = output.stdout.as_slice();
    while rest.len() >= 16 {
        let il = u32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize;
        let dl = u32::from_be_bytes(rest[12..16].try_into().unwrap()) as usize;
        let end = 16 + il * 16 + dl;
        if rest[0..3] != [0x8e, 0xad, 0xe8] || end > rest.len() {
            return Err(backend_error(
                "rpmdb --exportdb printed something that is not a header list",
            ));
        }
        blobs.push(rest[8..end].to_vec());
        rest = &rest[end..];
    }
    Ok(blobs)
}

impl Rpm {
    pub fn open(root: RootFs) -> Result<Rpm> {
        let database = database_path(&root).ok_or_else(|| {
            backend_error(format!(
                "no rpm database under {} (looked for usr/lib/sysimage/rpm and var/lib/rpm)",
                root.path().display()
            ))
        })?;
        // Another root's database is copied out of it first (through
        // RootFs: inside the root, regular files, bounded) and read from
        // the copy: SQLite and `rpmdb` open files by path, and `rpmdb
        // --root R` would create its lock file through R's symlinks.
        let copy = if root.is_host() {
            None
        } else {
            let dir = match &database {
                Database::Sqlite(path) => path.parent().unwrap_or(Path::new("/")).to_path_buf(),
                Database::Legacy { dbpath } => dbpath.clone(),
            };
            Some(copy_database(&root, &dir)?)
        };
        let blobs = match (&database, &copy) {
            (Database::Sqlite(path), None) => {
                let host = root
                    .resolved_host_path(path)
                    .map_err(|e| Error::io("resolving", root.display_path(path), e))?;
                sqlite_blobs(&host)?
            }
            (Database::Sqlite(_), Some(copy)) => sqlite_blobs(&copy.path().join("rpmdb.sqlite"))?,
            (Database::Legacy { dbpath }, None) => exported_blobs(root.path(), dbpath)?,
            (Database::Legacy { .. }, Some(copy)) => exported_blobs(Path::new("/"), copy.path())?,
        };
        let where_ = match &database {
            Database::Sqlite(p) => root.display_path(p),
            Database::Legacy { dbpath } => root.display_path(dbpath),
        };
        let mut installed = Vec::with_capacity(blobs.len());
        for (i, blob) in blobs.iter().enumerate() {
            let metadata = metadata_from_header(blob).map_err(|e| {
                backend_error(format!(
                    "{}: header {} is corrupt: {e}",
                    where_.display(),
                    i + 1
                ))
            })?;
            let name = metadata.get_name().unwrap_or("");
            if name == "gpg-pubkey" {
                continue; // imported signing keys, not packages
            }
            let id = installed.len();
            installed.push(guarded(|| installed_from(&metadata, id)).map_err(|e| {
                backend_error(format!(
                    "{}: header {} is incomplete: {e}",
                    where_.display(),
                    i + 1
                ))
            })?);
        }
        Ok(Rpm::from_installed(root, database, installed))
    }

    fn from_installed(root: RootFs, database: Database, installed: Vec<Installed>) -> Rpm {
        let mut provides: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        let mut owners: HashMap<PathBuf, Vec<usize>> = HashMap::new();
        for (id, p) in installed.iter().enumerate() {
            for (j, d) in p.provides.iter().enumerate() {
                provides.entry(d.name.clone()).or_default().push((id, j));
            }
            for f in &p.files {
                owners.entry(f.path.clone()).or_default().push(id);
            }
        }
        let native_arch = match std::env::consts::ARCH {
            "x86" => "i686",
            other => other,
        }
        .to_string();
        Rpm {
            root,
            database,
            installed,
            provides,
            owners,
            native_arch,
        }
    }

    /// Packages that satisfy one simple requirement, best first: native
    /// arch or noarch, then upstream's rule (shortest name, then lexical).
    fn providers(&self, dep: &Dep) -> Vec<usize> {
        let mut found: Vec<usize> = Vec::new();
        if dep.name.starts_with('/') {
            if let Some(ids) = self.owners.get(Path::new(&dep.name)) {
                found.extend(ids);
            }
        }
        if let Some(list) = self.provides.get(&dep.name) {
            for &(id, j) in list {
                let provide = &self.installed[id].provides[j];
                if version_satisfies(&provide.version, dep.flags, &dep.version) {
                    found.push(id);
                }
            }
        }
        found.sort_by(|&a, &b| {
            let (pa, pb) = (&self.installed[a].package, &self.installed[b].package);
            let rank = |p: &Package| !(p.arch == self.native_arch || p.arch == "noarch");
            rank(pa)
                .cmp(&rank(pb))
                .then(pa.name.len().cmp(&pb.name.len()))
                .then(pa.name.cmp(&pb.name))
                .then(a.cmp(&b))
        });
        found.dedup();
        found
    }

    /// Clauses for one requirement, simple or rich.
    fn clauses_for(&self, dep: &Dep) -> Vec<Clause> {
        if dep.name.starts_with('(') {
            match rich::parse(&dep.name) {
                Some(expr) => return self.rich_clauses(&expr, &dep.name),
                None => {
                    return vec![Clause {
                        text: dep.name.clone(),
                        alternatives: vec![],
                    }]
                }
            }
        }
        vec![Clause {
            text: dep.text(),
            alternatives: vec![self.providers(dep)],
        }]
    }

    /// A boolean dependency as clauses: `and` is several clauses, `or`
    /// one clause with alternatives; `if`/`unless` depend on what is
    /// installed (the database is a consistent state: a condition that
    /// holds there holds for the appliance); `with` keeps providers of
    /// both sides, `without` those of the left not of the right.
    fn rich_clauses(&self, expr: &rich::Expr, text: &str) -> Vec<Clause> {
        use rich::Expr::*;
        match expr {
            Atom(dep) => self
                .clauses_for(dep)
                .into_iter()
                .map(|c| Clause {
                    text: format!("{} (in {text})", c.text),
                    ..c
                })
                .collect(),
            And(items) => items
                .iter()
                .flat_map(|e| self.rich_clauses(e, text))
                .collect(),
            Or(items) => vec![Clause {
                text: text.to_string(),
                alternatives: items.iter().map(|e| self.candidates(e)).collect(),
            }],
            If(then, cond, otherwise) => {
                self.conditional(then, cond, otherwise.as_deref(), true, text)
            }
            Unless(then, cond, otherwise) => {
                self.conditional(then, cond, otherwise.as_deref(), false, text)
            }
            With(a, b) => self.filtered(a, b, true, text),
            Without(a, b) => self.filtered(a, b, false, text),
        }
    }

    /// `a with b` (`in_right`) or `a without b`: the providers of `a` that
    /// do (or do not) also satisfy `b`, as one clause.
    fn filtered(&self, a: &rich::Expr, b: &rich::Expr, in_right: bool, text: &str) -> Vec<Clause> {
        let right = self.candidates(b);
        vec![Clause {
            text: text.to_string(),
            alternatives: vec![self
                .candidates(a)
                .into_iter()
                .filter(|c| right.contains(c) == in_right)
                .collect()],
        }]
    }

    /// `then if cond else otherwise` (or `unless`, with `when_installed`
    /// false), judged by what is installed.
    fn conditional(
        &self,
        then: &rich::Expr,
        cond: &rich::Expr,
        otherwise: Option<&rich::Expr>,
        when_installed: bool,
        text: &str,
    ) -> Vec<Clause> {
        let installed = !self.candidates(cond).is_empty();
        match (installed == when_installed, otherwise) {
            (true, _) => self.rich_clauses(then, text),
            (false, Some(e)) => self.rich_clauses(e, text),
            (false, None) => vec![],
        }
    }

    /// Every package that could satisfy an expression on its own.
    fn candidates(&self, expr: &rich::Expr) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for clause in self.rich_clauses(expr, "") {
            for alt in clause.alternatives {
                for c in alt {
                    if !out.contains(&c) {
                        out.push(c);
                    }
                }
            }
        }
        out
    }
}

impl Graph for Rpm {
    fn clauses(&self, id: usize) -> Vec<Clause> {
        let mut out = Vec::new();
        for dep in &self.installed[id].requires {
            // rpmlib() features are the rpm binary's, not packages.
            if dep.name.starts_with("rpmlib(") || dep.flags.contains(DependencyFlags::RPMLIB) {
                continue;
            }
            out.extend(self.clauses_for(dep));
        }
        out
    }
}

impl Backend for Rpm {
    fn name(&self) -> &'static str {
        "rpm"
    }

    fn root(&self) -> &RootFs {
        &self.root
    }

    fn packages(&self) -> Vec<Package> {
        let mut all: Vec<Package> = self.installed.iter().map(|i| i.package.clone()).collect();
        all.sort_by(|a, b| a.full_name.cmp(&b.full_name));
        all
    }

    fn lookup(&self, name: &str) -> Option<Package> {
        let mut matches: Vec<&Installed> = self
            .installed
            .iter()
            .filter(|i| i.package.name == name || i.package.full_name == name)
            .collect();
        // Several installed arches (or kernels): the native one, then the
        // newest.
        matches.sort_by(|a, b| {
            let native = |p: &Package| p.arch == self.native_arch || p.arch == "noarch";
            native(&b.package)
                .cmp(&native(&a.package))
                .then_with(|| rpm::rpm_evr_compare(&b.package.version, &a.package.version))
        });
        matches.first().map(|i| i.package.clone())
    }

    fn resolve(&self, roots: &[Package], reporter: &Reporter) -> Result<Vec<Package>> {
        Ok(resolve::closure_packages(
            self,
            roots,
            |i| &self.installed[i].package,
            "rpm",
            reporter,
        ))
    }

    fn files(&self, package: &Package) -> Result<Vec<File>> {
        let installed = &self.installed[package.id];
        let mut out = Vec::with_capacity(installed.files.len());
        for f in &installed.files {
            if !stays_inside(&f.path) {
                return Err(backend_error(format!(
                    "{}: the database lists {:?}, which is not a plain absolute path",
                    package.full_name,
                    crate::error::capped(&f.path.to_string_lossy())
                )));
            }
            let (kind, mode) = match self.root.symlink_metadata(&f.path) {
                Ok(meta) => {
                    use std::os::unix::fs::MetadataExt;
                    (FileKind::of(&meta), meta.mode())
                }
                Err(_) => (FileKind::Missing, f.mode),
            };
            out.push(File {
                path: f.path.clone(),
                source: None,
                kind,
                mode,
                is_config: f.is_config,
            });
        }
        Ok(out)
    }

    fn database_mtime(&self) -> Result<SystemTime> {
        let path = match &self.database {
            Database::Sqlite(p) => p.clone(),
            Database::Legacy { dbpath } => dbpath.clone(),
        };
        let mut newest = self
            .root
            .metadata(&path)
            .and_then(|m| m.modified())
            .map_err(|e| Error::io("reading", self.root.display_path(&path), e))?;
        let mut wal = path.into_os_string();
        wal.push("-wal");
        if let Ok(t) = self
            .root
            .metadata(Path::new(&wal))
            .and_then(|m| m.modified())
        {
            newest = newest.max(t);
        }
        Ok(newest)
    }

    fn pristine_config_files(
        &self,
        wanted: &[(Package, Vec<PathBuf>)],
        scratch: &Path,
        packager_config: Option<&Path>,
        always_download: bool,
        reporter: &Reporter,
    ) -> Result<Vec<ConfigFile>> {
        let mut out = Vec::new();
        let mut to_fetch: Vec<(&Package, Vec<PathBuf>)> = Vec::new();
        for (package, paths) in wanted {
            let installed = &self.installed[package.id];
            let mut missing = Vec::new();
            for path in paths {
                let verified = if always_download {
                    None
                } else {
                    installed
                        .files
                        .iter()
                        .find(|f| &f.path == path)
                        .and_then(|f| verified_host_copy(&self.root, f))
                };
                match verified {
                    Some(config) => out.push(config),
                    None => missing.push(path.clone()),
                }
            }
            crate::backend::check_config_total(&out)?;
            if !missing.is_empty() {
                to_fetch.push((package, missing));
            }
        }
        reporter.info(1, || {
            format!(
                "rpm: {} config files verified against the database's digests, {} packages to download",
                out.len(),
                to_fetch.len()
            )
        });
        if to_fetch.is_empty() {
            return Ok(out);
        }
        let names: Vec<String> = to_fetch.iter().map(|(p, _)| p.full_name.clone()).collect();
        download(
            self.root.is_host(),
            &names,
            scratch,
            packager_config,
            reporter,
        )?;
        let mut downloaded: HashMap<String, PathBuf> = HashMap::new();
        for entry in walkdir::WalkDir::new(scratch).into_iter().flatten() {
            if entry.path().extension().is_some_and(|e| e == "rpm") {
                if let Ok((package, _)) = read_package_file(entry.path()) {
                    downloaded.insert(package.full_name, entry.path().to_path_buf());
                }
            }
        }
        for (package, paths) in to_fetch {
            let Some(file) = downloaded.get(&package.full_name) else {
                return Err(backend_error(format!(
                    "the package manager did not download {} (is the installed version still in a repository?)",
                    package.full_name
                )));
            };
            out.extend(config_files_from_rpm(file, &paths)?);
            crate::backend::check_config_total(&out)?;
        }
        Ok(out)
    }
}

/// The host's copy of a config file, if its digest equals the one the
/// database recorded for the shipped file (then it *is* the pristine file).
fn verified_host_copy(root: &RootFs, file: &InstalledFile) -> Option<ConfigFile> {
    use md5::Digest as _;
    let digest = file.digest.as_ref()?;
    let (data, _) = crate::backend::verified_installed(root, &file.path, |data| {
        let actual = match digest.algo {
            rpm::DigestAlgorithm::Md5 => hex(&md5::Md5::digest(data)),
            rpm::DigestAlgorithm::Sha2_256 => hex(&sha2::Sha256::digest(data)),
            rpm::DigestAlgorithm::Sha2_384 => hex(&sha2::Sha384::digest(data)),
            rpm::DigestAlgorithm::Sha2_512 => hex(&sha2::Sha512::digest(data)),
            _ => return false,
        };
        actual == digest.digest
    })?;
    Some(ConfigFile {
        path: file.path.clone(),
        mode: file.mode & 0o7777,
        mtime: file.mtime as u64,
        data,
    })
}

/// The regular files among `paths` from an `.rpm`'s payload, unpacked
/// in-process.
fn config_files_from_rpm(path: &Path, paths: &[PathBuf]) -> Result<Vec<ConfigFile>> {
    let corrupt = |e: &dyn std::fmt::Display| {
        backend_error(format!("{}: cannot unpack: {e}", path.display()))
    };
    check_rpm_file(path).map_err(|e| corrupt(&e))?;
    let package = guarded(|| rpm::Package::open(path)).map_err(|e| corrupt(&e))?;
    let entries = guarded(|| package.files()?.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| corrupt(&e))?;
    let mut out = Vec::new();
    for entry in entries {
        let meta = &entry.metadata;
        if paths.contains(&meta.path) && meta.mode.raw_mode() as u32 & 0o170000 == 0o100000 {
            out.push(ConfigFile {
                path: meta.path.clone(),
                mode: meta.mode.permissions() as u32,
                mtime: meta.modified_at.0 as u64,
                data: entry.content,
            });
        }
    }
    Ok(out)
}

/// Download the installed versions of `names` into `dest` with the first
/// package downloader found: dnf5, dnf, yumdownloader, zypper (as upstream).
///
/// The downloader runs as whoever runs supermin, often root, so it must
/// never take its configuration from another root: `dnf --installroot R`
/// reads `R/etc/dnf/dnf.conf`, whose `pluginpath` runs R's owner's code as
/// root.  For the host it uses the host's configuration; for another root
/// only a `--packager-config` the caller vouches for.  Names come from a
/// database that may be hostile too: each must look like an RPM NEVRA and
/// they follow `--`, so none can be read as an option.
fn download(
    host: bool,
    names: &[String],
    dest: &Path,
    config: Option<&Path>,
    reporter: &Reporter,
) -> Result<()> {
    let which = |tool: &str| {
        std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
            .unwrap_or(false)
    };
    let Some(tool) = ["dnf5", "dnf", "yumdownloader", "zypper"]
        .into_iter()
        .find(|t| which(t))
    else {
        return Err(backend_error(
            "no package downloader found (dnf5, dnf, yumdownloader or zypper) to fetch pristine \
             config files; install one, or use --use-installed",
        ));
    };
    if !host && config.is_none() {
        return Err(backend_error(
            "pristine config files of another root are downloaded only with a package manager \
             configuration you trust: pass --packager-config FILE (its repositories), or use \
             --use-installed (the root's own copies); its own configuration is never used, as \
             running its plugins would run its owner's code",
        ));
    }
    if let Some(bad) = names.iter().find(|n| !is_nevra(n)) {
        return Err(backend_error(format!(
            "the database names a package {:?}, which is not a package name: refusing to pass it to {tool}",
            crate::error::capped(bad)
        )));
    }
    let mut command = Command::new(tool);
    match tool {
        "zypper" => {
            command.arg("--non-interactive");
            if let Some(c) = config {
                command.arg("--config").arg(c);
            }
            command.arg("--pkg-cache-dir").arg(dest).arg("download");
        }
        _ => {
            if tool != "yumdownloader" {
                command.arg("download");
            }
            command.arg("--destdir").arg(dest);
            if let Some(c) = config {
                command.arg(format!("--config={}", c.display()));
            }
        }
    }
    command.arg("--");
    command.args(names);
    reporter.info(1, || format!("rpm: running {command:?}"));
    let output = crate::process::output(&mut command, reporter)?
        .map_err(|e| backend_error(format!("cannot run {tool}: {e}")))?;
    if !output.status.success() {
        return Err(backend_error(format!(
            "{tool} could not download {}: {}",
            names.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// Does `name` look like an RPM `name-[epoch:]version-release.arch`: an
/// alphanumeric first character, then only what rpm allows in names and
/// versions?  (Never an option to a command line.)
fn is_nevra(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-~^:".contains(c))
}

/// Check an `.rpm` file's lead and both headers (see [`check_header`])
/// without reading more than they occupy.
fn check_rpm_file(path: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::FileExt;
    let file = fs::File::open(path).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let read = |offset: u64, len: u64| -> std::result::Result<Vec<u8>, String> {
        if offset + len > size {
            return Err(format!(
                "truncated ({size} bytes; a header needs {})",
                offset + len
            ));
        }
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)
            .map_err(|e| e.to_string())?;
        Ok(buf)
    };
    if read(0, 4)? != [0xed, 0xab, 0xee, 0xdb] {
        return Err("no rpm lead magic".into());
    }
    let mut offset = 96u64;
    for (which, pad) in [("signature", true), ("main", false)] {
        let intro = read(offset, 16)?;
        if intro[0..3] != [0x8e, 0xad, 0xe8] {
            return Err(format!("no {which} header magic"));
        }
        let length = header_length(&intro[8..]).map_err(|e| format!("{which} {e}"))? as u64;
        let header = read(offset + 8, length)?;
        check_header(&header).map_err(|e| format!("{which} {e}"))?;
        offset += 8 + length;
        if pad {
            offset = offset.div_ceil(8) * 8;
        }
    }
    Ok(())
}

/// A `.rpm` file: its package and files (the in-process `rpm -qlp`).
pub fn read_package_file(path: &Path) -> Result<(Package, Vec<File>)> {
    let corrupt = |e: &dyn std::fmt::Display| {
        backend_error(format!("{}: not a valid .rpm file: {e}", path.display()))
    };
    check_rpm_file(path).map_err(|e| corrupt(&e))?;
    let metadata = guarded(|| rpm::PackageMetadata::open(path)).map_err(|e| corrupt(&e))?;
    let installed = guarded(|| installed_from(&metadata, 0)).map_err(|e| corrupt(&e))?;
    let entries = metadata.get_file_entries().unwrap_or_default();
    let files = entries
        .into_iter()
        .map(|f| {
            let mode = f.mode.raw_mode() as u32;
            let kind = match mode & 0o170000 {
                0o040000 => FileKind::Directory,
                0o120000 => FileKind::Symlink,
                0o100000 => FileKind::Regular,
                _ => FileKind::Special,
            };
            File {
                path: f.path,
                source: None,
                kind,
                mode,
                is_config: f.flags.contains(FileFlags::CONFIG),
            }
        })
        .collect();
    Ok((installed.package, files))
}

/// Rich (boolean) dependencies: `(a or (b and c))`, `(a if b else c)`.
pub mod rich {
    use super::Dep;
    use rpm::DependencyFlags;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Expr {
        Atom(Dep),
        And(Vec<Expr>),
        Or(Vec<Expr>),
        If(Box<Expr>, Box<Expr>, Option<Box<Expr>>),
        Unless(Box<Expr>, Box<Expr>, Option<Box<Expr>>),
        With(Box<Expr>, Box<Expr>),
        Without(Box<Expr>, Box<Expr>),
    }

    fn tokens(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut word = String::new();
        for c in text.chars() {
            match c {
                '(' | ')' => {
                    if !word.is_empty() {
                        out.push(std::mem::take(&mut word));
                    }
                    out.push(c.to_string());
                }
                c if c.is_whitespace() => {
                    if !word.is_empty() {
                        out.push(std::mem::take(&mut word));
                    }
                }
                c => word.push(c),
            }
        }
        if !word.is_empty() {
            out.push(word);
        }
        out
    }

    /// Parse a rich dependency; None when it is malformed.
    pub fn parse(text: &str) -> Option<Expr> {
        let tokens = tokens(text);
        let mut pos = 0;
        let expr = parse_expr(&tokens, &mut pos)?;
        (pos == tokens.len()).then_some(expr)
    }

    fn parse_expr(t: &[String], pos: &mut usize) -> Option<Expr> {
        if t.get(*pos)? == "(" {
            *pos += 1;
            let first = parse_expr(t, pos)?;
            let result = match t.get(*pos)?.as_str() {
                ")" => first,
                op @ ("and" | "or" | "with") => {
                    let mut items = vec![first];
                    while t.get(*pos).map(String::as_str) == Some(op) {
                        *pos += 1;
                        items.push(parse_expr(t, pos)?);
                    }
                    match op {
                        "and" => Expr::And(items),
                        "or" => Expr::Or(items),
                        _ => items
                            .into_iter()
                            .reduce(|a, b| Expr::With(Box::new(a), Box::new(b)))?,
                    }
                }
                op @ ("if" | "unless") => {
                    *pos += 1;
                    let cond = parse_expr(t, pos)?;
                    let otherwise = if t.get(*pos).map(String::as_str) == Some("else") {
                        *pos += 1;
                        Some(Box::new(parse_expr(t, pos)?))
                    } else {
                        None
                    };
                    if op == "if" {
                        Expr::If(Box::new(first), Box::new(cond), otherwise)
                    } else {
                        Expr::Unless(Box::new(first), Box::new(cond), otherwise)
                    }
                }
                "without" => {
                    *pos += 1;
                    Expr::Without(Box::new(first), Box::new(parse_expr(t, pos)?))
                }
                _ => return None,
            };
            if t.get(*pos)? != ")" {
                return None;
            }
            *pos += 1;
            return Some(result);
        }
        // A simple dependency: NAME [OP VERSION].
        let name = t.get(*pos)?.clone();
        if ["and", "or", "if", "unless", "else", "with", "without", ")"].contains(&name.as_str()) {
            return None;
        }
        *pos += 1;
        let flags = match t.get(*pos).map(String::as_str) {
            Some("<") => DependencyFlags::LESS,
            Some("<=") => DependencyFlags::LE,
            Some(">") => DependencyFlags::GREATER,
            Some(">=") => DependencyFlags::GE,
            Some("=") | Some("==") => DependencyFlags::EQUAL,
            _ => {
                return Some(Expr::Atom(Dep {
                    name,
                    flags: DependencyFlags::ANY,
                    version: String::new(),
                }))
            }
        };
        *pos += 1;
        let version = t.get(*pos)?.clone();
        *pos += 1;
        Some(Expr::Atom(Dep {
            name,
            flags,
            version,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_downloader_never_gets_an_option_or_another_roots_configuration() {
        for good in [
            "bash-5.1.8-4.cm2.x86_64",
            "glibc-2.35-1.cm2.x86_64",
            "foo-1:2.0-1.noarch",
            "a_b+c~d^e",
        ] {
            assert!(is_nevra(good), "{good}");
        }
        for bad in [
            "--setopt=pluginpath=/x",
            "-x",
            "",
            "a b",
            "a/b",
            "a;b",
            "a$b",
            "../x",
        ] {
            assert!(!is_nevra(bad), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let reporter = Reporter::new(0).with_messages(Box::new(|_, _| {}));
        let refused = |host: bool, names: &[&str], config: Option<&Path>| {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            download(host, &names, dir.path(), config, &reporter)
                .unwrap_err()
                .to_string()
        };
        // Another root, no configuration of ours: its own is never used.
        let e = refused(false, &["bash-1-1.x86_64"], None);
        assert!(
            e.contains("--packager-config") || e.contains("no package downloader"),
            "{e}"
        );
        // A name that is an option: refused before anything runs.
        let e = refused(true, &["--setopt=pluginpath=/tmp/x-1-1.x86_64"], None);
        assert!(
            e.contains("not a package name") || e.contains("no package downloader"),
            "{e}"
        );
    }

    #[test]
    fn evr_comparison_follows_rpm() {
        assert!(version_satisfies("1:2.0-1", DependencyFlags::GE, "1:1.9"));
        assert!(version_satisfies("2.0-1.el9", DependencyFlags::GE, "2.0"));
        assert!(!version_satisfies("2.0-1", DependencyFlags::GREATER, "2.0"));
        assert!(version_satisfies(
            "2.10-1",
            DependencyFlags::GREATER,
            "2.9-9"
        ));
        assert!(!version_satisfies(
            "1.0~rc1-1",
            DependencyFlags::GE,
            "1.0-1"
        ));
        assert!(version_satisfies("3", DependencyFlags::ANY, ""));
    }

    #[test]
    fn rich_dependencies_parse() {
        use rich::Expr::*;
        let e = rich::parse("(foo >= 1.2 or (bar and baz))").unwrap();
        let Or(items) = e else { panic!("{e:?}") };
        assert_eq!(items.len(), 2);
        assert!(matches!(&items[0], Atom(d) if d.name == "foo" && d.version == "1.2"));
        assert!(matches!(&items[1], And(v) if v.len() == 2));
        assert!(matches!(
            rich::parse("(a if b else c)").unwrap(),
            If(_, _, Some(_))
        ));
        assert!(matches!(
            rich::parse("(a without b)").unwrap(),
            Without(_, _)
        ));
        assert!(rich::parse("(a or)").is_none());
        assert!(rich::parse("(a or b").is_none());
    }
}
