//! The `ext2` format (compat-spec §5): `OUT/kernel`, `OUT/initrd` and
//! `OUT/root`, a sparse ext2 image the appliance boots from.
//!
//! The image is made by e2fsprogs' `mke2fs -d` from a staging tree in which
//! host files are hard links to the host's own (so their bytes are read
//! once, by mke2fs, and never copied twice). One `debugfs -w` pass then
//! sets what a staging tree cannot carry: the owners a non-root build could
//! not give (package files root-owned, base-image files the tarball's
//! owners), and, for reproducible builds, times clamped to
//! `SOURCE_DATE_EPOCH` (mke2fs copies each staged inode's ctime and atime,
//! which no one can set).

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use md5::{Digest, Md5};
use walkdir::WalkDir;

use super::chroot::{self, Mode, Owners};
use super::initrd;
use super::kernel::{self, Kernel};
use super::FileSet;
use crate::appliance::BaseImage;
use crate::error::{Error, IoContext, Result};
use crate::report::Reporter;

/// Upstream's default image size: 4 GiB, sparse.
pub const DEFAULT_SIZE: u64 = 4 << 30;

/// Which kernel modules go into the root image's `/lib/modules/VERSION`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Modules {
    /// All of them, as upstream does (about 400 MB on Debian).
    #[default]
    All,
    /// The boot modules plus these basename globs (`e1000`, `fuse*`), with
    /// their dependencies, and the `modules.*` index files.
    Only(Vec<String>),
}

/// Options of the ext2 writer.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Image size in bytes (default [`DEFAULT_SIZE`]).
    pub size: Option<u64>,
    pub copy_kernel: bool,
    pub host_cpu: Option<String>,
    pub modules: Modules,
    /// Derive the filesystem UUID from this seed instead of at random.
    pub uuid_seed: Option<String>,
    /// `SOURCE_DATE_EPOCH`: clamp every time in the initrd and image to it.
    pub epoch: Option<u64>,
    pub kernel: kernel::Overrides,
}

/// What an ext2 build wrote.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub kernel: Option<Kernel>,
    pub uuid: String,
    pub initrd_modules: Vec<String>,
    pub initrd_bytes: u64,
    pub files: chroot::Stats,
}

/// Build `OUT/{kernel,initrd,root}` in `out` (the staging output dir).
pub fn write(
    set: &FileSet,
    base_images: &[BaseImage],
    host_root: &Path,
    out: &Path,
    packagelist: bool,
    options: &Options,
    reporter: &Reporter,
) -> Result<Outcome> {
    // The kernel first: without one there is no point in the rest.
    let search = kernel::Search::host(options.host_cpu.as_deref());
    let kernel = kernel::find(&options.kernel, &search, reporter)?;
    let size = options.size.unwrap_or(DEFAULT_SIZE);

    let scratch = crate::output::scratch_dir()?;
    let tree = scratch.path().join("root");
    fs::create_dir(&tree).at("creating", &tree)?;
    let mut owners = chroot::unpack_base_images(base_images, &tree, reporter)?;
    let files = chroot::write(
        set,
        host_root,
        &tree,
        packagelist,
        Mode::Staging,
        &mut owners,
        reporter,
    )?;
    stage_modules(&kernel, &options.modules, &tree, reporter)?;

    let uuid = match &options.uuid_seed {
        Some(seed) => uuid_from_seed(seed),
        None => random_uuid()?,
    };
    let image = out.join("root");
    make_filesystem(&tree, &image, size, &uuid, options.epoch, reporter)?;
    fix_inodes(&tree, &image, &owners, options.epoch, reporter)?;
    drop(scratch);

    let initrd = initrd::write(
        &kernel.modules,
        crate::init::MINI_INIT,
        &out.join("initrd"),
        options.epoch,
        reporter,
    )?;
    kernel::install(&kernel, &out.join("kernel"), options.copy_kernel)?;
    Ok(Outcome {
        kernel: Some(kernel),
        uuid,
        initrd_modules: initrd.modules,
        initrd_bytes: initrd.bytes,
        files,
    })
}

