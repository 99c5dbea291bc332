//! An ext2 filesystem writer: an in-memory [`Tree`] of the appliance,
//! laid out and written into a sparse image in one pass.
//!
//! Why not `mke2fs -d`: it needs a staging tree on disk (11k hard links or
//! copies for a libguestfs-sized appliance, then removed again), copies each
//! file single-threaded, takes owners and ctimes from the staging inodes,
//! and still spends more than upstream's whole build on the data. Here the
//! metadata is computed up front, every byte of file data is moved once by
//! the kernel (`copy_file_range`, in parallel), owners and times are set
//! exactly, and the result is a deterministic function of the tree.
//!
//! The format is classic ext2 revision 1 with 4 KiB blocks, 128-byte
//! inodes, block maps (12 direct, single/double indirect), the `filetype`,
//! `sparse_super` and `large_file` features, linear directories and a
//! `lost+found`, as e2fsck expects. Correctness is checked by `e2fsck -fn`
//! in the tests and by booting the images.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rayon::prelude::*;

use crate::error::{Error, IoContext, Result};
use crate::format::copy_range;
use crate::report::Reporter;
use crate::tree::{Contents, Data, Kind, Sources, Tree, MAX_NAME, MAX_SYMLINK};

const BLOCK: u64 = 4096;
const INODE_SIZE: u64 = 128;
const BLOCKS_PER_GROUP: u64 = BLOCK * 8;
const ROOT_INO: u32 = 2;
const LOST_FOUND_INO: u32 = 11;
const FIRST_INO: u32 = 11;
/// Pointers in one indirect block.
const PER_BLOCK: u64 = BLOCK / 4;
/// One inode per 16 KiB of image, as mke2fs's default.
const BYTES_PER_INODE: u64 = 16384;
/// Link count limits of Linux's ext2 (`EXT2_LINK_MAX`) and, for
/// non-directories, of the 16-bit field with ext4's margin.
const MAX_DIR_LINKS: u32 = 32000;
const MAX_LINKS: u32 = 65000;

/// The file type bits of `st_mode`.
pub const S_IFIFO: u16 = 0o010000;
pub const S_IFCHR: u16 = 0o020000;
pub const S_IFDIR: u16 = 0o040000;
pub const S_IFBLK: u16 = 0o060000;
pub const S_IFREG: u16 = 0o100000;
pub const S_IFLNK: u16 = 0o120000;
pub const S_IFSOCK: u16 = 0o140000;

/// What [`write_image`] produced.
#[derive(Debug, Clone, Default)]
pub struct ImageStats {
    pub inodes: u64,
    pub blocks_used: u64,
    pub data_bytes: u64,
    pub files: u64,
}

/// Layout and contents of one inode.
struct Placed {
    node: usize,
    links: u16,
    /// Data blocks in file order.
    data: Vec<u32>,
    /// Indirect blocks, written after the data pointers are known.
    indirect: Vec<(u32, Vec<u32>)>,
    i_block: [u32; 15],
    size: u64,
    blocks_512: u64,
}

/// The filesystem geometry for an image of `size` bytes.
struct Geometry {
    blocks: u64,
    groups: u64,
    inodes_per_group: u64,
    itable_blocks: u64,
    gdt_blocks: u64,
}

fn has_super(group: u64) -> bool {
    fn power_of(mut n: u64, base: u64) -> bool {
        while n > 1 && n % base == 0 {
            n /= base;
        }
        n == 1
    }
    group <= 1 || power_of(group, 3) || power_of(group, 5) || power_of(group, 7)
}

/// The largest image: ext2 numbers blocks with 32 bits (16 TiB of 4 KiB
/// blocks).
pub const MAX_IMAGE_SIZE: u64 = (u32::MAX as u64) * BLOCK;

/// Refuse an image size ext2 cannot have, before anything is written.
pub fn check_size(size: u64) -> Result<()> {
    if size > MAX_IMAGE_SIZE {
        return Err(Error::Usage(format!(
            "a {size}-byte root image (--size) is larger than ext2 allows ({MAX_IMAGE_SIZE} bytes, 16T)"
        )));
    }
    if size / BLOCK < 64 {
        return Err(Error::Usage(format!(
            "a {size}-byte root image (--size) is too small for an ext2 filesystem"
        )));
    }
    Ok(())
}

