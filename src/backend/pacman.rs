//! The pacman backend (Arch Linux, Manjaro, Artix, EndeavourOS and
//! anything whose `ID_LIKE` says arch), read in-process.
//!
//! pacman's local database is one directory per installed package,
//! `/var/lib/pacman/local/NAME-VERSION/`, whose `desc` (name, version,
//! architecture, dependencies, provides) and `files` (paths, and the
//! `%BACKUP%` config files with the md5sum they shipped with) share one
//! `%SECTION%` layout.  No `pacman -Q` process is started.  Package files
//! (`.pkg.tar.zst`, `.xz`, `.gz`) are read in-process; the packages that
//! pristine config files need come from the host's package cache or from
//! `pacman -Syw` into scratch space.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use super::provides::{package, Dep, Entry, Index, Op};
use super::{
    payload, stays_inside, Backend, ConfigFile, Digest, Driver, PackageFiles, Shipped,
    DATABASE_FILE_LIMIT,
};
use crate::error::{Error, IoContext, Result};
use crate::output::ScratchBase;
use crate::package::{File, Package};
use crate::report::Reporter;
use crate::resolve::{Clause, Graph};
use crate::rootfs::RootFs;

pub const DRIVER: Driver = Driver {
    name: "arch/pacman",
    kind: "pacman",
    detect,
    open,
    package_files: Some(PackageFiles {
        magics: &[
            &[0x28, 0xb5, 0x2f, 0xfd],
            &[0xfd, b'7', b'z', b'X', b'Z', 0],
            &[0x1f, 0x8b],
        ],
        claims: None,
        extension: ".pkg.tar.zst",
        read: read_package_file,
        unpack,
    }),
    database: |_| {
        // The directory changes when a package is added, removed or
        // upgraded (each version has its own); the version file is what
        // detection by database looks for.
        vec![
            PathBuf::from(LOCAL),
            Path::new(LOCAL).join("ALPM_DB_VERSION"),
        ]
    },
};

/// The local database, inside the root.
const LOCAL: &str = "/var/lib/pacman/local";

/// The host's package cache, where `pacman -S` leaves what it installed.
const CACHE: &str = "/var/cache/pacman/pkg";

/// `ID`s of Arch and its derivatives (and their `ID_LIKE`).
const ARCH_LIKE: &[&str] = &[
    "arch",
    "archarm",
    "manjaro",
    "manjaro-arm",
    "artix",
    "endeavouros",
    "garuda",
    "cachyos",
    "parabola",
    "archcraft",
    "rebornos",
];

/// The most packages a local database may hold (Arch desktops have ~2,000).
const MAX_PACKAGES: usize = 200_000;

/// The most bytes of one `desc` (real ones are a few KiB) and of all of
/// them, and the most dependencies and provides in all: a hostile
/// database must not exhaust memory or time.
const MAX_DESC: u64 = 4 << 20;
const MAX_DESCS_TOTAL: u64 = 256 << 20;
const MAX_RELATIONS: usize = 2_000_000;

fn detect(root: &RootFs) -> bool {
    super::os_release_ids(root)
        .iter()
        .any(|id| ARCH_LIKE.contains(&id.as_str()))
        && root.metadata(Path::new(LOCAL)).is_ok_and(|m| m.is_dir())
}

/// pacman needs no scratch space to open: its database is plain text read in place.
fn open(root: RootFs, _scratch: &ScratchBase) -> Result<Box<dyn Backend>> {
    Ok(Box::new(Pacman::open(root)?))
}

fn backend_error(message: impl Into<String>) -> Error {
    Error::backend("pacman", message)
}

/// A name pacman could have written: `[a-z0-9@._+-]`, not starting with
/// `-` or `.` (makepkg's rule), so it is safe in file names and never an
/// option to a command.
fn is_pacman_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@._+-".contains(c))
}

/// A version pacman could have written: `[epoch:]pkgver-pkgrel` of the
/// same characters (and `:`), not starting with `-`.
fn is_pacman_version(version: &str) -> bool {
    !version.is_empty()
        && !version.starts_with('-')
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+~:-".contains(c))
}

