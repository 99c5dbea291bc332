//! Package backends: one file per package manager, one trait for all.
//!
//! Adding a package manager means writing one file that implements
//! [`Backend`] and adding its [`Driver`] to [`DRIVERS`].

pub mod deb;
pub mod dpkg;
pub mod rpm;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::package::{File, Package};
use crate::report::Reporter;
use crate::rootfs::{read_bounded, RootFs};

/// A configuration file's pristine content, as shipped by its package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub mode: u32,
    pub mtime: u64,
    pub data: Vec<u8>,
}

/// What supermin needs from a package manager.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Short name: `dpkg`, `rpm`.
    fn name(&self) -> &'static str;
    /// The root whose database and files are read (`/` for the host);
    /// every path of a package is resolved inside it.
    fn root(&self) -> &RootFs;
    /// Every installed package, sorted by full name.
    fn packages(&self) -> Vec<Package>;
    /// The installed package called `name` (a backend may accept
    /// qualified forms such as dpkg's `name:arch`).
    fn lookup(&self, name: &str) -> Option<Package>;
    /// The dependency closure of `roots`, including them, sorted by name.
    fn resolve(&self, roots: &[Package], reporter: &Reporter) -> Result<Vec<Package>>;
    /// The files of one package, with kinds and config flags.
    fn files(&self, package: &Package) -> Result<Vec<File>>;
    /// When the package database last changed (for `--if-newer`).
    fn database_mtime(&self) -> Result<SystemTime>;
    /// Pristine copies of the named config files, fetched from the package
    /// files of the installed versions (download + unpack, in-process where
    /// possible).  `scratch` is a private directory for downloads.  Unless
    /// `always_download`, a backend may use host copies it can prove
    /// identical to the shipped files (e.g. by the database's checksums).
    fn pristine_config_files(
        &self,
        wanted: &[(Package, Vec<PathBuf>)],
        scratch: &Path,
        packager_config: Option<&Path>,
        always_download: bool,
        reporter: &Reporter,
    ) -> Result<Vec<ConfigFile>>;

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

/// A package manager supermin knows about.
pub struct Driver {
    /// `system/packager`, as `--list-drivers` prints it.
    pub name: &'static str,
    /// The kind accepted by [`open`]: `dpkg`, `rpm`.
    pub kind: &'static str,
    pub detect: fn(&RootFs) -> bool,
    pub open: fn(RootFs) -> Result<Box<dyn Backend>>,
}

pub const DRIVERS: &[Driver] = &[dpkg::DRIVER, rpm::FEDORA, rpm::SUSE];

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

/// The backend of the package manager that manages `root`.
pub fn detect(root: &Path) -> Result<Box<dyn Backend>> {
    let rootfs = open_root(root, "package database")?;
    match DRIVERS.iter().find(|d| (d.detect)(&rootfs)) {
        Some(driver) => (driver.open)(rootfs),
        None => Err(Error::backend(
            "detect",
            format!(
                "could not detect the package manager of {} (supported: {}); use --root or Backend.open(kind)",
                root.display(),
                DRIVERS.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// The backend of a named kind (`dpkg`, ...) reading `root`.
pub fn open(kind: &str, root: &Path) -> Result<Box<dyn Backend>> {
    match DRIVERS.iter().find(|d| d.kind == kind) {
        Some(driver) => (driver.open)(open_root(root, &format!("{kind} database"))?),
        None => Err(Error::Usage(format!(
            "unknown package manager '{kind}' (known: {})",
            DRIVERS
                .iter()
                .map(|d| d.kind)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `(driver name, detected)` for every driver, for `--list-drivers`.
pub fn list_drivers(root: &Path) -> Result<Vec<(&'static str, bool)>> {
    let rootfs = open_root(root, "package database")?;
    Ok(DRIVERS
        .iter()
        .map(|d| (d.name, (d.detect)(&rootfs)))
        .collect())
}

/// `ID` and `ID_LIKE` words of `/etc/os-release` (or `/usr/lib/os-release`)
/// inside `root`.
pub fn os_release_ids(root: &RootFs) -> Vec<String> {
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
        if key == "ID" || key == "ID_LIKE" {
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            ids.extend(value.split_whitespace().map(str::to_string));
        }
    }
    ids
}

/// A package file (`.rpm` or `.deb`, told apart by content): its package
/// and the files it would install (the in-process `rpm -qlp` / `dpkg -c`).
pub fn read_package_file(path: &Path) -> Result<(Package, Vec<File>)> {
    use std::io::Read;
    let mut magic = [0u8; 8];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut magic))
        .map_err(|e| Error::io("reading", path, e))?;
    match &magic[..n] {
        [0xed, 0xab, 0xee, 0xdb, ..] => rpm::read_package_file(path),
        b"!<arch>\n" => deb::read_package_file(path),
        _ => Err(Error::backend(
            "package file",
            format!("{}: neither an .rpm nor a .deb file", path.display()),
        )),
    }
}

/// Is `path` absolute and free of `..`, so that joining it under a root or
/// an output directory cannot leave that directory?  Package databases
/// are data that other people wrote; a file list naming `/../etc/shadow`
/// must not make a build read or write outside its root or output.
pub fn stays_inside(path: &Path) -> bool {
    use std::path::Component;
    let mut components = path.components();
    components.next() == Some(Component::RootDir)
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

/// The installed copy of a config file when `is_pristine` says its bytes
/// are those the package shipped (the database's digest matches): then it
/// *is* the pristine file and no download is needed for it.
pub(crate) fn verified_installed(
    root: &RootFs,
    path: &Path,
    is_pristine: impl FnOnce(&[u8]) -> bool,
) -> Option<(Vec<u8>, std::fs::Metadata)> {
    let (data, meta) = read_installed(root, path).ok()?;
    is_pristine(&data).then_some((data, meta))
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
    fn only_plain_absolute_paths_stay_inside() {
        for good in ["/usr/bin/bash", "/", "/etc//passwd", "/a/./b", "/a/b/"] {
            assert!(stays_inside(Path::new(good)), "{good}");
        }
        for bad in ["/usr/../../etc/shadow", "/..", "usr/bin", "", "../x", "./x"] {
            assert!(!stays_inside(Path::new(bad)), "{bad}");
        }
    }
}