impl Geometry {
    fn new(size: u64, inodes_needed: u64) -> Result<Geometry> {
        let too_small = || {
            Error::Usage(format!(
                "a {size}-byte root image (--size) is too small for an ext2 filesystem"
            ))
        };
        let mut blocks = size / BLOCK;
        if blocks < 64 {
            return Err(too_small());
        }
        check_size(size)?;
        loop {
            let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
            let gdt_blocks = (groups * 32).div_ceil(BLOCK);
            let wanted = (size / BYTES_PER_INODE).max(inodes_needed + FIRST_INO as u64 + 16);
            let per_block = BLOCK / INODE_SIZE;
            let mut ipg = wanted.div_ceil(groups).div_ceil(per_block) * per_block;
            ipg = ipg.clamp(per_block, BLOCK * 8);
            if ipg * groups < inodes_needed + FIRST_INO as u64 {
                return Err(Error::Usage(format!(
                    "the appliance has {inodes_needed} files: too many for a root image of \
                     {size} bytes (--size)"
                )));
            }
            let itable_blocks = ipg * INODE_SIZE / BLOCK;
            let geometry = Geometry {
                blocks,
                groups,
                inodes_per_group: ipg,
                itable_blocks,
                gdt_blocks,
            };
            // As mke2fs: a last group too small for its own metadata plus
            // some data is dropped.
            let last = blocks - (groups - 1) * BLOCKS_PER_GROUP;
            if groups > 1 && last < geometry.overhead(groups - 1) + 50 {
                blocks = (groups - 1) * BLOCKS_PER_GROUP;
                continue;
            }
            if geometry.overhead(0) + 16 > blocks.min(BLOCKS_PER_GROUP) {
                return Err(too_small());
            }
            return Ok(geometry);
        }
    }

    fn group_start(&self, group: u64) -> u64 {
        group * BLOCKS_PER_GROUP
    }

    fn group_blocks(&self, group: u64) -> u64 {
        (self.blocks - self.group_start(group)).min(BLOCKS_PER_GROUP)
    }

    /// Metadata blocks at the start of a group.
    fn overhead(&self, group: u64) -> u64 {
        let sb = if has_super(group) {
            1 + self.gdt_blocks
        } else {
            0
        };
        sb + 2 + self.itable_blocks
    }

    fn block_bitmap(&self, group: u64) -> u64 {
        self.group_start(group)
            + if has_super(group) {
                1 + self.gdt_blocks
            } else {
                0
            }
    }

    fn inode_bitmap(&self, group: u64) -> u64 {
        self.block_bitmap(group) + 1
    }

    fn inode_table(&self, group: u64) -> u64 {
        self.block_bitmap(group) + 2
    }
}

/// Hands out free data blocks in order, skipping group metadata.
struct Allocator<'a> {
    geometry: &'a Geometry,
    group: u64,
    next: u64,
    used_in_group: Vec<u64>,
}

impl<'a> Allocator<'a> {
    fn new(geometry: &'a Geometry) -> Self {
        Allocator {
            geometry,
            group: 0,
            next: geometry.overhead(0),
            used_in_group: vec![0; geometry.groups as usize],
        }
    }

    fn alloc(&mut self) -> Option<u32> {
        loop {
            if self.group >= self.geometry.groups {
                return None;
            }
            let end =
                self.geometry.group_start(self.group) + self.geometry.group_blocks(self.group);
            if self.next < end {
                let block = self.next;
                self.next += 1;
                self.used_in_group[self.group as usize] += 1;
                return Some(block as u32);
            }
            self.group += 1;
            if self.group < self.geometry.groups {
                self.next =
                    self.geometry.group_start(self.group) + self.geometry.overhead(self.group);
            }
        }
    }
}

fn clamp_time(t: i64) -> u32 {
    t.clamp(0, u32::MAX as i64) as u32
}

fn file_type_code(kind: &Kind) -> u8 {
    match kind {
        Kind::File(_) => 1,
        Kind::Dir(_) => 2,
        Kind::Special { file_type, .. } => match *file_type {
            S_IFCHR => 3,
            S_IFBLK => 4,
            S_IFIFO => 5,
            S_IFSOCK => 6,
            _ => 0,
        },
        Kind::Symlink(_) => 7,
    }
}

/// Directory blocks for `entries` ((name, inode, type) in order, with `.`
/// and `..` first): records never span a block; the last one in each block
/// runs to its end.
fn directory_blocks(entries: &[(Vec<u8>, u32, u8)]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    let mut block_start = 0usize;
    let mut last_record: Option<usize> = None;
    for (name, ino, ft) in entries {
        debug_assert!(
            name.len() <= MAX_NAME,
            "Tree::insert lets no longer name in"
        );
        let len = (8 + name.len()).div_ceil(4) * 4;
        if out.len() - block_start + len > BLOCK as usize {
            // Stretch the previous record to the end of its block.
            let last = last_record.expect("a record per block");
            let rec_len = (block_start + BLOCK as usize - last) as u16;
            out[last + 4..last + 6].copy_from_slice(&rec_len.to_le_bytes());
            out.resize(block_start + BLOCK as usize, 0);
            block_start = out.len();
        }
        let at = out.len();
        out.extend_from_slice(&ino.to_le_bytes());
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.push(name.len() as u8);
        out.push(*ft);
        out.extend_from_slice(name);
        out.resize(at + len, 0);
        last_record = Some(at);
    }
    if let Some(last) = last_record {
        let rec_len = (block_start + BLOCK as usize - last) as u16;
        out[last + 4..last + 6].copy_from_slice(&rec_len.to_le_bytes());
        out.resize(block_start + BLOCK as usize, 0);
    }
    out
}

