//! The `chroot` format: the appliance as a directory tree.
//!
//! The tree is written in three passes: directories, symlinks and special
//! files in tree order; regular files in parallel (`copy_file_range`: the
//! kernel moves the bytes, or shares them on reflink filesystems; upstream
//! forks one `cp -p` per file) and then their extra names (hard links);
//! directory owners, modes and times last, deepest first, so that a
//! read-only directory does not stop its own entries.  Every entry is made
//! relative to a descriptor of its parent, found with no symlink allowed
//! (the tree's directories are real directories), so nothing is ever
//! written through a symlink.
//!
//! What only a directory on the builder's filesystem needs: without root,
//! owners cannot be kept, so set-id bits are dropped (as `cp -p` and GNU
//! tar do) and device nodes are skipped; a host symlink's absolute target
//! is made relative, so the tree works inside and outside a chroot.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rustix::fs::FileType;

use super::{first_few, Context, Format, Written};
use crate::error::{Error, IoContext, Result};
use crate::outdir::{OutDir, Parents, Place};
use crate::rootfs::is_root;
use crate::tree::{Contents, Kind, Meta, Origin, Tree};

/// The `chroot` format.
pub struct Chroot;

impl Format for Chroot {
    fn name(&self) -> &'static str {
        "chroot"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["fs", "filesystem"]
    }

    fn summary(&self) -> &'static str {
        "a directory tree (OUT itself)"
    }

    fn outputs(&self) -> &'static [&'static str] {
        &[]
    }

    fn write(&self, tree: Tree, out: &OutDir, cx: &Context<'_>) -> Result<Written> {
        write(&tree, out, cx)
    }
}

