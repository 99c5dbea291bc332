//! Reading supermin appliance inputs exactly as upstream does: a
//! byte-sorted, depth-first walk (directory symlinks followed) where each
//! file's kind is sniffed from its content, never its name.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{with_causes, Error, Result};

/// How a base image (or any input) is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
}

/// A tarball to unpack into the appliance, in walk order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImage {
    pub path: PathBuf,
    pub compression: Compression,
}

impl BaseImage {
    /// The decompressed tar stream.
    pub fn open(&self) -> Result<Box<dyn Read>> {
        open_decompressed(&self.path, self.compression)
    }

    /// Read the rest of the stream after the tar's end-of-archive marker,
    /// so that a corrupt gzip or xz stream is caught by its checksum (kept
    /// at the very end, where a tar reader never looks).
    pub fn read_to_end(&self, mut rest: impl Read) -> Result<()> {
        std::io::copy(&mut rest, &mut std::io::sink())
            .map(drop)
            .map_err(|e| {
                Error::bad_input(
                    &self.path,
                    format!("corrupt tar archive: {}", with_causes(&e)),
                )
            })
    }

    /// Members (absolute paths, `/etc/foo`, with kind, mode and size from
    /// their headers) in archive order.
    pub fn members(&self) -> Result<Vec<crate::package::File>> {
        use crate::package::File;
        let mut out = Vec::new();
        self.for_each_member(&SparseBudget::default(), |entry| {
            let path = entry.path().map_err(|e| self.error(e))?;
            let rel = path.strip_prefix(".").unwrap_or(&path);
            let abs = Path::new("/").join(rel.strip_prefix("/").unwrap_or(rel));
            if abs == Path::new("/") {
                return Ok(());
            }
            out.push(File::of_tar_member(abs, entry).map_err(|e| self.error(e))?);
            Ok(())
        })?;
        Ok(out)
    }

    /// `cannot read tar archive: WHY`, naming this tarball.
    pub fn error(&self, e: std::io::Error) -> Error {
        Error::bad_input(
            &self.path,
            format!("cannot read tar archive: {}", with_causes(&e)),
        )
    }

    /// Call `visit` with every member, in archive order (see
    /// [`for_each_tar_member`]), then read the stream to its very end so
    /// that a corrupt gzip or xz stream is caught by its checksum.
    pub fn for_each_member(
        &self,
        sparse: &SparseBudget,
        visit: impl FnMut(&mut tar::Entry<'_, Guarded<Box<dyn Read>>>) -> Result<()>,
    ) -> Result<()> {
        let rest = for_each_tar_member(self.open()?, |e| self.error(e), sparse, visit)?;
        self.read_to_end(rest)
    }
}

/// Call `visit` with every member of the tar stream `reader`, in archive
/// order; a member's data is read to its end afterwards if `visit` did not.
/// Returns the reader, just past the archive.
///
/// The tar crate reads a GNU long name or a pax header into memory whole,
/// whatever size its header claims: a 9 MB gzip can claim a 2 GiB name.
/// So the bytes the crate may read while finding the next member (headers,
/// long names, pax records, sparse maps) are bounded by [`HEADER_BUDGET`],
/// and a member that needs more is an error (`error` says which file).
///
/// The tar reader hands out the holes of a GNU sparse member as zeros, so
/// a tiny member can claim exabytes that take forever to read (to copy,
/// or only to skip): sparse members may claim at most what `sparse`
/// has left.
pub fn for_each_tar_member<R: Read>(
    reader: R,
    error: impl Fn(std::io::Error) -> Error,
    sparse: &SparseBudget,
    mut visit: impl FnMut(&mut tar::Entry<'_, Guarded<R>>) -> Result<()>,
) -> Result<R> {
    let budget = std::rc::Rc::new(std::cell::Cell::new(u64::MAX));
    let mut archive = tar::Archive::new(Guarded {
        inner: reader,
        budget: budget.clone(),
    });
    let mut entries = archive.entries().map_err(&error)?;
    loop {
        budget.set(HEADER_BUDGET);
        let next = entries.next();
        budget.set(u64::MAX);
        let Some(entry) = next else { break };
        let mut entry = entry.map_err(&error)?;
        if entry.header().entry_type() == tar::EntryType::GNUSparse {
            sparse.spend(entry.size()).map_err(&error)?;
        }
        visit(&mut entry)?;
        std::io::copy(&mut entry, &mut std::io::sink()).map_err(&error)?;
    }
    Ok(archive.into_inner().inner)
}

/// How many bytes the sparse members read together may claim: their holes
/// are read as zeros, several GB a second.
pub const SPARSE_BUDGET: u64 = 16 << 30;

/// What is left of [`SPARSE_BUDGET`] for one build (or one package file).
#[derive(Debug)]
pub struct SparseBudget(std::cell::Cell<u64>);

impl Default for SparseBudget {
    fn default() -> Self {
        SparseBudget(std::cell::Cell::new(SPARSE_BUDGET))
    }
}

impl SparseBudget {
    fn spend(&self, size: u64) -> std::io::Result<()> {
        let left = self.0.get().checked_sub(size).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("sparse files claim more than {SPARSE_BUDGET} bytes in all ({size} in this one)"),
            )
        })?;
        self.0.set(left);
        Ok(())
    }
}