/// The image file to write and what it will be.
pub struct Image<'a> {
    /// Where it is, for messages.
    pub path: &'a Path,
    /// The new, empty file.
    pub file: fs::File,
    /// Its size in bytes (it is sparse).
    pub size: u64,
    /// The filesystem's UUID.
    pub uuid: [u8; 16],
    /// The time stamped in the superblock.
    pub now: i64,
}

/// Write `tree` as an ext2 filesystem into `image`, reading host files
/// from `sources`: number the inodes, place every inode's blocks, then
/// write contents, file data, inode tables, group metadata and the
/// superblocks.
/// The progress stage of an image's metadata.
const STAGE_METADATA: &str = "writing the image";

pub fn write_image(
    tree: &Tree,
    image: Image<'_>,
    sources: Sources<'_>,
    reporter: &Reporter,
) -> Result<ImageStats> {
    let numbering = number_inodes(tree, image.path)?;
    let geometry = Geometry::new(image.size, numbering.order.len() as u64)?;
    let layout = place_blocks(tree, &numbering, &geometry, image.size)?;

    image
        .file
        .set_len(geometry.blocks * BLOCK)
        .at("sizing", image.path)?;
    let out = Out {
        file: &image.file,
        path: image.path,
    };
    write_small_contents(tree, &layout, &out)?;
    let (files, data_bytes) = copy_file_data(tree, &layout.placed, sources, &out, reporter)?;
    // Inode tables, bitmaps and superblocks: a second or two for a big tree.
    reporter.progress(STAGE_METADATA, 0, 1);
    let tables = inode_tables(tree, &layout.placed, &numbering.ino_of, &geometry);
    let (counts, descriptors) = write_groups(&geometry, &tables, &layout.used_in_group, &out)?;
    write_superblocks(
        &geometry,
        &superblock(&geometry, counts, image.uuid, image.now),
        &descriptors,
        &out,
    )?;
    reporter.progress(STAGE_METADATA, 1, 1);
    Ok(ImageStats {
        inodes: numbering.order.len() as u64,
        blocks_used: geometry.blocks - counts.free_blocks,
        data_bytes,
        files,
    })
}

/// The image file being written, and its name for messages.
struct Out<'a> {
    file: &'a fs::File,
    path: &'a Path,
}

impl Out<'_> {
    fn write_at(&self, bytes: &[u8], offset: u64) -> Result<()> {
        self.file
            .write_all_at(bytes, offset)
            .at("writing", self.path)
    }

    /// `bytes`, block by block, into `blocks`.
    fn write_blocks(&self, bytes: &[u8], blocks: &[u32]) -> Result<()> {
        for (chunk, block) in bytes.chunks(BLOCK as usize).zip(blocks) {
            self.write_at(chunk, *block as u64 * BLOCK)?;
        }
        Ok(())
    }
}

/// Where every inode's blocks are, before anything is written.
struct Layout {
    /// Every inode, in inode-number order.
    placed: Vec<Placed>,
    /// The bytes of each directory node.
    dir_data: BTreeMap<usize, Vec<u8>>,
    /// Data blocks allocated in each group.
    used_in_group: Vec<u64>,
}

/// Allocate the blocks of every inode in inode order, so that the data of
/// inodes that are listed together lie together.
fn place_blocks(
    tree: &Tree,
    numbering: &Numbering,
    geometry: &Geometry,
    image_size: u64,
) -> Result<Layout> {
    let mut by_ino: Vec<usize> = numbering.order.clone();
    by_ino.sort_by_key(|&n| numbering.ino_of[n]);
    let mut allocator = Allocator::new(geometry);
    let mut placed: Vec<Placed> = Vec::with_capacity(by_ino.len());
    let mut dir_data: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    for &node in &by_ino {
        let kind = &tree.node(node).kind;
        let (size, blocks_needed) = match kind {
            Kind::Dir(_) => {
                let bytes = directory_bytes(tree, node, numbering);
                let len = bytes.len() as u64;
                dir_data.insert(node, bytes);
                (len, len / BLOCK)
            }
            Kind::File(data) => (data.len(), data.len().div_ceil(BLOCK)),
            Kind::Symlink(target) if target.len() < 60 => (target.len() as u64, 0),
            Kind::Symlink(target) => (target.len() as u64, 1),
            Kind::Special { .. } => (0, 0),
        };
        if blocks_needed > 12 + PER_BLOCK + PER_BLOCK * PER_BLOCK {
            return Err(Error::Usage(format!(
                "a file of {size} bytes is too large for this ext2 writer"
            )));
        }
        let mut p = Placed {
            node,
            links: numbering.links[node] as u16,
            data: Vec::with_capacity(blocks_needed as usize),
            indirect: Vec::new(),
            i_block: [0; 15],
            size,
            blocks_512: 0,
        };
        if !map_blocks(&mut allocator, blocks_needed, &mut p) {
            return Err(does_not_fit(tree, &by_ino, image_size));
        }
        inline_contents(kind, &mut p.i_block);
        placed.push(p);
    }
    Ok(Layout {
        placed,
        dir_data,
        used_in_group: allocator.used_in_group,
    })
}

