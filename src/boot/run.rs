//! One run's initrd: an appliance's initrd with a small archive appended
//! that holds the command and the input files (`/supermin-run/command`,
//! `/supermin-run/in/...`; `init/main.rs` reads them with
//! `supermin.run=@`), and the way back: the guest's `/out` written as an
//! archive onto a disk of its own, read here into a host directory.
//!
//! The kernel unpacks every archive of a concatenated initrd in turn,
//! compressed or not, so neither the command nor the files go through the
//! kernel command line (2,000 bytes) or need a device and its driver in
//! the guest: any size, any appliance, no modules.  Output files do need
//! a device, a plain virtio disk that the guest writes a newc archive to,
//! with no filesystem: under TCG it moves tens of MB/s where the serial
//! console moves under 1 MB/s (README, "Benchmarks").  The drivers it and
//! a 9p share need travel in the same appended archive
//! (`/supermin-run/modules/`), so the cached appliance stays the same
//! whether a run asks for them or not.

use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::protocol::RUN_DIR;
pub use super::protocol::{GUEST_OUTPUT_DIR, OUTPUT_DISK_SERIAL, SHARE_TAG};
use super::{cpio, initrd, kernel};
use crate::error::{Error, IoContext, Result};
use crate::outdir::{OutDir, Parents};
use crate::report::Reporter;

/// The drivers of the output disk and of a 9p share (with dependencies).
const OUTPUT_DISK_MODULES: &[&str] = &["virtio_pci.ko*", "virtio_blk.ko*"];
const SHARE_MODULES: &[&str] = &["virtio_pci.ko*", "9pnet_virtio.ko*", "9p.ko*"];

/// What a run exchanges with the host besides the command and inputs.
#[derive(Debug, Clone, Default)]
pub struct Channels {
    /// Send the guest's [`GUEST_OUTPUT_DIR`] back on the output disk.
    pub outputs: bool,
    /// Mount the share ([`SHARE_TAG`]) at this path in the appliance.
    pub share: Option<PathBuf>,
    /// The kernel's module directory, for the drivers of the two.
    pub modules: Option<PathBuf>,
}

/// The module directory of the kernel at `kernel` (`override_dir` when
/// given, as `SUPERMIN_MODULES` says), for [`Channels::modules`].
pub fn modules_directory(kernel: &Path, override_dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = override_dir {
        return Ok(dir.to_path_buf());
    }
    let search = kernel::Search::host(None);
    let version = kernel::version_of(kernel, &search).ok_or_else(|| Error::Kernel {
        path: Some(kernel.to_path_buf()),
        message: format!(
            "cannot tell the version of the kernel {}, to find the modules of its output disk or share",
            kernel.display()
        ),
    })?;
    Ok(search.lib_modules.join(version))
}

/// An input file: where it goes in the appliance, and the host file.
#[derive(Debug, Clone)]
pub struct Input {
    pub guest: PathBuf,
    pub host: PathBuf,
}