/// `epoch:version-release` compared as libalpm's `alpm_pkg_vercmp`: the
/// epoch, then the version, then the release only when both have one (so
/// a dependency on `=1.2` matches `1.2-3`), each with [`alpm_segments`].
pub fn vercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    fn split(s: &str) -> (&str, &str, Option<&str>) {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let (epoch, rest) = match s[digits..].strip_prefix(':') {
            Some(rest) if digits > 0 => (&s[..digits], rest),
            Some(rest) => ("0", rest),
            None => ("0", s),
        };
        match rest.rsplit_once('-') {
            Some((v, r)) => (epoch, v, Some(r)),
            None => (epoch, rest, None),
        }
    }
    let ((ea, va, ra), (eb, vb, rb)) = (split(a), split(b));
    alpm_segments(ea, eb)
        .then_with(|| alpm_segments(va, vb))
        .then_with(|| match (ra, rb) {
            (Some(ra), Some(rb)) => alpm_segments(ra, rb),
            _ => Ordering::Equal,
        })
}

/// libalpm's rpmvercmp (it differs from rpm's own: no `~` or `^`, and a
/// longer run of separators is newer): runs of digits compare as numbers,
/// runs of letters as text, a number beats letters, and a leftover
/// letter run never beats the end of the other string.
fn alpm_segments(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (si, sj) = (i, j);
        while i < a.len() && !a[i].is_ascii_alphanumeric() {
            i += 1;
        }
        while j < b.len() && !b[j].is_ascii_alphanumeric() {
            j += 1;
        }
        if i == a.len() || j == b.len() {
            break;
        }
        if i - si != j - sj {
            return (i - si).cmp(&(j - sj));
        }
        let numeric = a[i].is_ascii_digit();
        let run = |s: &[u8], mut k: usize| {
            let start = k;
            while k < s.len()
                && (if numeric {
                    s[k].is_ascii_digit()
                } else {
                    s[k].is_ascii_alphabetic()
                })
            {
                k += 1;
            }
            (start, k)
        };
        let ((a0, a1), (b0, b1)) = (run(a, i), run(b, j));
        if b0 == b1 {
            // A number beats letters; letters lose to a number.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let (mut x, mut y) = (&a[a0..a1], &b[b0..b1]);
        if numeric {
            while x.first() == Some(&b'0') {
                x = &x[1..];
            }
            while y.first() == Some(&b'0') {
                y = &y[1..];
            }
            if x.len() != y.len() {
                return x.len().cmp(&y.len());
            }
        }
        if x != y {
            return x.cmp(y);
        }
        i = a1;
        j = b1;
    }
    let (rest_a, rest_b) = (&a[i.min(a.len())..], &b[j.min(b.len())..]);
    if rest_a.is_empty() && rest_b.is_empty() {
        return Ordering::Equal;
    }
    let alpha = |s: &[u8]| s.first().is_some_and(u8::is_ascii_alphabetic);
    if (rest_a.is_empty() && !alpha(rest_b)) || alpha(rest_a) {
        Ordering::Less
    } else {
        Ordering::Greater
    }
}

/// pacman's operators, longest first.
const OPS: &[(&str, Op)] = &[
    ("<=", Op::LessEqual),
    (">=", Op::GreaterEqual),
    ("<", Op::Less),
    (">", Op::Greater),
    ("=", Op::Equal),
];

/// A dependency (an optional dependency's `: reason` dropped).
fn parse_dep(text: &str) -> Option<Dep> {
    let text = text.split_once(": ").map_or(text, |(d, _)| d).trim();
    Dep::parse(text, OPS, is_pacman_name, is_pacman_version)
}

/// The sections of a `desc` or `files` file: `%NAME%` lines, each followed
/// by its values up to an empty line.  An error is the 1-based line at
/// fault and what is wrong there.
type Sections<'a> = HashMap<&'a str, Vec<(usize, &'a str)>>;

fn sections(text: &str) -> std::result::Result<Sections<'_>, (usize, String)> {
    let mut out: Sections<'_> = HashMap::new();
    let mut current: Option<&str> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.is_empty() {
            current = None;
        } else if line.len() > 2 && line.starts_with('%') && line.ends_with('%') {
            let name = &line[1..line.len() - 1];
            out.entry(name).or_default();
            current = Some(name);
        } else {
            let Some(name) = current else {
                return Err((
                    n,
                    format!("{:?} outside a %SECTION%", crate::error::capped(line)),
                ));
            };
            out.entry(name).or_default().push((n, line));
        }
    }
    Ok(out)
}

/// One installed package as the backend keeps it.
#[derive(Debug, Clone)]
struct Installed {
    package: Package,
    /// `NAME-VERSION`: its directory in [`LOCAL`].
    dir: String,
    deps: Vec<Dep>,
    /// Provided names, with a version when the provide has one.
    provides: Vec<(String, Option<String>)>,
}

