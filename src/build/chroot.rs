//! The `chroot` format: the appliance as a directory tree.
//!
//! Files are copied in-process (`std::io::copy` uses `copy_file_range`, so
//! the kernel moves the bytes, or shares them on reflink filesystems) and in
//! parallel; upstream forks one `cp -p` per file.  Every host file is read
//! through the backend's [`RootFs`] (resolved inside the root, opened
//! without following a symlink, checked to be the file listed) and every
//! entry is written through [`OutDir`] (never through a symlink).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rustix::fs::FileType;

use super::fileset::normalize;
use super::FileSet;
use crate::appliance::BaseImage;
use crate::error::{with_causes, Error, IoContext, Result};
use crate::outdir::{OutDir, Parents, Place};
use crate::report::Reporter;
use crate::rootfs::{is_pseudo_file_error, FileId, RootFs};

/// What a chroot build wrote.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub files: u64,
    pub bytes: u64,
    pub hard_links: u64,
    /// Host files we could not read (non-root builds); never copied empty.
    pub unreadable: Vec<PathBuf>,
    /// Host files on kernel pseudo filesystems (`/proc`, `/sys`), whose
    /// sizes are not their contents: never copied.
    pub pseudo: Vec<PathBuf>,
    /// Set-user-ID and set-group-ID bits dropped because the owner could
    /// not be kept (non-root builds), as `cp -p` and GNU tar do.
    pub setid_dropped: u64,
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The permission bits to give an entry: set-id bits only where the
/// owner is kept (otherwise the builder would own a set-id program).
fn permissions(mode: u32, keep_owner: bool) -> u32 {
    if keep_owner {
        mode & 0o7777
    } else {
        mode & 0o1777
    }
}

/// Owner, permissions and times of a base-image member.
struct Member {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
}

