//! The RPM backend: Fedora, RHEL and kin, openSUSE, CBL-Mariner/Azure Linux.
//!
//! The installed database is read in-process: `rpmdb.sqlite` (rpm >= 4.16)
//! holds one header blob per package, parsed with the `rpm` crate. Older
//! BerkeleyDB `Packages` and SUSE's NDB `Packages.db` databases are exported
//! with `rpmdb --exportdb` (one process, all headers) and parsed the same
//! way. Requires are resolved through provides and file paths, versions
//! compared in RPM EVR order, and rich (boolean) dependencies handled.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rpm::{DependencyFlags, FileFlags};

mod database;
mod deps;
mod download;
mod file;
mod header;
pub mod rich;

pub use deps::{version_satisfies, Dep};
pub use file::read_package_file;
pub use header::package_from_header;

use database::{copy_database, exported_blobs, sqlite_blobs};
use download::download;
use file::config_files_from_rpm;
use header::{guarded, metadata_from_header};

use super::{alternatives, ConfigFile, Driver, PackageFiles};
use crate::backend::{os_release_ids, stays_inside, Backend, Digest, Shipped};
use crate::error::{Error, Result};
use crate::output::ScratchBase;
use crate::package::{File, FileKind, Package};
use crate::report::Reporter;
use crate::resolve::{Clause, Graph};
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
    "mageia",
    "openeuler",
    "anolis",
    "kylin",
    "uos",
    "opencloudos",
    "tencentos",
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
    package_files: Some(PACKAGE_FILES),
    database: database_files,
};

/// `.rpm` files: the lead's magic number.
const PACKAGE_FILES: PackageFiles = PackageFiles {
    magics: &[&[0xed, 0xab, 0xee, 0xdb]],
    claims: None,
    extension: ".rpm",
    read: read_package_file,
    unpack: file::unpack,
};

pub const SUSE: Driver = Driver {
    name: "suse/rpm",
    kind: "rpm",
    detect: detect_suse,
    open,
    package_files: Some(PACKAGE_FILES),
    database: database_files,
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

fn open(root: RootFs, scratch: &ScratchBase) -> Result<Box<dyn Backend>> {
    Ok(Box::new(Rpm::open(root, scratch)?))
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

/// The admin directories of `alternatives` (Fedora, RHEL) and of SUSE's
/// `update-alternatives`, inside the root.
const ALTERNATIVES: &[&str] = &["/var/lib/alternatives", "/var/lib/rpm/alternatives"];

/// The files of the database [`database_path`] finds (an SQLite
/// database's write-ahead log too), and the alternatives' state.
fn database_files(root: &RootFs) -> Vec<PathBuf> {
    let mut files = match database_path(root) {
        Some(Database::Sqlite(path)) => {
            let mut wal = path.clone().into_os_string();
            wal.push("-wal");
            vec![path, PathBuf::from(wal)]
        }
        Some(Database::Legacy { dbpath }) => ["Packages", "Packages.db"]
            .iter()
            .map(|name| dbpath.join(name))
            .collect(),
        None => Vec::new(),
    };
    files.extend(alternatives::state_files(ALTERNATIVES));
    files
}

fn backend_error(message: impl Into<String>) -> Error {
    Error::backend("rpm", message)
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
    /// This opened database's [`crate::package::PackageId::database`].
    database_id: u64,
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

/// An optional text tag, if present and not empty.
fn text_tag(tag: std::result::Result<&str, rpm::Error>) -> Option<String> {
    tag.ok()
        .filter(|t| !t.trim().is_empty())
        .map(str::to_string)
}

/// Turn one parsed header into the package model.
fn installed_from(metadata: &rpm::PackageMetadata) -> std::result::Result<Installed, rpm::Error> {
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
            license: text_tag(metadata.get_license()),
            supplier: text_tag(metadata.get_vendor()).or_else(|| text_tag(metadata.get_packager())),
            id: None,
        },
        provides,
        requires,
        files,
    })
}

