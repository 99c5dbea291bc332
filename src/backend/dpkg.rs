//! The dpkg backend (Debian, Ubuntu and derivatives), read in-process.
//!
//! Everything comes from dpkg's admin directory under the root:
//! `status` (packages, versions, dependencies, provides, conffiles),
//! `info/<pkg>[:<arch>].list` (file lists) and `diversions`.  No
//! `dpkg-query` process is started.  Downloads for pristine config files
//! use `apt-get download` (see [`super::deb`] for reading the `.deb`s).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::SystemTime;

use debversion::Version;

use super::deb822::{field, numbered_stanzas};
use super::{
    alternatives, deb, files_ending, stays_inside, Backend, ConfigFile, Digest, Driver,
    PackageFiles, Shipped, DATABASE_FILE_LIMIT,
};
use crate::error::{Error, IoContext, Result};
use crate::output::ScratchBase;
use crate::package::{File, FileKind, Package};
use crate::report::Reporter;
use crate::resolve::{Clause, Graph};
use crate::rootfs::RootFs;

pub const DRIVER: Driver = Driver {
    name: "debian/dpkg",
    kind: "dpkg",
    detect,
    open,
    package_files: Some(PackageFiles {
        magics: &[b"!<arch>\n"],
        claims: None,
        extension: ".deb",
        read: deb::read_package_file,
        unpack: deb::unpack,
    }),
    database: |_| {
        let mut files = vec![Path::new(ADMIN_DIR).join("status")];
        files.extend(alternatives::state_files(ALTERNATIVES));
        files
    },
};

/// update-alternatives' admin directory, inside the root.
const ALTERNATIVES: &[&str] = &["/var/lib/dpkg/alternatives"];

/// dpkg's admin directory, inside the root.
const ADMIN_DIR: &str = "/var/lib/dpkg";

fn detect(root: &RootFs) -> bool {
    let is_file = |p: &str| root.metadata(Path::new(p)).is_ok_and(|m| m.is_file());
    let debian_like = super::os_release_ids(root)
        .iter()
        .any(|id| id == "debian" || id == "ubuntu")
        || is_file("/etc/debian_version");
    debian_like && is_file("/var/lib/dpkg/status")
}

/// dpkg needs no scratch space to open: its database is plain text read in place.
fn open(root: RootFs, _scratch: &ScratchBase) -> Result<Box<dyn Backend>> {
    Ok(Box::new(Dpkg::open(root)?))
}

/// `<<`, `<=`, `=`, `>=`, `>>` (and the obsolete `<`, `>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relation {
    Less,
    LessEqual,
    Equal,
    GreaterEqual,
    Greater,
}

impl Relation {
    fn parse(s: &str) -> Option<Relation> {
        Some(match s {
            "<<" => Relation::Less,
            "<=" | "<" => Relation::LessEqual,
            "=" => Relation::Equal,
            ">=" | ">" => Relation::GreaterEqual,
            ">>" => Relation::Greater,
            _ => return None,
        })
    }

    fn holds(self, have: &Version, want: &Version) -> bool {
        let ord = have.cmp(want);
        match self {
            Relation::Less => ord.is_lt(),
            Relation::LessEqual => ord.is_le(),
            Relation::Equal => ord.is_eq(),
            Relation::GreaterEqual => ord.is_ge(),
            Relation::Greater => ord.is_gt(),
        }
    }
}

/// One alternative of a dependency clause: `name[:qualifier] [(rel version)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Atom {
    name: String,
    qualifier: Option<String>,
    constraint: Option<(Relation, Version)>,
}

