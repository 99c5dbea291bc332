//! The `initramfs` format (alias `cpio`): `OUT/kernel` and `OUT/initrd`,
//! one newc cpio holding the whole appliance, booted with no disk at all
//! (upstream supermin 4 had it; 5 lists it in its TODO).
//!
//! The archive holds the mini init as `/init`, the marker that tells it
//! where it is, `/dev/console` (the kernel opens it for init before any
//! `/dev` is mounted), and the tree under `/root`: the mini init chroots
//! into it and runs the appliance's own `/init` (or `supermin.run=`), as it
//! does on an ext2 disk, so the tree is the same as in the other formats.
//! Entries come in the tree's order, owners and modes are the tree's,
//! times are clamped to `SOURCE_DATE_EPOCH`, a second name of a file is a
//! hard link: the same inputs give the same bytes.
//!
//! Compressed with zstd (several threads; the result does not depend on
//! how many) when the kernel's config says it can unpack that, else gzip,
//! which every distribution kernel can; or as asked.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{Context, Format, Written};
use crate::assemble::made_dir;
use crate::boot::{self, cpio, init::MINI_INIT, Kernel, Modules};
use crate::error::{Error, IoContext, Result};
use crate::outdir::{OutDir, Parents};
use crate::report::Reporter;
use crate::tree::{Contents, Data, Kind, Node, Tree};

/// The `initramfs` format.
pub struct Initramfs;

/// How the archive is compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// zstd if the kernel can unpack it, else gzip.
    #[default]
    Auto,
    Zstd,
    Gzip,
    None,
}

impl Compression {
    pub const NAMES: &'static [&'static str] = &["zstd", "gzip", "none"];

    /// `zstd`, `gzip` or `none`.
    pub fn parse(name: &str) -> Result<Compression> {
        match name {
            "zstd" => Ok(Compression::Zstd),
            "gzip" => Ok(Compression::Gzip),
            "none" => Ok(Compression::None),
            _ => Err(Error::Usage(format!(
                "unknown initramfs compression {:?}: use {}",
                super::shown(name),
                Compression::NAMES.join(", ")
            ))),
        }
    }
}

/// Options of the initramfs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub compression: Compression,
}

/// The marker the mini init looks for (`init/main.rs`).
const MARKER: &[u8] = crate::boot::protocol::INITRAMFS_MARKER.as_bytes();
/// Where the tree goes inside the archive.
const TREE: &[u8] = b"root";
/// The kernel's limit on a name in the archive (`PATH_MAX`, with its NUL).
const MAX_NAME: usize = 4095;
/// zstd's level: its default, which the kernel unpacks at its full speed.
const ZSTD_LEVEL: i32 = 3;

impl Format for Initramfs {
    fn name(&self) -> &'static str {
        "initramfs"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["cpio"]
    }

    fn summary(&self) -> &'static str {
        "a bootable appliance with no disk: OUT/kernel and OUT/initrd (the whole tree)"
    }

    fn outputs(&self) -> &'static [&'static str] {
        &["kernel", "initrd"]
    }

    fn write(&self, mut tree: Tree, out: &OutDir, cx: &Context<'_>) -> Result<Written> {
        let options = cx.options;
        let reporter = cx.reporter;
        let kernel = boot::find_kernel(&options.boot, reporter)?;
        let directory = made_dir(cx.now);
        // None by default: there is no disk to find, and every byte here
        // is unpacked into memory at every boot.
        let modules = options.boot.modules.clone().unwrap_or(Modules::None);
        boot::add_modules(&mut tree, &kernel, &modules, directory, reporter)?;
        if let Some(epoch) = options.epoch {
            tree.clamp_times(epoch.min(i64::MAX as u64) as i64);
        }
        let compression = compression_for(options.initramfs.compression, &kernel, reporter);
        let path = out.path().join("initrd");
        let file = out
            .place(Path::new("/initrd"), Parents::Existing)
            .and_then(|p| p.create_file())
            .at("creating", &path)?;
        // The length is known before a byte is written: zstd records it in
        // its frame header, where boot() reads how much memory the guest
        // needs.
        let layout = layout(&tree)?;
        let sink = Sink::new(compression, file, layout.length).at("writing", &path)?;
        let mut archive = cpio::Writer::new(sink);
        let generated = options.epoch.unwrap_or(0).min(u32::MAX as u64) as u32;
        write_frame(&mut archive, generated).at("writing", &path)?;
        let unpacked = write_tree(&tree, &layout.names, &mut archive, &path, cx)?;
        let (sink, written) = archive.finish().at("writing", &path)?;
        if written != layout.length {
            return Err(Error::Internal(format!(
                "initramfs: wrote {written} bytes of archive, laid out {}",
                layout.length
            )));
        }
        let file = sink.finish().at("writing", &path)?;
        let bytes = file.metadata().at("reading", &path)?.len();
        super::set_private_if_needed(&tree, out, "/initrd", reporter)?;
        reporter.info(1, || {
            format!(
                "initramfs: {} ({compression:?}), {bytes} bytes; {unpacked} bytes unpacked",
                path.display()
            )
        });
        boot::install_kernel(&kernel, out, options.boot.copy_kernel)?;
        Ok(Written {
            setid_dropped: 0,
            boot: Some(boot::Booted {
                kernel,
                initrd_modules: Vec::new(),
                initrd_bytes: bytes,
                root_uuid: None,
            }),
        })
    }
}

