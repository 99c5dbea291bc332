//! Package backends: one file per package manager, one trait for all.
//!
//! Adding a package manager means writing one file that implements
//! [`Backend`] and adding its [`Driver`] to [`DRIVERS`].

pub mod alternatives;
pub mod apk;
pub mod deb;
mod deb822;
pub mod dpkg;
pub mod pacman;
mod payload;
mod provides;
pub mod rpm;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::output::ScratchBase;
use crate::package::{File, Package};
use crate::report::Reporter;
use crate::resolve::Graph;
use crate::rootfs::{read_bounded, RootFs};

/// A configuration file's pristine content, as shipped by its package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub mode: u32,
    pub mtime: u64,
    pub data: Vec<u8>,
}

/// A digest a package database recorded for a file as shipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Digest {
    Md5(String),
    Sha1(String),
    Sha256(String),
    Sha384(String),
    Sha512(String),
}

impl Digest {
    /// Do `data` hash to this digest?
    pub fn matches(&self, data: &[u8]) -> bool {
        use md5::Digest as _;
        let (actual, expected) = match self {
            Digest::Md5(e) => (hex(&md5::Md5::digest(data)), e),
            Digest::Sha1(e) => (hex(&sha1::Sha1::digest(data)), e),
            Digest::Sha256(e) => (hex(&sha2::Sha256::digest(data)), e),
            Digest::Sha384(e) => (hex(&sha2::Sha384::digest(data)), e),
            Digest::Sha512(e) => (hex(&sha2::Sha512::digest(data)), e),
        };
        actual.eq_ignore_ascii_case(expected)
    }
}

/// What the database says about a config file as its package shipped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipped {
    pub digest: Digest,
    /// Permission bits and mtime, when the database records them (rpm);
    /// otherwise those of the installed file are used (dpkg).
    pub mode: Option<u32>,
    pub mtime: Option<u64>,
}