/// A pacman local database, loaded once.
#[derive(Debug)]
pub struct Pacman {
    root: RootFs,
    database_id: u64,
    installed: Vec<Installed>,
    index: Index,
    /// Each package's dependency clauses, resolved once (the resolver
    /// asks for them many times).
    clauses: Vec<Vec<Clause>>,
}

impl Pacman {
    /// Load the local database of `root`.
    pub fn open(root: RootFs) -> Result<Pacman> {
        let local = Path::new(LOCAL);
        let shown = root.display_path(local);
        let mut dirs = root
            .read_dir(local)
            .map_err(|e| backend_error(format!("{}: {e}", shown.display())))?;
        dirs.sort();
        let mut installed: Vec<Installed> = Vec::new();
        let (mut bytes, mut relations) = (0u64, 0usize);
        for dir in dirs {
            let dir = dir.to_string_lossy().into_owned();
            let path = local.join(&dir);
            if !root.metadata(&path).is_ok_and(|m| m.is_dir()) {
                continue; // ALPM_DB_VERSION
            }
            if installed.len() == MAX_PACKAGES {
                return Err(backend_error(format!(
                    "{}: more than {MAX_PACKAGES} packages",
                    shown.display()
                )));
            }
            let (package, size) = read_desc(&root, &dir)?;
            bytes += size;
            relations += package.deps.len() + package.provides.len();
            if bytes > MAX_DESCS_TOTAL || relations > MAX_RELATIONS {
                return Err(backend_error(format!(
                    "{}: more than {} MiB of desc files or {MAX_RELATIONS} dependencies and provides",
                    shown.display(),
                    MAX_DESCS_TOTAL >> 20
                )));
            }
            installed.push(package);
        }
        let database_id = crate::package::new_database_id();
        for (i, p) in installed.iter_mut().enumerate() {
            p.package.id = Some(crate::package::PackageId {
                database: database_id,
                index: i,
            });
        }
        let index = Index::new(installed.iter().map(entry)).map_err(|twice| {
            backend_error(format!("{}: {twice} is installed twice", shown.display()))
        })?;
        let mut pacman = Pacman {
            root,
            database_id,
            installed,
            index,
            clauses: Vec::new(),
        };
        pacman.clauses = (0..pacman.installed.len())
            .map(|id| {
                let from = &pacman.installed[id];
                from.deps
                    .iter()
                    .zip(&from.package.depends)
                    .map(|(dep, text)| Clause {
                        text: text.clone(),
                        alternatives: vec![pacman.candidates(dep)],
                    })
                    .collect()
            })
            .collect();
        Ok(pacman)
    }

    /// The installed packages that satisfy `dep` (see [`provides`]).
    fn candidates(&self, dep: &Dep) -> Vec<usize> {
        self.index
            .candidates(dep, |i| entry(&self.installed[i]), vercmp)
    }

    /// The `files` file of `package`: its paths and its backup files.
    fn read_files(&self, package: &Package) -> Result<ListedFiles> {
        let installed = &self.installed[self.index_of(package)?];
        let path = Path::new(LOCAL).join(&installed.dir).join("files");
        let shown = self.root.display_path(&path);
        let bytes = self
            .root
            .read(&path, DATABASE_FILE_LIMIT)
            .map_err(|e| backend_error(format!("{}: {e}", shown.display())))?;
        let text = String::from_utf8_lossy(&bytes);
        let at = |(line, what): (usize, String)| {
            backend_error(format!("{}: line {line}: {what}", shown.display()))
        };
        let sections = sections(&text).map_err(at)?;
        let absolute = |(line, rel): (usize, &str)| {
            let path = Path::new("/").join(rel.trim_end_matches('/'));
            if rel.starts_with('/') || !stays_inside(&path) || path == Path::new("/") {
                return Err(at((line, format!("path {rel:?} leaves the root"))));
            }
            Ok(path)
        };
        let paths = sections
            .get("FILES")
            .into_iter()
            .flatten()
            .map(|&l| absolute(l))
            .collect::<Result<Vec<_>>>()?;
        let mut backup = Vec::new();
        for &(line, text) in sections.get("BACKUP").into_iter().flatten() {
            let (rel, md5) = text
                .split_once('\t')
                .ok_or_else(|| at((line, format!("backup entry {text:?} has no md5sum"))))?;
            backup.push((absolute((line, rel))?, md5.to_string()));
        }
        Ok((paths, backup))
    }
}

