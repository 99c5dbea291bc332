//! The `ext2` format (compat-spec §5): `OUT/kernel`, `OUT/initrd` and
//! `OUT/root`, a sparse ext2 image the appliance boots from.
//!
//! The appliance is assembled as an in-memory [`Tree`] (base images, then
//! package files, `/packagelist` and the kernel's modules) and written by
//! [`ext2fs::write_image`]: no staging directory, no external tools, file
//! bytes moved once by the kernel. Owners are exact whoever builds: host
//! files keep the host's (root) owners and base-image files the tarball's;
//! with `SOURCE_DATE_EPOCH` and a UUID seed the image is reproducible.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use walkdir::WalkDir;

use super::chroot;
use super::ext2fs::{self, Data, Kind, Meta, Node, ReadFrom, Roots, Tree};
use super::fileset::normalize;
use super::initrd;
use super::kernel::{self, Kernel};
use super::{FileSet, Origin};
use crate::appliance::BaseImage;
use crate::error::{with_causes, Error, IoContext, Result};
use crate::outdir::{OutDir, Parents};
use crate::report::Reporter;
use crate::rootfs::{is_pseudo_file_error, FileId, RootFs};

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
#[derive(Debug, Clone)]
pub struct Outcome {
    pub kernel: Kernel,
    pub uuid: String,
    pub initrd_modules: Vec<String>,
    pub initrd_bytes: u64,
    pub files: chroot::Stats,
    pub image: ext2fs::ImageStats,
}

/// Build `OUT/{kernel,initrd,root}` in `out` (the staging output dir).
pub fn write(
    set: &FileSet,
    base_images: &[BaseImage],
    build_root: &RootFs,
    out: &OutDir,
    packagelist: bool,
    options: &Options,
    reporter: &Reporter,
) -> Result<Outcome> {
    ext2fs::check_size(options.size.unwrap_or(DEFAULT_SIZE))?;
    // The kernel first: without one there is no point in the rest.
    let search = kernel::Search::host(options.host_cpu.as_deref());
    let kernel = kernel::find(&options.kernel, &search, reporter)?;
    let size = options.size.unwrap_or(DEFAULT_SIZE);
    let now = options.epoch.map(|e| e as i64).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    let directory = root_owned_dir(now);
    let mut tree = Tree::new(directory);
    // Large base-image members wait on disk, inside the staging output so
    // that a killed build's leftovers are cleaned with it.
    let spill = Spill::in_dir(out, size);
    add_base_images(&mut tree, base_images, &spill, reporter)?;
    let files = add_host_files(&mut tree, set, build_root, reporter)?;
    if packagelist {
        let meta = Meta {
            perm: 0o644,
            ..directory
        };
        tree.insert(
            Path::new("/packagelist"),
            Node {
                meta,
                kind: Kind::File(Data::Bytes(set.packagelist().into_bytes())),
            },
        )?;
    }
    add_modules(&mut tree, &kernel, &options.modules, directory, reporter)?;
    add_lost_found(&mut tree, directory)?;
    if let Some(epoch) = options.epoch {
        tree.clamp_times(epoch as i64);
    }

    let uuid = match &options.uuid_seed {
        Some(seed) => uuid_from_seed(seed),
        None => random_uuid()?,
    };
    let image = out.path().join("root");
    reporter.info(1, || {
        format!(
            "ext2: writing {} ({size} bytes, UUID {})",
            image.display(),
            format_uuid(uuid)
        )
    });
    let host = RootFs::host().at("opening", "/")?;
    let staging = out.rootfs().at("opening", out.path())?;
    let roots = Roots {
        build: build_root,
        host: &host,
        staging: &staging,
    };
    let file = create(out, "/root")?;
    let target = ext2fs::Image {
        path: &image,
        file,
        size,
        uuid,
        now,
    };
    let image_stats = ext2fs::write_image(&tree, target, roots, reporter)?;
    spill.remove()?;
    // Anyone who can read the image can read every file in it: an image
    // holding files that not everyone may read (`/etc/shadow` from a
    // hostfiles list, a 0600 key) is readable by its owner only.
    let perm = if tree.everything_world_readable() {
        0o644
    } else {
        0o600
    };
    out.place(Path::new("/root"), Parents::Existing)
        .and_then(|p| p.chmod(perm))
        .at("setting permissions of", &image)?;
    if perm == 0o600 {
        reporter.info(1, || {
            "ext2: the root image holds files not everyone may read, so it is mode 0600".into()
        });
    }
    reporter.info(1, || {
        format!(
            "ext2: {} inodes, {} blocks in use, {} bytes of host files",
            image_stats.inodes, image_stats.blocks_used, image_stats.data_bytes
        )
    });

    let initrd_path = out.path().join("initrd");
    let initrd = initrd::write(
        &kernel.modules,
        crate::init::MINI_INIT,
        &initrd_path,
        create(out, "/initrd")?,
        options.epoch,
        reporter,
    )?;
    out.place(Path::new("/initrd"), Parents::Existing)
        .and_then(|p| p.chmod(0o644))
        .at("setting permissions of", &initrd_path)?;
    let kernel_place = out
        .place(Path::new("/kernel"), Parents::Existing)
        .at("creating", out.path().join("kernel"))?;
    kernel::install(
        &kernel,
        &kernel_place,
        &out.path().join("kernel"),
        options.copy_kernel,
    )?;
    Ok(Outcome {
        kernel,
        uuid: format_uuid(uuid),
        initrd_modules: initrd.modules,
        initrd_bytes: initrd.bytes,
        files,
        image: image_stats,
    })
}