/// Follow `path` (absolute, inside the tree) through the tree's own
/// symlinks, never leaving the tree: `/lib/modules` in a merged-/usr
/// appliance is `/usr/lib/modules`.
fn resolve_in_tree(tree: &Path, path: &Path) -> PathBuf {
    let mut resolved = PathBuf::from("/");
    let mut pending: Vec<PathBuf> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(PathBuf::from(n)),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    while let Some(name) = pending.pop() {
        let candidate = resolved.join(&name);
        let on_disk = super::super::backend::host_path(tree, &candidate);
        match fs::read_link(&on_disk) {
            Ok(target) if hops < 40 => {
                hops += 1;
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                for c in target.components().rev() {
                    match c {
                        std::path::Component::Normal(n) => pending.push(PathBuf::from(n)),
                        std::path::Component::ParentDir => pending.push(PathBuf::from("..")),
                        _ => {}
                    }
                }
            }
            _ if name.as_os_str() == ".." => {
                resolved.pop();
            }
            _ => resolved = candidate,
        }
    }
    resolved
}

/// Put the kernel's module tree at `/lib/modules/VERSION` in the staging
/// tree: every file, or the boot modules and the named ones.
fn stage_modules(
    kernel: &Kernel,
    choice: &Modules,
    tree: &Path,
    reporter: &Reporter,
) -> Result<()> {
    let inside = resolve_in_tree(tree, &Path::new("/lib/modules").join(&kernel.version));
    let dest = crate::backend::host_path(tree, &inside);
    fs::create_dir_all(&dest).at("creating", &dest)?;
    let source = &kernel.modules;
    let wanted: Option<std::collections::HashSet<PathBuf>> = match choice {
        Modules::All => None,
        Modules::Only(extra) => {
            let deps = initrd::read_module_deps(source)?;
            Some(initrd::selected_modules(&deps, extra).into_iter().collect())
        }
    };
    let mut count = 0u64;
    for entry in WalkDir::new(source).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(|e| Error::Kernel {
            path: Some(source.clone()),
            message: format!("cannot read the module tree {}: {e}", source.display()),
        })?;
        let relative = entry.path().strip_prefix(source).expect("inside");
        let target = dest.join(relative);
        let ft = entry.file_type();
        let is_module = relative.to_string_lossy().contains(".ko");
        if let (Some(wanted), true) = (&wanted, is_module) {
            if !wanted.contains(relative) {
                continue;
            }
        }
        if ft.is_dir() {
            if wanted.is_none() || !relative.starts_with("kernel") {
                fs::create_dir_all(&target).at("creating", &target)?;
            }
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).at("creating", parent)?;
        }
        // The appliance's own packages may have put a file here (a hard
        // link to the host's): replace it, never write through it.
        match fs::symlink_metadata(&target) {
            Ok(m) if !m.is_dir() => fs::remove_file(&target).at("replacing", &target)?,
            _ => {}
        }
        if ft.is_symlink() {
            let link = fs::read_link(entry.path()).at("reading symlink", entry.path())?;
            std::os::unix::fs::symlink(&link, &target).at("creating symlink", &target)?;
        } else if ft.is_file() {
            if fs::hard_link(entry.path(), &target).is_err() {
                copy_new(entry.path(), &target).at("copying module", entry.path())?;
            }
            count += 1;
        }
    }
    reporter.info(1, || {
        format!(
            "ext2: {count} module files staged from {}",
            source.display()
        )
    });
    Ok(())
}

/// Copy into a file that must not exist yet.
fn copy_new(source: &Path, dest: &Path) -> std::io::Result<u64> {
    let mut input = fs::File::open(source)?;
    let mut output = fs::OpenOptions::new().write(true).create_new(true).open(dest)?;
    std::io::copy(&mut input, &mut output)
}

/// A version-4-style UUID from MD5 of the seed: stable for a seed.
pub fn uuid_from_seed(seed: &str) -> String {
    let digest = Md5::digest(seed.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest);
    format_uuid(bytes)
}

fn random_uuid() -> Result<String> {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .at("reading", "/dev/urandom")?;
    Ok(format_uuid(bytes))
}

