//! Kernels from distribution packages, for hosts with none of their own
//! (containers, WSL, CI runners: upstream's users hit this again and
//! again, and the only remedy was to find and unpack a kernel by hand).
//!
//! A kernel package file (`.deb`, `.rpm`, `.pkg.tar.*`), or several (a
//! Fedora kernel is `kernel-core` plus `kernel-modules-core`), is unpacked
//! in-process into a cache directory named by the files' digest: only the
//! kernel image (`/boot/vmlinuz-*`, or `vmlinuz` in the module tree) and
//! the module tree (`/lib/modules` or `/usr/lib/modules`), regular files
//! only, into a fresh directory this program made, so no member can
//! reach outside it.  A module tree without `modules.dep` (packages leave
//! it to their scripts) is indexed with `depmod -b`.  The directory is
//! written under a temporary name and renamed when complete, under a
//! lock, and reused by every later build.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::kernel::{self, Kernel, Overrides, Search};
use crate::error::{Error, IoContext, Result};
use crate::report::Reporter;

/// The most bytes unpacked from a set of kernel packages (a distribution
/// kernel's modules are ~400 MB).
const MAX_UNPACKED: u64 = 4 << 30;

/// Marks a cache directory as complete (it is renamed into place only
/// then; the marker also tells an old layout from this one).
const COMPLETE: &str = ".supermin-kernel-complete";

fn kernel_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Kernel {
        path: Some(path.to_path_buf()),
        message: message.into(),
    }
}

/// The SHA-256 of a file, in hex.
fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).at("reading", path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).at("reading", path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Where in the unpacked tree a package's file goes, if it is part of
/// the kernel: `/boot/vmlinuz-*` and the module tree (`/usr/lib/modules`
/// is put at `lib/modules`, where the search looks).
fn place(path: &Path) -> Option<PathBuf> {
    let rel = path.strip_prefix("/").ok()?;
    if let Ok(rest) = rel.strip_prefix("usr/lib/modules") {
        return Some(Path::new("lib/modules").join(rest));
    }
    if rel.starts_with("lib/modules") {
        return Some(rel.to_path_buf());
    }
    let name = rel.strip_prefix("boot").ok()?.to_str()?;
    (name.starts_with("vmlinuz-") || name.starts_with("vmlinux-")).then(|| rel.to_path_buf())
}

/// How long a kernel downloaded by package name is reused before the
/// name is downloaded again (to follow the distribution's updates).
const NAMED_FOR: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// The kernel of the packages `names`, downloaded by `backend` from the
/// host's repositories (a metapackage such as `linux-image-amd64` is
/// followed to the first of its dependencies that holds a kernel), or the
/// one downloaded under those names in the last week.
pub fn kernel_from_names(
    backend: &dyn crate::backend::Backend,
    names: &[String],
    cache: &Path,
    packager_config: Option<&Path>,
    host_cpu: Option<&str>,
    reporter: &Reporter,
) -> Result<Kernel> {
    let label: String = names
        .join("+")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    private_cache(cache)?;
    let record = cache.join(format!("by-name-{}-{label}", backend.name()));
    let recent = fs::metadata(&record)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < NAMED_FOR));
    if recent {
        if let Ok(key) = fs::read_to_string(&record) {
            let dir = cache.join(key.trim());
            if key.starts_with("pkg-") && !key.contains('/') && dir.join(COMPLETE).exists() {
                reporter.info(1, || {
                    format!(
                        "kernel: {} downloaded in the last week: {}",
                        names.join(" "),
                        dir.display()
                    )
                });
                return kernel_in(&dir, host_cpu, reporter);
            }
        }
    }
    fs::create_dir_all(cache).at("creating", cache)?;
    let scratch = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(cache)
        .at("creating a directory in", cache)?;
    // The names, then dependencies until the packages hold both a kernel
    // image and modules: Debian's metapackage leads to the package with
    // both, Ubuntu's to an image whose modules are a package of their own.
    let mut wanted: Vec<String> = names.to_vec();
    let mut tried: Vec<String> = names.to_vec();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut found = Parts::default();
    // Each round's dependencies, newest round first when choosing.
    let mut rounds: Vec<Vec<String>> = Vec::new();
    for round in 0..MAX_ROUNDS {
        let dest = scratch.path().join(round.to_string());
        fs::create_dir_all(&dest).at("creating", &dest)?;
        let downloaded = backend.download_named(&wanted, &dest, packager_config, reporter)?;
        if downloaded.is_empty() {
            return Err(Error::backend(
                backend.name(),
                format!("downloading {} left no package file", wanted.join(" ")),
            ));
        }
        let mut depends = Vec::new();
        for file in &downloaded {
            let (package, listing) = crate::backend::read_package_file(file)?;
            let holds = Parts::of(listing.iter().map(|f| f.path.as_path()));
            reporter.info(1, || {
                format!(
                    "kernel: {} holds {}",
                    package.name,
                    match (holds.image, holds.modules) {
                        (true, true) => "a kernel and its modules",
                        (true, false) => "a kernel image, no modules",
                        (false, true) => "kernel modules",
                        (false, false) => "no kernel",
                    }
                )
            });
            found.image |= holds.image;
            found.modules |= holds.modules;
            depends.extend(package.depends.iter().filter_map(|c| dependency_name(c)));
        }
        files.extend(downloaded);
        rounds.push(depends);
        if found.image && found.modules {
            break;
        }
        let missing = if found.image { "modules" } else { "image" };
        let untried = || rounds.iter().rev().flatten().filter(|d| !tried.contains(d));
        // (Never rpmlib(...) or /bin/sh: only what names a kernel.)
        let Some(next) = untried()
            .find(|d| d.contains(missing))
            .or_else(|| untried().find(|d| d.contains("linux") || d.contains("kernel")))
            .cloned()
        else {
            break;
        };
        reporter.info(1, || {
            format!("kernel: following the dependency {next} for the {missing}")
        });
        tried.push(next.clone());
        wanted = vec![next];
    }
    if !found.image {
        return Err(kernel_error(
            cache,
            format!(
                "no kernel in the packages {} or their dependencies {}",
                names.join(" "),
                tried[names.len()..].join(" ")
            ),
        ));
    }
    let dir = cached_dir(&files, cache, reporter)?;
    let key = dir
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let _ = fs::write(&record, key);
    kernel_in(&dir, host_cpu, reporter)
}