impl Atom {
    /// Parse one alternative; architecture lists `[amd64]` and build
    /// profiles `<!nocheck>` (which do not appear in installed stanzas, but
    /// cost nothing to tolerate) are dropped.
    fn parse(text: &str) -> Option<Atom> {
        let mut rest = text.trim();
        for (open, close) in [('[', ']'), ('<', '>')] {
            if let Some(start) = rest.find(open) {
                if rest[start..].contains(close) && !rest[..start].contains('(') {
                    rest = rest[..start].trim();
                }
            }
        }
        let (head, constraint) = match rest.split_once('(') {
            Some((head, tail)) => {
                let inner = tail.split(')').next().unwrap_or("").trim();
                let split = inner
                    .find(|c: char| !"<>=".contains(c))
                    .unwrap_or(inner.len());
                let rel = Relation::parse(inner[..split].trim());
                let version = Version::from_str(inner[split..].trim()).ok();
                (head.trim(), rel.zip(version))
            }
            None => (rest, None),
        };
        if head.is_empty() {
            return None;
        }
        let (name, qualifier) = match head.split_once(':') {
            Some((n, q)) => (n.to_string(), Some(q.to_string())),
            None => (head.to_string(), None),
        };
        Some(Atom {
            name,
            qualifier,
            constraint,
        })
    }
}

#[derive(Debug, Clone)]
struct Provide {
    package: usize,
    version: Option<Version>,
}

#[derive(Debug, Clone)]
struct Installed {
    package: Package,
    version: Version,
    multi_arch_foreign: bool,
    /// `Essential: yes` or `Priority: required/important`: preferred when
    /// several installed packages satisfy a dependency.
    important: bool,
    clauses: Vec<Vec<Atom>>,
    /// Conffiles with the md5sum of the version the package shipped.
    conffiles: Vec<(PathBuf, String)>,
}

/// A dpkg database, loaded once.
#[derive(Debug)]
pub struct Dpkg {
    root: RootFs,
    /// This opened database's [`crate::package::PackageId::database`].
    database_id: u64,
    /// [`ADMIN_DIR`], inside the root.
    admin: PathBuf,
    native_arch: String,
    installed: Vec<Installed>,
    by_name: HashMap<String, Vec<usize>>,
    providers: HashMap<String, Vec<Provide>>,
    /// diverted path -> (where the original now lives, diverting package)
    diversions: HashMap<PathBuf, (PathBuf, String)>,
}

/// A name dpkg could have written: package names and architectures are
/// made of `[A-Za-z0-9+.-]` and start with an alphanumeric (Debian policy
/// §5.6.1, §11.1), so they are safe to use in `info/` file names.
fn is_dpkg_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
}

/// `dpkg`'s own architecture is the native one (dpkg is never foreign).
fn native_arch_of(installed: &[Installed]) -> String {
    installed
        .iter()
        .find(|p| p.package.name == "dpkg")
        .map(|p| p.package.arch.clone())
        .unwrap_or_else(|| {
            match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                "x86" => "i386",
                "powerpc64" => "ppc64el",
                "s390x" => "s390x",
                other => other,
            }
            .to_string()
        })
}