/// Base images alone made into an ext2 image `dir/root` of `size` bytes:
/// the in-memory tree (hard links, symlinks followed inside the tree,
/// conflicts) and the writer, without a kernel.  For the fuzzer.
#[doc(hidden)]
pub fn image_of_base_images(images: &[BaseImage], dir: &Path, size: u64) -> Result<()> {
    let reporter = Reporter::default();
    let directory = root_owned_dir(0);
    let mut tree = Tree::new(directory);
    let out = OutDir::open(dir).at("opening", dir)?;
    add_base_images(&mut tree, images, &Spill::in_dir(&out, size), &reporter)?;
    add_lost_found(&mut tree, directory)?;
    let host = RootFs::host().at("opening", "/")?;
    let staging = out.rootfs().at("opening", dir)?;
    let roots = Roots {
        build: &host,
        host: &host,
        staging: &staging,
    };
    let file = create(&out, "/root")?;
    let path = dir.join("root");
    let target = ext2fs::Image {
        path: &path,
        file,
        size,
        uuid: [0; 16],
        now: 0,
    };
    ext2fs::write_image(&tree, target, roots, &reporter)?;
    Ok(())
}

/// A new file `name` in the output, made by descriptor.
fn create(out: &OutDir, name: &str) -> Result<fs::File> {
    let at = out.path().join(name.trim_start_matches('/'));
    out.place(Path::new(name), Parents::Existing)
        .and_then(|p| p.create_file())
        .at("creating", at)
}

/// Directories the build makes itself: root-owned, 0755, stamped `time`.
fn root_owned_dir(time: i64) -> Meta {
    Meta {
        perm: 0o755,
        uid: 0,
        gid: 0,
        mtime: time,
        atime: time,
    }
}

/// `/lost+found` (0700), unless a base image brought one.
fn add_lost_found(tree: &mut Tree, directory: Meta) -> Result<()> {
    if !tree.exists(Path::new("/lost+found")) {
        let meta = Meta {
            perm: 0o700,
            ..directory
        };
        tree.insert(
            Path::new("/lost+found"),
            Node {
                meta,
                kind: Kind::Dir(Default::default()),
            },
        )?;
    }
    Ok(())
}

/// Where base-image members too large to hold in memory are kept until
/// the image is written.
struct Spill<'a> {
    out: &'a OutDir,
    image_size: u64,
    /// Whether the directory exists yet.
    made: std::cell::Cell<bool>,
}