/// The directory blocks of directory `node`: `.`, `..`, its children in
/// name order; `lost+found` gets four empty blocks at least.
fn directory_bytes(tree: &Tree, node: usize, numbering: &Numbering) -> Vec<u8> {
    let ino_of = &numbering.ino_of;
    let mut entries = vec![
        (b".".to_vec(), ino_of[node], 2u8),
        (b"..".to_vec(), ino_of[numbering.dir_parent[node]], 2u8),
    ];
    for (name, &child) in tree.children(node) {
        entries.push((
            name.clone(),
            ino_of[child],
            file_type_code(&tree.node(child).kind),
        ));
    }
    let mut bytes = directory_blocks(&entries);
    if node == numbering.lost_found {
        // As mke2fs: room for e2fsck to reconnect files without
        // allocating.
        bytes.resize(bytes.len().max(4 * BLOCK as usize), 0);
        let blocks = bytes.len() / BLOCK as usize;
        for b in 1..blocks {
            let at = b * BLOCK as usize;
            bytes[at + 4..at + 6].copy_from_slice(&(BLOCK as u16).to_le_bytes());
        }
    }
    bytes
}

/// Allocate `blocks_needed` data blocks for `p` and the indirect blocks
/// that map them, in the classic layout, so that a file reads front to
/// back: 12 data blocks, the indirect block, its 1024 data blocks, then
/// the double indirect block and each indirect block before the data it
/// maps.  False when the image is full.
fn map_blocks(allocator: &mut Allocator<'_>, blocks_needed: u64, p: &mut Placed) -> bool {
    let mut meta_blocks = 0u64;
    let mut double: Vec<u32> = Vec::new();
    let mut current: Option<(u32, Vec<u32>)> = None;
    for i in 0..blocks_needed {
        if i == 12 || (i > 12 && (i - 12) % PER_BLOCK == 0) {
            if i == 12 + PER_BLOCK {
                let Some(dind) = allocator.alloc() else {
                    return false;
                };
                p.i_block[13] = dind;
                meta_blocks += 1;
            }
            let Some(ind) = allocator.alloc() else {
                return false;
            };
            meta_blocks += 1;
            if i == 12 {
                p.i_block[12] = ind;
            } else {
                double.push(ind);
            }
            if let Some(done) = current.replace((ind, Vec::new())) {
                p.indirect.push(done);
            }
        }
        let Some(block) = allocator.alloc() else {
            return false;
        };
        p.data.push(block);
        if i < 12 {
            p.i_block[i as usize] = block;
        } else if let Some((_, pointers)) = current.as_mut() {
            pointers.push(block);
        }
    }
    if let Some(done) = current.take() {
        p.indirect.push(done);
    }
    if p.i_block[13] != 0 {
        p.indirect.push((p.i_block[13], double));
    }
    p.blocks_512 = (p.data.len() as u64 + meta_blocks) * (BLOCK / 512);
    true
}

/// What ext2 keeps in the block pointers themselves: a short symlink's
/// target, a device's number.
fn inline_contents(kind: &Kind, i_block: &mut [u32; 15]) {
    match kind {
        Kind::Symlink(target) if target.len() < 60 => {
            let mut raw = [0u8; 60];
            raw[..target.len()].copy_from_slice(target);
            for (i, chunk) in raw.chunks(4).enumerate() {
                i_block[i] = u32::from_le_bytes(chunk.try_into().unwrap());
            }
        }
        Kind::Special { rdev, .. } => {
            let (major, minor) = (libc::major(*rdev), libc::minor(*rdev));
            if major < 256 && minor < 256 {
                i_block[0] = (major << 8) | minor;
            } else {
                i_block[1] = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
            }
        }
        _ => {}
    }
}

/// The error for a tree that does not fit in `size` bytes, saying about
/// how much it needs.
fn does_not_fit(tree: &Tree, nodes: &[usize], image_size: u64) -> Error {
    let needed: u64 = nodes
        .iter()
        .map(|&n| match &tree.node(n).kind {
            Kind::File(d) => d.len().div_ceil(BLOCK),
            Kind::Dir(c) => (c.len() as u64 * 32).div_ceil(BLOCK),
            _ => 0,
        })
        .sum::<u64>()
        * BLOCK;
    Error::Usage(format!(
        "the appliance does not fit in a root image of {image_size} bytes (--size): it holds \
         about {} MiB of files; give a larger --size",
        needed >> 20
    ))
}

/// Metadata-sized contents: directories, indirect blocks, long symlinks,
/// files held in memory.
fn write_small_contents(tree: &Tree, layout: &Layout, out: &Out<'_>) -> Result<()> {
    for p in &layout.placed {
        match &tree.node(p.node).kind {
            Kind::Dir(_) => out.write_blocks(&layout.dir_data[&p.node], &p.data)?,
            Kind::Symlink(target) if !p.data.is_empty() => {
                debug_assert!(target.len() <= MAX_SYMLINK, "Tree::insert checks it");
                out.write_blocks(target, &p.data)?
            }
            Kind::File(Data::Bytes(bytes)) => out.write_blocks(bytes, &p.data)?,
            _ => {}
        }
        for (block, pointers) in &p.indirect {
            let bytes: Vec<u8> = pointers.iter().flat_map(|b| b.to_le_bytes()).collect();
            out.write_at(&bytes, *block as u64 * BLOCK)?;
        }
    }
    Ok(())
}