impl Dpkg {
    /// Load the dpkg database of `root`.
    pub fn open(root: RootFs) -> Result<Dpkg> {
        let admin = PathBuf::from(ADMIN_DIR);
        let text = read_database_file(&root, &admin.join("status"))?;
        let status_path = root.display_path(&admin.join("status"));
        let mut installed = Vec::new();
        let mut provides_text = Vec::new();
        for (line, stanza) in numbered_stanzas(&text) {
            let state = field(&stanza, "Status").unwrap_or("");
            let is_installed = matches!(
                state.split_whitespace().nth(2),
                Some("installed" | "triggers-pending" | "triggers-awaited")
            );
            if !is_installed {
                continue;
            }
            // dpkg itself refuses to run on such a database; resolving
            // around a mangled stanza would quietly give a wrong closure.
            let broken = |what: String| {
                Error::backend(
                    "dpkg",
                    format!(
                        "{}: line {line}: broken entry for an installed package: {what}",
                        status_path.display()
                    ),
                )
            };
            let name =
                field(&stanza, "Package").ok_or_else(|| broken("no Package field".into()))?;
            if !is_dpkg_name(name) {
                return Err(broken(format!("invalid package name {name:?}")));
            }
            let version = field(&stanza, "Version")
                .ok_or_else(|| broken(format!("package {name} has no Version field")))?;
            let parsed_version = Version::from_str(version).map_err(|_| {
                broken(format!("package {name} has an invalid version {version:?}"))
            })?;
            let arch = field(&stanza, "Architecture").unwrap_or("all").to_string();
            if !is_dpkg_name(&arch) {
                return Err(broken(format!(
                    "package {name} has an invalid architecture {arch:?}"
                )));
            }
            let mut raw = Vec::new();
            let mut clauses = Vec::new();
            for key in ["Pre-Depends", "Depends"] {
                for clause in field(&stanza, key).unwrap_or("").split(',') {
                    let clause = clause.trim();
                    if clause.is_empty() {
                        continue;
                    }
                    raw.push(clause.to_string());
                    clauses.push(clause.split('|').filter_map(Atom::parse).collect());
                }
            }
            let conffiles = field(&stanza, "Conffiles")
                .unwrap_or("")
                .lines()
                .filter_map(|l| {
                    let mut words = l.split_whitespace();
                    let path = words.next()?;
                    let hash = words.next().unwrap_or("").to_string();
                    // Obsolete conffiles are no longer shipped by the package.
                    (!words.any(|w| w == "obsolete" || w == "remove-on-upgrade"))
                        .then(|| (PathBuf::from(path), hash))
                })
                .collect();
            let package = Package {
                full_name: format!("{name}_{version}_{arch}"),
                name: name.to_string(),
                version: version.to_string(),
                arch,
                depends: raw,
                license: None,
                supplier: field(&stanza, "Maintainer").map(str::to_string),
                id: None,
            };
            installed.push(Installed {
                version: parsed_version,
                multi_arch_foreign: field(&stanza, "Multi-Arch") == Some("foreign"),
                important: field(&stanza, "Essential") == Some("yes")
                    || matches!(field(&stanza, "Priority"), Some("required" | "important")),
                clauses,
                conffiles,
                package,
            });
            // Provides are indexed below, once every id is known.
            provides_text.push(field(&stanza, "Provides").unwrap_or("").to_string());
        }

        let native_arch = native_arch_of(&installed);
        // Deterministic preference among same-name instances: native, all, others.
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        let database = crate::package::new_database_id();
        for (index, p) in installed.iter_mut().enumerate() {
            p.package.id = Some(crate::package::PackageId { database, index });
            by_name
                .entry(p.package.name.clone())
                .or_default()
                .push(index);
        }
        for ids in by_name.values_mut() {
            ids.sort_by_key(|&i| {
                let a = &installed[i].package.arch;
                (a != &native_arch, a != "all", a.clone())
            });
        }
        let mut providers: HashMap<String, Vec<Provide>> = HashMap::new();
        for (id, text) in provides_text.iter().enumerate() {
            for atom in text.split(',').filter_map(Atom::parse) {
                let version = atom.constraint.map(|(_, v)| v);
                providers.entry(atom.name).or_default().push(Provide {
                    package: id,
                    version,
                });
            }
        }
        for list in providers.values_mut() {
            list.sort_by(|a, b| {
                installed[a.package]
                    .package
                    .full_name
                    .cmp(&installed[b.package].package.full_name)
            });
        }

        let diversions = read_diversions(&root, &admin.join("diversions"))?;
        Ok(Dpkg {
            root,
            database_id: database,
            admin,
            native_arch,
            installed,
            by_name,
            providers,
            diversions,
        })
    }

    pub fn native_arch(&self) -> &str {
        &self.native_arch
    }

    /// Can `candidate` satisfy a dependency of `from` qualified by `qualifier`?
    fn arch_ok(&self, from: &Installed, qualifier: Option<&str>, candidate: &Installed) -> bool {
        let arch = candidate.package.arch.as_str();
        match qualifier {
            // `:any` needs Multi-Arch: allowed on the target; an installed,
            // consistent database already guarantees that.
            Some("any") => true,
            Some("native") => arch == self.native_arch || arch == "all",
            Some(q) => arch == q,
            None => {
                let from_arch = from.package.arch.as_str();
                arch == from_arch
                    || arch == "all"
                    || candidate.multi_arch_foreign
                    || (from_arch == "all" && arch == self.native_arch)
            }
        }
    }