impl Rpm {
    /// The database of `root`; another root's is first copied into a
    /// scratch directory in `scratch`.
    pub fn open(root: RootFs, scratch: &ScratchBase) -> Result<Rpm> {
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
            Some(copy_database(&root, &dir, scratch)?)
        };
        let blobs = match (&database, &copy) {
            (Database::Sqlite(path), None) => {
                let host = root
                    .resolved_host_path(path)
                    .map_err(|e| Error::io("resolving", root.display_path(path), e))?;
                sqlite_blobs(&host, scratch)?
            }
            (Database::Sqlite(_), Some(copy)) => {
                sqlite_blobs(&copy.path().join("rpmdb.sqlite"), scratch)?
            }
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
            installed.push(guarded(|| installed_from(&metadata)).map_err(|e| {
                backend_error(format!(
                    "{}: header {} is incomplete: {e}",
                    where_.display(),
                    i + 1
                ))
            })?);
        }
        Ok(Rpm::from_installed(root, database, installed))
    }

    fn from_installed(root: RootFs, database: Database, mut installed: Vec<Installed>) -> Rpm {
        let mut provides: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        let mut owners: HashMap<PathBuf, Vec<usize>> = HashMap::new();
        let database_id = crate::package::new_database_id();
        for (id, p) in installed.iter_mut().enumerate() {
            p.package.id = Some(crate::package::PackageId {
                database: database_id,
                index: id,
            });
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
            database_id,
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

    fn package_count(&self) -> usize {
        self.installed.len()
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

    fn database_id(&self) -> u64 {
        self.database_id
    }

    fn alternatives_dirs(&self) -> &'static [&'static str] {
        ALTERNATIVES
    }

    /// Fedora splits the kernel: the image and core modules, and the
    /// modules a virtual machine's disk needs.
    fn kernel_packages(&self) -> &'static [&'static str] {
        &["kernel-core", "kernel-modules-core"]
    }

    fn download_named(
        &self,
        names: &[String],
        dest: &Path,
        packager_config: Option<&Path>,
        reporter: &Reporter,
    ) -> Result<Vec<PathBuf>> {
        let host = self.root.is_host();
        if let Err(together) = download(host, names, dest, packager_config, reporter) {
            // RHEL 8 has no kernel-modules-core (its kernel-core holds
            // them): each name on its own, keeping those there are.
            if names.len() < 2 {
                return Err(together);
            }
            let mut any = false;
            for name in names {
                match download(
                    host,
                    std::slice::from_ref(name),
                    dest,
                    packager_config,
                    reporter,
                ) {
                    Ok(()) => any = true,
                    Err(e) => reporter.info(1, || format!("rpm: {name} skipped: {e}")),
                }
            }
            if !any {
                return Err(together);
            }
        }
        super::files_ending(dest, ".rpm")
    }

    fn dependency_graph(&self) -> &dyn Graph {
        self
    }

    fn package_at(&self, index: usize) -> &Package {
        &self.installed[index].package
    }

    fn files(&self, package: &Package) -> Result<Vec<File>> {
        let installed = &self.installed[self.index_of(package)?];
        let mut out = Vec::with_capacity(installed.files.len());
        for f in &installed.files {
            if !stays_inside(&f.path) {
                return Err(backend_error(format!(
                    "{}: the database lists {:?}, which is not a plain absolute path",
                    package.full_name,
                    crate::error::capped(&f.path.to_string_lossy())
                )));
            }
            let (kind, mode, size) = match self.root.symlink_metadata(&f.path) {
                Ok(meta) => {
                    use std::os::unix::fs::MetadataExt;
                    (FileKind::of(&meta), meta.mode(), meta.size())
                }
                Err(_) => (FileKind::Missing, f.mode, 0),
            };
            out.push(File {
                path: f.path.clone(),
                source: None,
                kind,
                mode,
                size,
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

    /// The digests, modes and mtimes the database recorded for the
    /// files as shipped.
    fn shipped(&self, package: &Package) -> Result<HashMap<PathBuf, Shipped>> {
        let installed = &self.installed[self.index_of(package)?];
        Ok(installed
            .files
            .iter()
            .filter_map(|f| {
                let d = f.digest.as_ref()?;
                let digest = match d.algo {
                    rpm::DigestAlgorithm::Md5 => Digest::Md5(d.digest.clone()),
                    rpm::DigestAlgorithm::Sha2_256 => Digest::Sha256(d.digest.clone()),
                    rpm::DigestAlgorithm::Sha2_384 => Digest::Sha384(d.digest.clone()),
                    rpm::DigestAlgorithm::Sha2_512 => Digest::Sha512(d.digest.clone()),
                    _ => return None,
                };
                let shipped = Shipped {
                    digest,
                    mode: Some(f.mode & 0o7777),
                    mtime: Some(f.mtime as u64),
                };
                Some((f.path.clone(), shipped))
            })
            .collect())
    }

    fn fetch(
        &self,
        packages: &[&Package],
        scratch: &Path,
        packager_config: Option<&Path>,
        reporter: &Reporter,
    ) -> Result<HashMap<String, PathBuf>> {
        let names: Vec<String> = packages.iter().map(|p| p.full_name.clone()).collect();
        download(
            self.root.is_host(),
            &names,
            scratch,
            packager_config,
            reporter,
        )?;
        super::downloaded_packages(scratch)
    }

    fn extract(&self, file: &Path, paths: &[PathBuf]) -> Result<Vec<ConfigFile>> {
        config_files_from_rpm(file, paths)
    }
}