/// What supermin needs from a package manager.
///
/// A backend implements the required methods; [`Backend::resolve`] and
/// [`Backend::pristine_config_files`] are one flow for all backends, made
/// of their hooks ([`Backend::dependency_graph`], [`Backend::shipped`],
/// [`Backend::fetch`], [`Backend::extract`]).
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Short name: `dpkg`, `rpm`.
    fn name(&self) -> &'static str;
    /// The root whose database and files are read (`/` for the host);
    /// every path of a package is resolved inside it.
    fn root(&self) -> &RootFs;
    /// How many packages the database holds ([`Backend::package_at`]
    /// indexes them).
    fn package_count(&self) -> usize;
    /// The installed package called `name` (a backend may accept
    /// qualified forms such as dpkg's `name:arch`).
    fn lookup(&self, name: &str) -> Option<Package>;
    /// The files of one package, with kinds and config flags.
    fn files(&self, package: &Package) -> Result<Vec<File>>;
    /// When the package database last changed (for `--if-newer`).
    fn database_mtime(&self) -> Result<SystemTime>;

    /// This opened database's number (see [`Backend::index_of`]).
    fn database_id(&self) -> u64;
    /// The packages that hold this distribution's kernel and its modules
    /// (`linux-image-amd64`), for a host with no kernel; none if unknown.
    fn kernel_packages(&self) -> &'static [&'static str] {
        &[]
    }
    /// Download the current versions (not the installed ones) of packages
    /// `names` from the host's repositories into `dest`: their files.
    fn download_named(
        &self,
        names: &[String],
        _dest: &Path,
        _packager_config: Option<&Path>,
        _reporter: &Reporter,
    ) -> Result<Vec<PathBuf>> {
        Err(Error::backend(
            self.name(),
            format!("cannot download packages by name ({})", names.join(" ")),
        ))
    }
    /// The admin directories of this package manager's alternatives tool,
    /// inside the root (see [`alternatives`]).
    fn alternatives_dirs(&self) -> &'static [&'static str] {
        &[]
    }
    /// The database's packages as a graph of dependency clauses, by index.
    fn dependency_graph(&self) -> &dyn Graph;
    /// The package at `index` in this database.
    fn package_at(&self, index: usize) -> &Package;
    /// What the database recorded about `package`'s files as shipped
    /// (digests, and modes and mtimes where it has them), by path.
    fn shipped(&self, package: &Package) -> Result<HashMap<PathBuf, Shipped>>;
    /// Download the package files of the installed versions of `packages`
    /// into `scratch`: their paths, by [`Package::full_name`].
    fn fetch(
        &self,
        packages: &[&Package],
        scratch: &Path,
        packager_config: Option<&Path>,
        reporter: &Reporter,
    ) -> Result<HashMap<String, PathBuf>>;
    /// The regular files among `paths` in the package file `file`.
    fn extract(&self, file: &Path, paths: &[PathBuf]) -> Result<Vec<ConfigFile>>;

    /// Every installed package, sorted by full name.
    fn packages(&self) -> Vec<Package> {
        let mut all: Vec<Package> = (0..self.package_count())
            .map(|i| self.package_at(i).clone())
            .collect();
        all.sort_by(|a, b| a.full_name.cmp(&b.full_name));
        all
    }

    /// `package`'s index in this database; an error naming it if it came
    /// from elsewhere (another database, a package file), whose index would
    /// read some other package's data.
    fn index_of(&self, package: &Package) -> Result<usize> {
        match package.id {
            Some(id) if id.database == self.database_id() => Ok(id.index),
            _ => Err(Error::backend(
                self.name(),
                format!(
                    "{} is not a package of the {} database of {}",
                    package.full_name,
                    self.name(),
                    self.root().path().display()
                ),
            )),
        }
    }

    /// The dependency closure of `roots`, including them, sorted by name
    /// (see [`crate::resolve`]).
    fn resolve(&self, roots: &[Package], reporter: &Reporter) -> Result<Vec<Package>> {
        Ok(self
            .resolve_explained(roots, reporter)?
            .into_iter()
            .map(|(p, _)| p)
            .collect())
    }

    /// [`Backend::resolve`], with why each package is in.
    fn resolve_explained(
        &self,
        roots: &[Package],
        reporter: &Reporter,
    ) -> Result<Vec<(Package, crate::resolve::Why)>> {
        let ids = roots
            .iter()
            .map(|p| self.index_of(p))
            .collect::<Result<Vec<_>>>()?;
        reporter.progress(STAGE_RESOLVE, 0, 1);
        let closure = crate::resolve::closure_packages(
            self.dependency_graph(),
            &ids,
            |i| self.package_at(i),
            self.name(),
            reporter,
        );
        let n = closure.len() as u64;
        reporter.progress(STAGE_RESOLVE, n, n);
        Ok(closure)
    }

    /// Pristine copies of the named config files: the installed copy
    /// where it is provably what the package shipped ([`verified_host_copy`]
    /// against [`Backend::shipped`]), unless `always_download`; the others
    /// from the package files of the installed versions ([`Backend::fetch`],
    /// [`Backend::extract`]), downloaded into `scratch`.
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
            let shipped = if always_download {
                HashMap::new()
            } else {
                self.shipped(package)?
            };
            let mut left = Vec::new();
            for path in paths {
                let verified = shipped
                    .get(path)
                    .and_then(|s| verified_host_copy(self.root(), path, s));
                match verified {
                    Some(file) => out.push(file),
                    None => left.push(path.clone()),
                }
            }
            check_config_total(&out)?;
            if !left.is_empty() {
                reporter.info(1, || {
                    format!(
                        "{}: {}: {} config files need the package file",
                        self.name(),
                        package.name,
                        left.len()
                    )
                });
                to_fetch.push((package, left));
            }
        }
        reporter.info(1, || {
            format!(
                "{}: {} config files verified against the database's digests, {} packages to download",
                self.name(),
                out.len(),
                to_fetch.len()
            )
        });
        if to_fetch.is_empty() {
            return Ok(out);
        }
        let packages: Vec<&Package> = to_fetch.iter().map(|(p, _)| *p).collect();
        let files = self.fetch(&packages, scratch, packager_config, reporter)?;
        for (package, paths) in to_fetch {
            let Some(file) = files.get(&package.full_name) else {
                return Err(Error::backend(
                    self.name(),
                    format!(
                        "the package manager did not download {} (is the installed version still in a repository?)",
                        package.full_name
                    ),
                ));
            };
            out.extend(self.extract(file, &paths)?);
            check_config_total(&out)?;
        }
        Ok(out)
    }

    /// The installed package called `name`, or a typed error naming it.
    fn package(&self, name: &str) -> Result<Package> {
        self.lookup(name).ok_or_else(|| Error::PackageNotFound {
            names: vec![name.to_string()],
        })
    }

    /// Look up several names; unknown ones are reported all at once.
    fn packages_named(&self, names: &[String]) -> Result<Vec<Package>> {
        self.packages_named_or_warn(names, false, &Reporter::new(0))
    }

    /// Like [`Backend::packages_named`], but with `ignore_missing` unknown
    /// names are only warned about (upstream's behaviour).
    fn packages_named_or_warn(
        &self,
        names: &[String],
        ignore_missing: bool,
        reporter: &Reporter,
    ) -> Result<Vec<Package>> {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for name in names {
            match self.lookup(name) {
                Some(p) => found.push(p),
                None => missing.push(name.clone()),
            }
        }
        if !missing.is_empty() {
            if !ignore_missing {
                return Err(Error::PackageNotFound { names: missing });
            }
            reporter.warn(format!(
                "ignoring packages that are not installed: {}",
                crate::error::name_list(&missing)
            ));
        }
        Ok(found)
    }
}

