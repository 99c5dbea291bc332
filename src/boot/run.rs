//! One run's initrd: an appliance's initrd with a small archive appended
//! that holds the command and the input files (`/supermin-run/command`,
//! `/supermin-run/in/...`; `init/main.rs` reads them with
//! `supermin.run=@`).
//!
//! The kernel unpacks every archive of a concatenated initrd in turn,
//! compressed or not, so neither the command nor the files go through the
//! kernel command line (2,000 bytes) or need a device and its driver in
//! the guest: any size, any appliance, no modules.

use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::cpio;
use crate::error::{Error, IoContext, Result};

/// An input file: where it goes in the appliance, and the host file.
#[derive(Debug, Clone)]
pub struct Input {
    pub guest: PathBuf,
    pub host: PathBuf,
}

/// Write `dest`: the initrd `base`, then (4-byte aligned, as the kernel
/// wants the next archive) an archive with `command` and `inputs`.
pub fn write_run_initrd(base: &Path, dest: &Path, command: &str, inputs: &[Input]) -> Result<()> {
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
    dir(&mut archive, b"supermin-run", next(libc::S_IFDIR | 0o700)).at("writing", dest)?;
    dir(
        &mut archive,
        b"supermin-run/in",
        next(libc::S_IFDIR | 0o755),
    )
    .at("writing", dest)?;
    archive
        .entry(
            next(libc::S_IFREG | 0o600),
            b"supermin-run/command",
            command.as_bytes(),
        )
        .at("writing", dest)?;
    for input in &inputs {
        let relative = &input.guest;
        let name = Path::new("supermin-run/in").join(relative);
        // Its parents, as directories of the appliance's usual mode.
        let mut parent = PathBuf::from("supermin-run/in");
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

/// A guest path as plain names relative to the appliance's root (`/a//b/`
/// is `a/b`): no `..`, not the root itself, no NUL, and not under the
/// mount points the command's shell gets (`/proc`, `/sys`, `/dev`).
fn guest_path(path: &Path) -> Result<PathBuf> {
    let bad = |why: &str| {
        Error::Usage(format!(
            "{}: not a path for a file in the appliance ({why})",
            path.display()
        ))
    };
    if path.as_os_str().as_bytes().contains(&0) {
        return Err(bad("a NUL byte"));
    }
    let mut plain = PathBuf::new();
    for part in path.components() {
        match part {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => plain.push(name),
            _ => return Err(bad("no '..'")),
        }
    }
    if plain.as_os_str().is_empty() {
        return Err(bad("not '/'"));
    }
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
        write_run_initrd(&base, &dest, "echo hi", &inputs).unwrap();
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
            let e = write_run_initrd(&base, &dir.path().join("x"), "", &inputs).unwrap_err();
            assert!(e.to_string().contains("not a path"), "{bad}: {e}");
        }
        for (a, b) in [("/a/b", "a//b/"), ("a", "/a/b")] {
            let inputs = [a, b].map(|g| Input {
                guest: PathBuf::from(g),
                host: dest.clone(),
            });
            let e = write_run_initrd(&base, &dir.path().join("x"), "", &inputs).unwrap_err();
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
        let e = write_run_initrd(&base, &dir.path().join("x"), "", &inputs).unwrap_err();
        assert!(e.to_string().contains("regular file"), "{e}");
    }
}