/// How many downloads a kernel by name may take: a metapackage, the
/// image, its modules, and one more.
const MAX_ROUNDS: usize = 4;

/// What of a kernel some packages hold.
#[derive(Debug, Default, Clone, Copy)]
struct Parts {
    image: bool,
    modules: bool,
}

impl Parts {
    fn of<'a>(paths: impl Iterator<Item = &'a Path>) -> Parts {
        let mut parts = Parts::default();
        for rel in paths.filter_map(place) {
            let in_modules = rel.strip_prefix("lib/modules").ok();
            match in_modules.map(|r| r.components().count()) {
                // lib/modules/VERSION/vmlinuz (Arch, Fedora)
                Some(2) if rel.file_name().is_some_and(|n| n == "vmlinuz") => parts.image = true,
                Some(_) => {
                    parts.modules |= rel.extension().is_some_and(|e| e == "ko")
                        || rel.to_string_lossy().contains(".ko.");
                }
                None => parts.image = true,
            }
        }
        parts
    }
}

/// The package a dependency clause names first (`linux-image-6.1.0-9-amd64
/// (= 6.1.38-1)`, `a | b`, `so:libc.so>=1`): its name, if any.
fn dependency_name(clause: &str) -> Option<String> {
    let first = clause.split('|').next()?.trim();
    if ["so:", "cmd:", "pc:"].iter().any(|p| first.starts_with(p)) {
        return None; // apk's provides, no package's name
    }
    let name = first.split([' ', '(', '<', '>', '=']).next()?.trim();
    let name = name.split(':').next()?; // perl:any
    (!name.is_empty()).then(|| name.to_string())
}

/// The kernel in package files `files`, unpacked once into `cache` and
/// found there as on a host (`host_cpu` as for the host's search).
pub fn kernel_from_files(
    files: &[PathBuf],
    cache: &Path,
    host_cpu: Option<&str>,
    reporter: &Reporter,
) -> Result<Kernel> {
    private_cache(cache)?;
    // Hashed and unpacked from this program's own copy: a file swapped
    // between the two reads cannot poison the cache under a good digest.
    let incoming = tempfile::Builder::new()
        .prefix(".incoming-")
        .tempdir_in(cache)
        .at("creating a directory in", cache)?;
    let mut copies = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let copy = incoming.path().join(format!(
            "{i}-{}",
            f.file_name().unwrap_or_default().to_string_lossy()
        ));
        fs::copy(f, &copy).at("copying", f)?;
        copies.push(copy);
    }
    let dir =
        cached_dir(&copies, cache, reporter).map_err(|e| name_originals(e, files, &copies))?;
    kernel_in(&dir, host_cpu, reporter)
}