/// The progress stage of resolving a closure (its count: the packages).
pub const STAGE_RESOLVE: &str = "resolving dependencies";

/// A package manager supermin knows about.
pub struct Driver {
    /// `system/packager`, as `--list-drivers` prints it.
    pub name: &'static str,
    /// The kind accepted by [`open`]: `dpkg`, `rpm`.
    pub kind: &'static str,
    pub detect: fn(&RootFs) -> bool,
    /// Opens the database of a root, with scratch space for any copy.
    pub open: fn(RootFs, &ScratchBase) -> Result<Box<dyn Backend>>,
    /// The package files this package manager installs, if any.
    pub package_files: Option<PackageFiles>,
    /// The files of its database (paths inside the root): their sizes and
    /// times tell `--if-newer` whether anything changed, without opening it.
    pub database: fn(&RootFs) -> Vec<PathBuf>,
}

/// Reads a package file: its package and the files it would install.
pub type ReadPackageFile = fn(&Path) -> Result<(Package, Vec<File>)>;

/// Is handed each regular file of a package file: path, mode, bytes.
pub type VisitFile<'a> = dyn FnMut(&Path, u32, &mut dyn std::io::Read) -> Result<()> + 'a;

/// Hands each regular file of a package file to a [`VisitFile`].
pub type UnpackPackageFile = fn(&Path, &mut VisitFile<'_>) -> Result<()>;

/// A kind of package file: how one starts, what it is called, and how to
/// read one in-process.
pub struct PackageFiles {
    /// How one starts (any of these first bytes).
    pub magics: &'static [&'static [u8]],
    /// Whether a file that starts so is one, when another kind starts the
    /// same way (apk's and pacman's gzip files); `None` takes any.
    pub claims: Option<fn(&Path) -> bool>,
    /// `.deb`, `.rpm`: for messages.
    pub extension: &'static str,
    /// Its package and the files it would install.
    pub read: ReadPackageFile,
    /// Its regular files, with their bytes (for a kernel package).
    pub unpack: UnpackPackageFile,
}

pub const DRIVERS: &[Driver] = &[
    dpkg::DRIVER,
    rpm::FEDORA,
    rpm::SUSE,
    pacman::DRIVER,
    apk::DRIVER,
];

/// The root directory `root`, held open for a backend; `what` says what
/// was looked for there, for the error.
fn open_root(root: &Path, what: &str) -> Result<RootFs> {
    RootFs::open(root).map_err(|e| {
        Error::backend(
            "detect",
            format!("no {what} under {}: cannot open it: {e}", root.display()),
        )
    })
}

/// The driver of the package manager that manages `root`: the one its
/// `/etc/os-release` (`ID`, then `ID_LIKE`) names, else the one whose
/// database is the only one there (a root made with `rpm --root R
/// --initdb` has no os-release).  Several databases and no os-release to
/// choose: an error naming them.
fn detected_driver(root: &RootFs, shown: &Path) -> Result<&'static Driver> {
    if let Some(driver) = DRIVERS.iter().find(|d| (d.detect)(root)) {
        return Ok(driver);
    }
    let is_file = |p: &PathBuf| root.metadata(p).is_ok_and(|m| m.is_file());
    let mut found: Vec<&'static Driver> = Vec::new();
    for driver in DRIVERS {
        if (driver.database)(root).iter().any(is_file)
            && !found.iter().any(|d| d.kind == driver.kind)
        {
            found.push(driver);
        }
    }
    let mut kinds_known: Vec<&str> = DRIVERS.iter().map(|d| d.kind).collect();
    kinds_known.dedup();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::backend(
            "detect",
            format!(
                "no package database under {} that supermin reads ({}): is it a root file system? \
                 (--root DIR names one)",
                shown.display(),
                kinds_known.join(", ")
            ),
        )),
        several => Err(Error::backend(
            "detect",
            format!(
                "{} has the databases of {} and no /etc/os-release that says which it uses: \
                 name one with --packager (Python: Backend.open(kind))",
                shown.display(),
                several
                    .iter()
                    .map(|d| d.kind)
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        )),
    }
}

