//! The `chroot` format: the appliance as a directory tree.
//!
//! Files are copied in-process (`std::io::copy` uses `copy_file_range`, so
//! the kernel moves the bytes, or shares them on reflink filesystems) and in
//! parallel; upstream forks one `cp -p` per file.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use rayon::prelude::*;

use super::FileSet;
use crate::appliance::BaseImage;
use crate::backend::host_path;
use crate::error::{with_causes, Error, IoContext, Result};
use crate::report::Reporter;

/// What a chroot build wrote.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub files: u64,
    pub bytes: u64,
    pub hard_links: u64,
    /// Host files we could not read (non-root builds); never copied empty.
    pub unreadable: Vec<PathBuf>,
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Unpack base images in order (later ones overwrite earlier ones).
///
/// The tar crate guards paths (`..`, absolute names, symlinks planted by
/// earlier entries, hard links leaving the output) but writes device nodes
/// and FIFOs as empty regular files, so those are made here, under the
/// same guard.  Without root, device nodes cannot be made: they are
/// skipped and named in one warning.
pub fn unpack_base_images(images: &[BaseImage], out: &Path, reporter: &Reporter) -> Result<()> {
    let root = is_root();
    let out_real = fs::canonicalize(out).at("resolving", out)?;
    let mut skipped: Vec<String> = Vec::new();
    for image in images {
        reporter.info(1, || format!("build: unpacking {}", image.path.display()));
        let bad = |e: io::Error| {
            Error::bad_input(
                &image.path,
                format!("cannot unpack base image: {}", with_causes(&e)),
            )
        };
        let mut archive = tar::Archive::new(image.open()?);
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_preserve_ownerships(root);
        archive.set_overwrite(true);
        // Directories last, deepest first, as `Archive::unpack` does, so a
        // read-only directory does not stop its own entries.
        let mut directories = Vec::new();
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            match entry.header().entry_type() {
                tar::EntryType::Directory => directories.push(entry),
                kind @ (tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo) => {
                    let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                    if kind != tar::EntryType::Fifo && !root {
                        skipped.push(format!("{}: {name}", image.path.display()));
                        continue;
                    }
                    make_special_from_tar(entry.header(), &name, &out_real, root)
                        .map_err(|e| bad(io::Error::new(e.kind(), format!("{name}: {e}"))))?;
                }
                _ => {
                    entry.unpack_in(out).map_err(bad)?;
                }
            }
        }
        directories.sort_by(|a, b| b.path_bytes().cmp(&a.path_bytes()));
        for mut dir in directories {
            dir.unpack_in(out).map_err(bad)?;
        }
        image.read_to_end(archive.into_inner())?;
    }
    if !skipped.is_empty() {
        reporter.warn(format!(
            "{} device nodes in base images were skipped (making them needs root; the ext2 format keeps them): {}",
            skipped.len(),
            first_few(&skipped)
        ));
    }
    Ok(())
}

