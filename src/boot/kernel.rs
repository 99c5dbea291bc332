//! Choosing the kernel an ext2 appliance boots (compat-spec §5) and
//! installing it as `OUT/kernel`.
//!
//! The search is upstream's: the `SUPERMIN_KERNEL*` overrides, then
//! `/lib/modules/*/vmlinuz`, then `/boot/vmlinu?-*` for the host CPU, newest
//! first, skipping Xen/zfcpdump/debug kernels and kernels without modules.
//! Beyond upstream: the running kernel wins when its modules are present,
//! every rejected candidate is recorded with the reason, and when nothing
//! is left the error lists them and says how to fix it.

use std::cmp::Ordering;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::pattern::fnmatch;
use crate::report::Reporter;

/// The kernel an appliance boots and the modules that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub path: PathBuf,
    pub version: String,
    /// The module tree (`/lib/modules/VERSION` or `SUPERMIN_MODULES`).
    pub modules: PathBuf,
}

/// The `SUPERMIN_KERNEL`, `SUPERMIN_KERNEL_VERSION` and `SUPERMIN_MODULES`
/// overrides.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub kernel: Option<PathBuf>,
    pub version: Option<String>,
    pub modules: Option<PathBuf>,
}

impl Overrides {
    /// `SUPERMIN_KERNEL`, `SUPERMIN_KERNEL_VERSION` and `SUPERMIN_MODULES`
    /// (empty means unset), for Rust programs reading their environment at
    /// their edge; the Python layer reads them itself and passes them in.
    pub fn from_env() -> Overrides {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        Overrides {
            kernel: var("SUPERMIN_KERNEL").map(PathBuf::from),
            version: var("SUPERMIN_KERNEL_VERSION").map(|v| v.to_string_lossy().into_owned()),
            modules: var("SUPERMIN_MODULES").map(PathBuf::from),
        }
    }
}

/// Where to look: `/lib/modules` and `/boot` on a real host; other
/// directories in tests.
#[derive(Debug, Clone)]
pub struct Search {
    pub host_cpu: String,
    pub lib_modules: PathBuf,
    pub boot: PathBuf,
    /// `uname -r`, preferred when its modules exist.
    pub running: Option<String>,
}

impl Search {
    pub fn host(host_cpu: Option<&str>) -> Search {
        Search {
            host_cpu: host_cpu.unwrap_or(std::env::consts::ARCH).to_string(),
            lib_modules: PathBuf::from("/lib/modules"),
            boot: PathBuf::from("/boot"),
            running: running_kernel_release(),
        }
    }
}

fn running_kernel_release() -> Option<String> {
    let text = fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    Some(text.trim().to_string()).filter(|s| !s.is_empty())
}

/// Find the kernel to boot.
pub fn find(overrides: &Overrides, search: &Search, reporter: &Reporter) -> Result<Kernel> {
    if let Some(path) = &overrides.kernel {
        return from_override(path, overrides, search);
    }
    let mut rejected: Vec<(PathBuf, String)> = Vec::new();
    let mut candidates = lib_modules_candidates(search, overrides, &mut rejected);
    reporter.info(1, || {
        format!(
            "kernel: {} candidate(s) in {}/*/vmlinuz",
            candidates.len(),
            search.lib_modules.display()
        )
    });
    if candidates.is_empty() {
        candidates = boot_candidates(search, overrides, &mut rejected);
        reporter.info(1, || {
            format!(
                "kernel: {} candidate(s) in {}",
                candidates.len(),
                search.boot.display()
            )
        });
    }
    for (path, why) in &rejected {
        reporter.info(1, || format!("kernel: rejected {}: {why}", path.display()));
    }
    // Newest first, but the running kernel before all others: its modules
    // match what the host was tested with.
    candidates.sort_by(|a, b| {
        let running = |k: &Kernel| Some(&k.version) == search.running.as_ref();
        running(b)
            .cmp(&running(a))
            .then_with(|| compare_versions(&b.version, &a.version))
    });
    match candidates.into_iter().next() {
        Some(kernel) => {
            reporter.info(1, || {
                format!(
                    "kernel: picked {} (version {}, modules {})",
                    kernel.path.display(),
                    kernel.version,
                    kernel.modules.display()
                )
            });
            Ok(kernel)
        }
        None => Err(no_kernel_error(search, &rejected)),
    }
}