/// The backend of the package manager that manages `root`.
pub fn detect(root: &Path, scratch: &ScratchBase) -> Result<Box<dyn Backend>> {
    let rootfs = open_root(root, "package database")?;
    let driver = detected_driver(&rootfs, root)?;
    (driver.open)(rootfs, scratch)
}

/// The state of the database files of `root`'s package manager (`kind`,
/// or the one detected), read without opening the database.
pub fn database_state(root: &Path, kind: Option<&str>) -> Result<crate::stamp::DatabaseState> {
    let rootfs = open_root(root, "package database")?;
    let driver = match kind {
        Some(kind) => DRIVERS.iter().find(|d| d.kind == kind),
        None => detected_driver(&rootfs, root).ok(),
    };
    let files = driver.map(|d| (d.database)(&rootfs)).unwrap_or_default();
    Ok(crate::stamp::DatabaseState::of(&rootfs, &files))
}

/// The backend of a named kind (`dpkg`, ...) reading `root`.
pub fn open(kind: &str, root: &Path, scratch: &ScratchBase) -> Result<Box<dyn Backend>> {
    match DRIVERS.iter().find(|d| d.kind == kind) {
        Some(driver) => (driver.open)(open_root(root, &format!("{kind} database"))?, scratch),
        None => {
            let mut kinds: Vec<&str> = DRIVERS.iter().map(|d| d.kind).collect();
            kinds.dedup();
            Err(Error::Usage(format!(
                "unknown package manager '{}' (known: {})",
                crate::error::capped(kind),
                kinds.join(", ")
            )))
        }
    }
}

/// `(driver name, detected)` for every driver, for `--list-drivers`: the
/// one [`detect`] would open is detected.
pub fn list_drivers(root: &Path) -> Result<Vec<(&'static str, bool)>> {
    let rootfs = open_root(root, "package database")?;
    let chosen = detected_driver(&rootfs, root).ok().map(|d| d.name);
    Ok(DRIVERS
        .iter()
        .map(|d| (d.name, Some(d.name) == chosen))
        .collect())
}

/// `ID` and `ID_LIKE` words of `/etc/os-release` (or `/usr/lib/os-release`)
/// inside `root`.
pub fn os_release_ids(root: &RootFs) -> Vec<String> {
    os_release(root, &["ID", "ID_LIKE"])
}

/// The `ID` of the os-release of `root` (read inside it), for package URLs.
pub fn os_release_id(root: &RootFs) -> Option<String> {
    os_release(root, &["ID"]).into_iter().next()
}

/// The words of the `keys` lines of `/etc/os-release` (or
/// `/usr/lib/os-release`) inside `root`, in file order.
fn os_release(root: &RootFs, keys: &[&str]) -> Vec<String> {
    let text = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| root.read(Path::new(p), 1 << 20).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    let mut ids = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if keys.contains(&key) {
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            ids.extend(value.split_whitespace().map(str::to_string));
        }
    }
    ids
}

/// A package file, told apart by content (each driver's
/// [`PackageFiles::magic`]): its package and the files it would install
/// (the in-process `rpm -qlp` / `dpkg -c`).
pub fn read_package_file(path: &Path) -> Result<(Package, Vec<File>)> {
    (package_file_kind(path)?.read)(path)
}

/// The package manager (`dpkg`, `rpm`, `pacman`, `apk`) whose package
/// file is at `path`.
pub fn package_file_packager(path: &Path) -> Result<&'static str> {
    let kind = package_file_kind(path)?;
    Ok(DRIVERS
        .iter()
        .find(|d| {
            d.package_files
                .as_ref()
                .is_some_and(|k| std::ptr::eq(k, kind))
        })
        .map_or("unknown", |d| d.kind))
}

/// Hand `visit` each regular file of the package file at `path`.
pub fn unpack_package_file(path: &Path, visit: &mut VisitFile<'_>) -> Result<()> {
    (package_file_kind(path)?.unpack)(path, visit)
}