/// Write `dest`: the initrd `base`, then (4-byte aligned, as the kernel
/// wants the next archive) an archive with `command`, `inputs`, and what
/// `channels` need in the guest.
pub fn write_run_initrd(
    base: &Path,
    dest: &Path,
    command: &str,
    inputs: &[Input],
    channels: &Channels,
) -> Result<()> {
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut inputs = inputs
        .iter()
        .map(|input| {
            let guest = guest_path(&input.guest)?;
            if let Some(other) = seen
                .iter()
                .find(|s| s.starts_with(&guest) || guest.starts_with(s))
            {
                return Err(Error::Usage(format!(
                    "{} and {}: one input file would hide the other",
                    other.display(),
                    guest.display()
                )));
            }
            seen.push(guest.clone());
            Ok(Input {
                guest,
                host: input.host.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Parents before children, one entry per directory.
    inputs.sort_by(|a, b| a.guest.cmp(&b.guest));
    let copied = fs::copy(base, dest).at("copying", base)?;
    let file = fs::OpenOptions::new()
        .append(true)
        .open(dest)
        .at("opening", dest)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&[0u8; 3][..((4 - copied % 4) % 4) as usize])
        .at("writing", dest)?;
    let mut archive = cpio::Writer::new(&mut out);
    let mut ino = 0u32;
    let mut next = |mode: u32| {
        ino += 1;
        cpio::Header {
            ino,
            mode,
            nlink: 1,
            ..cpio::Header::default()
        }
    };
    let mut dirs_made = std::collections::BTreeSet::new();
    let mut dir = |archive: &mut cpio::Writer<_>, name: &[u8], header: cpio::Header| {
        if dirs_made.insert(name.to_vec()) {
            archive.entry(header, name, &[])
        } else {
            Ok(())
        }
    };
    let named = |leaf: &str| format!("{RUN_DIR}/{leaf}");
    // The small files: the command, and what the channels want.
    let mut small = vec![(named("command"), command.as_bytes().to_vec())];
    if channels.outputs {
        small.push((named("outputs"), Vec::new()));
    }
    if let Some(share) = &channels.share {
        let guest = guest_path(share)?;
        small.push((named("share"), guest.as_os_str().as_bytes().to_vec()));
    }
    let modules = channel_modules(channels)?;
    let mut directories = vec![(RUN_DIR.to_string(), 0o700), (named("in"), 0o755)];
    if !modules.is_empty() {
        directories.push((named("modules"), 0o700));
    }
    for (name, mode) in directories {
        dir(&mut archive, name.as_bytes(), next(libc::S_IFDIR | mode)).at("writing", dest)?;
    }
    // Numbered: the guest loads them in name order, dependencies first.
    let modules = modules
        .into_iter()
        .enumerate()
        .map(|(n, (name, image))| (named(&format!("modules/{n:03}-{name}")), image));
    for (name, data) in small.into_iter().chain(modules) {
        archive
            .entry(next(libc::S_IFREG | 0o600), name.as_bytes(), &data)
            .at("writing", dest)?;
    }
    for input in &inputs {
        let relative = &input.guest;
        let name = Path::new(&named("in")).join(relative);
        // Its parents, as directories of the appliance's usual mode.
        let mut parent = PathBuf::from(named("in"));
        for part in relative.parent().into_iter().flat_map(|p| p.components()) {
            parent.push(part);
            dir(
                &mut archive,
                parent.as_os_str().as_bytes(),
                next(libc::S_IFDIR | 0o755),
            )
            .at("writing", dest)?;
        }
        // Not blocking on a FIFO, not a terminal's controlling open.
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(&input.host)
                .at("opening", &input.host)?
        };
        let meta = file.metadata().at("reading", &input.host)?;
        if !meta.is_file() {
            return Err(Error::Usage(format!(
                "{}: an input file must be a regular file",
                input.host.display()
            )));
        }
        let size = u32::try_from(meta.len()).map_err(|_| {
            Error::Usage(format!(
                "{}: {} bytes, more than a cpio archive holds",
                input.host.display(),
                meta.len()
            ))
        })?;
        let header = cpio::Header {
            size,
            mode: libc::S_IFREG | (meta.mode() & 0o7777),
            ..next(0)
        };
        archive
            .header(&header, name.as_os_str().as_bytes())
            .at("writing", dest)?;
        archive
            .data_from(&file, 0, u64::from(size), || Ok(()))
            .at("copying", &input.host)?;
        archive.end_data().at("writing", dest)?;
    }
    archive.finish().at("writing", dest)?;
    out.into_inner()
        .map_err(|e| e.into_error())
        .at("writing", dest)?;
    Ok(())
}

/// The decompressed drivers `channels` need, in load order (none built
/// into the kernel is listed in `modules.dep`, and none is needed).
fn channel_modules(channels: &Channels) -> Result<Vec<(String, Vec<u8>)>> {
    let mut wanted: Vec<&str> = Vec::new();
    if channels.outputs {
        wanted.extend(OUTPUT_DISK_MODULES);
    }
    if channels.share.is_some() {
        wanted.extend(SHARE_MODULES);
    }
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let Some(dir) = &channels.modules else {
        return Err(Error::Usage(
            "output files and a share need the kernel's module directory".into(),
        ));
    };
    let deps = initrd::read_module_deps(dir)?;
    initrd::modules_in_load_order(&deps, &wanted, &[])
        .into_iter()
        .map(|module| {
            let image = initrd::read_module(&dir.join(&module))?;
            Ok((initrd::decompressed_name(&module).to_string(), image))
        })
        .collect()
}

/// The largest name (or symlink target) an output entry may have.
const MAX_OUTPUT_NAME: usize = 4096;
/// The most entries an output archive may hold: each costs the host an
/// inode and a block, whatever the few bytes it takes on the disk.
pub const MAX_OUTPUT_ENTRIES: usize = 100_000;
/// Marks a directory `read_outputs` made, which a later run may replace.
pub const OUTPUTS_MARKER: &str = ".supermin-outputs";

/// May `dest` receive a run's outputs?  It must be missing, an empty
/// directory, or one a run made (it is replaced whole).  Checked before
/// the guest boots, and again by [`read_outputs`].
pub fn check_outputs_dir(dest: &Path) -> Result<()> {
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("reading", dest, e)),
        Ok(meta) if !meta.is_dir() => Err(Error::output(
            dest,
            "is not a directory (a symlink is not followed): name a new or empty directory for the outputs",
        )),
        Ok(_) => {
            let mut names = fs::read_dir(dest).at("reading", dest)?;
            let ours = fs::symlink_metadata(dest.join(OUTPUTS_MARKER)).is_ok_and(|m| m.is_file());
            if ours || names.next().is_none() {
                Ok(())
            } else {
                Err(Error::output(
                    dest,
                    "holds files a run did not write; name a new or empty directory for the outputs \
                     (it is replaced whole)",
                ))
            }
        }
    }
}