/// The compression to use: as asked, or for `Auto` what the kernel's
/// config (`config-VERSION` beside it, as distributions install it) says
/// it unpacks; gzip when there is no config to read.
fn compression_for(asked: Compression, kernel: &Kernel, reporter: &Reporter) -> Compression {
    if asked != Compression::Auto {
        return asked;
    }
    let config = kernel
        .path
        .with_file_name(format!("config-{}", kernel.version));
    let text = read_config(&config).unwrap_or_default();
    let has = |option: &str| text.lines().any(|l| l == format!("{option}=y"));
    let chosen = if has("CONFIG_RD_ZSTD") {
        Compression::Zstd
    } else if has("CONFIG_RD_GZIP") || text.is_empty() {
        Compression::Gzip
    } else {
        Compression::None
    };
    reporter.info(1, || {
        format!(
            "initramfs: {chosen:?} compression (from {})",
            if text.is_empty() {
                "no kernel config".to_string()
            } else {
                config.display().to_string()
            }
        )
    });
    chosen
}

/// A kernel config file, if it is a regular file of sane size (it sits
/// beside a kernel that `SUPERMIN_KERNEL` may name anywhere: not a FIFO or
/// `/dev/zero`).
fn read_config(path: &Path) -> io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let bytes = crate::rootfs::read_bounded(file, meta.len(), 16 << 20)?;
    String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The compressed (or plain) archive file.
enum Sink {
    Plain(BufWriter<fs::File>),
    Gzip(flate2::write::GzEncoder<BufWriter<fs::File>>),
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<fs::File>>),
}

impl Sink {
    /// `length`: the uncompressed archive's exact size.
    fn new(compression: Compression, file: fs::File, length: u64) -> io::Result<Sink> {
        let file = BufWriter::with_capacity(1 << 20, file);
        Ok(match compression {
            Compression::Auto | Compression::None => Sink::Plain(file),
            // The gzip header carries no name and time 0: deterministic.
            Compression::Gzip => Sink::Gzip(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::default(),
            )),
            Compression::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(file, ZSTD_LEVEL)?;
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                encoder.multithread(threads as u32)?;
                encoder.include_checksum(true)?;
                encoder.set_pledged_src_size(Some(length))?;
                Sink::Zstd(encoder)
            }
        })
    }

    fn finish(self) -> io::Result<fs::File> {
        let buffered = match self {
            Sink::Plain(f) => f,
            Sink::Gzip(g) => g.finish()?,
            Sink::Zstd(z) => z.finish()?,
        };
        buffered.into_inner().map_err(|e| e.into_error())
    }
}

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(f) => f.write(bytes),
            Sink::Gzip(g) => g.write(bytes),
            Sink::Zstd(z) => z.write(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(f) => f.flush(),
            Sink::Gzip(g) => g.flush(),
            Sink::Zstd(z) => z.flush(),
        }
    }
}

/// An entry of the archive around the tree.
struct FrameEntry {
    name: &'static [u8],
    mode: u32,
    rdev: (u32, u32),
    data: &'static [u8],
}

const fn frame_entry(name: &'static [u8], mode: u32) -> FrameEntry {
    FrameEntry {
        name,
        mode,
        rdev: (0, 0),
        data: b"",
    }
}

/// What surrounds the tree, in archive order: the mount points the mini
/// init uses, `/dev/console` (5:1), the mini init and its marker.
const FRAME: [FrameEntry; 6] = [
    frame_entry(b"dev", libc::S_IFDIR | 0o755),
    FrameEntry {
        rdev: (5, 1),
        ..frame_entry(b"dev/console", libc::S_IFCHR | 0o600)
    },
    FrameEntry {
        data: MINI_INIT,
        ..frame_entry(b"init", libc::S_IFREG | 0o755)
    },
    frame_entry(b"proc", libc::S_IFDIR | 0o755),
    frame_entry(MARKER, libc::S_IFREG | 0o644),
    frame_entry(b"sys", libc::S_IFDIR | 0o755),
];

/// Inode numbers of the frame's entries (1, 2, ...); the tree's follow.
const FRAME_INODES: u32 = FRAME.len() as u32;

fn write_frame(archive: &mut cpio::Writer<Sink>, mtime: u32) -> io::Result<()> {
    for (i, entry) in FRAME.iter().enumerate() {
        let dir = entry.mode & libc::S_IFMT == libc::S_IFDIR;
        let header = cpio::Header {
            ino: i as u32 + 1,
            mode: entry.mode,
            nlink: if dir { 2 } else { 1 },
            mtime,
            rdev_major: entry.rdev.0,
            rdev_minor: entry.rdev.1,
            ..cpio::Header::default()
        };
        archive.entry(header, entry.name, entry.data)?;
    }
    Ok(())
}