/// Unpack base images in order (later ones overwrite earlier ones).
///
/// Members are written through [`OutDir`] with tar's semantics inside the
/// output: missing parents are created, and a symlink an earlier member
/// made is followed inside the output (as the appliance will see it),
/// never outside.  Names are cleaned lexically (`..` stops at `/`), as the
/// ext2 format does.  Without root, device nodes cannot be made: they are
/// skipped and named in one warning, and set-id bits are dropped.
pub fn unpack_base_images(
    images: &[BaseImage],
    out: &OutDir,
    reporter: &Reporter,
) -> Result<Stats> {
    let root = is_root();
    let mut stats = Stats::default();
    let mut skipped: Vec<String> = Vec::new();
    let sparse = crate::appliance::SparseBudget::default();
    for image in images {
        reporter.info(1, || format!("build: unpacking {}", image.path.display()));
        // Directory metadata last, deepest first, so that a read-only
        // directory does not stop its own members.
        let mut directories: Vec<(PathBuf, Member)> = Vec::new();
        let mut last_dir: Option<(PathBuf, std::sync::Arc<std::os::fd::OwnedFd>)> = None;
        image
            .for_each_member(&sparse, |entry| {
                reporter.check()?;
                // As the tarball names it, for messages.
                let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                let path =
                    normalize(&Path::new("/").join(entry.path().map_err(|e| image.error(e))?));
                if path == Path::new("/") {
                    return Ok(());
                }
                let fail = |e: io::Error| {
                    Error::bad_input(
                        &image.path,
                        format!("cannot unpack base image: {name}: {}", with_causes(&e)),
                    )
                };
                let header = entry.header();
                let member = Member {
                    uid: header.uid().map_err(fail)? as u32,
                    gid: header.gid().map_err(fail)? as u32,
                    mode: header.mode().map_err(fail)?,
                    mtime: header.mtime().map_err(fail)? as i64,
                };
                let kind = header.entry_type();
                // Consecutive members share a directory: look it up once.
                // Anything but a new regular file may change what a path
                // resolves to (a symlink made or replaced): look again.
                let plain_file = matches!(
                    kind,
                    tar::EntryType::Regular
                        | tar::EntryType::Continuous
                        | tar::EntryType::GNUSparse
                );
                if !plain_file {
                    last_dir = None;
                }
                let parent = path.parent().unwrap_or(Path::new("/")).to_path_buf();
                let dir = match &last_dir {
                    Some((p, fd)) if *p == parent => fd.clone(),
                    _ => {
                        let fd = out.dir(&parent, Parents::InRoot).map_err(fail)?;
                        last_dir = Some((parent, fd.clone()));
                        fd
                    }
                };
                let place = Place::new(dir, path.file_name().expect("not /").to_os_string());
                match kind {
                    tar::EntryType::Directory => {
                        place.make_dir().map_err(fail)?;
                        directories.push((path, member));
                        return Ok(());
                    }
                    tar::EntryType::Regular
                    | tar::EntryType::Continuous
                    | tar::EntryType::GNUSparse => {
                        let (mut file, replaced) = place.create_file_replacing().map_err(fail)?;
                        if replaced {
                            last_dir = None;
                        }
                        if kind == tar::EntryType::GNUSparse {
                            copy_sparse(entry, &mut file, reporter).map_err(fail)?;
                        } else {
                            reporter.copy(entry, &mut file).map_err(fail)?;
                        }
                        // On the descriptor: no lookup of the name again.
                        return finish_file(&file, &member, root, &mut stats).map_err(fail);
                    }
                    tar::EntryType::Symlink => {
                        let target = entry.link_name_bytes().ok_or_else(|| {
                            fail(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "symlink without a target",
                            ))
                        })?;
                        let target = std::ffi::OsStr::from_bytes(&target).to_os_string();
                        place.symlink(Path::new(&target)).map_err(fail)?;
                    }
                    tar::EntryType::Link => {
                        let target = entry.link_name().map_err(fail)?.ok_or_else(|| {
                            fail(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "hard link without a target",
                            ))
                        })?;
                        let target = normalize(&Path::new("/").join(target));
                        let existing = out.place(&target, Parents::InRoot).map_err(fail)?;
                        place.hard_link_to(&existing).map_err(fail)?;
                        // A link shares its target's owner, mode and times.
                        return Ok(());
                    }
                    tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                        if kind != tar::EntryType::Fifo && !root {
                            skipped.push(format!("{}: {name}", image.path.display()));
                            return Ok(());
                        }
                        let (file_type, dev) = match kind {
                            tar::EntryType::Char => {
                                (FileType::CharacterDevice, device(header).map_err(fail)?)
                            }
                            tar::EntryType::Block => {
                                (FileType::BlockDevice, device(header).map_err(fail)?)
                            }
                            // A FIFO has no device number (some writers leave
                            // the field blank).
                            _ => (FileType::Fifo, 0),
                        };
                        place.mknod(file_type, 0o600, dev).map_err(fail)?;
                    }
                    other => {
                        reporter.warn(format!(
                            "{}: skipping {name} (tar entry type {other:?})",
                            image.path.display()
                        ));
                        return Ok(());
                    }
                }
                finish(
                    &place,
                    &member,
                    kind == tar::EntryType::Symlink,
                    root,
                    &mut stats,
                )
                .map_err(fail)
            })
            .map_err(|e| reporter.cancelled_or(e))?;
        directories.sort_by(|a, b| b.0.cmp(&a.0));
        for (path, member) in directories {
            reporter.check()?;
            let fail = |e: io::Error| {
                Error::bad_input(
                    &image.path,
                    format!("cannot unpack base image: {}: {e}", path.display()),
                )
            };
            let place = out.place(&path, Parents::InRoot).map_err(fail)?;
            // A later member may have replaced the directory.
            if place.existing().map_err(fail)? == Some(FileType::Directory) {
                finish(&place, &member, false, root, &mut stats).map_err(fail)?;
            }
        }
    }
    if !skipped.is_empty() {
        reporter.warn(format!(
            "{} device nodes in base images were skipped (making them needs root; the ext2 format keeps them): {}",
            skipped.len(),
            first_few(&skipped)
        ));
    }
    Ok(stats)
}