/// Create the device node or FIFO a tar `header` describes, at `name`
/// under `out` (canonical).  Entries with `..`, or whose parent directory
/// resolves outside `out` (through a symlink an earlier entry made), are
/// refused.
fn make_special_from_tar(
    header: &tar::Header,
    name: &str,
    out: &Path,
    root: bool,
) -> io::Result<()> {
    use std::path::Component;
    let refuse = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    let mut relative = PathBuf::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(part) => relative.push(part),
            Component::ParentDir => return Err(refuse("a '..' component")),
            _ => {}
        }
    }
    let (Some(parent), Some(file_name)) = (relative.parent(), relative.file_name()) else {
        return Err(refuse("no file name"));
    };
    // Walk down from `out`, creating what is missing and checking each
    // existing step (a symlink an earlier entry made) before going on:
    // nothing may be created outside `out`, not even a directory.
    let mut dir = out.to_path_buf();
    for part in parent.components() {
        let next = dir.join(part);
        match fs::symlink_metadata(&next) {
            Ok(m) if m.is_dir() => dir = next,
            Ok(m) if m.file_type().is_symlink() => {
                let real = fs::canonicalize(&next)?;
                if !real.starts_with(out) {
                    return Err(refuse("its directory is outside the output"));
                }
                dir = real;
            }
            Ok(_) => return Err(refuse("a parent is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&next)?;
                dir = next;
            }
            Err(e) => return Err(e),
        }
    }
    let dest = dir.join(file_name);
    let device = |bits| -> io::Result<(libc::mode_t, libc::dev_t)> {
        let major = header.device_major()?.unwrap_or(0);
        let minor = header.device_minor()?.unwrap_or(0);
        Ok((bits, libc::makedev(major, minor)))
    };
    let (type_bits, rdev) = match header.entry_type() {
        tar::EntryType::Char => device(libc::S_IFCHR)?,
        tar::EntryType::Block => device(libc::S_IFBLK)?,
        // A FIFO has no device number (some writers leave the field blank).
        _ => (libc::S_IFIFO, 0),
    };
    let perm = header.mode()? & 0o7777;
    clear(&dest)?;
    mknod(&dest, type_bits | perm, rdev)?;
    if root {
        std::os::unix::fs::lchown(
            &dest,
            Some(header.uid()? as u32),
            Some(header.gid()? as u32),
        )?;
    }
    // mknod applied the umask; chown (as root) cleared set-id bits.
    fs::set_permissions(&dest, fs::Permissions::from_mode(perm))?;
    let mtime = FileTime::from_unix_time(header.mtime()? as i64, 0);
    filetime::set_symlink_file_times(&dest, mtime, mtime)
}

fn mknod(path: &Path, mode: libc::mode_t, rdev: libc::dev_t) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::mknod(c.as_ptr(), mode, rdev) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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

/// Replace whatever a base image left at `path` (a file or a symlink) so
/// that creating the package's copy never writes through a symlink.
fn clear(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a directory is in the way",
        )),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn copy_file(source: &Path, dest: &Path, meta: &fs::Metadata, keep_owner: bool) -> io::Result<u64> {
    let mut input = fs::File::open(source)?;
    clear(dest)?;
    let mut output = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)?;
    let n = io::copy(&mut input, &mut output)?;
    if keep_owner {
        std::os::unix::fs::fchown(&output, Some(meta.uid()), Some(meta.gid()))?;
    }
    // After chown, which clears set-id bits.
    output.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    filetime::set_file_handle_times(
        &output,
        Some(FileTime::from_last_access_time(meta)),
        Some(FileTime::from_last_modification_time(meta)),
    )?;
    Ok(n)
}

/// One warning for host files this user cannot read (non-root builds).
pub fn warn_unreadable(stats: &Stats, reporter: &Reporter) {
    if stats.unreadable.is_empty() {
        return;
    }
    let paths: Vec<String> = stats
        .unreadable
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    reporter.warn(format!(
        "{} host files are unreadable by this user and were skipped: {}",
        paths.len(),
        first_few(&paths)
    ));
}

/// The first five of `items`, comma-separated, with `...` if there are
/// more: a warning names a few culprits, not thousands.
fn first_few(items: &[String]) -> String {
    let mut text = items[..items.len().min(5)].join(", ");
    if items.len() > 5 {
        text.push_str(", ...");
    }
    text
}

fn make_node(dest: &Path, meta: &fs::Metadata) -> io::Result<()> {
    mknod(
        dest,
        meta.mode() as libc::mode_t,
        meta.rdev() as libc::dev_t,
    )?;
    std::os::unix::fs::lchown(dest, Some(meta.uid()), Some(meta.gid()))
}

/// A directory at `dest`, whose parent is already a real directory.  A
/// symlink a base image put there (`usr/share/doc/x -> /elsewhere`) is
/// replaced, as the ext2 format replaces it: following it could write
/// outside the output.  Every directory of the tree passes here, parents
/// first, so no file is ever written through such a symlink.
fn make_dir(dest: &Path) -> Result<()> {
    match fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(m) if m.file_type().is_symlink() => {
            fs::remove_file(dest).at("replacing symlink", dest)?;
        }
        _ => {}
    }
    fs::create_dir_all(dest).at("creating directory", dest)
}

