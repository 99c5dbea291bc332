//! The `tar` format: `OUT/root.tar`, the appliance as one deterministic
//! tar archive, fit for `podman import` / `docker import` or for unpacking
//! anywhere.
//!
//! Entries come in byte order of names, parents first; owners, modes and
//! link targets are the tree's (exact whoever builds, as in the ext2
//! image); times are clamped to `SOURCE_DATE_EPOCH` when it is set; a
//! second name of a file is a hard-link entry; user and group names are
//! left empty, so only numbers matter.  GNU headers carry long names.
//! Headers are laid out first, so that every file's place in the archive
//! is known; the bytes are then moved by the kernel (`copy_file_range`)
//! into those places, files in parallel.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{copy_range, Context, Format, Written};
use crate::error::{Error, IoContext, Result};
use crate::outdir::{OutDir, Parents};
use crate::tree::{Contents, Kind, Node, Tree};

/// The `tar` format.
pub struct Tar;

/// The archive's name inside OUT.
const ARCHIVE: &str = "root.tar";

impl Format for Tar {
    fn name(&self) -> &'static str {
        "tar"
    }

    fn summary(&self) -> &'static str {
        "OUT/root.tar, a deterministic tar of the appliance (podman/docker import)"
    }

    fn outputs(&self) -> &'static [&'static str] {
        &[ARCHIVE]
    }

    fn write(&self, mut tree: Tree, out: &OutDir, cx: &Context<'_>) -> Result<Written> {
        if let Some(epoch) = cx.options.epoch {
            tree.clamp_times(epoch.min(i64::MAX as u64) as i64);
        }
        let name = format!("/{ARCHIVE}");
        let path = out.path().join(ARCHIVE);
        let file = out
            .place(Path::new(&name), Parents::Existing)
            .and_then(|p| p.create_file())
            .at("creating", &path)?;
        let mut archive = Archive {
            file: &file,
            path: &path,
            at: 0,
            headers: tar::Builder::new(Vec::new()),
            data: Vec::new(),
        };
        let mut first_name: HashMap<usize, PathBuf> = HashMap::new();
        tree.walk(|visit| {
            cx.reporter.check()?;
            let name = visit.path.strip_prefix("/").expect("absolute");
            if !visit.first {
                let first = &first_name[&visit.index];
                return archive.link(name, first, visit.node);
            }
            if !matches!(visit.node.kind, Kind::Dir(_)) {
                first_name.insert(visit.index, name.to_path_buf());
            }
            archive.entry(name, visit.index, visit.node, cx)
        })?;
        archive.copy_data(&tree, cx)?;
        archive.finish()?;
        super::set_private_if_needed(&tree, out, &name, cx.reporter)?;
        Ok(Written::default())
    }
}

/// The archive being written, with positional writes.
struct Archive<'a> {
    file: &'a fs::File,
    path: &'a Path,
    /// Where the next entry goes.
    at: u64,
    /// Makes the header blocks of one entry (with a GNU long-name entry
    /// before it when needed); its bytes are taken after each entry.
    headers: tar::Builder<Vec<u8>>,
    /// Regular files' nodes and where their bytes go.
    data: Vec<(usize, u64)>,
}

const BLOCK: u64 = 512;

