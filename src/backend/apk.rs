//! The apk backend (Alpine, postmarketOS, Wolfi, Chimera), read in-process.
//!
//! apk keeps everything installed in one text file, `/lib/apk/db/installed`:
//! a record per package, one `X:value` field per line (`P:` name, `V:`
//! version, `A:` architecture, `D:` dependencies, `p:` provides), then its
//! files: `F:` a directory, each `R:` a file in it with its `Z:` checksum
//! (`Q1` + base64 SHA-1).  Dependencies go through provides such as
//! `so:libc.musl-x86_64.so.1` and `cmd:sh`; `!name` conflicts do not
//! shape a closure and are ignored.  Config files are the regular files
//! under `/etc`; a host copy whose SHA-1 is the recorded one is the
//! pristine file, others come from the package, fetched with `apk fetch`.
//!
//! A `.apk` file is gzip streams one after another (a signature, the
//! control tar with `.PKGINFO`, the data tar), which read as one tar
//! stream with pacman's layout: [`payload`] reads both.

use std::cmp::Ordering;
use std::collections::HashMap;
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
    name: "alpine/apk",
    kind: "apk",
    detect,
    open,
    package_files: Some(PackageFiles {
        magics: &[&[0x1f, 0x8b]],
        claims: Some(is_apk_file),
        extension: ".apk",
        read: read_package_file,
        unpack,
    }),
    database: |_| vec![PathBuf::from(INSTALLED)],
};

/// The database, inside the root.
const INSTALLED: &str = "/lib/apk/db/installed";

/// `ID`s of Alpine and the systems built on apk (and their `ID_LIKE`).
const APK_LIKE: &[&str] = &["alpine", "postmarketos", "wolfi", "chimera", "adelie"];

fn detect(root: &RootFs) -> bool {
    super::os_release_ids(root)
        .iter()
        .any(|id| APK_LIKE.contains(&id.as_str()))
        && root
            .metadata(Path::new(INSTALLED))
            .is_ok_and(|m| m.is_file())
}

/// apk needs no scratch space to open: its database is plain text read in place.
fn open(root: RootFs, _scratch: &ScratchBase) -> Result<Box<dyn Backend>> {
    Ok(Box::new(Apk::open(root)?))
}

fn backend_error(message: impl Into<String>) -> Error {
    Error::backend("apk", message)
}

/// A name apk could have written (package names, and provides such as
/// `so:libz.so.1` or `cmd:sh`): never empty, never an option, no `/`.
fn is_apk_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+_.-:@".contains(c))
}

/// An apk version taken apart: `1.2.3a_rc1-r4`.
#[derive(Debug, Default)]
struct Parsed<'a> {
    numbers: Vec<&'a str>,
    letter: Option<u8>,
    /// (rank, number): `_alpha` 0, `_beta` 1, `_pre` 2, `_rc` 3 come
    /// before the release (4, no suffix); `_cvs` 5, `_svn` 6, `_git` 7,
    /// `_hg` 8, `_p` 9 after it.
    suffixes: Vec<(u8, u64)>,
    /// `-rN`; an explicit `-r0` is newer than none.
    revision: Option<u64>,
}

fn parse_version(v: &str) -> Parsed<'_> {
    let mut out = Parsed::default();
    let v = match v.rsplit_once("-r") {
        Some((main, r)) if !r.is_empty() && r.bytes().all(|c| c.is_ascii_digit()) => {
            out.revision = Some(r.parse().unwrap_or(u64::MAX));
            main
        }
        _ => v,
    };
    let v = v.split('~').next().unwrap_or(v);
    let mut sections = v.split('_');
    let main = sections.next().unwrap_or("");
    let components: Vec<&str> = main.split('.').collect();
    for (i, c) in components.iter().enumerate() {
        let digits = c.bytes().take_while(u8::is_ascii_digit).count();
        out.numbers.push(&c[..digits]);
        if i + 1 == components.len() {
            out.letter = c[digits..].bytes().next();
        }
    }
    for suffix in sections {
        let name_len = suffix.bytes().take_while(u8::is_ascii_alphabetic).count();
        let rank = match &suffix[..name_len] {
            "alpha" => 0,
            "beta" => 1,
            "pre" => 2,
            "rc" => 3,
            "cvs" => 5,
            "svn" => 6,
            "git" => 7,
            "hg" => 8,
            _ => 9,
        };
        out.suffixes
            .push((rank, suffix[name_len..].parse().unwrap_or(0)));
    }
    out
}