/// How many bytes of a tar stream may be read to find one member: its
/// headers and any GNU long name, pax records or sparse map.  A path is
/// at most 4 KiB; real pax records (xattrs, ACLs) are far below this.
pub const HEADER_BUDGET: u64 = 1 << 20;

/// A tar stream with the budget of [`for_each_tar_member`].
pub struct Guarded<R> {
    inner: R,
    budget: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.budget.get();
        if left == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "a member's headers (a GNU long name, pax records or a sparse map) \
                     are larger than {HEADER_BUDGET} bytes"
                ),
            ));
        }
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if left != u64::MAX {
            self.budget.set(left - n as u64);
        }
        Ok(n)
    }
}

/// Everything read from the inputs of a build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Appliance {
    /// The paths given, as given.
    pub inputs: Vec<PathBuf>,
    pub packages: Vec<String>,
    /// glob(3) patterns of host paths.
    pub hostfiles: Vec<String>,
    /// fnmatch(3) patterns, without the leading `-`.
    pub excludes: Vec<String>,
    pub base_images: Vec<BaseImage>,
    /// Every file visited, in walk order (for `--if-newer`).
    pub files: Vec<PathBuf>,
}

impl Appliance {
    /// Does an `excludefiles` pattern match `path`?
    pub fn excluded(&self, path: &Path) -> bool {
        self.excludes
            .iter()
            .any(|pat| crate::pattern::fnmatch(pat, path))
    }
}

/// The kind of an input file, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    BaseImage,
    Packages,
    Hostfiles,
    Excludefiles,
    Empty,
}

/// Read the inputs (files or directories) of a build.
pub fn load(inputs: &[PathBuf]) -> Result<Appliance> {
    let mut appliance = Appliance {
        inputs: inputs.to_vec(),
        ..Default::default()
    };
    for input in inputs {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(input)
            .map_err(|e| Error::bad_input(input, format!("cannot read input: {e}")))?
            .uid();
        let mut walk = Walk {
            owner,
            seen: HashSet::new(),
        };
        visit(input, &mut appliance, 0, &mut walk, false)?;
    }
    Ok(appliance)
}

/// The walk of one input.
struct Walk {
    /// Who owns the input (as given, followed): the appliance's author.
    owner: u32,
    /// The directories (device, inode) entered so far.
    seen: HashSet<(u64, u64)>,
}

/// Walk `path`.  Symlinks are followed, as upstream does, but:
/// - a directory is read once: symlinks that fan out (`d0/{x,y} -> d1`,
///   `d1/{x,y} -> d2`, ...) would make the walk exponential in a few dozen
///   inodes;
/// - a file reached through a symlink (`through_link`, or the entry is
///   one) must be readable by everyone or belong to the input's owner: the
///   author of an appliance directory may not make root read, and copy
///   into the appliance, a file they could not read themselves
///   (`base.tar -> /root/backup.tar`).
fn visit(
    path: &Path,
    appliance: &mut Appliance,
    depth: usize,
    walk: &mut Walk,
    through_link: bool,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let through_link = through_link
        || (depth > 0 && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()));
    // Directory symlinks are followed, so a cycle is possible.
    if depth > 40 {
        return Err(Error::bad_input(
            path,
            "too deeply nested (a symlink loop?)",
        ));
    }
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::bad_input(path, format!("cannot read input: {e}")))?;
    if !meta.is_dir() && !meta.is_file() {
        // A FIFO would block the build forever; a device is no input.
        return Err(Error::bad_input(
            path,
            "is not a regular file or a directory (a FIFO, socket or device)",
        ));
    }
    if meta.is_dir() {
        if !walk.seen.insert((meta.dev(), meta.ino())) {
            return Err(Error::bad_input(
                path,
                "is a directory already read through another path (symlinks to one directory); \
                 an input is a tree",
            ));
        }
        let mut names: Vec<_> = std::fs::read_dir(path)
            .and_then(|rd| {
                rd.map(|e| e.map(|e| e.file_name()))
                    .collect::<std::io::Result<Vec<_>>>()
            })
            .map_err(|e| Error::bad_input(path, format!("cannot list directory: {e}")))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            visit(&path.join(name), appliance, depth + 1, walk, through_link)?;
        }
        return Ok(());
    }
    if through_link && meta.mode() & 0o004 == 0 && meta.uid() != walk.owner {
        return Err(Error::bad_input(
            path,
            format!(
                "is reached through a symlink and is a file of user {} that not everyone may read; \
                 the input's owner (user {}) may not have it read for them",
                meta.uid(),
                walk.owner
            ),
        ));
    }
    appliance.files.push(path.to_path_buf());
    let (compression, head) = sniff_compression(path)?;
    match kind_of(path, &head)? {
        Kind::Empty => {}
        Kind::BaseImage => appliance.base_images.push(BaseImage {
            path: path.to_path_buf(),
            compression,
        }),
        kind => {
            let mut text = Vec::new();
            open_decompressed(path, compression)?
                .take(MAX_LIST_BYTES + 1)
                .read_to_end(&mut text)
                .map_err(|e| Error::bad_input(path, format!("cannot read: {e}")))?;
            if text.len() as u64 > MAX_LIST_BYTES {
                return Err(Error::bad_input(
                    path,
                    format!("a list of more than {MAX_LIST_BYTES} bytes (decompressed); real ones are a few KB"),
                ));
            }
            let text = String::from_utf8(text)
                .map_err(|_| Error::bad_input(path, "not valid UTF-8 text"))?;
            if let Some((n, _)) = text
                .split('\n')
                .enumerate()
                .find(|(_, line)| line.len() > MAX_LINE_BYTES)
            {
                return Err(Error::bad_input(
                    path,
                    format!(
                        "line {}: longer than {MAX_LINE_BYTES} bytes (a package name or path pattern is far shorter)",
                        n + 1
                    ),
                ));
            }
            match kind {
                Kind::Packages => appliance
                    .packages
                    .extend(content_lines(&text).map(|(_, l)| l.trim().to_string())),
                Kind::Hostfiles => {
                    for (n, line) in content_lines(&text) {
                        // The match is written at the same path under the
                        // output, so `..` would write outside it.
                        if line.split('/').any(|c| c == "..") {
                            return Err(Error::bad_input(
                                path,
                                format!(
                                    "line {n}: hostfiles pattern has a '..' component: {line:?}"
                                ),
                            ));
                        }
                        appliance.hostfiles.push(line.to_string());
                    }
                }
                Kind::Excludefiles => {
                    for (n, line) in content_lines(&text) {
                        let Some(pattern) = line.strip_prefix('-') else {
                            return Err(Error::bad_input(
                                path,
                                format!(
                                    "line {n}: excludefiles line does not start with '-': {line:?}"
                                ),
                            ));
                        };
                        appliance.excludes.push(pattern.to_string());
                    }
                }
                Kind::BaseImage | Kind::Empty => unreachable!(),
            }
        }
    }
    Ok(())
}