fn from_override(path: &Path, overrides: &Overrides, search: &Search) -> Result<Kernel> {
    check_readable(path).map_err(|why| Error::Kernel {
        path: Some(path.to_path_buf()),
        message: format!("SUPERMIN_KERNEL={}: {why}", path.display()),
    })?;
    let version = match &overrides.version {
        Some(v) if !is_version(v) => {
            return Err(Error::Kernel {
                path: Some(path.to_path_buf()),
                message: format!(
                    "SUPERMIN_KERNEL_VERSION={v:?} is not a kernel version (it names \
                     /lib/modules/VERSION and OUT's modules directory: no '/', not '..')"
                ),
            })
        }
        Some(v) => v.clone(),
        None => version_of(path, search).ok_or_else(|| Error::Kernel {
            path: Some(path.to_path_buf()),
            message: format!(
                "SUPERMIN_KERNEL={}: cannot tell the kernel's version from its \
                 header or name; set SUPERMIN_KERNEL_VERSION",
                path.display()
            ),
        })?,
    };
    let modules = modules_dir(search, overrides, &version);
    if !has_modules(&modules) {
        return Err(Error::Kernel {
            path: Some(modules.clone()),
            message: format!(
                "kernel {} (version {version}): no modules.dep in {}; set \
                 SUPERMIN_MODULES to the kernel's module directory",
                path.display(),
                modules.display()
            ),
        });
    }
    Ok(Kernel {
        path: path.to_path_buf(),
        version,
        modules,
    })
}

fn modules_dir(search: &Search, overrides: &Overrides, version: &str) -> PathBuf {
    overrides
        .modules
        .clone()
        .unwrap_or_else(|| search.lib_modules.join(version))
}

fn has_modules(dir: &Path) -> bool {
    fs::metadata(dir.join("modules.dep"))
        .map(|m| m.is_file())
        .unwrap_or(false)
}

/// Upstream's skip rules: kernels that cannot boot a plain qemu guest.
fn unbootable(name: &str, host_cpu: &str) -> Option<&'static str> {
    if name.contains("xen") {
        Some("a Xen kernel")
    } else if name.contains("zfcpdump") {
        Some("a zfcpdump kernel")
    } else if name.contains("+debug") {
        Some("a debug kernel")
    } else if host_cpu.starts_with("arm") && name.contains("tegra") {
        Some("a Tegra kernel")
    } else {
        None
    }
}

/// The largest kernel image accepted.  Real ones are 5-20 MB (an
/// uncompressed `vmlinux` with debug information a few hundred); the
/// bound keeps `/dev/zero`-like mistakes from copying without end.
pub const MAX_KERNEL_SIZE: u64 = 1 << 30;

/// Open a kernel image: a regular file (symlinks, as `/vmlinuz`, are
/// followed) of at most [`MAX_KERNEL_SIZE`] bytes, opened without blocking
/// (a FIFO) and checked on the descriptor that will be read.
fn open_kernel(path: &Path) -> std::result::Result<(fs::File, fs::Metadata), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::PermissionDenied {
                "not readable by this user (Ubuntu installs kernels mode 0600): \
                 make a readable copy and point SUPERMIN_KERNEL at it, or run as root"
                    .to_string()
            } else {
                e.to_string()
            }
        })?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(
            "not a regular file (a kernel image is a file such as /boot/vmlinuz-VERSION)".into(),
        );
    }
    if meta.len() == 0 || meta.len() > MAX_KERNEL_SIZE {
        return Err(format!(
            "{} bytes is not the size of a kernel image (at most {MAX_KERNEL_SIZE})",
            meta.len()
        ));
    }
    Ok((file, meta))
}

fn check_readable(path: &Path) -> std::result::Result<(), String> {
    open_kernel(path).map(drop)
}

fn lib_modules_candidates(
    search: &Search,
    overrides: &Overrides,
    rejected: &mut Vec<(PathBuf, String)>,
) -> Vec<Kernel> {
    let mut found = Vec::new();
    let Ok(dirs) = fs::read_dir(&search.lib_modules) else {
        return found;
    };
    let mut dirs: Vec<PathBuf> = dirs.flatten().map(|e| e.path()).collect();
    dirs.sort();
    for dir in dirs {
        let path = dir.join("vmlinuz");
        if fs::symlink_metadata(&path).is_err() {
            continue;
        }
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        if let Some(why) = unbootable(&name, &search.host_cpu) {
            rejected.push((path, why.into()));
            continue;
        }
        if let Err(why) = check_readable(&path) {
            rejected.push((path, why));
            continue;
        }
        if fs::metadata(&path).map(|m| m.len()).unwrap_or(0) < 10_000 {
            rejected.push((path, "too small to be a kernel".into()));
            continue;
        }
        let version = name.to_string();
        let modules = modules_dir(search, overrides, &version);
        found.push(Kernel {
            path,
            version,
            modules,
        });
    }
    found
}