    /// Installed packages satisfying one alternative, best first: the real
    /// package (native arch first), then providers of the virtual name.
    fn candidates(&self, from: &Installed, atom: &Atom) -> Vec<usize> {
        let mut out = Vec::new();
        for &id in self.by_name.get(&atom.name).into_iter().flatten() {
            let cand = &self.installed[id];
            let version_ok = match &atom.constraint {
                None => true,
                Some((rel, want)) => rel.holds(&cand.version, want),
            };
            if version_ok && self.arch_ok(from, atom.qualifier.as_deref(), cand) {
                out.push(id);
            }
        }
        for provide in self.providers.get(&atom.name).into_iter().flatten() {
            let cand = &self.installed[provide.package];
            // A versioned dependency is only satisfied by a versioned provide.
            let version_ok = match (&atom.constraint, &provide.version) {
                (None, _) => true,
                (Some((rel, want)), Some(have)) => rel.holds(have, want),
                (Some(_), None) => false,
            };
            if version_ok
                && self.arch_ok(from, atom.qualifier.as_deref(), cand)
                && !out.contains(&provide.package)
            {
                out.push(provide.package);
            }
        }
        out
    }

    /// `info/<name>:<arch>.<ext>` (multi-arch same) or `info/<name>.<ext>`.
    fn info_file(&self, package: &Package, ext: &str) -> PathBuf {
        let info = self.admin.join("info");
        let qualified = info.join(format!("{}:{}.{ext}", package.name, package.arch));
        if self.root.symlink_metadata(&qualified).is_ok() {
            qualified
        } else {
            info.join(format!("{}.{ext}", package.name))
        }
    }

    /// Paths listed for a package (`/.` dropped), in database order.
    fn listed_paths(&self, package: &Package) -> Result<Vec<PathBuf>> {
        let list = self.info_file(package, "list");
        let data = self.root.read(&list, DATABASE_FILE_LIMIT).map_err(|e| {
            Error::backend(
                "dpkg",
                format!(
                    "cannot read the file list of {}: {}: {e}",
                    package.full_name,
                    self.root.display_path(&list).display()
                ),
            )
        })?;
        let list = self.root.display_path(&list);
        use std::os::unix::ffi::OsStrExt;
        let mut paths = Vec::new();
        for (n, line) in data.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() || line == b"/." {
                continue;
            }
            let path = PathBuf::from(std::ffi::OsStr::from_bytes(line));
            if !stays_inside(&path) {
                return Err(Error::backend(
                    "dpkg",
                    format!(
                        "{}: line {}: {:?} is not a plain absolute path (the file list of {} is corrupt)",
                        list.display(),
                        n + 1,
                        crate::error::capped(&path.to_string_lossy()),
                        package.full_name
                    ),
                ));
            }
            paths.push(path);
        }
        Ok(paths)
    }
}