/// Write `set` under `out` (base images must already be unpacked there).
pub fn write(
    set: &FileSet,
    root: &Path,
    out: &Path,
    packagelist: bool,
    reporter: &Reporter,
) -> Result<Stats> {
    let keep_owner = is_root();
    let mut stats = Stats::default();
    let mut dirs: Vec<(PathBuf, fs::Metadata)> = Vec::new();
    let mut copies: Vec<(PathBuf, PathBuf, fs::Metadata)> = Vec::new();
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut first_of_inode: HashMap<(u64, u64), PathBuf> = HashMap::new();

    // Pass 1, in tree order: directories, symlinks and special files, and
    // the list of regular files to copy.
    for entry in &set.entries {
        let source = host_path(root, &entry.source);
        let dest = host_path(out, &entry.path);
        let meta = match fs::symlink_metadata(&source) {
            Ok(m) => m,
            Err(_) if entry.origin == super::Origin::Implied => {
                make_dir(&dest)?;
                continue;
            }
            Err(_) => continue,
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            make_dir(&dest)?;
            // Writable by us until the final pass restores the real mode.
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o700))
                .at("setting permissions of", &dest)?;
            dirs.push((dest, meta));
        } else if ft.is_symlink() {
            // As upstream: a symlink from a base image is kept.
            if fs::symlink_metadata(&dest).is_ok() {
                continue;
            }
            let target = fs::read_link(&source).at("reading symlink", &source)?;
            let target = relative_target(&entry.path, &target);
            std::os::unix::fs::symlink(&target, &dest).at("creating symlink", &dest)?;
            if keep_owner {
                std::os::unix::fs::lchown(&dest, Some(meta.uid()), Some(meta.gid()))
                    .at("chown", &dest)?;
            }
            let mtime = FileTime::from_last_modification_time(&meta);
            filetime::set_symlink_file_times(&dest, mtime, mtime).at("setting times of", &dest)?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = first_of_inode.get(&key) {
                    links.push((first.clone(), dest));
                    continue;
                }
                first_of_inode.insert(key, dest.clone());
            }
            copies.push((source, dest, meta));
        } else if keep_owner {
            clear(&dest)
                .and_then(|()| make_node(&dest, &meta))
                .at("creating device node", &dest)?;
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
    let results: Vec<(usize, io::Result<u64>)> = copies
        .par_iter()
        .enumerate()
        .map(|(i, (source, dest, meta))| {
            let r = copy_file(source, dest, meta, keep_owner);
            counter.tick();
            (i, r)
        })
        .collect();
    let mut failed_copies: Vec<PathBuf> = Vec::new();
    for (i, result) in results {
        let (source, dest, _) = &copies[i];
        match result {
            Ok(n) => {
                stats.files += 1;
                stats.bytes += n;
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !keep_owner => {
                stats.unreadable.push(source.clone());
                failed_copies.push(dest.clone());
            }
            Err(e) => return Err(Error::io("copying", source, e)),
        }
    }
    for (first, dest) in links {
        if failed_copies.contains(&first) {
            continue;
        }
        clear(&dest)
            .and_then(|()| fs::hard_link(&first, &dest))
            .at("creating hard link", &dest)?;
        stats.hard_links += 1;
    }
    warn_unreadable(&stats, reporter);

    if packagelist {
        let path = out.join("packagelist");
        clear(&path).at("replacing", &path)?;
        fs::write(&path, set.packagelist()).at("writing", &path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
            .at("setting permissions of", &path)?;
    }

    // Pass 3, deepest first: directory owners, modes and times.
    for (dest, meta) in dirs.iter().rev() {
        if keep_owner {
            std::os::unix::fs::chown(dest, Some(meta.uid()), Some(meta.gid())).at("chown", dest)?;
        }
        fs::set_permissions(dest, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .at("setting permissions of", dest)?;
        let mtime = FileTime::from_last_modification_time(meta);
        filetime::set_file_times(dest, FileTime::from_last_access_time(meta), mtime)
            .at("setting times of", dest)?;
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
}