/// `vmlinu?-*-<model>` patterns for a CPU, as upstream spells them.
fn cpu_patterns(host_cpu: &str) -> Vec<String> {
    let models: Vec<&str> = match host_cpu {
        "mips" | "mips64" => vec![host_cpu, "*-malta"],
        "ppc" | "powerpc" | "powerpc64" => vec!["ppc", "powerpc", "powerpc64"],
        "sparc" | "sparc64" => vec!["sparc", "sparc64"],
        "amd64" | "x86_64" => vec!["amd64", "x86_64"],
        "parisc" | "parisc64" => vec!["hppa", "hppa64"],
        "ppc64el" => vec!["powerpc64le"],
        "aarch64" => vec!["aarch64", "arm64"],
        cpu if cpu.len() >= 4 && cpu.starts_with('i') && &cpu[2..4] == "86" => vec!["?86"],
        cpu if cpu.starts_with("armv7") => vec!["armmp"],
        cpu => vec![cpu],
    };
    models
        .into_iter()
        .map(|m| format!("vmlinu?-*-{m}"))
        .collect()
}

fn boot_candidates(
    search: &Search,
    overrides: &Overrides,
    rejected: &mut Vec<(PathBuf, String)>,
) -> Vec<Kernel> {
    let Ok(entries) = fs::read_dir(&search.boot) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| fnmatch("vmlinu?-*", Path::new(n)))
        .collect();
    names.sort();
    let patterns = cpu_patterns(&search.host_cpu);
    let for_cpu: Vec<&String> = names
        .iter()
        .filter(|n| patterns.iter().any(|p| fnmatch(p, Path::new(n.as_str()))))
        .collect();
    // As upstream: any vmlinu?-* when none is named for this CPU.
    let names: Vec<&String> = if for_cpu.is_empty() {
        names.iter().collect()
    } else {
        for_cpu
    };
    let mut found = Vec::new();
    for name in names {
        let path = search.boot.join(name);
        if let Some(why) = unbootable(name, &search.host_cpu) {
            rejected.push((path, why.into()));
            continue;
        }
        if let Err(why) = check_readable(&path) {
            rejected.push((path, why));
            continue;
        }
        let Some(version) = version_of(&path, search) else {
            rejected.push((path, "cannot read its version".into()));
            continue;
        };
        let modules = modules_dir(search, overrides, &version);
        if !has_modules(&modules) {
            rejected.push((
                path,
                format!(
                    "no modules for it ({} has no modules.dep)",
                    modules.display()
                ),
            ));
            continue;
        }
        found.push(Kernel {
            path,
            version,
            modules,
        });
    }
    found
}

/// The kernel's version: from an x86 bzImage header, else from a
/// `vmlinuz-VERSION` name whose modules exist.
pub fn version_of(path: &Path, search: &Search) -> Option<String> {
    if let Ok(Some(v)) = bzimage_version(path) {
        return Some(v);
    }
    let name = path.file_name()?.to_str()?;
    let version = name
        .strip_prefix("vmlinuz-")
        .or_else(|| name.strip_prefix("vmlinux-"))?;
    (is_version(version) && has_modules(&search.lib_modules.join(version)))
        .then(|| version.to_string())
}

/// Can `text` be a kernel version?  It becomes a path component
/// (`/lib/modules/VERSION`, in the host and in the appliance), and a
/// kernel file's header is data: `/tmp/x` or `..` must not lead elsewhere.
/// A kernel version as a module directory is named: `[A-Za-z0-9._+~-]`,
/// not starting with `-` or `.` (so never `..`, never read as an option
/// by `depmod`).
pub fn is_version(text: &str) -> bool {
    !text.is_empty()
        && !text.starts_with(['-', '.'])
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+~-".contains(c))
}