/// A file of dpkg's database, read inside the root (bounded), as text.
fn read_database_file(root: &RootFs, path: &Path) -> Result<String> {
    let bytes = root.read(path, DATABASE_FILE_LIMIT).map_err(|e| {
        Error::backend(
            "dpkg",
            format!("cannot read {}: {e}", root.display_path(path).display()),
        )
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `diversions` holds triples of lines: diverted path, new path, package
/// (`:` for a local diversion made by the administrator).
fn read_diversions(root: &RootFs, path: &Path) -> Result<HashMap<PathBuf, (PathBuf, String)>> {
    if let Err(e) = root.symlink_metadata(path) {
        if e.kind() == std::io::ErrorKind::NotFound {
            return Ok(HashMap::new());
        }
    }
    let text = read_database_file(root, path)?;
    let path = &root.display_path(path);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = HashMap::new();
    for (i, c) in lines.chunks_exact(3).enumerate() {
        let (from, to) = (PathBuf::from(c[0]), PathBuf::from(c[1]));
        for (offset, p) in [(0, &from), (1, &to)] {
            if !stays_inside(p) {
                return Err(Error::backend(
                    "dpkg",
                    format!(
                        "{}: line {}: {:?} is not a plain absolute path",
                        path.display(),
                        3 * i + offset + 1,
                        crate::error::capped(&p.to_string_lossy())
                    ),
                ));
            }
        }
        out.insert(from, (to, c[2].to_string()));
    }
    Ok(out)
}

impl Graph for Dpkg {
    fn clauses(&self, id: usize) -> Vec<Clause> {
        let from = &self.installed[id];
        from.clauses
            .iter()
            .zip(&from.package.depends)
            .map(|(alts, text)| Clause {
                text: text.clone(),
                alternatives: alts.iter().map(|a| self.candidates(from, a)).collect(),
            })
            .collect()
    }

    fn preference(&self, id: usize) -> Option<&'static str> {
        self.installed[id].important.then_some("required")
    }
}

impl Backend for Dpkg {
    fn name(&self) -> &'static str {
        "dpkg"
    }

    fn root(&self) -> &RootFs {
        &self.root
    }

    fn package_count(&self) -> usize {
        self.installed.len()
    }

    fn lookup(&self, name: &str) -> Option<Package> {
        let name = name.trim();
        let (base, arch) = match name.split_once(':') {
            Some((b, a)) => (b, Some(a)),
            None => (name, None),
        };
        let ids = self.by_name.get(base)?;
        let id = match arch {
            None | Some("any") => ids.first(),
            Some("native") => ids
                .iter()
                .find(|&&i| self.installed[i].package.arch == self.native_arch),
            Some(a) => ids.iter().find(|&&i| self.installed[i].package.arch == a),
        }?;
        Some(self.installed[*id].package.clone())
    }

    fn database_id(&self) -> u64 {
        self.database_id
    }

    fn alternatives_dirs(&self) -> &'static [&'static str] {
        ALTERNATIVES
    }

    /// The metapackage that follows the current kernel of this
    /// architecture (a kernel package's dependency leads to the kernel):
    /// Debian's per architecture, Ubuntu's (and its derivatives') the
    /// kernel it builds for virtual machines.
    fn kernel_packages(&self) -> &'static [&'static str] {
        if super::os_release_ids(&self.root)
            .iter()
            .any(|id| id == "ubuntu")
        {
            return &["linux-image-virtual"];
        }
        match self.native_arch.as_str() {
            "amd64" => &["linux-image-amd64"],
            "arm64" => &["linux-image-arm64"],
            "i386" => &["linux-image-686"],
            "ppc64el" => &["linux-image-powerpc64le"],
            "s390x" => &["linux-image-s390x"],
            _ => &[],
        }
    }

    /// `apt-get download NAME...` (the candidate versions, from the host's
    /// apt sources).
    fn download_named(
        &self,
        names: &[String],
        dest: &Path,
        packager_config: Option<&Path>,
        reporter: &Reporter,
    ) -> Result<Vec<PathBuf>> {
        if let Some(bad) = names.iter().find(|n| !is_dpkg_name(n)) {
            return Err(Error::backend(
                "dpkg",
                format!("{:?} is not a package name", crate::error::capped(bad)),
            ));
        }
        reporter.info(1, || format!("dpkg: apt-get download {}", names.join(" ")));
        apt_get_download(dest, names, packager_config, reporter)?.map_err(|why| {
            Error::backend(
                "dpkg",
                format!("apt-get download {}: {why}", names.join(" ")),
            )
        })?;
        files_ending(dest, ".deb")
    }

    fn dependency_graph(&self) -> &dyn Graph {
        self
    }

    fn package_at(&self, index: usize) -> &Package {
        &self.installed[index].package
    }

    fn files(&self, package: &Package) -> Result<Vec<File>> {
        let installed = &self.installed[self.index_of(package)?];
        let conffiles: HashSet<&Path> = installed
            .conffiles
            .iter()
            .map(|(p, _)| p.as_path())
            .collect();
        let mut out = Vec::new();
        for path in self.listed_paths(package)? {
            // A path diverted by another package: this package's copy now
            // lives at the diverted-to path.
            let source = match self.diversions.get(&path) {
                Some((to, by)) if by != &package.name => Some(to.clone()),
                _ => None,
            };
            let meta = self
                .root
                .symlink_metadata(source.as_deref().unwrap_or(&path))
                .ok();
            let kind = meta.as_ref().map(FileKind::of).unwrap_or(FileKind::Missing);
            use std::os::unix::fs::MetadataExt;
            let mode = meta.as_ref().map(|m| m.mode()).unwrap_or(0);
            let size = meta.as_ref().map(|m| m.size()).unwrap_or(0);
            let is_config = super::is_config(&path, kind, conffiles.contains(path.as_path()));
            out.push(File {
                path,
                source,
                kind,
                mode,
                size,
                is_config,
            });
        }
        Ok(out)
    }

    fn database_mtime(&self) -> Result<SystemTime> {
        super::mtime_in_root(&self.root, &self.admin.join("status"))
    }

    /// The md5sums dpkg recorded for the files as shipped: conffiles
    /// (in `status`) and the others (`info/<pkg>.md5sums`).  dpkg records
    /// no modes or times: those of the installed file are used.
    fn shipped(&self, package: &Package) -> Result<HashMap<PathBuf, Shipped>> {
        let md5 = |hash: &str| Shipped {
            digest: Digest::Md5(hash.to_string()),
            mode: None,
            mtime: None,
        };
        let mut sums = HashMap::new();
        if let Ok(text) = self
            .root
            .read(&self.info_file(package, "md5sums"), DATABASE_FILE_LIMIT)
        {
            for line in String::from_utf8_lossy(&text).lines() {
                if let Some((hash, path)) = line.split_once("  ") {
                    sums.insert(Path::new("/").join(path), md5(hash));
                }
            }
        }
        for (path, hash) in &self.installed[self.index_of(package)?].conffiles {
            sums.insert(path.clone(), md5(hash));
        }
        Ok(sums)
    }

    fn fetch(
        &self,
        packages: &[&Package],
        scratch: &Path,
        packager_config: Option<&Path>,
        reporter: &Reporter,
    ) -> Result<HashMap<String, PathBuf>> {
        download(
            packages.iter().copied(),
            scratch,
            &self.root,
            packager_config,
            reporter,
        )
    }

    fn extract(&self, file: &Path, paths: &[PathBuf]) -> Result<Vec<ConfigFile>> {
        let wanted: HashSet<&Path> = paths.iter().map(PathBuf::as_path).collect();
        deb::read_files(file, &wanted)
    }
}