/// File data held elsewhere (host files, spilled members), copied by the
/// kernel, files in parallel: how many files and bytes.
fn copy_file_data(
    tree: &Tree,
    placed: &[Placed],
    sources: Sources<'_>,
    out: &Out<'_>,
    reporter: &Reporter,
) -> Result<(u64, u64)> {
    let host_files: Vec<&Placed> = placed
        .iter()
        .filter(|p| {
            matches!(
                tree.node(p.node).kind,
                Kind::File(Data::Host { .. } | Data::Spilled { .. })
            )
        })
        .collect();
    let counter = reporter.counter("writing files", host_files.len() as u64);
    let bytes = host_files
        .par_iter()
        .map(|p| {
            let Kind::File(data) = &tree.node(p.node).kind else {
                unreachable!()
            };
            reporter.check()?;
            let r = tree
                .open(data, sources)
                .and_then(|contents| match contents {
                    Contents::File {
                        file: input,
                        offset,
                        size,
                    } => copy_host_file(&input, offset, size, &p.data, out.file, reporter),
                    Contents::Bytes(_) => unreachable!("held elsewhere"),
                })
                .at("copying", tree.describe(data, sources));
            counter.tick();
            r.map(|()| data.len())
        })
        .try_reduce(|| 0, |a, b| Ok(a + b))
        .map_err(|e| reporter.cancelled_or(e))?;
    Ok((host_files.len() as u64, bytes))
}

/// The inode tables of every group, as far as they hold used inodes (the
/// rest stay sparse zeros), and what each group uses.
struct InodeTables {
    tables: Vec<Vec<u8>>,
    /// Directories in each group.
    dirs: Vec<u64>,
    /// The highest inode used in each group, counted from 1.
    used: Vec<u64>,
}

fn inode_tables(
    tree: &Tree,
    placed: &[Placed],
    ino_of: &[u32],
    geometry: &Geometry,
) -> InodeTables {
    let groups = geometry.groups as usize;
    let ipg = geometry.inodes_per_group;
    let mut t = InodeTables {
        tables: vec![Vec::new(); groups],
        dirs: vec![0; groups],
        used: vec![0; groups],
    };
    for p in placed {
        let index = (ino_of[p.node] - 1) as u64;
        let (g, i) = ((index / ipg) as usize, (index % ipg) as usize);
        let table = &mut t.tables[g];
        if table.len() < (i + 1) * INODE_SIZE as usize {
            table.resize((i + 1) * INODE_SIZE as usize, 0);
        }
        table[i * 128..(i + 1) * 128].copy_from_slice(&inode_bytes(tree, p));
        t.used[g] = t.used[g].max(i as u64 + 1);
        if matches!(tree.node(p.node).kind, Kind::Dir(_)) {
            t.dirs[g] += 1;
        }
    }
    // Reserved inodes 1..=10 are in use (and zero, but for the root).
    t.used[0] = t.used[0].max(FIRST_INO as u64);
    t
}