/// An error about this program's copies, told with the files as given.
fn name_originals(e: Error, files: &[PathBuf], copies: &[PathBuf]) -> Error {
    let mut message = e.to_string();
    for (f, c) in files.iter().zip(copies) {
        message = message.replace(&*c.to_string_lossy(), &f.to_string_lossy());
    }
    match e {
        Error::Kernel { .. } => Error::Kernel {
            path: files.first().cloned(),
            message,
        },
        _ => Error::backend("kernel package", message),
    }
}

/// The cache holds kernels this program boots and files it writes as
/// root: it must be a directory no one else can change (as the PVH
/// kernel cache must).
fn private_cache(cache: &Path) -> Result<()> {
    crate::output::private_dir(cache).map_err(|why| {
        kernel_error(
            cache,
            format!("the kernel package cache is not private to this user: {why}"),
        )
    })
}

/// The cache directory holding the kernel parts of `files`, unpacked
/// now if they were not before.
fn cached_dir(files: &[PathBuf], cache: &Path, reporter: &Reporter) -> Result<PathBuf> {
    let mut hasher = Sha256::new();
    for f in files {
        hasher.update(sha256_file(f)?.as_bytes());
    }
    let key: String = hasher
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = cache.join(format!("pkg-{key}"));
    if !dir.join(COMPLETE).exists() {
        fs::create_dir_all(cache).at("creating", cache)?;
        let _lock =
            crate::output::Lock::acquire(&cache.join(format!(".pkg-{key}.lock")), reporter)?;
        if !dir.join(COMPLETE).exists() {
            unpack_into(files, cache, &dir, reporter)?;
        }
    }
    Ok(dir)
}

/// The kernel in an unpacked cache directory, found as on a host.
fn kernel_in(dir: &Path, host_cpu: Option<&str>, reporter: &Reporter) -> Result<Kernel> {
    reporter.info(1, || {
        format!("kernel: from the package cache {}", dir.display())
    });
    let search = Search {
        host_cpu: host_cpu.unwrap_or(std::env::consts::ARCH).to_string(),
        lib_modules: dir.join("lib/modules"),
        boot: dir.join("boot"),
        running: None,
    };
    kernel::find(&Overrides::default(), &search, reporter)
}

/// Unpack the kernel parts of `files` into a temporary directory in
/// `cache`, index the modules, and rename it to `dir`.
fn unpack_into(files: &[PathBuf], cache: &Path, dir: &Path, reporter: &Reporter) -> Result<()> {
    // One left by a build that was killed (the lock is held: no other
    // process is unpacking this digest).
    let prefix = format!(
        ".unpacking-{}-",
        dir.file_name().unwrap_or_default().to_string_lossy()
    );
    for entry in fs::read_dir(cache).at("reading", cache)?.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    let staging = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(cache)
        .at("creating a directory in", cache)?;
    let mut total = 0u64;
    let mut versions: BTreeSet<String> = BTreeSet::new();
    for file in files {
        reporter.info(1, || format!("kernel: unpacking {}", file.display()));
        crate::backend::unpack_package_file(file, &mut |path, mode, data| {
            reporter.check()?;
            let Some(rel) = place(path) else {
                return Ok(());
            };
            if let Some(v) = rel
                .strip_prefix("lib/modules")
                .ok()
                .and_then(|r| r.components().next())
            {
                // The version is handed to depmod: a name like
                // `--basedir=..` would be read as an option.
                let v = v.as_os_str().to_string_lossy();
                if !kernel::is_version(&v) {
                    return Err(kernel_error(
                        file,
                        format!(
                            "module directory {:?} is not a kernel version",
                            crate::error::capped(&v)
                        ),
                    ));
                }
                versions.insert(v.into_owned());
            }
            // Every directory on the way is one this program made, and
            // nothing made here is a symlink: the path cannot lead out.
            let dest = staging.path().join(&rel);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).at("creating", parent)?;
            }
            // A member given twice: the later one wins, as tar would.
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(if mode & 0o111 != 0 { 0o755 } else { 0o644 })
                .open(&dest)
                .at("creating", &dest)?;
            let written = std::io::copy(&mut data.take(MAX_UNPACKED - total + 1), &mut out)
                .at("writing", &dest)?;
            total += written;
            if total > MAX_UNPACKED {
                return Err(kernel_error(
                    file,
                    format!("more than {} GiB of kernel files", MAX_UNPACKED >> 30),
                ));
            }
            out.flush().at("writing", &dest)
        })?;
    }
    if versions.is_empty() {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        return Err(kernel_error(
            &files[0],
            format!(
                "no kernel module tree (/lib/modules/VERSION) in {}",
                names.join(", ")
            ),
        ));
    }
    for version in &versions {
        let dep = staging
            .path()
            .join("lib/modules")
            .join(version)
            .join("modules.dep");
        // Missing, or an empty placeholder (rpm packages ghost it).
        if fs::metadata(&dep).map(|m| m.len()).unwrap_or(0) == 0 {
            depmod(staging.path(), version, reporter)?;
        }
    }
    fs::write(staging.path().join(COMPLETE), b"").at("writing", staging.path())?;
    let made = staging.keep();
    if let Err(e) = fs::rename(&made, dir) {
        let _ = fs::remove_dir_all(&made);
        // Another process finished the same directory first: use it.
        if !dir.join(COMPLETE).exists() {
            return Err(Error::io("renaming", &made, e));
        }
    }
    Ok(())
}