/// The permission bits to give an entry: set-id bits only where the
/// owner is kept (otherwise the builder would own a set-id program).
fn permissions(perm: u16, keep_owner: bool) -> u32 {
    if keep_owner {
        u32::from(perm & 0o7777)
    } else {
        u32::from(perm & 0o1777)
    }
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

/// A regular file to write in pass 2.
struct Job {
    path: PathBuf,
    node: usize,
}

/// Regular files a pass-2 task writes with one descriptor of their
/// directory (at most this many, so that a large directory is still
/// shared among threads).
const FILES_PER_TASK: usize = 32;
/// ... and at most about this many bytes, so that a few large files are
/// spread over threads too.
const BYTES_PER_TASK: u64 = 1 << 20;

fn write(tree: &Tree, out: &OutDir, cx: &Context<'_>) -> Result<Written> {
    let reporter = cx.reporter;
    let keep_owner = is_root();
    let mut written = Written::default();
    let in_output = |path: &Path| out.path().join(path.strip_prefix("/").unwrap_or(path));
    let place = |path: &Path| {
        out.place(path, Parents::Existing)
            .at("creating", in_output(path))
    };

    // Pass 1, in tree order.
    let mut dirs: Vec<(PathBuf, Meta)> = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    let mut first_name: std::collections::HashMap<usize, PathBuf> = Default::default();
    let mut links: Vec<(usize, PathBuf)> = Vec::new();
    let mut devices_skipped: Vec<String> = Vec::new();
    tree.walk(|visit| {
        reporter.check()?;
        let path = visit.path;
        let node = visit.node;
        if !visit.first {
            links.push((visit.index, path.to_path_buf()));
            return Ok(());
        }
        let at = || in_output(path);
        match &node.kind {
            Kind::Dir(_) => {
                place(path)?.make_dir().at("creating directory", at())?;
                dirs.push((path.to_path_buf(), node.meta));
            }
            Kind::File(_) => {
                first_name.insert(visit.index, path.to_path_buf());
                jobs.push(Job {
                    path: path.to_path_buf(),
                    node: visit.index,
                });
            }
            Kind::Symlink(target) => {
                let target = Path::new(std::ffi::OsStr::from_bytes(target));
                // The host's links (and the alternatives links made after
                // them) work outside the chroot too; a tarball's are as given.
                let target = if node.origin.is_host() || node.origin == Origin::Alternative {
                    relative_target(path, target)
                } else {
                    target.to_path_buf()
                };
                let dest = place(path)?;
                dest.symlink(&target).at("creating symlink", at())?;
                if keep_owner {
                    dest.chown(node.meta.uid, node.meta.gid).at("chown", at())?;
                }
                dest.set_times(times(&node.meta).0, times(&node.meta).1)
                    .at("setting times of", at())?;
            }
            Kind::Special { file_type, rdev } => {
                let kind = FileType::from_raw_mode(u32::from(*file_type));
                if !keep_owner && kind != FileType::Fifo {
                    if let Some(image) = tree.image(node.origin) {
                        let member = path.strip_prefix("/").unwrap_or(path);
                        devices_skipped.push(format!("{}: {}", image.display(), member.display()));
                    } else {
                        reporter.info(1, || {
                            format!("build: skipping special file {} (not root)", path.display())
                        });
                    }
                    return Ok(());
                }
                let dest = place(path)?;
                dest.mknod(kind, 0o600, *rdev)
                    .and_then(|()| {
                        if keep_owner {
                            dest.chown(node.meta.uid, node.meta.gid)?;
                        }
                        dest.chmod(permissions(node.meta.perm, keep_owner))?;
                        dest.set_times(times(&node.meta).0, times(&node.meta).1)
                    })
                    .at("creating device node", at())?;
                first_name.insert(visit.index, path.to_path_buf());
            }
        }
        Ok(())
    })?;
    if !devices_skipped.is_empty() {
        reporter.warn(format!(
            "{} device nodes in base images were skipped (making them needs root; the ext2 and tar formats keep them): {}",
            devices_skipped.len(),
            first_few(&devices_skipped)
        ));
    }

    // Pass 2, in parallel: regular files, a few at a time per directory
    // descriptor.
    let mut tasks: Vec<&[Job]> = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for i in 0..jobs.len() {
        if let Kind::File(data) = &tree.node(jobs[i].node).kind {
            bytes += data.len();
        }
        let next = i + 1;
        if next == jobs.len()
            || next - start == FILES_PER_TASK
            || bytes >= BYTES_PER_TASK
            || jobs[next].path.parent() != jobs[start].path.parent()
        {
            tasks.push(&jobs[start..next]);
            start = next;
            bytes = 0;
        }
    }
    let counter = reporter.counter("writing files", jobs.len() as u64);
    let dropped: u64 = tasks
        .par_iter()
        .map(|task| {
            reporter.check()?;
            let parent = task[0].path.parent().unwrap_or(Path::new("/"));
            let dir = out
                .dir(parent, Parents::Existing)
                .at("opening", in_output(parent))?;
            let mut dropped = 0;
            for job in *task {
                let name = job.path.file_name().expect("not /").to_os_string();
                let dest = Place::new(dir.clone(), name);
                dropped += write_file(tree, job.node, &dest, &in_output(&job.path), keep_owner, cx)
                    .map_err(|e| reporter.cancelled_or(e))? as u64;
                counter.tick();
            }
            Ok(dropped)
        })
        .try_reduce(|| 0, |a, b| Ok(a + b))?;
    written.setid_dropped += dropped;
    for (node, path) in &links {
        reporter.check()?;
        // A skipped device node has no first name to link to.
        let Some(first) = first_name.get(node) else {
            continue;
        };
        place(path)?
            .hard_link_to(&place(first)?)
            .at("creating hard link", in_output(path))?;
    }

    // Pass 3, deepest first: directory owners, modes and times.
    for (path, meta) in dirs.iter().rev() {
        reporter.check()?;
        let perm = permissions(meta.perm, keep_owner);
        written.setid_dropped += (perm != u32::from(meta.perm & 0o7777)) as u64;
        let (atime, mtime) = times(meta);
        place(path)?
            .set_dir_meta(
                keep_owner.then_some((meta.uid, meta.gid)),
                perm,
                atime,
                mtime,
            )
            .at("setting the owner, mode and times of", in_output(path))?;
    }
    if written.setid_dropped > 0 {
        reporter.info(1, || {
            format!(
                "build: set-user-ID/set-group-ID bits dropped from {} entries (not root: their owners cannot be kept)",
                written.setid_dropped
            )
        });
    }
    Ok(written)
}

/// Base images alone written as a chroot into `out`: the tree's rules
/// for members and this writer, without packages.  For the fuzzer and
/// tests.
#[doc(hidden)]
pub fn write_base_images(
    images: &[crate::appliance::BaseImage],
    out: &OutDir,
    reporter: &crate::report::Reporter,
) -> Result<()> {
    let tree = crate::assemble::base_images_only(images, out, None, reporter)?;
    let host = crate::rootfs::RootFs::host().at("opening", "/")?;
    let format_options = super::Options::default();
    let cx = Context {
        sources: crate::tree::Sources {
            build: &host,
            host: &host,
        },
        options: &format_options,
        now: 0,
        reporter,
    };
    write(&tree, out, &cx).map(drop)
}

/// `(atime, mtime)` as `(seconds, nanoseconds)`.
fn times(meta: &Meta) -> ((i64, i64), (i64, i64)) {
    (
        (meta.atime, i64::from(meta.atime_nsec)),
        (meta.mtime, i64::from(meta.mtime_nsec)),
    )
}

/// Write regular file `node` at `dest` with its owner (as root),
/// permissions and times, set through its descriptor.  Whether set-id
/// bits were dropped.
fn write_file(
    tree: &Tree,
    node: usize,
    dest: &Place,
    at: &Path,
    keep_owner: bool,
    cx: &Context<'_>,
) -> Result<bool> {
    let n = tree.node(node);
    let Kind::File(data) = &n.kind else {
        unreachable!("a regular file")
    };
    let source = || tree.describe(data, cx.sources);
    let output = dest.create_file().at("creating", at)?;
    match tree.open(data, cx.sources).at("reading", source())? {
        Contents::Bytes(bytes) => (&output).write_all(bytes).at("reading", source())?,
        Contents::File { file, offset, size } => {
            super::copy_range_keeping_holes(&file, offset, &output, size, cx.reporter)
                .map_err(|e| cx.reporter.cancelled_or(Error::io("copying", source(), e)))?;
        }
    }
    let meta = &n.meta;
    let perm = permissions(meta.perm, keep_owner);
    let copy_meta = || -> std::io::Result<()> {
        if keep_owner {
            std::os::unix::fs::fchown(&output, Some(meta.uid), Some(meta.gid))?;
        }
        // After chown, which clears set-id bits.
        output.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(perm))?;
        let (atime, mtime) = times(meta);
        filetime::set_file_handle_times(
            &output,
            Some(filetime::FileTime::from_unix_time(atime.0, atime.1 as u32)),
            Some(filetime::FileTime::from_unix_time(mtime.0, mtime.1 as u32)),
        )
    };
    copy_meta().at("setting the owner, mode and times of", source())?;
    Ok(perm != u32::from(meta.perm & 0o7777))
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
    fn tarball(
        dir: &Path,
        members: &[(&str, tar::EntryType, &str)],
    ) -> crate::appliance::BaseImage {
        let path = dir.join("image.tar");
        let mut builder = tar::Builder::new(std::fs::File::create(&path).unwrap());
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
                    builder
                        .append_data(&mut header, name, std::io::empty())
                        .unwrap();
                }
            }
        }
        builder.finish().unwrap();
        crate::appliance::BaseImage {
            path,
            compression: crate::appliance::Compression::None,
        }
    }

    #[test]
    fn members_after_a_symlink_is_replaced_go_to_the_new_directory() {
        use tar::EntryType::{Directory, Link, Regular, Symlink};
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
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
                ("etc/d", Link, "etc/c"),
            ],
        );
        let outdir = OutDir::open(&out).unwrap();
        let reporter = crate::report::Reporter::new(0).with_messages(Box::new(|_, _| {}));
        write_base_images(&[image], &outdir, &reporter).unwrap();
        let read = |p: &str| std::fs::read_to_string(out.join(p)).unwrap();
        assert_eq!(read("usr/lib/a"), "a");
        assert!(std::fs::symlink_metadata(out.join("lib")).unwrap().is_dir());
        assert_eq!(read("lib/b"), "b");
        assert!(
            !out.join("usr/lib/b").exists(),
            "written through the old symlink"
        );
        assert_eq!(read("etc/c"), "c", "inside the output");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(out.join("etc/c")).unwrap().ino(),
            std::fs::metadata(out.join("etc/d")).unwrap().ino(),
            "a hard link"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn set_id_bits_stay_only_with_their_owner() {
        assert_eq!(permissions(0o4755, true), 0o4755);
        assert_eq!(permissions(0o4755, false), 0o755);
        assert_eq!(permissions(0o2755, false), 0o755);
        assert_eq!(permissions(0o1777, false), 0o1777, "sticky kept");
    }
}