/// Read the archive the guest wrote to the output `disk` into a fresh
/// directory that then replaces `dest` ([`check_outputs_dir`]), so that a
/// bad or cut archive, a full disk or Ctrl-C leaves `dest` as it was.
/// Kept: directories (0755), regular files (0644, or 0755 if the guest
/// made them executable: the guest's owners and other bits are not kept),
/// and symlinks whose target stays inside (relative, never above `dest`);
/// the rest is left out with a warning.  Every parent must come before its
/// children as a directory (the mini init writes them so), never through
/// a symlink.  Returns the entries written, as relative paths.
pub fn read_outputs(disk: &Path, dest: &Path, reporter: &Reporter) -> Result<Vec<PathBuf>> {
    check_outputs_dir(dest)?;
    let staging = crate::output::Staging::new(dest, &[])?;
    let out = staging.outdir()?;
    let written = read_archive(disk, dest, &out, reporter)?;
    let marker = out
        .place(&Path::new("/").join(OUTPUTS_MARKER), Parents::Existing)
        .and_then(|p| p.create_file())
        .at("writing", staging.path())?;
    drop(marker);
    reporter.check()?;
    staging.commit()?;
    Ok(written)
}

/// [`read_outputs`]' reading and writing, into `out`.
fn read_archive(
    disk: &Path,
    dest: &Path,
    out: &OutDir,
    reporter: &Reporter,
) -> Result<Vec<PathBuf>> {
    use std::io::Read;
    let file = fs::File::open(disk).at("opening", disk)?;
    let disk_len = file.metadata().at("reading", disk)?.len();
    let mut input = std::io::BufReader::with_capacity(1 << 20, file);
    let bad = |why: String| Error::Output {
        path: dest.to_path_buf(),
        message: format!("the appliance's archive of its {GUEST_OUTPUT_DIR} {why}"),
    };
    let mut offset = 0u64;
    let mut written = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let read_exact =
        |input: &mut std::io::BufReader<fs::File>, buf: &mut [u8], offset: &mut u64| {
            input
                .read_exact(buf)
                .map_err(|e| bad(format!("ends early at byte {offset}: {e}")))?;
            *offset += buf.len() as u64;
            Ok::<(), Error>(())
        };
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        reporter.check()?;
        let mut header = [0u8; 110];
        read_exact(&mut input, &mut header, &mut offset)?;
        if &header[..6] != b"070701" {
            return Err(if offset == 110 && header.iter().all(|&b| b == 0) {
                bad("is missing: the appliance did not write it back".into())
            } else {
                bad(format!("has no newc header at byte {}", offset - 110))
            });
        }
        let field = |i: usize| {
            std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i])
                .ok()
                .filter(|t| t.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|t| u32::from_str_radix(t, 16).ok())
                .ok_or_else(|| bad(format!("has a bad header at byte {}", offset - 110)))
        };
        let (mode, size, name_len) = (field(1)?, u64::from(field(6)?), field(11)? as usize);
        if name_len == 0 || name_len > MAX_OUTPUT_NAME || size > disk_len {
            return Err(bad(format!("has a bad header at byte {}", offset - 110)));
        }
        let mut name = vec![0u8; name_len];
        read_exact(&mut input, &mut name, &mut offset)?;
        if name.pop() != Some(0) {
            return Err(bad("has a name without its NUL".into()));
        }
        let mut pad = [0u8; 3];
        let skip = |offset: u64| ((4 - offset % 4) % 4) as usize;
        let n = skip(offset);
        read_exact(&mut input, &mut pad[..n], &mut offset)?;
        if name == b"TRAILER!!!" {
            break;
        }
        let shown = String::from_utf8_lossy(&name).into_owned();
        let relative = relative_path(Path::new(std::ffi::OsStr::from_bytes(&name)))
            .ok()
            .filter(|r| r.as_os_str() != OUTPUTS_MARKER)
            .ok_or_else(|| bad(format!("names {shown:?}, not a path inside the output")))?;
        if !seen.insert(relative.clone()) {
            return Err(bad(format!("names {shown:?} twice")));
        }
        if seen.len() > MAX_OUTPUT_ENTRIES {
            return Err(bad(format!("has more than {MAX_OUTPUT_ENTRIES} entries")));
        }
        let at = dest.join(&relative);
        let mut data = (&mut input).take(size);
        let place = || {
            out.place(&Path::new("/").join(&relative), Parents::Existing)
                .map_err(|e| {
                    bad(format!(
                        "puts {shown:?} where its parent is not a directory it sent before: {e}"
                    ))
                })
        };
        let kept = match mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let place = place()?;
                place.make_dir().at("creating", &at)?;
                place.chmod(0o755).at("writing", &at)?;
                true
            }
            libc::S_IFREG => {
                let place = place()?;
                let mut file = place.create_file().at("creating", &at)?;
                loop {
                    reporter.check()?;
                    let got = data.read(&mut buffer).at("reading", disk)?;
                    if got == 0 {
                        break;
                    }
                    std::io::Write::write_all(&mut file, &buffer[..got]).at("writing", &at)?;
                }
                let executable = mode & 0o111 != 0;
                place
                    .chmod(if executable { 0o755 } else { 0o644 })
                    .at("writing", &at)?;
                true
            }
            libc::S_IFLNK if size <= MAX_OUTPUT_NAME as u64 => {
                let mut target = Vec::new();
                data.read_to_end(&mut target).at("reading", disk)?;
                let target = PathBuf::from(std::ffi::OsStr::from_bytes(&target));
                if stays_inside(&relative, &target) {
                    place()?.symlink(&target).at("creating", &at)?;
                    true
                } else {
                    reporter.warn(format!(
                        "run: {shown} -> {} leads out of the outputs; left out",
                        target.display()
                    ));
                    false
                }
            }
            _ => {
                reporter.warn(format!(
                    "run: {shown} is not a file, directory or symlink; left out"
                ));
                false
            }
        };
        std::io::copy(&mut data, &mut std::io::sink()).at("reading", disk)?;
        if data.limit() != 0 {
            return Err(bad(format!("ends early in {shown:?}")));
        }
        offset += size;
        let n = skip(offset);
        read_exact(&mut input, &mut pad[..n], &mut offset)?;
        if kept {
            written.push(relative);
        }
    }
    Ok(written)
}