impl<'a> Spill<'a> {
    /// [`SPILL_DIR`] in the staging output, for an image of `image_size`
    /// bytes.
    fn in_dir(out: &'a OutDir, image_size: u64) -> Spill<'a> {
        Spill {
            out,
            image_size,
            made: std::cell::Cell::new(false),
        }
    }

    /// A new file for the `n`th spilled member, and where to read it back
    /// (inside the staging output).
    fn file(&self, n: usize) -> Result<(fs::File, PathBuf)> {
        let dir = Path::new(SPILL_DIR);
        if !self.made.get() {
            self.out
                .place(dir, Parents::Existing)
                .and_then(|p| p.make_dir())
                .at("creating", self.out.path().join(&SPILL_DIR[1..]))?;
            self.made.set(true);
        }
        let path = dir.join(n.to_string());
        let file = self
            .out
            .place(&path, Parents::Existing)
            .and_then(|p| p.create_file())
            .at(
                "creating",
                self.out
                    .path()
                    .join(path.strip_prefix("/").unwrap_or(&path)),
            )?;
        Ok((file, path))
    }

    /// Remove the spilled members once the image holds them.
    fn remove(&self) -> Result<()> {
        if self.made.get() {
            self.out
                .remove_dir(Path::new(SPILL_DIR))
                .at("removing", self.out.path().join(&SPILL_DIR[1..]))?;
        }
        Ok(())
    }
}

/// Where [`Spill`] keeps members, inside the staging output.
const SPILL_DIR: &str = "/.base-image-data";

/// Members up to this size are held in memory, until this much is held.
const IN_MEMORY_MEMBER: u64 = 1 << 20;
const IN_MEMORY_TOTAL: u64 = 64 << 20;

/// Base images in order, later ones replacing earlier ones' files, with
/// the tarballs' own owners, modes and times.
fn add_base_images(
    tree: &mut Tree,
    images: &[BaseImage],
    spill: &Spill<'_>,
    reporter: &Reporter,
) -> Result<()> {
    // Bytes of file data read so far: a tarball holding more than the
    // image can is refused before it fills memory or the disk.
    let mut total: u64 = 0;
    let mut in_memory: u64 = 0;
    let mut spilled = 0usize;
    let sparse = crate::appliance::SparseBudget::default();
    for image in images {
        reporter.info(1, || {
            format!("build: reading base image {}", image.path.display())
        });
        let bad = |e: std::io::Error| {
            Error::bad_input(
                &image.path,
                format!("cannot read base image: {}", with_causes(&e)),
            )
        };
        image.for_each_member(&sparse, |entry| {
            reporter.check()?;
            let path = normalize(&Path::new("/").join(entry.path().map_err(bad)?));
            if path == Path::new("/") {
                return Ok(());
            }
            let header = entry.header();
            let mtime = header.mtime().map_err(bad)? as i64;
            let meta = Meta {
                perm: (header.mode().map_err(bad)? & 0o7777) as u16,
                uid: header.uid().map_err(bad)? as u32,
                gid: header.gid().map_err(bad)? as u32,
                mtime,
                atime: mtime,
            };
            let kind = match header.entry_type() {
                tar::EntryType::Directory => Kind::Dir(Default::default()),
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => {
                    let size = entry.size();
                    total = total.saturating_add(size);
                    if total > spill.image_size {
                        return Err(Error::bad_input(
                            &image.path,
                            format!(
                                "{}: {size} bytes; the base images hold more than the {}-byte image (use --size)",
                                path.display(),
                                spill.image_size
                            ),
                        ));
                    }
                    if size > IN_MEMORY_MEMBER || in_memory + size > IN_MEMORY_TOTAL {
                        let (mut f, file) = spill.file(spilled)?;
                        spilled += 1;
                        let n = reporter.copy(entry, &mut f).map_err(bad)?;
                        let id = FileId::of(&f.metadata().map_err(bad)?);
                        Kind::File(Data::Host {
                            from: ReadFrom::Staging,
                            path: file,
                            id,
                            size: n,
                        })
                    } else {
                        let mut bytes = Vec::with_capacity(size as usize);
                        entry.read_to_end(&mut bytes).map_err(bad)?;
                        in_memory += bytes.len() as u64;
                        Kind::File(Data::Bytes(bytes))
                    }
                }
                tar::EntryType::Symlink => {
                    let target = entry.link_name_bytes().ok_or_else(|| {
                        Error::bad_input(
                            &image.path,
                            format!("{}: symlink without a target", path.display()),
                        )
                    })?;
                    Kind::Symlink(target.into_owned())
                }
                tar::EntryType::Link => {
                    let target = entry.link_name().map_err(bad)?.ok_or_else(|| {
                        Error::bad_input(
                            &image.path,
                            format!("{}: hard link without a target", path.display()),
                        )
                    })?;
                    let target = normalize(&Path::new("/").join(target));
                    let in_image = |e: Error| Error::bad_input(&image.path, e.to_string());
                    let index = tree.lookup(&target).map_err(in_image)?.ok_or_else(|| {
                        Error::bad_input(
                            &image.path,
                            format!(
                                "{}: hard link to {}, which is not in the image",
                                path.display(),
                                target.display()
                            ),
                        )
                    })?;
                    tree.link(&path, index).map_err(in_image)?;
                    return Ok(());
                }
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    let major = header.device_major().ok().flatten().unwrap_or(0);
                    let minor = header.device_minor().ok().flatten().unwrap_or(0);
                    let file_type = match header.entry_type() {
                        tar::EntryType::Char => ext2fs::S_IFCHR,
                        tar::EntryType::Block => ext2fs::S_IFBLK,
                        _ => ext2fs::S_IFIFO,
                    };
                    Kind::Special {
                        file_type,
                        rdev: libc::makedev(major, minor),
                    }
                }
                other => {
                    reporter.warn(format!(
                        "{}: skipping {} (tar entry type {:?})",
                        image.path.display(),
                        path.display(),
                        other
                    ));
                    return Ok(());
                }
            };
            tree.insert(&path, Node { meta, kind })
                .map_err(|e| Error::bad_input(&image.path, e.to_string()))?;
            Ok(())
        })
        .map_err(|e| reporter.cancelled_or(e))?;
    }
    Ok(())
}