/// `depmod -b BASE VERSION`: packages leave `modules.dep` to their
/// install scripts, and the initrd's module choice needs it.
fn depmod(base: &Path, version: &str, reporter: &Reporter) -> Result<()> {
    let program = ["/usr/sbin/depmod", "/sbin/depmod"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("depmod");
    let mut command = Command::new(program);
    command.arg("-b").arg(base).arg("--").arg(version);
    reporter.info(1, || format!("kernel: running {command:?}"));
    let shown = base.join("lib/modules").join(version);
    match crate::process::output(&mut command, reporter)? {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(kernel_error(
            &shown,
            format!(
                "depmod could not index the modules: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        )),
        Err(e) => Err(kernel_error(
            &shown,
            format!("cannot run depmod (kmod) to index the package's modules: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_of_a_kernel_are_told_from_package_listings() {
        let parts = |paths: &[&str]| {
            let p = Parts::of(paths.iter().map(Path::new));
            (p.image, p.modules)
        };
        // Debian's image package, Ubuntu's split one, Arch's and Fedora's.
        assert_eq!(
            parts(&[
                "/boot/vmlinuz-6.1.0-9-amd64",
                "/lib/modules/6.1.0-9-amd64/kernel/fs/ext4/ext4.ko"
            ]),
            (true, true)
        );
        assert_eq!(
            parts(&[
                "/boot/vmlinuz-6.8.0-49-generic",
                "/boot/config-6.8.0-49-generic"
            ]),
            (true, false)
        );
        assert_eq!(
            parts(&["/lib/modules/6.8.0-49-generic/kernel/drivers/block/virtio_blk.ko.zst"]),
            (false, true)
        );
        assert_eq!(
            parts(&["/usr/lib/modules/6.6.1-arch1-1/vmlinuz"]),
            (true, false)
        );
        assert_eq!(
            parts(&["/usr/share/doc/linux-image-amd64/copyright"]),
            (false, false)
        );
    }

    #[test]
    fn dependencies_name_their_first_package() {
        assert_eq!(
            dependency_name("linux-image-6.1.0-9-amd64 (= 6.1.38-1)").as_deref(),
            Some("linux-image-6.1.0-9-amd64")
        );
        assert_eq!(dependency_name("a | b").as_deref(), Some("a"));
        assert_eq!(dependency_name("perl:any").as_deref(), Some("perl"));
        assert_eq!(dependency_name("linux>=6.1").as_deref(), Some("linux"));
        assert_eq!(dependency_name("so:libc.musl-x86_64.so.1"), None);
        assert_eq!(dependency_name(""), None);
    }

    #[test]
    fn only_the_kernel_and_its_modules_are_placed() {
        let p = |s: &str| place(Path::new(s)).map(|p| p.display().to_string());
        assert_eq!(
            p("/boot/vmlinuz-6.1.0-9-amd64").as_deref(),
            Some("boot/vmlinuz-6.1.0-9-amd64")
        );
        assert_eq!(
            p("/usr/lib/modules/6.6.1-arch1-1/vmlinuz").as_deref(),
            Some("lib/modules/6.6.1-arch1-1/vmlinuz")
        );
        assert_eq!(
            p("/lib/modules/6.1.0-9-amd64/kernel/fs/ext4/ext4.ko.xz").as_deref(),
            Some("lib/modules/6.1.0-9-amd64/kernel/fs/ext4/ext4.ko.xz")
        );
        for other in [
            "/boot/config-6.1.0-9-amd64",
            "/usr/share/doc/x",
            "/etc/kernel/postinst.d/x",
        ] {
            assert_eq!(p(other), None, "{other}");
        }
    }
}