/// Does a symlink at `link` (relative to the outputs) to `target` lead to
/// a place inside them, read as the path says (relative, and its `..`
/// never above the top)?
fn stays_inside(link: &Path, target: &Path) -> bool {
    if target.as_os_str().is_empty() || target.is_absolute() {
        return false;
    }
    let mut depth = link.components().count() as i64 - 1;
    for part in target.components() {
        match part {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// A path as plain names relative to a root (`/a//b/` is `a/b`): no
/// `..`, not the root itself, no NUL; or what is wrong with it.
fn relative_path(path: &Path) -> std::result::Result<PathBuf, &'static str> {
    if path.as_os_str().as_bytes().contains(&0) {
        return Err("a NUL byte");
    }
    let mut plain = PathBuf::new();
    for part in path.components() {
        match part {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => plain.push(name),
            _ => return Err("no '..'"),
        }
    }
    if plain.as_os_str().is_empty() {
        return Err("not '/'");
    }
    Ok(plain)
}

/// A path for a file in the appliance, relative to its root
/// ([`relative_path`]), and not under the mount points the command's
/// shell gets (`/proc`, `/sys`, `/dev`).
fn guest_path(path: &Path) -> Result<PathBuf> {
    let bad = |why: &str| {
        Error::Usage(format!(
            "{}: not a path for a file in the appliance ({why})",
            path.display()
        ))
    };
    let plain = relative_path(path).map_err(bad)?;
    if ["proc", "sys", "dev"].iter().any(|m| plain.starts_with(m)) {
        return Err(bad("/proc, /sys and /dev are mounted over"));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_archive_follows_the_initrd_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        fs::write(&base, b"12345").unwrap(); // not a multiple of 4
        let input = dir.path().join("in.txt");
        fs::write(&input, b"data").unwrap();
        let dest = dir.path().join("initrd");
        let inputs = [Input {
            guest: PathBuf::from("/tmp/deep/in.txt"),
            host: input,
        }];
        write_run_initrd(&base, &dest, "echo hi", &inputs, &Channels::default()).unwrap();
        let bytes = fs::read(&dest).unwrap();
        assert_eq!(&bytes[..8], b"12345\0\0\0");
        assert_eq!(&bytes[8..14], b"070701");
        let text = String::from_utf8_lossy(&bytes);
        for name in [
            "supermin-run/command\0",
            "supermin-run/in/tmp\0",
            "supermin-run/in/tmp/deep\0",
            "supermin-run/in/tmp/deep/in.txt\0",
            "TRAILER!!!\0",
        ] {
            assert!(text.contains(name), "{name}");
        }
        let refused = |inputs: &[Input]| {
            write_run_initrd(
                &base,
                &dir.path().join("x"),
                "",
                inputs,
                &Channels::default(),
            )
            .unwrap_err()
        };
        for bad in ["/", "../etc/x", "/a/../../b", "/proc/x", "dev"] {
            let e = refused(&[Input {
                guest: PathBuf::from(bad),
                host: dest.clone(),
            }]);
            assert!(e.to_string().contains("not a path"), "{bad}: {e}");
        }
        for (a, b) in [("/a/b", "a//b/"), ("a", "/a/b")] {
            let e = refused(&[a, b].map(|g| Input {
                guest: PathBuf::from(g),
                host: dest.clone(),
            }));
            assert!(
                e.to_string().contains("would hide the other"),
                "{a} {b}: {e}"
            );
        }
        // A FIFO is refused at once, not waited on.
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = refused(&[Input {
            guest: PathBuf::from("x"),
            host: fifo,
        }]);
        assert!(e.to_string().contains("regular file"), "{e}");
    }

    #[test]
    fn outputs_replace_the_directory_whole_with_safe_modes_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, dest) = (dir.path().join("disk"), dir.path().join("out"));
        let archive = |entries: &[(&[u8], u32, &[u8])]| {
            let mut w = cpio::Writer::new(Vec::new());
            for (n, (name, mode, data)) in entries.iter().enumerate() {
                let header = cpio::Header {
                    ino: n as u32 + 1,
                    mode: *mode,
                    nlink: 1,
                    ..Default::default()
                };
                w.entry(header, name, data).unwrap();
            }
            let (mut bytes, _) = w.finish().unwrap();
            bytes.resize(bytes.len() + 4096, 0); // the rest of the disk
            fs::write(&disk, bytes).unwrap();
        };
        let reporter = Reporter::new(0);
        let read = || read_outputs(&disk, &dest, &reporter);
        let (dir_, file, link) = (libc::S_IFDIR, libc::S_IFREG, libc::S_IFLNK);
        archive(&[
            (b"d", dir_ | 0o777, b""),
            (b"d/run", file | 0o4777, b"#!/bin/sh\n"),
            (b"d/data", file | 0o666, b"x"),
            (b"d/up", link | 0o777, b"../d/data"),
            (b"abs", link | 0o777, b"/etc/shadow"),
            (b"out", link | 0o777, b"d/../../x"),
            (b"dev", dir_ | 0o755, b""),
            (b"dev/null", libc::S_IFCHR | 0o666, b""),
        ]);
        let written = read().unwrap();
        assert_eq!(
            written,
            ["d", "d/run", "d/data", "d/up", "dev"].map(PathBuf::from)
        );
        let mode = |p: &str| fs::symlink_metadata(dest.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(fs::read(dest.join("d/run")).unwrap(), b"#!/bin/sh\n");
        assert_eq!(
            (mode("d"), mode("d/run"), mode("d/data")),
            (0o755, 0o755, 0o644)
        );
        assert_eq!(
            fs::read_link(dest.join("d/up")).unwrap(),
            Path::new("../d/data")
        );
        assert!(!dest.join("abs").exists() && fs::symlink_metadata(dest.join("out")).is_err());
        assert!(dest.join(OUTPUTS_MARKER).is_file());

        // What the next run may not do leaves the last outputs as they were.
        let keep = |why: &str| {
            let e = read().unwrap_err();
            assert!(e.to_string().contains(why), "{why}: {e}");
            assert_eq!(fs::read(dest.join("d/data")).unwrap(), b"x", "{why}");
        };
        archive(&[(b"d/new", file | 0o644, b"y")]); // no parent sent first
        keep("where its parent is not a directory it sent before");
        archive(&[(b"l", link | 0o777, b"d"), (b"l/x", file | 0o644, b"y")]);
        keep("where its parent is not a directory it sent before");
        archive(&[(b"../escape", file | 0o644, b"x")]);
        keep("not a path inside the output");
        archive(&[(b"a", file | 0o644, b"x"), (b"a", file | 0o644, b"x")]);
        keep("twice");
        fs::write(&disk, vec![0u8; 4096]).unwrap();
        keep("is missing");
        archive(&[(b"big", file | 0o644, &[7u8; 100])]);
        let bytes = fs::read(&disk).unwrap();
        fs::write(&disk, &bytes[..150]).unwrap(); // cut inside the data
        keep("ends early");
        // A directory a run did not make is not replaced.
        fs::remove_dir_all(&dest).unwrap();
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("mine"), b"user's").unwrap();
        archive(&[(b"a", file | 0o644, b"x")]);
        let e = read().unwrap_err();
        assert!(e.to_string().contains("did not write"), "{e}");
        assert_eq!(fs::read(dest.join("mine")).unwrap(), b"user's");
    }
}