fn meta_of(m: &fs::Metadata) -> Meta {
    Meta {
        perm: (m.mode() & 0o7777) as u16,
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime(),
        // The host's atime changes as files are read; mtime keeps the image
        // a function of the files.
        atime: m.mtime(),
    }
}

/// The file set's host files, with the host's owners, modes and times.
fn add_host_files(
    tree: &mut Tree,
    set: &FileSet,
    root: &RootFs,
    reporter: &Reporter,
) -> Result<chroot::Stats> {
    let mut stats = chroot::Stats::default();
    let mut first_of_inode: HashMap<FileId, usize> = HashMap::new();
    for entry in &set.entries {
        reporter.check()?;
        let source = &entry.source;
        let meta = match root.symlink_metadata(source) {
            Ok(m) => m,
            Err(_) if entry.origin == Origin::Implied => {
                tree.mkdir_p(&entry.path)?;
                continue;
            }
            Err(_) => continue,
        };
        let ft = meta.file_type();
        let node_meta = meta_of(&meta);
        let kind = if ft.is_dir() {
            Kind::Dir(Default::default())
        } else if ft.is_symlink() {
            // As upstream: a symlink from a base image is kept.
            if tree.exists(&entry.path) {
                continue;
            }
            let target = root
                .read_link(source)
                .at("reading symlink", root.display_path(source))?;
            Kind::Symlink(target.as_os_str().as_bytes().to_vec())
        } else if ft.is_file() {
            let key = FileId::of(&meta);
            if meta.nlink() > 1 {
                if let Some(&first) = first_of_inode.get(&key) {
                    tree.link(&entry.path, first)?;
                    stats.hard_links += 1;
                    continue;
                }
            }
            // Opened now to learn whether it can be read at all; opened
            // again (and proved the same file) when the image is written.
            match root.open_same(source, key) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    stats.unreadable.push(root.display_path(source));
                    continue;
                }
                Err(e) if is_pseudo_file_error(&e) => {
                    stats.pseudo.push(root.display_path(source));
                    continue;
                }
                Err(e) => return Err(Error::io("reading", root.display_path(source), e)),
            }
            stats.files += 1;
            stats.bytes += meta.len();
            let index = tree.insert(
                &entry.path,
                Node {
                    meta: node_meta,
                    kind: Kind::File(Data::Host {
                        from: ReadFrom::Build,
                        path: source.clone(),
                        id: key,
                        size: meta.len(),
                    }),
                },
            )?;
            if meta.nlink() > 1 {
                first_of_inode.insert(key, index);
            }
            continue;
        } else {
            // An image can hold device nodes whoever builds it.
            Kind::Special {
                file_type: (meta.mode() & libc::S_IFMT) as u16,
                rdev: meta.rdev(),
            }
        };
        tree.insert(
            &entry.path,
            Node {
                meta: node_meta,
                kind,
            },
        )?;
    }
    chroot::warn_skipped(&stats, reporter);
    Ok(stats)
}