/// The kind of package file at `path`, by its first bytes, and among
/// kinds that start alike, the one that [claims](PackageFiles::claims) it
/// before those that take any.
fn package_file_kind(path: &Path) -> Result<&'static PackageFiles> {
    use std::io::Read;
    let mut start = [0u8; 16];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut start))
        .map_err(|e| Error::io("reading", path, e))?;
    let kinds = || DRIVERS.iter().filter_map(|d| d.package_files.as_ref());
    let starts = |k: &&PackageFiles| k.magics.iter().any(|m| start[..n].starts_with(m));
    let claimed = kinds()
        .filter(starts)
        .find(|k| k.claims.is_some_and(|claims| claims(path)));
    match claimed.or_else(|| kinds().filter(starts).find(|k| k.claims.is_none())) {
        Some(kind) => Ok(kind),
        None => {
            let mut names: Vec<&str> = kinds().map(|k| k.extension).collect();
            names.dedup();
            Err(Error::backend(
                "package file",
                format!(
                    "{}: not a package file supermin reads ({})",
                    path.display(),
                    names.join(", ")
                ),
            ))
        }
    }
}

/// The files under `dir` whose names end with `suffix`, sorted: what a
/// downloader left there (zypper files them in a directory per
/// repository and architecture; symlinks are not followed).
pub fn files_ending(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir).max_depth(4) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(dir).to_path_buf();
            Error::io("reading", path, e.into())
        })?;
        if entry.file_type().is_file() && entry.file_name().to_string_lossy().ends_with(suffix) {
            out.push(entry.into_path());
        }
    }
    out.sort();
    Ok(out)
}

/// The package files a downloader left under `dir`, by the full name of
/// the package each holds (downloaders name their files as they like;
/// what is no package file is passed over).
pub fn downloaded_packages(dir: &Path) -> Result<HashMap<String, PathBuf>> {
    let mut found = HashMap::new();
    for file in files_ending(dir, "")? {
        if let Ok((package, _)) = read_package_file(&file) {
            found.insert(package.full_name, file);
        }
    }
    Ok(found)
}

/// When the database file (or directory) `path` inside `root` last
/// changed: what [`Backend::database_mtime`] is for a database of one file.
pub(crate) fn mtime_in_root(root: &RootFs, path: &Path) -> Result<SystemTime> {
    use crate::error::IoContext;
    root.metadata(path)
        .and_then(|m| m.modified())
        .at("reading the mtime of", root.display_path(path))
}

/// A package's path as the root has it (kind and mode from `lstat`
/// inside the root; missing if it is not there), a config file if the
/// package `declared` it or by upstream's rule ([`is_config`]).
pub fn file_in_root(root: &RootFs, path: PathBuf, declared: bool) -> File {
    use std::os::unix::fs::MetadataExt;
    let meta = root.symlink_metadata(&path).ok();
    let kind = meta
        .as_ref()
        .map(crate::package::FileKind::of)
        .unwrap_or(crate::package::FileKind::Missing);
    File {
        is_config: is_config(&path, kind, declared),
        mode: meta.as_ref().map(|m| m.mode()).unwrap_or(0),
        size: meta.as_ref().map(|m| m.size()).unwrap_or(0),
        path,
        source: None,
        kind,
    }
}

/// Is `path` a config file, taken from the base image and never from the
/// host?  The ones the package declares (dpkg conffiles, pacman backup
/// files), and, as upstream decides, every regular file under `/etc`.
pub fn is_config(path: &Path, kind: crate::package::FileKind, declared: bool) -> bool {
    declared || (path.starts_with("/etc") && kind == crate::package::FileKind::Regular)
}

/// Is `path` absolute and free of `..`, so that joining it under a root or
/// an output directory cannot leave that directory?  Package databases
/// are data that other people wrote; a file list naming `/../etc/shadow`
/// must not make a build read or write outside its root or output.
pub fn stays_inside(path: &Path) -> bool {
    use std::path::Component;
    let mut components = path.components();
    // Longer than PATH_MAX cannot be opened, only walked (and walking it
    // component by component must not be a way to exhaust the stack).
    path.as_os_str().len() < libc::PATH_MAX as usize
        && components.next() == Some(Component::RootDir)
        && components.all(|c| matches!(c, Component::Normal(_)))
}