/// The on-disk inode of `p`.
fn inode_bytes(tree: &Tree, p: &Placed) -> [u8; 128] {
    let n = tree.node(p.node);
    let type_bits = match &n.kind {
        Kind::Dir(_) => S_IFDIR,
        Kind::File(_) => S_IFREG,
        Kind::Symlink(_) => S_IFLNK,
        Kind::Special { file_type, .. } => *file_type,
    };
    let perm = if matches!(n.kind, Kind::Symlink(_)) {
        0o777
    } else {
        n.meta.perm & 0o7777
    };
    let mut raw = [0u8; 128];
    let put16 =
        |raw: &mut [u8; 128], at: usize, v: u16| raw[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 =
        |raw: &mut [u8; 128], at: usize, v: u32| raw[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put16(&mut raw, 0, type_bits | perm);
    put16(&mut raw, 2, n.meta.uid as u16);
    put32(&mut raw, 4, p.size as u32);
    // The host's atime changes as files are read; mtime keeps the
    // image a function of the files.
    put32(&mut raw, 8, clamp_time(n.meta.mtime));
    put32(&mut raw, 12, clamp_time(n.meta.mtime)); // ctime: as mtime
    put32(&mut raw, 16, clamp_time(n.meta.mtime));
    put16(&mut raw, 24, n.meta.gid as u16);
    put16(&mut raw, 26, p.links);
    put32(&mut raw, 28, p.blocks_512 as u32);
    for (i, b) in p.i_block.iter().enumerate() {
        put32(&mut raw, 40 + i * 4, *b);
    }
    put32(&mut raw, 108, (p.size >> 32) as u32);
    put16(&mut raw, 116 + 4, (n.meta.uid >> 16) as u16);
    put16(&mut raw, 116 + 6, (n.meta.gid >> 16) as u16);
    raw
}

/// Each group's inode table, block and inode bitmaps; the free counts and
/// the group descriptor table.
fn write_groups(
    geometry: &Geometry,
    tables: &InodeTables,
    used_in_group: &[u64],
    out: &Out<'_>,
) -> Result<(Counts, Vec<u8>)> {
    let ipg = geometry.inodes_per_group;
    let mut counts = Counts {
        free_blocks: 0,
        free_inodes: 0,
    };
    let mut descriptors = Vec::with_capacity(geometry.groups as usize * 32);
    for g in 0..geometry.groups {
        let gi = g as usize;
        if !tables.tables[gi].is_empty() {
            out.write_at(&tables.tables[gi], geometry.inode_table(g) * BLOCK)?;
        }
        // Block bitmap: metadata and allocated data are contiguous from the
        // group's start; bits past the group's end are set.
        let used = geometry.overhead(g) + used_in_group[gi];
        let group_blocks = geometry.group_blocks(g);
        out.write_at(
            &bitmap(0..used, group_blocks),
            geometry.block_bitmap(g) * BLOCK,
        )?;
        out.write_at(
            &bitmap(0..tables.used[gi], ipg),
            geometry.inode_bitmap(g) * BLOCK,
        )?;
        let free_blocks = group_blocks - used;
        let free_inodes = ipg - tables.used[gi];
        counts.free_blocks += free_blocks;
        counts.free_inodes += free_inodes;
        descriptors.extend_from_slice(&(geometry.block_bitmap(g) as u32).to_le_bytes());
        descriptors.extend_from_slice(&(geometry.inode_bitmap(g) as u32).to_le_bytes());
        descriptors.extend_from_slice(&(geometry.inode_table(g) as u32).to_le_bytes());
        descriptors.extend_from_slice(&(free_blocks as u16).to_le_bytes());
        descriptors.extend_from_slice(&(free_inodes as u16).to_le_bytes());
        descriptors.extend_from_slice(&(tables.dirs[gi] as u16).to_le_bytes());
        descriptors.extend_from_slice(&[0u8; 14]);
    }
    Ok((counts, descriptors))
}

/// A bitmap block with the bits of `used` set, and every bit from `end`
/// on (past the group's last block or inode).
fn bitmap(used: std::ops::Range<u64>, end: u64) -> Vec<u8> {
    let mut bitmap = vec![0u8; BLOCK as usize];
    for bit in used.chain(end..BLOCK * 8) {
        bitmap[(bit / 8) as usize] |= 1 << (bit % 8);
    }
    bitmap
}

/// The superblock and the descriptor table in group 0 and in every group
/// `sparse_super` gives a backup.
fn write_superblocks(
    geometry: &Geometry,
    sb: &[u8; 1024],
    descriptors: &[u8],
    out: &Out<'_>,
) -> Result<()> {
    for g in (0..geometry.groups).filter(|&g| has_super(g)) {
        let mut copy = *sb;
        copy[0x5A..0x5C].copy_from_slice(&(g as u16).to_le_bytes());
        let start = geometry.group_start(g) * BLOCK;
        let sb_offset = if g == 0 { 1024 } else { start };
        out.write_at(&copy, sb_offset)?;
        out.write_at(descriptors, start + BLOCK)?;
    }
    Ok(())
}

/// Inode numbers and link counts of a tree's nodes.
struct Numbering {
    /// Inode number of each node.
    ino_of: Vec<u32>,
    /// Nodes in the order their inodes are laid out (a directory, then
    /// its non-directory children).
    order: Vec<usize>,
    /// Link count of each node.
    links: Vec<u32>,
    /// Parent directory of each directory node.
    dir_parent: Vec<usize>,
    /// The node of `/lost+found`.
    lost_found: usize,
}

/// Number the inodes depth-first in name order (`/` is 2, `lost+found`
/// 11), count links, and refuse link counts ext2 cannot hold.
fn number_inodes(tree: &Tree, image: &Path) -> Result<Numbering> {
    let mut ino_of: Vec<u32> = vec![0; tree.len()];
    let mut order: Vec<usize> = Vec::new();
    let mut links: Vec<u32> = vec![0; tree.len()];
    let mut dir_parent: Vec<usize> = vec![0; tree.len()];
    let lost_found = tree.children(0).get(b"lost+found".as_slice()).copied();
    ino_of[0] = ROOT_INO;
    let mut next_ino = FIRST_INO + 1;
    if let Some(lf) = lost_found {
        ino_of[lf] = LOST_FOUND_INO;
    }
    let mut stack = vec![0usize];
    links[0] = 2;
    while let Some(dir) = stack.pop() {
        order.push(dir);
        let mut subdirs = Vec::new();
        for &child in tree.children(dir).values() {
            links[child] += 1;
            if ino_of[child] == 0 {
                ino_of[child] = next_ino;
                next_ino += 1;
                if !matches!(tree.node(child).kind, Kind::Dir(_)) {
                    order.push(child);
                }
            }
            if let Kind::Dir(_) = tree.node(child).kind {
                links[child] += 1; // its "."
                links[dir] += 1; // its ".."
                dir_parent[child] = dir;
                subdirs.push(child);
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    // The inode's link count is 16 bits; Linux's ext2 stops at these.
    for (node, &count) in links.iter().enumerate() {
        let (limit, what) = match tree.node(node).kind {
            Kind::Dir(_) => (MAX_DIR_LINKS, "subdirectories"),
            _ => (MAX_LINKS, "hard links"),
        };
        if count > limit {
            return Err(Error::output(
                image,
                format!("an inode with {count} {what}; ext2 allows {limit}"),
            ));
        }
    }
    let Some(lost_found) = lost_found else {
        return Err(Error::Internal("no /lost+found in the tree".into()));
    };
    Ok(Numbering {
        ino_of,
        order,
        links,
        dir_parent,
        lost_found,
    })
}

/// Free space counted over all groups.
#[derive(Clone, Copy)]
struct Counts {
    free_blocks: u64,
    free_inodes: u64,
}

/// The superblock (group 0's copy; backups differ only in their group
/// number).
fn superblock(geometry: &Geometry, counts: Counts, uuid: [u8; 16], now: i64) -> [u8; 1024] {
    let ipg = geometry.inodes_per_group;
    let total_free_blocks = counts.free_blocks;
    let total_free_inodes = counts.free_inodes;
    let mut sb = [0u8; 1024];
    {
        let put16 = |sb: &mut [u8; 1024], at: usize, v: u16| {
            sb[at..at + 2].copy_from_slice(&v.to_le_bytes())
        };
        let put32 = |sb: &mut [u8; 1024], at: usize, v: u32| {
            sb[at..at + 4].copy_from_slice(&v.to_le_bytes())
        };
        let inodes_total = ipg * geometry.groups;
        put32(&mut sb, 0x00, inodes_total as u32);
        put32(&mut sb, 0x04, geometry.blocks as u32);
        put32(&mut sb, 0x08, (geometry.blocks / 20) as u32); // 5% for root, as mke2fs
        put32(&mut sb, 0x0C, total_free_blocks as u32);
        put32(&mut sb, 0x10, total_free_inodes as u32);
        put32(&mut sb, 0x14, 0); // first data block (4 KiB blocks)
        put32(&mut sb, 0x18, 2); // log2(block size) - 10
        put32(&mut sb, 0x1C, 2);
        put32(&mut sb, 0x20, BLOCKS_PER_GROUP as u32);
        put32(&mut sb, 0x24, BLOCKS_PER_GROUP as u32);
        put32(&mut sb, 0x28, ipg as u32);
        put32(&mut sb, 0x30, clamp_time(now)); // last write
        put16(&mut sb, 0x36, 0xFFFF); // max mount count: never force a check
        put16(&mut sb, 0x38, 0xEF53);
        put16(&mut sb, 0x3A, 1); // clean
        put16(&mut sb, 0x3C, 1); // on errors: continue
        put32(&mut sb, 0x40, clamp_time(now)); // last check
        put32(&mut sb, 0x4C, 1); // dynamic revision
        put32(&mut sb, 0x54, FIRST_INO);
        put16(&mut sb, 0x58, INODE_SIZE as u16);
        put32(&mut sb, 0x60, 0x0002); // incompat: filetype
        put32(&mut sb, 0x64, 0x0001 | 0x0002); // ro_compat: sparse_super, large_file
        sb[0x68..0x78].copy_from_slice(&uuid);
        sb[0xEC..0xFC].copy_from_slice(&uuid); // directory hash seed
        sb[0xFC] = 1; // half_md4, were dir_index ever enabled
        put32(&mut sb, 0x108, clamp_time(now)); // mkfs time
    }
    sb
}

/// Copy `size` bytes of `input` from `offset` into `blocks` of the
/// image, run by run of contiguous blocks.  Bytes the file lacks (it
/// shrank since it was listed) stay zero.
fn copy_host_file(
    input: &fs::File,
    offset: u64,
    size: u64,
    blocks: &[u32],
    image: &fs::File,
    reporter: &Reporter,
) -> io::Result<()> {
    let mut done = 0u64;
    let mut i = 0usize;
    while i < blocks.len() && done < size {
        let mut run = 1usize;
        while i + run < blocks.len() && blocks[i + run] == blocks[i] + run as u32 {
            run += 1;
        }
        let length = (run as u64 * BLOCK).min(size - done);
        let copied = copy_range(
            input,
            offset + done,
            image,
            blocks[i] as u64 * BLOCK,
            length,
            reporter,
        )?;
        if copied < length {
            return Ok(()); // end of file came early
        }
        done += length;
        i += run;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::RootFs;
    use crate::tree::{Meta, Node, Origin};
    use std::collections::BTreeMap;

    fn meta(perm: u16) -> Meta {
        Meta::new(perm, 0, 0, 1_700_000_000)
    }

    #[test]
    fn directory_records_fill_blocks_exactly() {
        let mut entries = vec![(b".".to_vec(), 2, 2), (b"..".to_vec(), 2, 2)];
        for i in 0..400 {
            entries.push((
                format!("file-with-a-long-name-{i:04}").into_bytes(),
                12 + i,
                1,
            ));
        }
        let bytes = directory_blocks(&entries);
        assert_eq!(bytes.len() % BLOCK as usize, 0);
        let mut seen = 0;
        for block in bytes.chunks(BLOCK as usize) {
            let mut at = 0usize;
            while at < block.len() {
                let rec_len = u16::from_le_bytes([block[at + 4], block[at + 5]]) as usize;
                assert!(rec_len >= 8 && at + rec_len <= block.len());
                at += rec_len;
                seen += 1;
            }
            assert_eq!(at, block.len());
        }
        assert_eq!(seen, entries.len());
    }

    #[test]
    fn tree_follows_its_own_symlinks_and_replaces_files() {
        let mut tree = Tree::new(meta(0o755));
        tree.insert(
            Path::new("/usr/lib"),
            Node {
                meta: meta(0o755),
                kind: Kind::Dir(BTreeMap::new()),
                origin: Origin::BaseImage(0),
            },
        )
        .unwrap();
        tree.insert(
            Path::new("/lib"),
            Node {
                meta: meta(0o777),
                kind: Kind::Symlink(b"usr/lib".to_vec()),
                origin: Origin::BaseImage(0),
            },
        )
        .unwrap();
        let f = tree
            .insert(
                Path::new("/lib/modules/x"),
                Node {
                    meta: meta(0o644),
                    kind: Kind::File(Data::Bytes(b"1".to_vec())),
                    origin: Origin::BaseImage(0),
                },
            )
            .unwrap();
        assert_eq!(
            tree.lookup(Path::new("/usr/lib/modules/x")).unwrap(),
            Some(f)
        );
        let g = tree
            .insert(
                Path::new("/usr/lib/modules/x"),
                Node {
                    meta: meta(0o600),
                    kind: Kind::File(Data::Bytes(b"2".to_vec())),
                    origin: Origin::BaseImage(0),
                },
            )
            .unwrap();
        assert_eq!(tree.lookup(Path::new("/lib/modules/x")).unwrap(), Some(g));
        assert!(tree
            .insert(
                Path::new("/usr"),
                Node {
                    meta: meta(0o644),
                    kind: Kind::File(Data::Bytes(vec![])),
                    origin: Origin::BaseImage(0),
                }
            )
            .is_err());
    }

    #[test]
    fn names_ext2_cannot_hold_and_directory_hard_links_are_refused() {
        let meta = meta(0o755);
        let mut tree = Tree::new(meta);
        let long = format!("/etc/{}", "n".repeat(256));
        let e = tree
            .insert(
                Path::new(&long),
                Node {
                    meta,
                    kind: Kind::File(Data::Bytes(vec![])),
                    origin: Origin::BaseImage(0),
                },
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("a name of 256 bytes; at most 255"), "{e}");
        let e = tree
            .insert(
                Path::new("/etc/long-link"),
                Node {
                    meta,
                    kind: Kind::Symlink(vec![b'x'; 4096]),
                    origin: Origin::BaseImage(0),
                },
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("a symlink target of 4096 bytes"), "{e}");
        let dir = tree.mkdir_p(Path::new("/d")).unwrap();
        let e = tree.link(Path::new("/d2"), dir).unwrap_err().to_string();
        assert!(e.contains("a hard link to a directory"), "{e}");
    }

    #[test]
    fn more_hard_links_than_an_inode_counts_are_refused() {
        let meta = meta(0o755);
        let mut tree = Tree::new(meta);
        tree.mkdir_p(Path::new("/lost+found")).unwrap();
        let file = tree
            .insert(
                Path::new("/f"),
                Node {
                    meta,
                    kind: Kind::File(Data::Bytes(vec![])),
                    origin: Origin::BaseImage(0),
                },
            )
            .unwrap();
        for i in 0..MAX_LINKS {
            tree.link(Path::new(&format!("/l{i}")), file).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("root");
        let host = RootFs::host().unwrap();
        let roots = Sources {
            build: &host,
            host: &host,
        };
        let target = Image {
            path: &image,
            file: fs::File::create(&image).unwrap(),
            size: 64 << 20,
            uuid: [0; 16],
            now: 0,
        };
        let e = write_image(&tree, target, roots, &Reporter::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("an inode with 65001 hard links; ext2 allows 65000"),
            "{e}"
        );
    }

    #[test]
    fn image_sizes_are_bounded_both_ways() {
        for huge in [1u64 << 63, u64::MAX, MAX_IMAGE_SIZE + 1] {
            let e = check_size(huge).unwrap_err().to_string();
            assert!(e.contains("larger than ext2 allows"), "{e}");
        }
        assert!(check_size(4096)
            .unwrap_err()
            .to_string()
            .contains("too small"));
        assert!(check_size(MAX_IMAGE_SIZE).is_ok());
    }

    #[test]
    fn backup_superblocks_follow_sparse_super() {
        let with: Vec<u64> = (0..60).filter(|&g| has_super(g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49]);
    }
}