/// The kernel's module tree at `/lib/modules/VERSION`, root-owned: every
/// file, or the boot modules and the named ones.
fn add_modules(
    tree: &mut Tree,
    kernel: &Kernel,
    choice: &Modules,
    directory: Meta,
    reporter: &Reporter,
) -> Result<()> {
    let source = &kernel.modules;
    let dest = Path::new("/lib/modules").join(&kernel.version);
    let wanted: Option<HashSet<PathBuf>> = match choice {
        Modules::All => None,
        Modules::Only(extra) => {
            let deps = initrd::read_module_deps(source)?;
            Some(initrd::selected_modules(&deps, extra).into_iter().collect())
        }
    };
    let top = tree.mkdir_p(&dest)?;
    tree.set_meta(top, directory);
    let mut count = 0u64;
    for entry in WalkDir::new(source).min_depth(1).sort_by_file_name() {
        reporter.check()?;
        let entry = entry.map_err(|e| Error::Kernel {
            path: Some(source.clone()),
            message: format!("cannot read the module tree {}: {e}", source.display()),
        })?;
        let relative = entry.path().strip_prefix(source).expect("inside");
        let is_module = relative.to_string_lossy().contains(".ko");
        if let (Some(wanted), true) = (&wanted, is_module) {
            if !wanted.contains(relative) {
                continue;
            }
        }
        let meta = entry
            .metadata()
            .map_err(|e| Error::io("reading", entry.path(), e.into()))?;
        let node_meta = Meta {
            uid: 0,
            gid: 0,
            ..meta_of(&meta)
        };
        let path = dest.join(relative);
        let kind = if meta.is_dir() {
            // With a selection, directories come with the modules in them.
            if wanted.is_some() && relative.starts_with("kernel") {
                continue;
            }
            let index = tree.mkdir_p(&path)?;
            tree.set_meta(index, node_meta);
            continue;
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(entry.path()).at("reading symlink", entry.path())?;
            Kind::Symlink(target.as_os_str().as_bytes().to_vec())
        } else if meta.is_file() {
            count += 1;
            Kind::File(Data::Host {
                from: ReadFrom::Host,
                path: entry.path().to_path_buf(),
                id: FileId::of(&meta),
                size: meta.len(),
            })
        } else {
            continue;
        };
        tree.insert(
            &path,
            Node {
                meta: node_meta,
                kind,
            },
        )?;
    }
    reporter.info(1, || {
        format!("ext2: {count} module files from {}", source.display())
    });
    Ok(())
}

/// A version-4-style UUID from MD5 of the seed: stable for a seed.
pub fn uuid_from_seed(seed: &str) -> [u8; 16] {
    let digest = Md5::digest(seed.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest);
    as_version_4(bytes)
}

fn random_uuid() -> Result<[u8; 16]> {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .at("reading", "/dev/urandom")?;
    Ok(as_version_4(bytes))
}

fn as_version_4(mut b: [u8; 16]) -> [u8; 16] {
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    b
}

pub fn format_uuid(b: [u8; 16]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_uuids_are_stable_and_valid() {
        let a = format_uuid(uuid_from_seed("x"));
        assert_eq!(a, format_uuid(uuid_from_seed("x")));
        assert_ne!(a, format_uuid(uuid_from_seed("y")));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
