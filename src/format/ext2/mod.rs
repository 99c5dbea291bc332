//! The `ext2` format (compat-spec §5): `OUT/kernel`, `OUT/initrd` and
//! `OUT/root`, a sparse ext2 image the appliance boots from.
//!
//! The tree gets the kernel's modules and `/lost+found`, and is written by
//! [`image::write_image`]: no staging directory, no external tools, file
//! bytes moved once by the kernel.  Owners are exact whoever builds: host
//! files keep the host's (root) owners and base-image files the tarball's;
//! with `SOURCE_DATE_EPOCH` and a UUID seed the image is reproducible.

pub mod image;

use std::fs;
use std::io::Read;
use std::path::Path;

use md5::{Digest, Md5};

use super::{Context, Format, Options as FormatOptions, Written};
use crate::assemble::made_dir;
use crate::boot::{self, Modules};
use crate::error::{IoContext, Result};
use crate::outdir::{OutDir, Parents};
use crate::report::Reporter;
use crate::rootfs::RootFs;
use crate::tree::{Kind, Meta, Node, Origin, Sources, Tree};

/// Upstream's default image size: 4 GiB, sparse.
pub const DEFAULT_SIZE: u64 = 4 << 30;

/// Options of the ext2 root image.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Image size in bytes (default [`DEFAULT_SIZE`]).
    pub size: Option<u64>,
    /// Derive the filesystem UUID from this seed instead of at random.
    pub uuid_seed: Option<String>,
}

/// The `ext2` format.
pub struct Ext2;

impl Format for Ext2 {
    fn name(&self) -> &'static str {
        "ext2"
    }

    fn summary(&self) -> &'static str {
        "a bootable appliance: OUT/kernel, OUT/initrd and OUT/root (an ext2 image)"
    }

    fn outputs(&self) -> &'static [&'static str] {
        &["kernel", "root", "initrd"]
    }

    fn capacity(&self, options: &FormatOptions) -> Option<u64> {
        Some(options.ext2.size.unwrap_or(DEFAULT_SIZE))
    }

    fn check(&self, options: &FormatOptions) -> Result<()> {
        image::check_size(options.ext2.size.unwrap_or(DEFAULT_SIZE))
    }

    fn write(&self, tree: Tree, out: &OutDir, cx: &Context<'_>) -> Result<Written> {
        write(tree, out, cx)
    }
}

/// Build `OUT/{kernel,initrd,root}` in `out` (the staging output dir).
fn write(mut tree: Tree, out: &OutDir, cx: &Context<'_>) -> Result<Written> {
    let options = cx.options;
    let reporter = cx.reporter;
    // (The size was checked by `check`, before any work.)
    let size = options.ext2.size.unwrap_or(DEFAULT_SIZE);
    // The kernel first: without one there is no point in the rest.
    let kernel = boot::find_kernel(&options.boot, reporter)?;
    let directory = made_dir(cx.now);
    // Every module by default, as upstream: the appliance may load any.
    let modules = options.boot.modules.clone().unwrap_or(Modules::All);
    boot::add_modules(&mut tree, &kernel, &modules, directory, reporter)?;
    add_lost_found(&mut tree, directory)?;
    if let Some(epoch) = options.epoch {
        tree.clamp_times(epoch as i64);
    }
    let uuid = match &options.ext2.uuid_seed {
        Some(seed) => uuid_from_seed(seed),
        None => random_uuid()?,
    };
    let path = out.path().join("root");
    reporter.info(1, || {
        format!(
            "ext2: writing {} ({size} bytes, UUID {})",
            path.display(),
            format_uuid(uuid)
        )
    });
    let target = image::Image {
        path: &path,
        file: create(out, "/root")?,
        size,
        uuid,
        now: cx.now,
    };
    let image_stats = image::write_image(&tree, target, cx.sources, reporter)?;
    super::set_private_if_needed(&tree, out, "/root", reporter)?;
    reporter.info(1, || {
        format!(
            "ext2: {} inodes, {} blocks in use, {} bytes of files",
            image_stats.inodes, image_stats.blocks_used, image_stats.data_bytes
        )
    });
    let initrd = boot::write_initrd(&kernel, out, options.epoch, reporter)?;
    boot::install_kernel(&kernel, out, options.boot.copy_kernel)?;
    Ok(Written {
        setid_dropped: 0,
        boot: Some(boot::Booted {
            kernel,
            initrd_modules: initrd.modules,
            initrd_bytes: initrd.bytes,
            root_uuid: Some(format_uuid(uuid)),
        }),
    })
}

/// Base images alone made into an ext2 image `dir/root` of `size` bytes:
/// the tree's rules for base images (hard links, symlinks followed inside
/// the tree, conflicts) and the writer, without a kernel.  For the fuzzer.
#[doc(hidden)]
pub fn image_of_base_images(
    images: &[crate::appliance::BaseImage],
    dir: &Path,
    size: u64,
) -> Result<()> {
    let reporter = Reporter::default();
    let out = OutDir::open(dir).at("opening", dir)?;
    let mut tree = crate::assemble::base_images_only(images, &out, Some(size), &reporter)?;
    let host = RootFs::host().at("opening", "/")?;
    add_lost_found(&mut tree, made_dir(0))?;
    let path = dir.join("root");
    let target = image::Image {
        path: &path,
        file: create(&out, "/root")?,
        size,
        uuid: [0; 16],
        now: 0,
    };
    let sources = Sources {
        build: &host,
        host: &host,
    };
    image::write_image(&tree, target, sources, &reporter)?;
    Ok(())
}

/// A new file `name` in the output, made by descriptor.
fn create(out: &OutDir, name: &str) -> Result<fs::File> {
    let at = out.path().join(name.trim_start_matches('/'));
    out.place(Path::new(name), Parents::Existing)
        .and_then(|p| p.create_file())
        .at("creating", at)
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
                origin: Origin::Generated,
            },
        )?;
    }
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