/// Owner (as root), permissions and times of a regular member just
/// written, set through its descriptor.
fn finish_file(file: &fs::File, m: &Member, root: bool, stats: &mut Stats) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if root {
        std::os::unix::fs::fchown(file, Some(m.uid), Some(m.gid))?;
    }
    // After chown, which clears set-id bits.
    let perm = permissions(m.mode, root);
    if perm != m.mode & 0o7777 {
        stats.setid_dropped += 1;
    }
    file.set_permissions(fs::Permissions::from_mode(perm))?;
    let time = filetime::FileTime::from_unix_time(m.mtime, 0);
    filetime::set_file_handle_times(file, Some(time), Some(time))
}

/// A device member's number.
fn device(header: &tar::Header) -> io::Result<u64> {
    let major = header.device_major()?.unwrap_or(0);
    let minor = header.device_minor()?.unwrap_or(0);
    Ok(libc::makedev(major, minor))
}

/// Owner (as root), permissions (not of a symlink) and times of a
/// member just written.
fn finish(
    place: &Place,
    m: &Member,
    symlink: bool,
    root: bool,
    stats: &mut Stats,
) -> io::Result<()> {
    if root {
        place.chown(m.uid, m.gid)?;
    }
    if !symlink {
        // After chown, which clears set-id bits.
        let perm = permissions(m.mode, root);
        if perm != m.mode & 0o7777 {
            stats.setid_dropped += 1;
        }
        place.chmod(perm)?;
    }
    place.set_times((m.mtime, 0), (m.mtime, 0))
}