/// `1.2.3a_rc1-r4` compared as apk does (its rules are Gentoo's): the
/// dotted numbers (after the first, one with a leading zero is a
/// fraction: `1.05` < `1.5`), more of them winning a tie; then the
/// letter; then suffixes (`_alpha` < `_beta` < `_pre` < `_rc` < none <
/// `_cvs` < `_svn` < `_git` < `_hg` < `_p`); then the `-rN` revision.
pub fn vercmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (parse_version(a), parse_version(b));
    let as_number = |s: &str| {
        let t = s.trim_start_matches('0');
        (t.len(), t.to_string())
    };
    for (i, (x, y)) in a.numbers.iter().zip(&b.numbers).enumerate() {
        let order = if i > 0 && (x.starts_with('0') || y.starts_with('0')) {
            x.trim_end_matches('0').cmp(y.trim_end_matches('0'))
        } else {
            as_number(x).cmp(&as_number(y))
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    let none = (4u8, 0u64);
    a.numbers
        .len()
        .cmp(&b.numbers.len())
        .then(a.letter.cmp(&b.letter))
        .then_with(|| {
            let n = a.suffixes.len().max(b.suffixes.len());
            (0..n)
                .map(|i| {
                    let x = a.suffixes.get(i).copied().unwrap_or(none);
                    let y = b.suffixes.get(i).copied().unwrap_or(none);
                    x.cmp(&y)
                })
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        })
        .then(a.revision.cmp(&b.revision))
}

/// apk's operators, longest first.
const OPS: &[(&str, Op)] = &[
    ("<=", Op::LessEqual),
    (">=", Op::GreaterEqual),
    ("=~", Op::Fuzzy),
    ("~=", Op::Fuzzy),
    ("<", Op::Less),
    (">", Op::Greater),
    ("=", Op::Equal),
    ("~", Op::Fuzzy),
];

fn is_apk_version(v: &str) -> bool {
    !v.is_empty() && !v.contains(char::is_whitespace)
}

fn parse_dep(text: &str) -> Option<Dep> {
    Dep::parse(text, OPS, is_apk_name, is_apk_version)
}

/// One installed package as the backend keeps it.
#[derive(Debug, Clone)]
struct Installed {
    package: Package,
    deps: Vec<Dep>,
    provides: Vec<(String, Option<String>)>,
    /// Directories (`F:`) and files (`R:`, with the `Z:` checksum).
    paths: Vec<(PathBuf, Option<String>)>,
}

/// An apk database, loaded once.
#[derive(Debug)]
pub struct Apk {
    root: RootFs,
    database_id: u64,
    installed: Vec<Installed>,
    index: Index,
    /// Each package's dependency clauses, resolved once.
    clauses: Vec<Vec<Clause>>,
}

impl Apk {
    pub fn open(root: RootFs) -> Result<Apk> {
        let path = Path::new(INSTALLED);
        let shown = root.display_path(path);
        let bytes = root
            .read(path, DATABASE_FILE_LIMIT)
            .map_err(|e| backend_error(format!("{}: {e}", shown.display())))?;
        let text = String::from_utf8_lossy(&bytes);
        let mut installed = parse_installed(&text).map_err(|(line, what)| {
            backend_error(format!("{}: line {line}: {what}", shown.display()))
        })?;
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
        let clauses = installed
            .iter()
            .map(|from| {
                from.deps
                    .iter()
                    .zip(&from.package.depends)
                    .map(|(dep, text)| Clause {
                        text: text.clone(),
                        alternatives: vec![index.candidates(dep, |i| entry(&installed[i]), vercmp)],
                    })
                    .collect()
            })
            .collect();
        Ok(Apk {
            root,
            database_id,
            installed,
            index,
            clauses,
        })
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

/// The records of an `installed` file; an error is the 1-based line at
/// fault and what is wrong there.
fn parse_installed(text: &str) -> std::result::Result<Vec<Installed>, (usize, String)> {
    let mut out = Vec::new();
    let mut record: Vec<(usize, char, &str)> = Vec::new();
    let lines = text.split('\n').enumerate().map(|(i, l)| (i + 1, l));
    for (n, line) in lines.chain(std::iter::once((0, ""))) {
        if line.is_empty() {
            if !record.is_empty() {
                out.push(record_to_installed(&record)?);
                record.clear();
            }
            continue;
        }
        let mut chars = line.chars();
        match (chars.next(), chars.next()) {
            (Some(key), Some(':')) => record.push((n, key, &line[key.len_utf8() + 1..])),
            _ => {
                return Err((
                    n,
                    format!("{:?} is not a KEY:value line", crate::error::capped(line)),
                ))
            }
        }
    }
    Ok(out)
}

fn record_to_installed(
    record: &[(usize, char, &str)],
) -> std::result::Result<Installed, (usize, String)> {
    let first = record[0].0;
    let one = |key: char| {
        record
            .iter()
            .find(|(_, k, _)| *k == key)
            .map(|(_, _, v)| *v)
    };
    let name = one('P').ok_or((first, "a record with no P: (name)".to_string()))?;
    let version = one('V').ok_or((first, format!("{name}: no V: (version)")))?;
    if !is_apk_name(name)
        || name.contains(':')
        || version.is_empty()
        || version.contains(char::is_whitespace)
    {
        return Err((
            first,
            format!(
                "invalid package name or version {:?}",
                crate::error::capped(&format!("{name} {version}"))
            ),
        ));
    }
    let arch = one('A').unwrap_or("noarch");
    let mut deps = Vec::new();
    let mut depends = Vec::new();
    let mut provides = Vec::new();
    let mut paths = Vec::new();
    let mut dir: Option<PathBuf> = None;
    for &(n, key, value) in record {
        match key {
            'D' => {
                for word in value.split_whitespace() {
                    if word.starts_with('!') {
                        continue; // a conflict
                    }
                    let dep = parse_dep(word)
                        .ok_or((n, format!("dependency {word:?} is not name[<>=~]version")))?;
                    deps.push(dep);
                    depends.push(word.to_string());
                }
            }
            'p' => {
                for word in value.split_whitespace() {
                    let provide = parse_dep(word)
                        .and_then(Dep::into_provide)
                        .ok_or((n, format!("provide {word:?} is not name[=version]")))?;
                    provides.push(provide);
                }
            }
            'F' => {
                let path = Path::new("/").join(value);
                if value.starts_with('/') || !stays_inside(&path) || path == Path::new("/") {
                    return Err((
                        n,
                        format!(
                            "directory {:?} leaves the root",
                            crate::error::capped(value)
                        ),
                    ));
                }
                paths.push((path.clone(), None));
                dir = Some(path);
            }
            'R' => {
                let Some(d) = &dir else {
                    return Err((n, "R: (a file) before any F: (its directory)".to_string()));
                };
                if value.is_empty() || value.contains('/') || value == "." || value == ".." {
                    return Err((
                        n,
                        format!(
                            "file name {:?} is not a plain name",
                            crate::error::capped(value)
                        ),
                    ));
                }
                paths.push((d.join(value), None));
            }
            'Z' => {
                if let Some((path, sum)) = paths.last_mut() {
                    if path.parent() == dir.as_deref() {
                        *sum = Some(value.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    let mut package = package(name, version, arch, depends);
    package.license = super::provides::licenses(one('L').into_iter());
    package.supplier = one('m').map(str::to_string);
    Ok(Installed {
        package,
        deps,
        provides,
        paths,
    })
}

/// `Q1` + base64 SHA-1 (apk's checksum) as hex, if it is one.
fn q1_sha1_hex(sum: &str) -> Option<String> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(sum.strip_prefix("Q1")?)
        .ok()?;
    (raw.len() == 20).then(|| raw.iter().map(|b| format!("{b:02x}")).collect())
}

impl Graph for Apk {
    fn clauses(&self, id: usize) -> Vec<Clause> {
        self.clauses[id].clone()
    }
}

impl Backend for Apk {
    fn name(&self) -> &'static str {
        "apk"
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
        let installed = &self.installed[self.index_of(package)?];
        Ok(installed
            .paths
            .iter()
            .map(|(path, _)| super::file_in_root(&self.root, path.clone(), false))
            .collect())
    }

    fn database_mtime(&self) -> Result<SystemTime> {
        super::mtime_in_root(&self.root, Path::new(INSTALLED))
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

    /// The SHA-1 apk recorded for each file under `/etc` (`Z:`); modes and
    /// times are those of the installed file.
    fn shipped(&self, package: &Package) -> Result<HashMap<PathBuf, Shipped>> {
        let installed = &self.installed[self.index_of(package)?];
        Ok(installed
            .paths
            .iter()
            .filter(|(path, _)| path.starts_with("/etc"))
            .filter_map(|(path, sum)| {
                let digest = Digest::Sha1(q1_sha1_hex(sum.as_deref()?)?);
                Some((
                    path.clone(),
                    Shipped {
                        digest,
                        mode: None,
                        mtime: None,
                    },
                ))
            })
            .collect())
    }

    /// The packages from `apk fetch` (by name: older apk-tools fetch no
    /// `name=version`), each file's `.PKGINFO` saying which it holds; a
    /// version the repositories no longer have is left out, and the
    /// caller names it.
    fn fetch(
        &self,
        packages: &[&Package],
        scratch: &Path,
        packager_config: Option<&Path>,
        reporter: &Reporter,
    ) -> Result<HashMap<String, PathBuf>> {
        let mut names: Vec<String> = packages.iter().map(|p| p.name.clone()).collect();
        names.sort();
        names.dedup();
        let dir = scratch.join("apk");
        download(&self.root, &names, &dir, packager_config, reporter)?;
        super::downloaded_packages(&dir.join("pkgs"))
    }

    fn kernel_packages(&self) -> &'static [&'static str] {
        // The kernel Alpine builds for virtual machines: virtio built in.
        &["linux-virt"]
    }

    fn download_named(
        &self,
        names: &[String],
        dest: &Path,
        packager_config: Option<&Path>,
        reporter: &Reporter,
    ) -> Result<Vec<PathBuf>> {
        download(&self.root, names, dest, packager_config, reporter)
    }

    fn extract(&self, file: &Path, paths: &[PathBuf]) -> Result<Vec<ConfigFile>> {
        payload::extract(file, paths, &|e| corrupt(file, e))
    }
}

/// The repositories file and keys directory `apk fetch` is given.  As the
/// other downloaders, apk runs as whoever runs supermin, so another
/// root's configuration (repositories that may be any host path, keys
/// that vouch for them) is never taken: the host's `/etc/apk` for the
/// host, else `--packager-config`, a repositories file (with the host's
/// keys) or a directory laid out as `/etc/apk` (`repositories`, `keys/`).
fn fetch_config(
    root: &RootFs,
    names: &[String],
    packager_config: Option<&Path>,
) -> Result<(PathBuf, PathBuf)> {
    let etc_apk = Path::new("/etc/apk");
    match packager_config {
        Some(dir) if dir.is_dir() => Ok((dir.join("repositories"), dir.join("keys"))),
        Some(file) => Ok((file.to_path_buf(), etc_apk.join("keys"))),
        None if root.is_host() => Ok((etc_apk.join("repositories"), etc_apk.join("keys"))),
        None => Err(backend_error(format!(
            "fetching {} from the repositories of another root needs an apk configuration you \
             trust: pass --packager-config FILE|DIR (a repositories file, or a directory laid \
             out as /etc/apk with repositories and keys/), or use --use-installed (the root's \
             own copies of config files); the root's own repositories and keys are never used",
            names.join(" ")
        ))),
    }
}

/// Fetch the packages `names` with `apk fetch` into `dir`, with an empty
/// root of its own there (the root's database and cache are never
/// touched), for the root's architecture; the `.apk` files it left.
/// Names were checked when the database was read, and follow `--`.
fn download(
    root: &RootFs,
    names: &[String],
    dir: &Path,
    packager_config: Option<&Path>,
    reporter: &Reporter,
) -> Result<Vec<PathBuf>> {
    if let Some(bad) = names.iter().find(|n| !is_apk_name(n) || n.contains(':')) {
        return Err(backend_error(format!(
            "{:?} is not a package name",
            crate::error::capped(bad)
        )));
    }
    let (repositories, keys) = fetch_config(root, names, packager_config)?;
    // apk opens both relative to --root, which is our empty one.
    let absolute = |p: &Path| std::path::absolute(p).at("resolving", p);
    let (repositories, keys) = (absolute(&repositories)?, absolute(&keys)?);
    let (scratch_root, pkgs) = (dir.join("root"), dir.join("pkgs"));
    for d in [&scratch_root, &pkgs] {
        std::fs::create_dir_all(d).at("creating", d)?;
    }
    let apk = |args: &[&std::ffi::OsStr]| {
        let mut command = Command::new("apk");
        command
            .arg("--root")
            .arg(&scratch_root)
            .arg("--repositories-file")
            .arg(&repositories)
            .arg("--keys-dir")
            .arg(&keys)
            .arg("--no-progress");
        if let Some(arch) = root_arch(root) {
            command.arg("--arch").arg(arch);
        }
        command.args(args);
        reporter.info(1, || format!("apk: running {command:?}"));
        crate::process::output(&mut command, reporter)
    };
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "fetch".as_ref(),
        "-o".as_ref(),
        pkgs.as_os_str(),
        "--".as_ref(),
    ];
    args.extend(names.iter().map(std::ffi::OsStr::new));
    let output = apk(&args)?.map_err(|e| {
        backend_error(format!(
            "cannot run apk (apk-tools) to fetch {}: {e}; use --use-installed to take the root's own copies",
            names.join(" ")
        ))
    })?;
    if !output.status.success() {
        // apk-tools 2 prints its warnings and errors on stdout.
        let said = [&output.stdout, &output.stderr]
            .iter()
            .map(|b| String::from_utf8_lossy(b).trim().replace('\n', "; "))
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(backend_error(format!(
            "apk could not fetch {}: {}",
            names.join(" "),
            said_in_short(&said)
        )));
    }
    let files = super::files_ending(&pkgs, ".apk")?;
    // apk fetch copies bytes and checks nothing: each package's signature
    // (over its control stream, whose datahash covers the data) must be
    // one of the trusted keys', or its files are anybody's.
    let mut args: Vec<&std::ffi::OsStr> = vec!["verify".as_ref(), "--".as_ref()];
    args.extend(files.iter().map(|f| f.as_os_str()));
    let output = apk(&args)?.map_err(|e| backend_error(format!("cannot run apk verify: {e}")))?;
    if !output.status.success() {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let failed: Vec<&str> = stdout.lines().filter(|l| !l.ends_with(" OK")).collect();
        return Err(backend_error(format!(
            "the packages apk fetched are not signed by a key in {}: {}",
            keys.display(),
            said_in_short(&failed.join("; "))
        )));
    }
    Ok(files)
}

/// What apk said, cut to a few lines' worth (its lines name the
/// repository or file at fault, which `capped`'s one name would cut).
fn said_in_short(text: &str) -> String {
    match text.char_indices().nth(2000) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// The root's architecture (`/etc/apk/arch`), if it names one plainly.
fn root_arch(root: &RootFs) -> Option<String> {
    let bytes = root.read(Path::new("/etc/apk/arch"), 256).ok()?;
    let arch = String::from_utf8(bytes).ok()?.trim().to_string();
    (!arch.is_empty() && arch.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then_some(arch)
}

fn corrupt(file: &Path, what: impl std::fmt::Display) -> Error {
    Error::backend(
        "apk",
        format!("{}: not a valid apk package: {what}", file.display()),
    )
}

/// Is this gzip file an apk package rather than pacman's: signed (its
/// tar stream opens with `.SIGN.*`) or its `.PKGINFO` records `datahash`
/// (the digest of the data stream, which only apk has).
fn is_apk_file(file: &Path) -> bool {
    payload::leading_metadata(file).is_some_and(|(names, info)| {
        info.all("datahash").next().is_some()
            || names.iter().any(|n| {
                n.file_name()
                    .is_some_and(|f| f.as_encoded_bytes().starts_with(b".SIGN."))
            })
    })
}

/// Hand `visit` each regular file of a `.apk` (its metadata left out).
fn unpack(file: &Path, visit: &mut super::VisitFile<'_>) -> Result<()> {
    payload::unpack(file, &|e| corrupt(file, e), visit)
}

/// A `.apk`'s package (from its `.PKGINFO`: `depend` lines, `!conflicts`
/// left out) and files (config files: those under `/etc`).
pub fn read_package_file(file: &Path) -> Result<(Package, Vec<File>)> {
    let (info, mut files) = payload::read_with_pkginfo(file, &|e| corrupt(file, e))?;
    let (name, version) = (info.one("pkgname"), info.one("pkgver"));
    if !is_apk_name(name) || name.contains(':') || !is_apk_version(version) {
        return Err(corrupt(
            file,
            format!(
                ".PKGINFO: invalid pkgname or pkgver {:?}",
                crate::error::capped(&format!("{name} {version}"))
            ),
        ));
    }
    let mut depends = Vec::new();
    for word in info.all("depend").flat_map(str::split_whitespace) {
        if word.starts_with('!') {
            continue;
        }
        if parse_dep(word).is_none() {
            return Err(corrupt(
                file,
                format!(".PKGINFO: dependency {word:?} is not name[<>=~]version"),
            ));
        }
        depends.push(word.to_string());
    }
    for f in &mut files {
        f.is_config = super::is_config(&f.path, f.kind, false);
    }
    let arch = match info.one("arch") {
        "" => "noarch",
        a => a,
    };
    let mut package = package(name, version, arch, depends);
    package.license = super::provides::licenses(info.all("license"));
    package.supplier = Some(info.one("maintainer").to_string()).filter(|m| !m.is_empty());
    Ok((package, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_apk_does() {
        use Ordering::*;
        for (a, b, want) in [
            ("1.0.2j-r0", "1.0.2-r0", Greater),
            ("1.2_rc1", "1.2", Less),
            ("1.2_p1", "1.2", Greater),
            ("1.2-r1", "1.2-r0", Greater),
            ("1.10", "1.9", Greater),
            ("1.05", "1.5", Less),
            ("2.0_alpha", "2.0_beta", Less),
            ("1.1.14-r14", "1.1.14-r14", Equal),
            ("1.2.3", "1.2", Greater),
        ] {
            assert_eq!(vercmp(a, b), want, "{a} vs {b}");
        }
    }

    /// The Alpine root in tests/data has apk-tools' own static binary:
    /// `apk version -t A B` is the oracle.
    #[test]
    fn versions_compare_as_apk_version_t() {
        let apk = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/apk/alpine-3.4-root/sbin/apk.static");
        for (a, b) in [
            ("1.0.2j-r0", "1.0.2-r0"),
            ("1.2_rc1", "1.2"),
            ("1.2_p1", "1.2"),
            ("1.2-r1", "1.2-r0"),
            ("1.10", "1.9"),
            ("1.05", "1.5"),
            ("1.5", "1.05"),
            ("2.0_alpha", "2.0_beta"),
            ("1.2.3", "1.2"),
            ("1.2a", "1.2.1"),
            ("1.2a", "1.2b"),
            ("0.21-r2", "0.13"),
            ("3.4.6-r0", "3.4.6"),
            ("1.2_git20160101", "1.2"),
            ("1.2_beta2", "1.2_beta10"),
            ("1.0_pre1-r1", "1.0_pre1"),
            ("1.0_rc1_p2", "1.0_rc1"),
            ("010", "9"),
        ] {
            let out = std::process::Command::new(&apk)
                .args(["version", "-t", a, b])
                .output()
                .expect("tests/data/apk/alpine-3.4-root/sbin/apk.static runs");
            let oracle = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let ours = match vercmp(a, b) {
                Ordering::Less => "<",
                Ordering::Equal => "=",
                Ordering::Greater => ">",
            };
            assert_eq!(ours, oracle, "{a} vs {b}");
        }
    }

    #[test]
    fn records_parse_and_name_the_line_at_fault() {
        let text = "P:musl\nV:1.1-r1\nA:x86_64\np:so:libc.musl-x86_64.so.1=1\nF:lib\nR:ld-musl-x86_64.so.1\na:0:0:755\nZ:Q11IJSinySwdrFRD5f2s0GNvsahV8=\n\nP:busybox\nV:1.24-r2\nD:so:libc.musl-x86_64.so.1 !uclibc\nF:bin\nR:busybox\n";
        let db = parse_installed(text).unwrap();
        assert_eq!(db.len(), 2);
        assert_eq!(db[1].deps.len(), 1, "a conflict is no dependency");
        assert_eq!(db[0].paths[1].0, Path::new("/lib/ld-musl-x86_64.so.1"));
        assert_eq!(
            q1_sha1_hex(db[0].paths[1].1.as_deref().unwrap())
                .unwrap()
                .len(),
            40
        );
        assert_eq!(parse_installed("P:x\nV:1\nF:../etc\n").unwrap_err().0, 3);
        assert_eq!(parse_installed("P:x\nV:1\nF:a\nR:../b\n").unwrap_err().0, 4);
        assert_eq!(parse_installed("P:x\nV:1\nR:b\n").unwrap_err().0, 3);
        assert_eq!(parse_installed("junk\n").unwrap_err().0, 1);
        assert_eq!(parse_installed("V:1\n").unwrap_err().0, 1);
        assert_eq!(parse_installed("P:../../x\nV:1\n").unwrap_err().0, 1);
    }
}