impl Archive<'_> {
    fn write_at(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all_at(bytes, self.at)
            .at("writing", self.path)?;
        self.at += bytes.len() as u64;
        Ok(())
    }

    /// The header blocks for `header` at `name` (`link`: the target of a
    /// symlink or hard link).
    fn header(&mut self, mut header: tar::Header, name: &Path, link: Option<&Path>) -> Result<()> {
        let made = match link {
            Some(target) => self.headers.append_link(&mut header, name, target),
            None => self.headers.append_data(&mut header, name, io::empty()),
        };
        made.map_err(|e| Error::output(self.path, format!("{}: {e}", name.display())))?;
        let bytes = std::mem::take(self.headers.get_mut());
        self.write_at(&bytes)
    }

    fn entry(
        &mut self,
        name: &Path,
        node_index: usize,
        node: &Node,
        cx: &Context<'_>,
    ) -> Result<()> {
        let mut header = header_of(node);
        match &node.kind {
            Kind::Dir(_) => {
                header.set_entry_type(tar::EntryType::Directory);
                let mut dir = name.as_os_str().to_os_string();
                dir.push("/");
                self.header(header, Path::new(&dir), None)
            }
            Kind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                let target = Path::new(std::ffi::OsStr::from_bytes(target));
                self.header(header, name, Some(target))
            }
            Kind::Special { file_type, rdev } => {
                let kind = match u32::from(*file_type) {
                    libc::S_IFCHR => tar::EntryType::Char,
                    libc::S_IFBLK => tar::EntryType::Block,
                    libc::S_IFIFO => tar::EntryType::Fifo,
                    _ => {
                        cx.reporter
                            .info(1, || format!("tar: skipping socket {}", name.display()));
                        return Ok(());
                    }
                };
                header.set_entry_type(kind);
                let device =
                    |e: io::Error| Error::output(self.path, format!("{}: {e}", name.display()));
                header
                    .set_device_major(libc::major(*rdev))
                    .map_err(device)?;
                header
                    .set_device_minor(libc::minor(*rdev))
                    .map_err(device)?;
                self.header(header, name, None)
            }
            Kind::File(data) => {
                let size = data.len();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(size);
                self.header(header, name, None)?;
                // The bytes are copied later, in parallel, to this offset.
                self.data.push((node_index, self.at));
                self.at += size.next_multiple_of(BLOCK);
                Ok(())
            }
        }
    }

    /// Copy every file's bytes to its place, in parallel (each write is
    /// positional; what is not written reads as zeros: the padding, and
    /// the bytes of a file that shrank since it was listed, as in an ext2
    /// image).  A file that cannot be read fails the build.
    fn copy_data(&self, tree: &Tree, cx: &Context<'_>) -> Result<()> {
        let counter = cx.reporter.counter("writing files", self.data.len() as u64);
        self.data
            .par_iter()
            .try_for_each(|&(node, at)| {
                cx.reporter.check()?;
                let Kind::File(data) = &tree.node(node).kind else {
                    unreachable!("a regular file")
                };
                let source = || tree.describe(data, cx.sources);
                match tree.open(data, cx.sources).at("reading", source())? {
                    Contents::Bytes(bytes) => {
                        self.file.write_all_at(bytes, at).at("writing", self.path)?
                    }
                    Contents::File { file, offset, size } => {
                        copy_range(&file, offset, self.file, at, size, cx.reporter).map_err(
                            |e| cx.reporter.cancelled_or(Error::io("copying", source(), e)),
                        )?;
                    }
                }
                counter.tick();
                Ok(())
            })
            .map_err(|e| cx.reporter.cancelled_or(e))
    }

    /// A second name of a file already in the archive.
    fn link(&mut self, name: &Path, first: &Path, node: &Node) -> Result<()> {
        let mut header = header_of(node);
        header.set_entry_type(tar::EntryType::Link);
        self.header(header, name, Some(first))
    }

    /// Two zero blocks end the archive.  (Not fsynced: like the other
    /// formats' large files, it is written back as the system sees fit.)
    fn finish(mut self) -> Result<()> {
        self.write_at(&[0; 2 * BLOCK as usize])?;
        self.file.set_len(self.at).at("writing", self.path)
    }
}

/// A GNU header with `node`'s owner, mode and modification time.
fn header_of(node: &Node) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_mode(u32::from(node.meta.perm & 0o7777));
    header.set_uid(u64::from(node.meta.uid));
    header.set_gid(u64::from(node.meta.gid));
    header.set_mtime(node.meta.mtime.max(0) as u64);
    header.set_size(0);
    header
}