/// The version string an x86 boot-protocol header points at: "HdrS" at
/// 514, protocol >= 0x200 at 518, the string's offset (minus 0x200) at 526.
pub fn bzimage_version(path: &Path) -> io::Result<Option<String>> {
    let mut file = fs::File::open(path)?;
    let mut header = [0u8; 16];
    file.seek(SeekFrom::Start(514))?;
    if file.read_exact(&mut header).is_err() || &header[0..4] != b"HdrS" {
        return Ok(None);
    }
    let protocol = u16::from_le_bytes([header[4], header[5]]);
    if protocol < 0x1ff {
        return Ok(None);
    }
    let offset = u16::from_le_bytes([header[12], header[13]]) as u64 + 0x200;
    let mut text = [0u8; 132];
    file.seek(SeekFrom::Start(offset))?;
    let n = file.read(&mut text)?;
    let text = &text[..n];
    let end = text
        .iter()
        .position(|&b| b == 0 || b.is_ascii_whitespace())
        .unwrap_or(text.len());
    Ok(std::str::from_utf8(&text[..end])
        .ok()
        .filter(|s| is_version(s))
        .map(str::to_string))
}

/// Natural order: digit runs compare as numbers (`6.10` > `6.9`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (&a[..da], &b[..db]);
                let strip = |s: &[u8]| -> Vec<u8> {
                    s.iter().skip_while(|&&c| c == b'0').copied().collect()
                };
                let (na, nb) = (strip(na), strip(nb));
                let order = na.len().cmp(&nb.len()).then_with(|| na.cmp(&nb));
                if order != Ordering::Equal {
                    return order;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn no_kernel_error(search: &Search, rejected: &[(PathBuf, String)]) -> Error {
    let mut message = format!(
        "failed to find a suitable kernel (host_cpu={}): looked for {}/*/vmlinuz \
         and {}/vmlinu?-*",
        search.host_cpu,
        search.lib_modules.display(),
        search.boot.display()
    );
    for (path, why) in rejected {
        message.push_str(&format!("\n  {}: {why}", path.display()));
    }
    message.push_str(
        "\nInstall a kernel package (on Debian: linux-image-amd64), or point \
         SUPERMIN_KERNEL at a kernel image and SUPERMIN_MODULES at its module \
         directory (e.g. in a container, which has no kernel of its own).",
    );
    Error::Kernel {
        path: rejected.first().map(|(p, _)| p.clone()),
        message,
    }
}

/// Put the kernel at `place` (shown as `dest`): a symlink, or with `copy`
/// a copy (as readable as the kernel itself) whose mtime is now, so that
/// `--if-newer` sees it as new as the rest of the output.
pub fn install(
    kernel: &Kernel,
    place: &crate::outdir::Place,
    dest: &Path,
    copy: bool,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if copy {
        let (input, meta) = open_kernel(&kernel.path).map_err(|why| Error::Kernel {
            path: Some(kernel.path.clone()),
            message: format!("{}: {why}", kernel.path.display()),
        })?;
        let mut output = place.create_file().at("writing", dest)?;
        io::copy(&mut input.take(meta.len()), &mut output).at("copying kernel to", dest)?;
        output
            .set_permissions(fs::Permissions::from_mode(
                meta.permissions().mode() & 0o777,
            ))
            .at("setting permissions of", dest)?;
    } else {
        let target = crate::output::absolute(&kernel.path)?;
        place.symlink(&target).at("creating symlink", dest)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_naturally() {
        assert_eq!(
            compare_versions("6.10.0-1-amd64", "6.9.0-1-amd64"),
            Ordering::Greater
        );
        assert_eq!(
            compare_versions("6.1.0-10-amd64", "6.1.0-9-amd64"),
            Ordering::Greater
        );
        assert_eq!(compare_versions("6.1.0", "6.1.0"), Ordering::Equal);
        assert_eq!(compare_versions("6.1", "6.1.0"), Ordering::Less);
    }

    #[test]
    fn cpu_patterns_follow_upstream() {
        assert_eq!(
            cpu_patterns("x86_64"),
            ["vmlinu?-*-amd64", "vmlinu?-*-x86_64"]
        );
        assert_eq!(cpu_patterns("i686"), ["vmlinu?-*-?86"]);
        assert_eq!(
            cpu_patterns("aarch64"),
            ["vmlinu?-*-aarch64", "vmlinu?-*-arm64"]
        );
    }

    /// A fake /boot and /lib/modules: one good kernel, and one of each kind
    /// the search must reject with its reason.
    #[test]
    fn search_rejects_with_reasons_and_prefers_the_running_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot");
        let lib_modules = dir.path().join("modules");
        fs::create_dir_all(&boot).unwrap();
        for v in ["6.1.0-1-amd64", "6.1.0-2-amd64"] {
            fs::create_dir_all(lib_modules.join(v)).unwrap();
            fs::write(lib_modules.join(v).join("modules.dep"), "").unwrap();
            fs::write(boot.join(format!("vmlinuz-{v}")), vec![0u8; 20_000]).unwrap();
        }
        fs::write(boot.join("vmlinuz-6.2.0-1-amd64"), b"no modules").unwrap();
        fs::write(boot.join("vmlinuz-6.3.0-xen-amd64"), b"xen").unwrap();
        let mut search = Search {
            host_cpu: "x86_64".into(),
            lib_modules: lib_modules.clone(),
            boot: boot.clone(),
            running: None,
        };
        let quiet = Reporter::default();
        let k = find(&Overrides::default(), &search, &quiet).unwrap();
        assert_eq!(k.version, "6.1.0-2-amd64");
        assert_eq!(k.modules, lib_modules.join("6.1.0-2-amd64"));

        search.running = Some("6.1.0-1-amd64".into());
        let k = find(&Overrides::default(), &search, &quiet).unwrap();
        assert_eq!(k.version, "6.1.0-1-amd64");

        fs::remove_dir_all(&lib_modules).unwrap();
        let err = find(&Overrides::default(), &search, &quiet)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("vmlinuz-6.3.0-xen-amd64: a Xen kernel"),
            "{err}"
        );
        assert!(
            err.contains("vmlinuz-6.2.0-1-amd64: cannot read its version"),
            "{err}"
        );
        assert!(err.contains("SUPERMIN_KERNEL"), "{err}");
    }

    #[test]
    fn override_without_modules_is_an_error_naming_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("bzImage");
        fs::write(&kernel, vec![0u8; 1000]).unwrap();
        let overrides = Overrides {
            kernel: Some(kernel.clone()),
            version: Some("9.9".into()),
            modules: Some(dir.path().join("nomods")),
        };
        let search = Search::host(None);
        let err = find(&overrides, &search, &Reporter::default()).unwrap_err();
        assert!(err.to_string().contains("nomods"), "{err}");
        let overrides = Overrides {
            version: None,
            ..overrides
        };
        let err = find(&overrides, &search, &Reporter::default()).unwrap_err();
        assert!(err.to_string().contains("SUPERMIN_KERNEL_VERSION"), "{err}");
    }

    #[test]
    fn a_kernel_must_be_a_regular_file_of_sane_size() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let empty = dir.path().join("empty");
        fs::write(&empty, "").unwrap();
        for (bad, says) in [
            (dir.path().to_path_buf(), "not a regular file"),
            (PathBuf::from("/dev/zero"), "not a regular file"),
            (fifo, "not a regular file"),
            (empty, "not the size of a kernel image"),
        ] {
            let overrides = Overrides {
                kernel: Some(bad.clone()),
                version: Some("9.9".into()),
                modules: Some(dir.path().to_path_buf()),
            };
            let err = find(&overrides, &Search::host(None), &Reporter::default()).unwrap_err();
            assert!(err.to_string().contains(says), "{}: {err}", bad.display());
        }
    }

    #[test]
    fn a_version_that_would_lead_elsewhere_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // A bzImage header whose version string is an absolute path.
        let mut image = vec![0u8; 4096];
        image[514..518].copy_from_slice(b"HdrS");
        image[518..520].copy_from_slice(&0x20fu16.to_le_bytes());
        image[526..528].copy_from_slice(&0x100u16.to_le_bytes());
        image[0x300..0x309].copy_from_slice(b"/tmp/evil");
        let kernel = dir.path().join("vmlinuz-..");
        fs::write(&kernel, &image).unwrap();
        assert_eq!(bzimage_version(&kernel).unwrap(), None);
        let search = Search {
            lib_modules: dir.path().to_path_buf(),
            ..Search::host(None)
        };
        assert_eq!(version_of(&kernel, &search), None, "nor `..` from the name");
        for bad in ["../../etc", "/tmp/x", ".."] {
            let overrides = Overrides {
                kernel: Some(kernel.clone()),
                version: Some(bad.into()),
                modules: Some(dir.path().to_path_buf()),
            };
            let err = find(&overrides, &search, &Reporter::default()).unwrap_err();
            assert!(
                err.to_string().contains("not a kernel version"),
                "{bad}: {err}"
            );
        }
    }
}
