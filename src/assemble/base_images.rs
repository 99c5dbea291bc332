//! Base images (`base.tar.gz` and any other tarball among the inputs)
//! read into the [`Tree`], in order, later ones replacing earlier ones'
//! files, with the tarballs' own owners, modes and times.
//!
//! Member names are cleaned lexically (`..` stops at `/`) and follow
//! symlinks only inside the tree, as the appliance itself will see them
//! (tar's semantics, without ever leaving the appliance).  Small members
//! are held in memory; large ones wait in one unnamed spill file in the
//! staging output, with their holes kept, until a format writes them.

use std::fs;
use std::io::{self, Read, Seek, Write};
use std::path::Path;

use crate::appliance::{BaseImage, SparseBudget};
use crate::error::{with_causes, Error, Result};
use crate::outdir::OutDir;
use crate::report::Reporter;
use crate::rootfs::normalize;
use crate::tree::{Data, Kind, Meta, Node, Tree};

/// Members up to this size are held in memory, until this much is held.
const IN_MEMORY_MEMBER: u64 = 1 << 20;
const IN_MEMORY_TOTAL: u64 = 64 << 20;

/// The spill file, made on first use.
struct Spill<'a> {
    dir: &'a OutDir,
    file: Option<fs::File>,
    /// Where the next member goes (block-aligned, so holes stay holes).
    end: u64,
}

impl Spill<'_> {
    /// Copy `member` into the spill file; its place there.
    fn add(&mut self, member: &mut impl Read, reporter: &Reporter) -> io::Result<Data> {
        if self.file.is_none() {
            self.file = Some(self.dir.unnamed_file()?);
        }
        let file = self.file.as_mut().expect("just made");
        let offset = self.end.next_multiple_of(BLOCK as u64);
        file.seek(io::SeekFrom::Start(offset))?;
        let size = copy_keeping_holes(member, file, reporter)?;
        self.end = offset + size;
        // Holes at the very end are only holes if the file reaches them.
        if file.metadata()?.len() < self.end {
            file.set_len(self.end)?;
        }
        Ok(Data::Spilled { offset, size })
    }
}

const BLOCK: usize = 4096;

/// Copy `from` to `file`'s position, seeking over whole blocks of zeros
/// (the holes of a sparse member, read as zeros, stay holes).
fn copy_keeping_holes(
    from: &mut impl Read,
    file: &mut fs::File,
    reporter: &Reporter,
) -> io::Result<u64> {
    let mut buffer = vec![0u8; 64 * BLOCK];
    let mut length = 0u64;
    loop {
        if reporter.check().is_err() {
            return Err(io::Error::other("cancelled"));
        }
        let mut filled = 0;
        while filled < buffer.len() {
            let n = from.read(&mut buffer[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        for chunk in buffer[..filled].chunks(BLOCK) {
            if chunk.len() == BLOCK && chunk.iter().all(|&b| b == 0) {
                file.seek(io::SeekFrom::Current(BLOCK as i64))?;
            } else {
                file.write_all(chunk)?;
            }
        }
        length += filled as u64;
    }
    Ok(length)
}

/// Read `images` into `tree`; members too large to hold in memory go to
/// an unnamed file in `spill_dir`.  Members holding more than `capacity`
/// bytes together are refused before they are read.
pub fn add(
    tree: &mut Tree,
    images: &[BaseImage],
    spill_dir: &OutDir,
    capacity: Option<u64>,
    reporter: &Reporter,
) -> Result<()> {
    let mut in_memory: u64 = 0;
    let mut total: u64 = 0;
    let mut spill = Spill {
        dir: spill_dir,
        file: None,
        end: 0,
    };
    let sparse = SparseBudget::default();
    for image in images {
        reporter.info(1, || {
            format!("build: reading base image {}", image.path.display())
        });
        let origin = tree.add_image(&image.path);
        image
            .for_each_member(&sparse, |entry| {
                reporter.check()?;
                // As the tarball names it, for messages.
                let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                let bad = |e: io::Error| {
                    Error::bad_input(
                        &image.path,
                        format!("cannot read base image: {name}: {}", with_causes(&e)),
                    )
                };
                let path = normalize(&Path::new("/").join(entry.path().map_err(bad)?));
                if path == Path::new("/") {
                    return Ok(());
                }
                let header = entry.header();
                let meta = Meta::new(
                    (header.mode().map_err(bad)? & 0o7777) as u16,
                    header.uid().map_err(bad)? as u32,
                    header.gid().map_err(bad)? as u32,
                    header.mtime().map_err(bad)? as i64,
                );
                let in_image = |e: Error| Error::bad_input(&image.path, e.to_string());
                let kind = match header.entry_type() {
                    tar::EntryType::Directory => Kind::Dir(Default::default()),
                    tar::EntryType::Regular
                    | tar::EntryType::Continuous
                    | tar::EntryType::GNUSparse => {
                        let size = entry.size();
                        total = total.saturating_add(size);
                        if let Some(capacity) = capacity.filter(|&c| total > c) {
                            return Err(Error::bad_input(
                                &image.path,
                                format!(
                                    "{}: {size} bytes; the base images hold more than the {capacity}-byte image (use --size)",
                                    path.display()
                                ),
                            ));
                        }
                        if size > IN_MEMORY_MEMBER || in_memory + size > IN_MEMORY_TOTAL {
                            let data = spill
                                .add(entry, reporter)
                                .map_err(|e| reporter.cancelled_or(bad(e)))?;
                            Kind::File(data)
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
                                format!("{name}: symlink without a target"),
                            )
                        })?;
                        Kind::Symlink(target.into_owned())
                    }
                    tar::EntryType::Link => {
                        let target = entry.link_name().map_err(bad)?.ok_or_else(|| {
                            Error::bad_input(
                                &image.path,
                                format!("{name}: hard link without a target"),
                            )
                        })?;
                        let target = normalize(&Path::new("/").join(target));
                        let index = tree.lookup(&target).map_err(in_image)?.ok_or_else(|| {
                            Error::bad_input(
                                &image.path,
                                format!(
                                    "{name}: hard link to {}, which is not in the image",
                                    target.display()
                                ),
                            )
                        })?;
                        // A link shares its target's owner, mode and times.
                        return tree.link(&path, index).map_err(in_image);
                    }
                    tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                        let (file_type, rdev) = match header.entry_type() {
                            tar::EntryType::Char => (libc::S_IFCHR, device(header).map_err(bad)?),
                            tar::EntryType::Block => (libc::S_IFBLK, device(header).map_err(bad)?),
                            // A FIFO has no device number (some writers
                            // leave the field blank).
                            _ => (libc::S_IFIFO, 0),
                        };
                        Kind::Special {
                            file_type: file_type as u16,
                            rdev,
                        }
                    }
                    other => {
                        reporter.warn(format!(
                            "{}: skipping {name} (tar entry type {other:?})",
                            image.path.display()
                        ));
                        return Ok(());
                    }
                };
                tree.insert(
                    &path,
                    Node {
                        meta,
                        kind,
                        origin,
                    },
                )
                .map_err(in_image)?;
                Ok(())
            })
            .map_err(|e| reporter.cancelled_or(e))?;
    }
    if let Some(file) = spill.file {
        tree.set_spill(file);
    }
    Ok(())
}

/// A device member's number.
fn device(header: &tar::Header) -> io::Result<u64> {
    let major = header.device_major()?.unwrap_or(0);
    let minor = header.device_minor()?.unwrap_or(0);
    Ok(libc::makedev(major, minor))
}