/// The largest packages, hostfiles or excludefiles list read: libguestfs'
/// are a few KB.  A gzipped list can claim gigabytes.
pub const MAX_LIST_BYTES: u64 = 16 << 20;

/// The longest line of such a list (`PATH_MAX`).
pub const MAX_LINE_BYTES: usize = 4096;

/// The non-blank lines of a text file, with their line numbers (from 1).
pub(crate) fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| (n + 1, line))
}

/// The compression of a file and the first 512 decompressed bytes.
fn sniff_compression(path: &Path) -> Result<(Compression, Vec<u8>)> {
    let mut raw = Vec::with_capacity(512);
    open_input(path)?
        .take(512)
        .read_to_end(&mut raw)
        .map_err(|e| Error::bad_input(path, format!("cannot read: {e}")))?;
    let compression = if raw.starts_with(&[0x1f, 0x8b, 0x08]) {
        Compression::Gzip
    } else if raw.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Compression::Xz
    } else {
        return Ok((Compression::None, raw));
    };
    let mut head = Vec::with_capacity(512);
    open_decompressed(path, compression)?
        .take(512)
        .read_to_end(&mut head)
        .map_err(|e| Error::bad_input(path, format!("corrupt {compression:?} data: {e}")))?;
    Ok((compression, head))
}

fn kind_of(path: &Path, head: &[u8]) -> Result<Kind> {
    Ok(if head.len() >= 262 && &head[257..262] == b"ustar" {
        Kind::BaseImage
    } else if head.starts_with(b"070701") {
        return Err(Error::bad_input(
            path,
            "cpio files are not supported in this version of supermin",
        ));
    } else if head.len() >= 2 && head[0] == b'/' {
        Kind::Hostfiles
    } else if head.len() >= 2 && head[0] == b'-' {
        Kind::Excludefiles
    } else if !head.is_empty() && head[0].is_ascii_alphanumeric() {
        Kind::Packages
    } else if head.is_empty() {
        Kind::Empty
    } else {
        return Err(Error::bad_input(
            path,
            "unknown file type in supermin directory (expected a tarball, or a packages, hostfiles or excludefiles list)",
        ));
    })
}

/// Open an input file: without blocking (a FIFO swapped in after the
/// walk looked), and only if the descriptor is a regular file.
fn open_input(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| Error::bad_input(path, format!("cannot open: {e}")))?;
    match file.metadata() {
        Ok(m) if m.is_file() => Ok(file),
        _ => Err(Error::bad_input(
            path,
            "is not a regular file or a directory (a FIFO, socket or device)",
        )),
    }
}

fn open_decompressed(path: &Path, compression: Compression) -> Result<Box<dyn Read>> {
    let file = std::io::BufReader::new(open_input(path)?);
    Ok(match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(file)),
    })
}