/// What the provides rule needs of a package.
fn entry(p: &Installed) -> Entry<'_> {
    Entry {
        name: &p.package.name,
        version: &p.package.version,
        provides: &p.provides,
    }
}

/// A `files` file: the paths, and the backup files with their md5sums.
type ListedFiles = (Vec<PathBuf>, Vec<(PathBuf, String)>);

/// One package's `desc`, in the directory `dir` of [`LOCAL`], and its size.
fn read_desc(root: &RootFs, dir: &str) -> Result<(Installed, u64)> {
    let path = Path::new(LOCAL).join(dir).join("desc");
    let shown = root.display_path(&path);
    let bytes = root
        .read(&path, MAX_DESC)
        .map_err(|e| backend_error(format!("{}: {e}", shown.display())))?;
    let size = bytes.len() as u64;
    let text = String::from_utf8_lossy(&bytes);
    let at = |(line, what): (usize, String)| {
        backend_error(format!("{}: line {line}: {what}", shown.display()))
    };
    let sections = sections(&text).map_err(at)?;
    let one = |key: &str| -> Result<&str> {
        match sections.get(key).map(Vec::as_slice) {
            Some([(_, value)]) => Ok(value),
            _ => Err(backend_error(format!(
                "{}: no single %{key}% value",
                shown.display()
            ))),
        }
    };
    let (name, version) = (one("NAME")?, one("VERSION")?);
    if !is_pacman_name(name) || !is_pacman_version(version) {
        return Err(backend_error(format!(
            "{}: invalid package name or version {:?}",
            shown.display(),
            crate::error::capped(&format!("{name} {version}"))
        )));
    }
    if dir != format!("{name}-{version}") {
        return Err(backend_error(format!(
            "{}: the directory of {name}-{version} is named {dir:?}",
            shown.display()
        )));
    }
    let arch = one("ARCH").unwrap_or("any");
    let values =
        |key: &str| -> Vec<(usize, &str)> { sections.get(key).cloned().unwrap_or_default() };
    let mut deps = Vec::new();
    let mut depends = Vec::new();
    for (line, text) in values("DEPENDS") {
        let dep = parse_dep(text)
            .ok_or_else(|| at((line, format!("dependency {text:?} is not name[<>=]version"))))?;
        deps.push(dep);
        depends.push(text.to_string());
    }
    let mut provides = Vec::new();
    for (line, text) in values("PROVIDES") {
        let bad = || at((line, format!("provide {text:?} is not name[=version]")));
        provides.push(
            parse_dep(text)
                .and_then(Dep::into_provide)
                .ok_or_else(bad)?,
        );
    }
    let mut package = package(name, version, arch, depends);
    package.license = super::provides::licenses(values("LICENSE").into_iter().map(|(_, v)| v));
    package.supplier = one("PACKAGER").ok().map(str::to_string);
    Ok((
        Installed {
            package,
            dir: dir.to_string(),
            deps,
            provides,
        },
        size,
    ))
}

impl Graph for Pacman {
    fn clauses(&self, id: usize) -> Vec<Clause> {
        self.clauses[id].clone()
    }
}

