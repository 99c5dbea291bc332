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

/// The largest name an output entry may have.
const MAX_OUTPUT_NAME: usize = 4096;

/// Read the archive the guest wrote to the output `disk` into `dest` (an
/// existing directory): directories, regular files (permission bits
/// without set-id: the guest's owners are not kept) and symlinks, created
/// by descriptor inside `dest` (a symlink, already there or made by an
/// earlier entry, leads inside it, never out).  Files already there of the
/// same name are replaced.  Returns the entries written, as relative paths.
/// A disk the guest did not write (all zeros) is an error that says so.
pub fn read_outputs(disk: &Path, dest: &Path) -> Result<Vec<PathBuf>> {
    use std::io::Read;
    let file = fs::File::open(disk).at("opening", disk)?;
    let disk_len = file.metadata().at("reading", disk)?.len();
    let mut input = std::io::BufReader::with_capacity(1 << 20, file);
    let out = OutDir::open(dest).at("opening", dest)?;
    let bad = |why: String| Error::Output {
        path: dest.to_path_buf(),
        message: format!("the appliance's archive of its {GUEST_OUTPUT_DIR} {why}"),
    };
    let mut offset = 0u64;
    let mut written = Vec::new();
    let read_exact =
        |input: &mut std::io::BufReader<fs::File>, buf: &mut [u8], offset: &mut u64| {
            input
                .read_exact(buf)
                .map_err(|e| bad(format!("ends early at byte {offset}: {e}")))?;
            *offset += buf.len() as u64;
            Ok::<(), Error>(())
        };
    loop {
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
            .map_err(|_| bad(format!("names {shown:?}, not a path inside the output")))?;
        let at = dest.join(&relative);
        let mut data = (&mut input).take(size);
        let kind = mode & libc::S_IFMT;
        // Devices and FIFOs do not come back, nor a symlink with a long target.
        let kept = matches!(kind, libc::S_IFDIR | libc::S_IFREG)
            || (kind == libc::S_IFLNK && size <= MAX_OUTPUT_NAME as u64);
        if kept {
            let place = out
                .place(&Path::new("/").join(&relative), Parents::InRoot)
                .at("writing", &at)?;
            match kind {
                libc::S_IFDIR => {
                    place.make_dir().at("creating", &at)?;
                    place.chmod(mode & 0o777).at("writing", &at)?;
                }
                libc::S_IFREG => {
                    let (mut file, _) = place.create_file_replacing().at("creating", &at)?;
                    std::io::copy(&mut data, &mut file).at("writing", &at)?;
                    place.chmod(mode & 0o777).at("writing", &at)?;
                }
                _ => {
                    let mut target = Vec::new();
                    data.read_to_end(&mut target).at("reading", disk)?;
                    let target = std::ffi::OsStr::from_bytes(&target);
                    place.symlink(Path::new(target)).at("creating", &at)?;
                }
            }
        }
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
        for bad in ["/", "../etc/x", "/a/../../b", "/proc/x", "dev"] {
            let inputs = [Input {
                guest: PathBuf::from(bad),
                host: dest.clone(),
            }];
            let e = write_run_initrd(
                &base,
                &dir.path().join("x"),
                "",
                &inputs,
                &Channels::default(),
            )
            .unwrap_err();
            assert!(e.to_string().contains("not a path"), "{bad}: {e}");
        }
        for (a, b) in [("/a/b", "a//b/"), ("a", "/a/b")] {
            let inputs = [a, b].map(|g| Input {
                guest: PathBuf::from(g),
                host: dest.clone(),
            });
            let e = write_run_initrd(
                &base,
                &dir.path().join("x"),
                "",
                &inputs,
                &Channels::default(),
            )
            .unwrap_err();
            assert!(
                e.to_string().contains("would hide the other"),
                "{a} {b}: {e}"
            );
        }
        // A FIFO is refused at once, not waited on.
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let inputs = [Input {
            guest: PathBuf::from("x"),
            host: fifo,
        }];
        let e = write_run_initrd(
            &base,
            &dir.path().join("x"),
            "",
            &inputs,
            &Channels::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("regular file"), "{e}");
    }

    #[test]
    fn outputs_land_inside_the_directory_without_set_id_bits() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, dest, outside) = (
            dir.path().join("disk"),
            dir.path().join("out"),
            dir.path().join("outside"),
        );
        fs::create_dir_all(&dest).unwrap();
        fs::create_dir_all(&outside).unwrap();
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
        let escape = outside.to_str().unwrap().as_bytes();
        archive(&[
            (b"d", libc::S_IFDIR | 0o750, b""),
            (b"d/run", libc::S_IFREG | 0o4755, b"#!/bin/sh\n"),
            (b"link", libc::S_IFLNK | 0o777, escape),
            (b"dev/null", libc::S_IFCHR | 0o666, b""),
        ]);
        fs::write(dest.join("d/run"), b"old").ok();
        let written = read_outputs(&disk, &dest).unwrap();
        assert_eq!(written, ["d", "d/run", "link"].map(PathBuf::from));
        assert_eq!(fs::read(dest.join("d/run")).unwrap(), b"#!/bin/sh\n");
        assert_eq!(
            fs::metadata(dest.join("d/run")).unwrap().mode() & 0o7777,
            0o755
        );
        assert_eq!(fs::metadata(dest.join("d")).unwrap().mode() & 0o7777, 0o750);
        assert_eq!(fs::read_link(dest.join("link")).unwrap(), outside);
        assert!(!dest.join("dev").exists());
        // A later archive writing through that symlink does not get out.
        archive(&[(b"link/planted", libc::S_IFREG | 0o644, b"x")]);
        let e = read_outputs(&disk, &dest).unwrap_err();
        assert!(e.to_string().contains("link/planted"), "{e}");
        assert!(fs::read_dir(&outside).unwrap().next().is_none());

        archive(&[(b"../escape", libc::S_IFREG | 0o644, b"x")]);
        let e = read_outputs(&disk, &dest).unwrap_err();
        assert!(
            e.to_string().contains("not a path inside the output"),
            "{e}"
        );
        fs::write(&disk, vec![0u8; 4096]).unwrap();
        let e = read_outputs(&disk, &dest).unwrap_err();
        assert!(e.to_string().contains("is missing"), "{e}");
        archive(&[(b"big", libc::S_IFREG | 0o644, &[7u8; 100])]);
        let bytes = fs::read(&disk).unwrap();
        fs::write(&disk, &bytes[..150]).unwrap(); // cut inside the data
        let e = read_outputs(&disk, &dest).unwrap_err();
        assert!(e.to_string().contains("ends early"), "{e}");
    }
}