/// The archive, known before a byte of it is written.
struct Layout {
    /// Its exact length: the frame, the tree and the trailer.
    length: u64,
    /// The names of each node of the tree: the kernel links an entry to an
    /// earlier one with the same inode only when nlink says it has more.
    names: Vec<u32>,
}

fn layout(tree: &Tree) -> Result<Layout> {
    let mut length: u64 = FRAME
        .iter()
        .map(|e| cpio::entry_len(e.name.len(), e.data.len() as u64))
        .sum::<u64>()
        + cpio::entry_len(TREE.len(), 0)
        + cpio::TRAILER_LEN;
    let mut names = vec![0u32; tree.len()];
    names[0] = 1;
    tree.walk(|visit| {
        names[visit.index] += 1;
        // A file's bytes go with its first name only (see write_tree).
        let data = match &visit.node.kind {
            Kind::File(data) if visit.first => data.len(),
            Kind::Symlink(target) => target.len() as u64,
            _ => 0,
        };
        length += cpio::entry_len(TREE.len() + visit.path.as_os_str().len(), data);
        Ok(())
    })?;
    Ok(Layout { length, names })
}

/// The tree under `/root`: returns the bytes of file data written.
fn write_tree(
    tree: &Tree,
    names: &[u32],
    archive: &mut cpio::Writer<Sink>,
    path: &Path,
    cx: &Context<'_>,
) -> Result<u64> {
    let root = tree.node(0);
    let ino = |index: usize| FRAME_INODES + 1 + index as u32;
    let header = |index: usize, node: &Node| cpio::Header {
        ino: ino(index),
        mode: mode_of(node),
        uid: node.meta.uid,
        gid: node.meta.gid,
        nlink: names[index],
        mtime: node.meta.mtime.clamp(0, u32::MAX as i64) as u32,
        ..cpio::Header::default()
    };
    archive
        .entry(header(0, root), TREE, &[])
        .at("writing", path)?;
    let mut data_bytes = 0u64;
    tree.walk(|visit| {
        cx.reporter.check()?;
        let mut name = TREE.to_vec();
        name.extend_from_slice(visit.path.as_os_str().as_bytes());
        if name.len() > MAX_NAME {
            return Err(Error::output(
                path,
                format!(
                    "{}: a path longer than the kernel unpacks ({MAX_NAME} bytes)",
                    visit.path.display()
                ),
            ));
        }
        let mut h = header(visit.index, visit.node);
        match &visit.node.kind {
            Kind::Dir(_) | Kind::Special { .. } => {
                if let Kind::Special { rdev, .. } = visit.node.kind {
                    h.rdev_major = libc::major(rdev);
                    h.rdev_minor = libc::minor(rdev);
                }
                archive.entry(h, &name, &[]).at("writing", path)
            }
            Kind::Symlink(target) => archive.entry(h, &name, target).at("writing", path),
            // The bytes go with the first name only.
            Kind::File(_) if !visit.first => archive.entry(h, &name, &[]).at("writing", path),
            Kind::File(data) => {
                let size = data.len();
                if size > cpio::MAX_SIZE {
                    return Err(Error::output(
                        path,
                        format!(
                            "{}: {size} bytes, more than a cpio archive can hold ({} bytes)",
                            visit.path.display(),
                            cpio::MAX_SIZE
                        ),
                    ));
                }
                h.size = size as u32;
                archive.header(&h, &name).at("writing", path)?;
                copy_data(tree, data, archive, path, cx)?;
                archive.end_data().at("writing", path)?;
                data_bytes += size;
                Ok(())
            }
        }
    })?;
    Ok(data_bytes)
}

/// `st_mode` of a node.
fn mode_of(node: &Node) -> u32 {
    let perm = u32::from(node.meta.perm & 0o7777);
    match &node.kind {
        Kind::Dir(_) => libc::S_IFDIR | perm,
        Kind::File(_) => libc::S_IFREG | perm,
        Kind::Symlink(_) => libc::S_IFLNK | 0o777,
        Kind::Special { file_type, .. } => u32::from(*file_type) | perm,
    }
}

/// Exactly `data.len()` bytes of a file into the archive: bytes a host
/// file lacks (it shrank since it was listed) are zeros, as in the other
/// formats; bytes it gained are not taken.
fn copy_data(
    tree: &Tree,
    data: &Data,
    archive: &mut cpio::Writer<Sink>,
    path: &Path,
    cx: &Context<'_>,
) -> Result<()> {
    let source = || tree.describe(data, cx.sources);
    match tree.open(data, cx.sources).at("reading", source())? {
        Contents::Bytes(bytes) => archive.data(bytes).at("writing", path),
        Contents::File { file, offset, size } => archive
            .data_from(&file, offset, size, || {
                cx.reporter.check().map_err(io::Error::other)
            })
            .map_err(|e| cx.reporter.cancelled_or(Error::io("copying", source(), e))),
    }
}