impl Backend for Pacman {
    fn name(&self) -> &'static str {
        "pacman"
    }

    fn root(&self) -> &RootFs {
        &self.root
    }

    fn package_count(&self) -> usize {
        self.installed.len()
    }

    fn lookup(&self, name: &str) -> Option<Package> {
        let i = self.index.by_name(name.trim())?;
        Some(self.installed[i].package.clone())
    }

    fn files(&self, package: &Package) -> Result<Vec<File>> {
        let (paths, backup) = self.read_files(package)?;
        let backup: HashSet<&Path> = backup.iter().map(|(p, _)| p.as_path()).collect();
        Ok(paths
            .into_iter()
            .map(|path| {
                let declared = backup.contains(path.as_path());
                super::file_in_root(&self.root, path, declared)
            })
            .collect())
    }

    fn database_mtime(&self) -> Result<SystemTime> {
        super::mtime_in_root(&self.root, Path::new(LOCAL))
    }

    fn database_id(&self) -> u64 {
        self.database_id
    }

    fn dependency_graph(&self) -> &dyn Graph {
        self
    }

    fn package_at(&self, index: usize) -> &Package {
        &self.installed[index].package
    }

    /// The md5sums of the backup files (pacman records no others); modes
    /// and times are those of the installed file.
    fn shipped(&self, package: &Package) -> Result<HashMap<PathBuf, Shipped>> {
        let (_, backup) = self.read_files(package)?;
        Ok(backup
            .into_iter()
            .map(|(path, md5)| {
                let shipped = Shipped {
                    digest: Digest::Md5(md5),
                    mode: None,
                    mtime: None,
                };
                (path, shipped)
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
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        for p in packages {
            // The host's cache holds what pacman installed (another
            // root's is that root's owner's to fill: never trusted).
            let cached = ["zst", "xz", "gz"].iter().find_map(|ext| {
                let f = Path::new(CACHE)
                    .join(format!("{}-{}-{}.pkg.tar.{ext}", p.name, p.version, p.arch));
                (self.root.is_host() && std::fs::symlink_metadata(&f).is_ok_and(|m| m.is_file()))
                    .then_some(f)
            });
            match cached {
                Some(f) => {
                    found.insert(p.full_name.clone(), f);
                }
                None => missing.push(*p),
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let dir = scratch.join("pacman");
        let targets: Vec<String> = missing
            .iter()
            .map(|p| format!("{}={}", p.name, p.version))
            .collect();
        download(
            &targets,
            &dir,
            self.root.is_host(),
            packager_config,
            reporter,
        )?;
        found.extend(super::downloaded_packages(&dir.join("pkgs"))?);
        Ok(found)
    }

    fn kernel_packages(&self) -> &'static [&'static str] {
        &["linux"]
    }

    fn download_named(
        &self,
        names: &[String],
        dest: &Path,
        packager_config: Option<&Path>,
        reporter: &Reporter,
    ) -> Result<Vec<PathBuf>> {
        if let Some(bad) = names.iter().find(|n| !is_pacman_name(n)) {
            return Err(backend_error(format!(
                "{:?} is not a package name",
                crate::error::capped(bad)
            )));
        }
        download(names, dest, self.root.is_host(), packager_config, reporter)?;
        let mut files = Vec::new();
        for ext in ["zst", "xz", "gz"] {
            files.extend(super::files_ending(
                &dest.join("pkgs"),
                &format!(".pkg.tar.{ext}"),
            )?);
        }
        Ok(files)
    }

    fn extract(&self, file: &Path, paths: &[PathBuf]) -> Result<Vec<ConfigFile>> {
        payload::extract(file, paths, &|e| corrupt(file, e))
    }
}

/// Download `targets` (`name` or `name=version`) with `pacman -Syw` into
/// `dir/pkgs`, with a database of its own in `dir` (the root's is never
/// written).  As the rpm downloaders, pacman runs as whoever runs
/// supermin, so it never takes another root's configuration (an
/// `XferCommand` there is a command line it would run): the host's
/// `/etc/pacman.conf` for the host, else only a `--packager-config`.
/// Names and versions were checked when the database was read, and
/// follow `--`.
fn download(
    targets: &[String],
    dir: &Path,
    host: bool,
    packager_config: Option<&Path>,
    reporter: &Reporter,
) -> Result<()> {
    let config = match (packager_config, host) {
        (Some(c), _) => c.to_path_buf(),
        (None, true) => PathBuf::from("/etc/pacman.conf"),
        (None, false) => {
            return Err(backend_error(
                "pristine config files of another root are downloaded only with a pacman \
                 configuration you trust: pass --packager-config FILE (its repositories), or use \
                 --use-installed (the root's own copies); its own configuration is never used, \
                 as pacman would run the commands it names",
            ))
        }
    };
    for sub in ["db", "pkgs", "root"] {
        std::fs::create_dir_all(dir.join(sub)).at("creating", dir.join(sub))?;
    }
    // pacman refuses -S to a non-root user; fakeroot lets it write our
    // scratch directory as it would as root.
    let mut command = if crate::rootfs::is_root() {
        Command::new("pacman")
    } else {
        let mut c = Command::new("fakeroot");
        c.arg("pacman");
        c
    };
    command
        .arg("-Syw")
        .args(["--noconfirm", "--nodeps", "--nodeps"])
        .arg("--config")
        .arg(&config)
        .arg("--dbpath")
        .arg(dir.join("db"))
        .arg("--cachedir")
        .arg(dir.join("pkgs"))
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--")
        .args(targets);
    reporter.info(1, || format!("pacman: running {command:?}"));
    let output = crate::process::output(&mut command, reporter)?
        .map_err(|e| backend_error(format!("cannot run pacman: {e}")))?;
    if !output.status.success() {
        return Err(backend_error(format!(
            "pacman could not download {}: {}",
            targets.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

fn corrupt(file: &Path, what: impl std::fmt::Display) -> Error {
    Error::backend(
        "pacman",
        format!("{}: not a valid pacman package: {what}", file.display()),
    )
}

/// Hand `visit` each regular file of a `.pkg.tar.*` (its metadata
/// members left out).
fn unpack(file: &Path, visit: &mut super::VisitFile<'_>) -> Result<()> {
    payload::unpack(file, &|e| corrupt(file, e), visit)
}

/// A `.pkg.tar.*`'s package (from its `.PKGINFO`) and files, config flags
/// from its `backup` lines.
pub fn read_package_file(file: &Path) -> Result<(Package, Vec<File>)> {
    let (info, mut files) = payload::read_with_pkginfo(file, &|e| corrupt(file, e))?;
    let (name, version) = (info.one("pkgname"), info.one("pkgver"));
    if !is_pacman_name(name) || !is_pacman_version(version) {
        return Err(corrupt(
            file,
            format!(
                ".PKGINFO: invalid pkgname or pkgver {:?}",
                crate::error::capped(&format!("{name} {version}"))
            ),
        ));
    }
    let depends = info.all("depend").map(str::to_string).collect();
    let backup: HashSet<PathBuf> = info.all("backup").map(|b| Path::new("/").join(b)).collect();
    for f in &mut files {
        f.is_config = super::is_config(&f.path, f.kind, backup.contains(&f.path));
    }
    let mut package = package(name, version, info.one("arch"), depends);
    package.license = super::provides::licenses(info.all("license"));
    package.supplier = Some(info.one("packager").to_string()).filter(|p| !p.is_empty());
    Ok((package, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_libalpm() {
        use Ordering::*;
        for (a, b, want) in [
            ("1.0-1", "1.0-2", Less),
            ("1:0.1-1", "2.0-1", Greater),
            ("1.2", "1.2-7", Equal),
            ("1.10-1", "1.9-1", Greater),
            ("2.38-3", "2.38", Equal),
        ] {
            assert_eq!(vercmp(a, b), want, "{a} vs {b}");
        }
    }

    /// pacman's own `vercmp` (Debian's pacman-package-manager ships it;
    /// the test set-up installs it) is the oracle.
    #[test]
    fn versions_compare_as_pacmans_vercmp() {
        for (a, b) in [
            ("1.0a", "1.0"),
            ("9.0p1", "9.0"),
            ("1.1.1w", "1.1.1"),
            ("1.0~rc1", "1.0"),
            ("1.0..1", "1.0.1"),
            ("1.0-1", "1.0-2"),
            ("1:0.1-1", "2.0-1"),
            ("01:1-1", "1:1-1"),
            ("1.2", "1.2-7"),
            ("1.10", "1.9"),
            ("1.0.a", "1.0.1"),
            ("a", "1"),
            ("1.0alpha", "1.0beta"),
            ("2.0", "2.0.0"),
            ("1.001", "1.1"),
            ("r1000.abc", "r999.abd"),
        ] {
            let out = std::process::Command::new("vercmp")
                .args([a, b])
                .output()
                .expect("vercmp (pacman) runs: scripts/setup.sh installs pacman-package-manager");
            let oracle: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            let ours = vercmp(a, b) as i32;
            assert_eq!(ours, oracle.signum(), "{a} vs {b}");
        }
    }

    #[test]
    fn dependencies_parse_with_and_without_versions() {
        let d = parse_dep("glibc>=2.38").unwrap();
        assert_eq!(d.name, "glibc");
        assert!(d.allows("2.40-1", vercmp) && !d.allows("2.37-9", vercmp));
        let so = parse_dep("libreadline.so=8-64").unwrap();
        assert!(so.allows("8-64", vercmp));
        assert_eq!(
            parse_dep("bash-completion: for tab completion")
                .unwrap()
                .name,
            "bash-completion"
        );
        for bad in ["", ">=1", "a>=", "-x", "a b", "../../x"] {
            assert!(parse_dep(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn sections_name_the_line_of_a_stray_value() {
        let s = sections("%NAME%\nbash\n\n%DEPENDS%\nglibc\nreadline\n").unwrap();
        assert_eq!(s["DEPENDS"].len(), 2);
        assert_eq!(s["NAME"], vec![(2, "bash")]);
        assert_eq!(sections("bash\n").unwrap_err().0, 1);
        assert_eq!(sections("%A%\nx\n\ny\n").unwrap_err().0, 4);
    }
}