/// `root` joined with an absolute package path (`/usr/bin/bash`).
pub fn host_path(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// How much of one package-database file is read: databases are other
/// people's data, and a hostile one must not exhaust memory.  Real ones
/// are far smaller (Debian's `status` with 5,000 packages is ~10 MB).
pub const DATABASE_FILE_LIMIT: u64 = 256 << 20;

/// How much of one config file is read (installed or from a package):
/// real ones are kilobytes.
pub const CONFIG_FILE_LIMIT: u64 = 64 << 20;

/// How many bytes of config files one prepare holds in all (Debian's
/// whole `/etc` is a few megabytes): hard links to one huge file, or many
/// large ones, are refused rather than held in memory.
pub const CONFIG_TOTAL_LIMIT: u64 = 512 << 20;

/// The installed copy of a config file: a regular file inside `root`
/// (never a symlink's target, a FIFO or a device), with the metadata of
/// the very file read.
pub(crate) fn read_installed(
    root: &RootFs,
    path: &Path,
) -> std::io::Result<(Vec<u8>, std::fs::Metadata)> {
    let (file, meta) = root.open_regular(path)?;
    let data = read_bounded(file, meta.len(), CONFIG_FILE_LIMIT)?;
    Ok((data, meta))
}

/// The installed copy of config file `path` when it is provably what
/// the package shipped: a regular file inside `root` (opened without
/// following a symlink; never a FIFO or a device), at most
/// [`CONFIG_FILE_LIMIT`] bytes, whose bytes hash to the shipped digest.
/// Its mode and mtime are the shipped ones where the database records
/// them, else those of the very file read.  `None` if any of that fails:
/// then the package file is fetched instead.
pub fn verified_host_copy(root: &RootFs, path: &Path, shipped: &Shipped) -> Option<ConfigFile> {
    use std::os::unix::fs::MetadataExt;
    let (data, meta) = read_installed(root, path).ok()?;
    if !shipped.digest.matches(&data) {
        return None;
    }
    Some(ConfigFile {
        path: path.to_path_buf(),
        mode: shipped.mode.unwrap_or(meta.mode()) & 0o7777,
        mtime: shipped.mtime.unwrap_or(meta.mtime().max(0) as u64),
        data,
    })
}

/// Refuse config files larger than [`CONFIG_TOTAL_LIMIT`] in all, as they
/// are gathered (so that memory stays bounded).
pub(crate) fn check_config_total(files: &[ConfigFile]) -> Result<()> {
    let total: u64 = files.iter().map(|f| f.data.len() as u64).sum();
    if total > CONFIG_TOTAL_LIMIT {
        return Err(Error::backend(
            "prepare",
            format!(
                "the config files of these packages hold more than {CONFIG_TOTAL_LIMIT} bytes \
                 ({} files); real ones hold a few megabytes",
                files.len()
            ),
        ));
    }
    Ok(())
}

/// Lower-case hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_reads_only_its_own_packages() {
        // Two opened copies of this host's dpkg database, and a package
        // with no database: none may stand for another's package.
        let a = dpkg::Dpkg::open(RootFs::host().unwrap()).unwrap();
        let b = dpkg::Dpkg::open(RootFs::host().unwrap()).unwrap();
        let bash = a.package("bash").unwrap();
        let closure = a
            .resolve(std::slice::from_ref(&bash), &Reporter::new(0))
            .unwrap();
        assert!(closure.iter().any(|p| p.name == "bash"));
        let e = b.files(&bash).unwrap_err().to_string();
        assert!(e.contains("is not a package of the dpkg database"), "{e}");
        let e = b
            .resolve(std::slice::from_ref(&bash), &Reporter::new(0))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&bash.full_name), "{e}");
        let loose = Package { id: None, ..bash };
        assert!(a.files(&loose).is_err());
    }

    #[test]
    fn only_plain_absolute_paths_stay_inside() {
        for good in ["/usr/bin/bash", "/", "/etc//passwd", "/a/./b", "/a/b/"] {
            assert!(stays_inside(Path::new(good)), "{good}");
        }
        for bad in ["/usr/../../etc/shadow", "/..", "usr/bin", "", "../x", "./x"] {
            assert!(!stays_inside(Path::new(bad)), "{bad}");
        }
        assert!(stays_inside(Path::new(&"/a".repeat(2000))));
        assert!(
            !stays_inside(Path::new(&"/a".repeat(5000))),
            "beyond PATH_MAX"
        );
    }
}