/// Copy a sparse member, leaving its holes (the runs of zeros the tar
/// reader produces for them) as holes: a 512 MiB sparse file stays small.
fn copy_sparse(entry: &mut impl Read, file: &mut fs::File, reporter: &Reporter) -> io::Result<()> {
    const BLOCK: usize = 4096;
    let mut buffer = vec![0u8; 64 * BLOCK];
    let mut length = 0u64;
    loop {
        if reporter.check().is_err() {
            return Err(io::Error::other("cancelled"));
        }
        let mut filled = 0;
        while filled < buffer.len() {
            let n = entry.read(&mut buffer[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        for chunk in buffer[..filled].chunks(BLOCK) {
            if chunk.iter().all(|&b| b == 0) {
                file.seek(io::SeekFrom::Current(chunk.len() as i64))?;
            } else {
                file.write_all(chunk)?;
            }
        }
        length += filled as u64;
    }
    file.set_len(length)
}

/// `target` rewritten relative to the directory of `link` when absolute, so
/// the tree works both inside and outside a chroot (`/usr/bin/x -> /bin/y`
/// becomes `../../bin/y`).
pub fn relative_target(link: &Path, target: &Path) -> PathBuf {
    let Ok(rest) = target.strip_prefix("/") else {
        return target.to_path_buf();
    };
    let depth = link
        .parent()
        .map(|p| p.components().count().saturating_sub(1))
        .unwrap_or(0);
    let mut out = PathBuf::new();
    for _ in 0..depth {
        out.push("..");
    }
    out.push(rest);
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Copy one host file (opened again and proved to be the file listed in
/// pass 1) to `dest`, with the owner, mode and times of the descriptor
/// read.  Never more bytes than `fstat` said: a file that grows while it
/// is copied does not grow the copy.
fn copy_file(
    root: &RootFs,
    source: &Path,
    id: FileId,
    dest: &Place,
    keep_owner: bool,
    reporter: &Reporter,
) -> io::Result<(u64, bool)> {
    let (input, meta) = root.open_same(source, id)?;
    let mut output = dest.create_file()?;
    let n = if meta.blocks() * 512 < meta.len() {
        copy_holes(&input, &mut output, meta.len(), reporter)?
    } else {
        reporter.copy(&mut input.take(meta.len()), &mut output)?
    };
    if keep_owner {
        std::os::unix::fs::fchown(&output, Some(meta.uid()), Some(meta.gid()))?;
    }
    // After chown, which clears set-id bits.
    let perm = permissions(meta.mode(), keep_owner);
    output.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(perm))?;
    filetime::set_file_handle_times(
        &output,
        Some(filetime::FileTime::from_last_access_time(&meta)),
        Some(filetime::FileTime::from_last_modification_time(&meta)),
    )?;
    Ok((n, perm != meta.mode() & 0o7777))
}

/// Copy a sparse host file's data and keep its holes (as `cp` does):
/// data runs found with `SEEK_DATA`/`SEEK_HOLE`, never past `size`.
fn copy_holes(
    input: &fs::File,
    output: &mut fs::File,
    size: u64,
    reporter: &Reporter,
) -> io::Result<u64> {
    use rustix::fs::SeekFrom;
    let mut copied = 0u64;
    let mut offset = 0u64;
    while offset < size {
        let data = match rustix::fs::seek(input, SeekFrom::Data(offset)) {
            Ok(at) => at,
            Err(rustix::io::Errno::NXIO) => break, // only a hole is left
            Err(e) => return Err(e.into()),
        };
        if data >= size {
            break;
        }
        let hole = rustix::fs::seek(input, SeekFrom::Hole(data))?.min(size);
        // SEEK_HOLE moved the offset to the hole: back to the data.
        rustix::fs::seek(input, SeekFrom::Start(data))?;
        output.seek(io::SeekFrom::Start(data))?;
        let mut run = Read::take(input, hole - data);
        copied += reporter.copy(&mut run, output)?;
        offset = hole;
    }
    output.set_len(size)?;
    Ok(copied)
}

/// One warning each for host files this user cannot read (non-root
/// builds) and files on pseudo filesystems.
pub fn warn_skipped(stats: &Stats, reporter: &Reporter) {
    let names = |paths: &[PathBuf]| -> Vec<String> {
        paths.iter().map(|p| p.display().to_string()).collect()
    };
    if !stats.unreadable.is_empty() {
        reporter.warn(format!(
            "{} host files are unreadable by this user and were skipped: {}",
            stats.unreadable.len(),
            first_few(&names(&stats.unreadable))
        ));
    }
    if !stats.pseudo.is_empty() {
        reporter.warn(format!(
            "{} host files are on kernel pseudo filesystems (/proc, /sys, ...), whose sizes are not their contents, and were skipped: {}",
            stats.pseudo.len(),
            first_few(&names(&stats.pseudo))
        ));
    }
    if stats.setid_dropped > 0 {
        reporter.info(1, || {
            format!(
                "build: set-user-ID/set-group-ID bits dropped from {} entries (not root: their owners cannot be kept)",
                stats.setid_dropped
            )
        });
    }
}

/// The first five of `items`, comma-separated, with `...` if there are
/// more: a warning names a few culprits, not thousands.
pub(crate) fn first_few(items: &[String]) -> String {
    let mut text = items[..items.len().min(5)].join(", ");
    if items.len() > 5 {
        text.push_str(&format!(", ... ({} more)", items.len() - 5));
    }
    text
}

/// Write `set` under `out` (base images must already be unpacked there),
/// reading the host files from `root`.
pub fn write(
    set: &FileSet,
    root: &RootFs,
    out: &OutDir,
    packagelist: bool,
    mut stats: Stats,
    reporter: &Reporter,
) -> Result<Stats> {
    let keep_owner = is_root();
    let mut dirs: Vec<(Place, PathBuf, fs::Metadata)> = Vec::new();
    let mut copies: Vec<(&Path, Place, FileId)> = Vec::new();
    // Later names of a multiply-linked file: (index in `copies`, place).
    let mut links: Vec<(usize, Place)> = Vec::new();
    let mut first_of_inode: HashMap<FileId, usize> = HashMap::new();
    let in_output = |path: &Path| out.path().join(path.strip_prefix("/").unwrap_or(path));

    // Pass 1, in tree order: directories, symlinks and special files, and
    // the list of regular files to copy.  Every parent of an entry is a
    // directory made before it, so no entry is written through a symlink.
    for entry in &set.entries {
        reporter.check()?;
        let dest = out
            .place(&entry.path, Parents::Existing)
            .at("creating", in_output(&entry.path))?;
        let meta = match root.symlink_metadata(&entry.source) {
            Ok(m) => m,
            Err(_) if entry.origin == super::Origin::Implied => {
                dest.make_dir()
                    .at("creating directory", in_output(&entry.path))?;
                continue;
            }
            Err(_) => continue,
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            dest.make_dir()
                .at("creating directory", in_output(&entry.path))?;
            dirs.push((dest, entry.path.clone(), meta));
        } else if ft.is_symlink() {
            // As upstream: a symlink from a base image is kept.
            if dest
                .existing()
                .at("reading", in_output(&entry.path))?
                .is_some()
            {
                continue;
            }
            let target = root
                .read_link(&entry.source)
                .at("reading symlink", root.display_path(&entry.source))?;
            let target = relative_target(&entry.path, &target);
            let at = in_output(&entry.path);
            dest.symlink(&target).at("creating symlink", &at)?;
            if keep_owner {
                dest.chown(meta.uid(), meta.gid()).at("chown", &at)?;
            }
            dest.set_times((meta.mtime(), 0), (meta.mtime(), meta.mtime_nsec()))
                .at("setting times of", &at)?;
        } else if ft.is_file() {
            let id = FileId::of(&meta);
            if meta.nlink() > 1 {
                if let Some(&first) = first_of_inode.get(&id) {
                    links.push((first, dest));
                    continue;
                }
                first_of_inode.insert(id, copies.len());
            }
            copies.push((&entry.source, dest, id));
        } else if keep_owner {
            let at = in_output(&entry.path);
            let kind = FileType::from_raw_mode(meta.mode());
            dest.mknod(kind, 0o600, meta.rdev())
                .and_then(|()| dest.chown(meta.uid(), meta.gid()))
                .and_then(|()| dest.chmod(meta.mode() & 0o7777))
                .at("creating device node", &at)?;
        } else {
            reporter.info(1, || {
                format!(
                    "build: skipping special file {} (not root)",
                    entry.path.display()
                )
            });
        }
    }

    // Pass 2, in parallel: regular files.
    let counter = reporter.counter("copying files", copies.len() as u64);
    let results: Vec<io::Result<(u64, bool)>> = copies
        .par_iter()
        .map(|(source, dest, id)| {
            if reporter.check().is_err() {
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
            let r = copy_file(root, source, *id, dest, keep_owner, reporter);
            counter.tick();
            r
        })
        .collect();
    reporter.check()?;
    let mut failed: Vec<bool> = vec![false; copies.len()];
    for (i, result) in results.into_iter().enumerate() {
        let (source, _, _) = &copies[i];
        match result {
            Ok((n, dropped)) => {
                stats.files += 1;
                stats.bytes += n;
                stats.setid_dropped += dropped as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !keep_owner => {
                stats.unreadable.push(root.display_path(source));
                failed[i] = true;
            }
            Err(e) if is_pseudo_file_error(&e) => {
                stats.pseudo.push(root.display_path(source));
                failed[i] = true;
            }
            Err(e) => return Err(Error::io("copying", root.display_path(source), e)),
        }
    }
    for (first, dest) in &links {
        if failed[*first] {
            continue;
        }
        dest.hard_link_to(&copies[*first].1)
            .at("creating hard link", out.path())?;
        stats.hard_links += 1;
    }
    warn_skipped(&stats, reporter);

    if packagelist {
        let at = in_output(Path::new("/packagelist"));
        let place = out
            .place(Path::new("/packagelist"), Parents::Existing)
            .at("creating", &at)?;
        let mut file = place.create_file().at("creating", &at)?;
        file.write_all(set.packagelist().as_bytes())
            .at("writing", &at)?;
        place.chmod(0o644).at("setting permissions of", &at)?;
    }

    // Pass 3, deepest first: directory owners, modes and times.
    for (dest, path, meta) in dirs.iter().rev() {
        reporter.check()?;
        let perm = permissions(meta.mode(), keep_owner);
        stats.setid_dropped += (perm != meta.mode() & 0o7777) as u64;
        dest.set_dir_meta(
            keep_owner.then(|| (meta.uid(), meta.gid())),
            perm,
            (meta.atime(), meta.atime_nsec()),
            (meta.mtime(), meta.mtime_nsec()),
        )
        .at("setting the owner, mode and times of", in_output(path))?;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_symlinks_become_relative_without_double_slashes() {
        assert_eq!(
            relative_target(
                Path::new("/usr/bin/awk"),
                Path::new("/etc/alternatives/awk")
            ),
            PathBuf::from("../../etc/alternatives/awk")
        );
        assert_eq!(
            relative_target(Path::new("/bin"), Path::new("/usr/bin")),
            PathBuf::from("usr/bin")
        );
        assert_eq!(
            relative_target(Path::new("/a/b"), Path::new("/")),
            PathBuf::from("..")
        );
        assert_eq!(
            relative_target(Path::new("/x"), Path::new("/")),
            PathBuf::from(".")
        );
        assert_eq!(
            relative_target(Path::new("/usr/bin/x"), Path::new("y")),
            PathBuf::from("y")
        );
    }

    /// A tarball of `(name, kind, data or link target)` members.
    fn tarball(dir: &Path, members: &[(&str, tar::EntryType, &str)]) -> BaseImage {
        let path = dir.join("image.tar");
        let mut builder = tar::Builder::new(fs::File::create(&path).unwrap());
        for (name, kind, payload) in members {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(if *kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            header.set_mtime(1_000_000);
            header.set_uid(0);
            header.set_gid(0);
            match kind {
                tar::EntryType::Regular => {
                    header.set_size(payload.len() as u64);
                    builder
                        .append_data(&mut header, name, payload.as_bytes())
                        .unwrap();
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    header.set_size(0);
                    builder.append_link(&mut header, name, payload).unwrap();
                }
                _ => {
                    header.set_size(0);
                    builder.append_data(&mut header, name, io::empty()).unwrap();
                }
            }
        }
        builder.finish().unwrap();
        BaseImage {
            path,
            compression: crate::appliance::Compression::None,
        }
    }

    #[test]
    fn members_after_a_symlink_is_replaced_go_to_the_new_directory() {
        use tar::EntryType::{Directory, Regular, Symlink};
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let image = tarball(
            dir.path(),
            &[
                ("usr/lib/", Directory, ""),
                ("lib", Symlink, "usr/lib"),
                ("lib/a", Regular, "a"),
                ("lib/", Directory, ""),
                ("lib/b", Regular, "b"),
                ("evil", Symlink, "/"),
                ("evil/etc/c", Regular, "c"),
            ],
        );
        let outdir = OutDir::open(&out).unwrap();
        let reporter = Reporter::new(0).with_messages(Box::new(|_, _| {}));
        unpack_base_images(&[image], &outdir, &reporter).unwrap();
        assert_eq!(fs::read_to_string(out.join("usr/lib/a")).unwrap(), "a");
        assert!(fs::symlink_metadata(out.join("lib")).unwrap().is_dir());
        assert_eq!(fs::read_to_string(out.join("lib/b")).unwrap(), "b");
        assert!(
            !out.join("usr/lib/b").exists(),
            "written through the old symlink"
        );
        assert_eq!(
            fs::read_to_string(out.join("etc/c")).unwrap(),
            "c",
            "inside the output"
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn set_id_bits_stay_only_with_their_owner() {
        assert_eq!(permissions(0o104755, true), 0o4755);
        assert_eq!(permissions(0o104755, false), 0o755);
        assert_eq!(permissions(0o42755, false), 0o755);
        assert_eq!(permissions(0o41777, false), 0o1777, "sticky kept");
    }
}