/// `name_version_arch.deb` as apt names it (`:` in the version is `%3a`).
fn deb_file_name(p: &Package) -> String {
    format!(
        "{}_{}_{}.deb",
        p.name,
        p.version.replace(':', "%3a"),
        p.arch
    )
}

/// Fetch the `.deb` of each package's installed version: from apt's cache
/// when it is there, otherwise with `apt-get download name:arch=version`.
/// If that exact version is no longer in the archive (a binNMU or a
/// security update superseded it), fall back to the candidate version with
/// a warning, as upstream (which always downloads the candidate) would.
/// Returns full name -> path of the `.deb`.
fn download<'a>(
    packages: impl Iterator<Item = &'a Package>,
    scratch: &Path,
    root: &RootFs,
    packager_config: Option<&Path>,
    reporter: &Reporter,
) -> Result<HashMap<String, PathBuf>> {
    let packages: Vec<&Package> = packages.collect();
    let dir = scratch.join("debs");
    std::fs::create_dir_all(&dir).at("creating", &dir)?;
    // apt's cache: the host's is read where it is; another root's is read
    // inside that root (a regular file, not a symlink out of it), copied
    // into our scratch directory first.
    let cache = Path::new("/var/cache/apt/archives");
    let mut found = HashMap::new();
    let mut missing = Vec::new();
    for p in &packages {
        let name = deb_file_name(p);
        let cached = cache.join(&name);
        let usable = if root.is_host() {
            Some(cached).filter(|c| std::fs::symlink_metadata(c).is_ok_and(|m| m.is_file()))
        } else {
            copy_out_of_root(root, &cached, &dir.join(&name))
        };
        match usable {
            Some(path) => {
                found.insert(p.full_name.clone(), path);
            }
            None => missing.push(*p),
        }
    }
    if missing.is_empty() {
        return Ok(found);
    }
    let pinned: Vec<String> = missing
        .iter()
        .map(|p| format!("{}:{}={}", p.name, p.arch, p.version))
        .collect();
    reporter.info(1, || {
        format!("dpkg: downloading {} packages with apt-get", pinned.len())
    });
    if let Err(message) = apt_get_download(&dir, &pinned, packager_config, reporter)? {
        // One unavailable version fails the whole command.  apt names each
        // one on an `E:` line whose last quoted word is the package ("Can't
        // find a source to download version 'V' of 'NAME:ARCH'", or
        // "Version 'V' for 'NAME' was not found"), so ask again once with
        // the candidate version for those.
        let unavailable: HashSet<String> = message
            .lines()
            .filter(|l| l.starts_with("E:"))
            .filter_map(|l| l.rsplit('\'').nth(1))
            .map(|n| n.split(':').next().unwrap_or(n).to_string())
            .collect();
        if unavailable.is_empty() {
            return Err(Error::backend(
                "dpkg",
                format!("apt-get download failed: {message}"),
            ));
        }
        let mut retry = Vec::new();
        for (p, spec) in missing.iter().zip(&pinned) {
            if unavailable.contains(&p.name) {
                reporter.warn(format!(
                    "dpkg: version {} of {} is no longer in the archive; taking config files from the candidate version",
                    p.version, p.name
                ));
                retry.push(format!("{}:{}", p.name, p.arch));
            } else {
                retry.push(spec.clone());
            }
        }
        apt_get_download(&dir, &retry, packager_config, reporter)?.map_err(|msg| {
            Error::backend(
                "dpkg",
                format!(
                    "cannot download packages: {msg} (try --use-installed, or run apt-get update)"
                ),
            )
        })?;
    }
    // Match downloaded files to packages by the name_..._arch pattern.
    let entries: Vec<String> = std::fs::read_dir(&dir)
        .at("listing", &dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    for p in missing {
        let exact = deb_file_name(p);
        let prefix = format!("{}_", p.name);
        let suffix = format!("_{}.deb", p.arch);
        let name = entries
            .iter()
            .find(|e| **e == exact)
            .or_else(|| {
                entries
                    .iter()
                    .find(|e| e.starts_with(&prefix) && e.ends_with(&suffix))
            })
            .ok_or_else(|| {
                Error::backend(
                    "dpkg",
                    format!("apt-get did not download package {}", p.full_name),
                )
            })?;
        found.insert(p.full_name.clone(), dir.join(name));
    }
    Ok(found)
}

/// Copy the regular file `path` of `root` to `dest` (at most
/// [`MAX_CACHED_DEB`] bytes); `None` if it is not there or not usable.
fn copy_out_of_root(root: &RootFs, path: &Path, dest: &Path) -> Option<PathBuf> {
    let (file, meta) = root.open_regular(path).ok()?;
    if meta.len() > MAX_CACHED_DEB {
        return None;
    }
    let mut out = std::fs::File::create(dest).ok()?;
    std::io::copy(&mut std::io::Read::take(file, meta.len()), &mut out).ok()?;
    Some(dest.to_path_buf())
}

/// The largest `.deb` taken from another root's apt cache.
const MAX_CACHED_DEB: u64 = 4 << 30;

/// The one place `apt-get` is run.  Errors carry apt's own message; a
/// cancelled build stops it.
fn apt_get_download(
    dir: &Path,
    specs: &[String],
    packager_config: Option<&Path>,
    reporter: &Reporter,
) -> Result<std::result::Result<(), String>> {
    let mut cmd = Command::new("apt-get");
    cmd.current_dir(dir).arg("-qq");
    if let Some(config) = packager_config {
        cmd.arg("-c").arg(config);
    }
    // As root apt drops to the _apt user, who cannot write our private
    // scratch directory; the download itself is harmless either way.
    if crate::rootfs::is_root() {
        cmd.arg("-o").arg("APT::Sandbox::User=root");
    }
    cmd.arg("download").args(specs);
    Ok(match crate::process::output(&mut cmd, reporter)? {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(e) => Err(format!("cannot run apt-get: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dependency_atoms() {
        let a = Atom::parse("libc6 (>= 2.36)").unwrap();
        assert_eq!(a.name, "libc6");
        assert_eq!(a.constraint.as_ref().unwrap().0, Relation::GreaterEqual);
        let a = Atom::parse(" perl:any ").unwrap();
        assert_eq!(
            (a.name.as_str(), a.qualifier.as_deref()),
            ("perl", Some("any"))
        );
        let a = Atom::parse("foo [amd64] <!nocheck>").unwrap();
        assert_eq!(a.name, "foo");
        assert!(a.constraint.is_none());
        let a = Atom::parse("python3:any (>= 3.11~)").unwrap();
        assert_eq!(a.qualifier.as_deref(), Some("any"));
        assert!(a.constraint.is_some());
    }

    #[test]
    fn relations_follow_dpkg_order() {
        let v = |s: &str| Version::from_str(s).unwrap();
        assert!(Relation::Less.holds(&v("1.0~rc1"), &v("1.0")));
        assert!(Relation::GreaterEqual.holds(&v("1:0.1"), &v("9.9")));
        assert!(!Relation::Greater.holds(&v("2.36-9"), &v("2.36-9")));
        assert!(Relation::Equal.holds(&v("5.2.15-2+b8"), &v("5.2.15-2+b8")));
    }

    /// A root with `status`, and `.list` files for some packages.
    fn fake_root(status: &str, lists: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let admin = root.path().join("var/lib/dpkg");
        let info = admin.join("info");
        std::fs::create_dir_all(&info).unwrap();
        std::fs::write(admin.join("status"), status).unwrap();
        for (name, list) in lists {
            std::fs::write(info.join(format!("{name}.list")), list).unwrap();
        }
        root
    }

    const OK: &str =
        "Package: a\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0\n\n";

    #[test]
    fn broken_installed_stanzas_are_errors_naming_the_line() {
        for (bad, says) in [
            (
                "Status: install ok installed\nVersion: 1\n",
                "no Package field",
            ),
            (
                "Package: b\nStatus: install ok installed\n",
                "package b has no Version field",
            ),
            (
                "Package: b\nStatus: install ok installed\nVersion: 1 2\n",
                "invalid version",
            ),
            (
                "Package: ../../x\nStatus: install ok installed\nVersion: 1\n",
                "invalid package name",
            ),
            (
                "Package: b\nStatus: install ok installed\nVersion: 1\nArchitecture: a/b\n",
                "invalid architecture",
            ),
        ] {
            let root = fake_root(&format!("{OK}{bad}"), &[]);
            let e = Dpkg::open(RootFs::open(root.path()).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains("status: line 6: broken entry"), "{e}");
            assert!(e.contains(says), "{e}");
        }
        // Stanzas of packages that are not installed are not looked at.
        let root = fake_root(
            &format!("{OK}Package: gone\nStatus: purge ok not-installed\n"),
            &[],
        );
        assert_eq!(
            Dpkg::open(RootFs::open(root.path()).unwrap())
                .unwrap()
                .installed
                .len(),
            1
        );
    }

    #[test]
    fn file_lists_and_diversions_cannot_name_paths_outside_the_root() {
        let root = fake_root(OK, &[("a", "/.\n/usr\n/usr/../../etc/shadow\n")]);
        let dpkg = Dpkg::open(RootFs::open(root.path()).unwrap()).unwrap();
        let e = dpkg
            .files(&dpkg.installed[0].package)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a.list: line 3: \"/usr/../../etc/shadow\""),
            "{e}"
        );
        let root = fake_root(OK, &[("a", "usr/bin/relative\n")]);
        let dpkg = Dpkg::open(RootFs::open(root.path()).unwrap()).unwrap();
        assert!(dpkg.files(&dpkg.installed[0].package).is_err());

        let root = fake_root(OK, &[]);
        std::fs::write(
            root.path().join("var/lib/dpkg/diversions"),
            "/bin/sh\n/bin/../../sh.distrib\ndash\n",
        )
        .unwrap();
        let e = Dpkg::open(RootFs::open(root.path()).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("diversions: line 2"), "{e}");
    }
}