fn format_uuid(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Run a tool, turning a failure into an error that carries its stderr.
fn run(command: &mut Command, program: &str) -> Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Tool {
            program: program.into(),
            message: format!("cannot run it ({e}); install e2fsprogs"),
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if !output.status.success() {
        return Err(Error::Tool {
            program: program.into(),
            message: stderr,
        });
    }
    Ok(stderr)
}

fn make_filesystem(
    tree: &Path,
    image: &Path,
    size: u64,
    uuid: &str,
    epoch: Option<u64>,
    reporter: &Reporter,
) -> Result<()> {
    let file = fs::File::create(image).at("creating", image)?;
    file.set_len(size).at("sizing", image)?;
    drop(file);
    reporter.info(1, || {
        format!("ext2: mke2fs -d {} ({size} bytes)", tree.display())
    });
    let mut mke2fs = Command::new("mke2fs");
    mke2fs
        .args(["-t", "ext2", "-F", "-q", "-U", uuid])
        .arg("-E")
        .arg(format!("root_owner=0:0,hash_seed={uuid}"))
        .arg("-d")
        .arg(tree)
        .arg(image);
    if let Some(epoch) = epoch {
        // libext2fs's clock for the superblock and new inodes.
        mke2fs.env("E2FSPROGS_FAKE_TIME", epoch.to_string());
    }
    run(&mut mke2fs, "mke2fs").map_err(|e| match e {
        Error::Tool { message, .. }
            if message.contains("Could not allocate")
                || message.contains("No space")
                || message.contains("too small") =>
        {
            Error::Usage(format!(
                "the appliance does not fit in a {} root image (--size); \
                 give a larger --size (mke2fs: {})",
                human_size(size),
                message.lines().last().unwrap_or("")
            ))
        }
        other => other,
    })?;
    Ok(())
}

fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes % (1 << 30) == 0 {
        format!("{}G", bytes >> 30)
    } else if bytes >= 1 << 20 {
        format!("{}M", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// One `debugfs -w` pass over the image: owners the staging tree could not
/// carry, and times clamped for reproducible builds.
fn fix_inodes(
    tree: &Path,
    image: &Path,
    owners: &Owners,
    epoch: Option<u64>,
    reporter: &Reporter,
) -> Result<()> {
    let mut script = String::new();
    let mut skipped = 0usize;
    for entry in WalkDir::new(tree).sort_by_file_name() {
        let entry = entry.map_err(|e| Error::io("reading", tree, e.into()))?;
        let meta = entry
            .metadata()
            .map_err(|e| Error::io("reading", entry.path(), e.into()))?;
        let relative = Path::new("/").join(entry.path().strip_prefix(tree).expect("inside"));
        let Some(quoted) = debugfs_quote(relative.as_os_str()) else {
            skipped += 1;
            continue;
        };
        let (uid, gid) = owners.get(&relative).copied().unwrap_or((0, 0));
        if meta.uid() != uid {
            let _ = writeln!(script, "sif {quoted} uid {uid}");
        }
        if meta.gid() != gid {
            let _ = writeln!(script, "sif {quoted} gid {gid}");
        }
        if let Some(epoch) = epoch {
            let mtime = (meta.mtime().max(0) as u64).min(epoch);
            if meta.mtime() as u64 != mtime {
                let _ = writeln!(script, "sif {quoted} mtime {mtime}");
            }
            let _ = writeln!(script, "sif {quoted} atime {mtime}");
            let _ = writeln!(script, "sif {quoted} ctime {mtime}");
        }
    }
    if skipped > 0 {
        reporter.warn(format!(
            "{skipped} paths with a double quote or newline in their names keep \
             the staging owner and times"
        ));
    }
    if script.is_empty() {
        return Ok(());
    }
    let commands = image.with_extension("debugfs");
    fs::write(&commands, &script).at("writing", &commands)?;
    let result = run(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&commands)
            .arg(image),
        "debugfs",
    );
    let _ = fs::remove_file(&commands);
    let stderr = result?;
    // debugfs reports a failed command on stderr but still exits 0.
    if let Some(line) = stderr.lines().find(|l| !l.starts_with("debugfs ")) {
        return Err(Error::Tool {
            program: "debugfs".into(),
            message: format!("fixing owners and times in {}: {line}", image.display()),
        });
    }
    Ok(())
}

/// A path as one debugfs argument: double-quoted; names that cannot be
/// quoted for its parser give None.
fn debugfs_quote(path: &OsStr) -> Option<String> {
    let text = std::str::from_utf8(path.as_bytes()).ok()?;
    if text.contains('"') || text.contains('\n') {
        return None;
    }
    Some(format!("\"{text}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_uuids_are_stable_and_valid() {
        let a = uuid_from_seed("x");
        assert_eq!(a, uuid_from_seed("x"));
        assert_ne!(a, uuid_from_seed("y"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn symlinks_are_followed_inside_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", dir.path().join("lib")).unwrap();
        std::os::unix::fs::symlink("/usr", dir.path().join("abs")).unwrap();
        assert_eq!(
            resolve_in_tree(dir.path(), Path::new("/lib/modules/6")),
            PathBuf::from("/usr/lib/modules/6")
        );
        assert_eq!(
            resolve_in_tree(dir.path(), Path::new("/abs/lib")),
            PathBuf::from("/usr/lib")
        );
    }
}
