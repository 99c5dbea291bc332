//! The uncompressed kernel inside an x86 bzImage, for booting through its
//! PVH entry point.
//!
//! Given a bzImage, qemu starts the guest in real mode, the firmware and
//! the kernel's setup code run, and the kernel then decompresses itself:
//! under TCG that is about half of the time from qemu's start to a running
//! init (6.4 s → 3.1 s for a small initramfs appliance here).  Given the
//! ELF `vmlinux` whose notes name a PVH entry (`CONFIG_PVH`, which
//! distribution kernels have), qemu loads it as it is and starts it in
//! 32-bit mode.  So `boot()` extracts it once per kernel into a cache.
//!
//! The payload is found through the boot protocol's `payload_offset` and
//! `payload_length` fields (protocol 2.08, 2008) and decompressed in
//! process (gzip, xz, zstd; others are left to the bzImage path).

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};

/// The largest kernel read and the largest `vmlinux` made (a distribution
/// kernel is about 10 MB compressed and 70 MB unpacked).
const MAX_BZIMAGE: u64 = 256 << 20;
const MAX_VMLINUX: u64 = 256 << 20;

/// Xen's note type for the 32-bit physical entry point (`elfnote.h`).
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// Why a kernel cannot be booted through PVH (then the bzImage is).
pub type Unsupported = String;

/// The `vmlinux` inside `bzimage`, if it has a PVH entry point.
pub fn vmlinux(bzimage: &[u8]) -> std::result::Result<Vec<u8>, Unsupported> {
    let field = |at: usize, len: usize| -> std::result::Result<u64, Unsupported> {
        let bytes = bzimage
            .get(at..at + len)
            .ok_or("shorter than a bzImage header")?;
        Ok(bytes
            .iter()
            .rev()
            .fold(0u64, |n, &b| (n << 8) | u64::from(b)))
    };
    if bzimage.get(0x202..0x206) != Some(b"HdrS") {
        return Err("not an x86 bzImage".into());
    }
    if field(0x206, 2)? < 0x208 {
        return Err("boot protocol older than 2.08 (no payload fields)".into());
    }
    let setup_sectors = match field(0x1f1, 1)? {
        0 => 4,
        n => n,
    };
    let start = (setup_sectors + 1) * 512 + field(0x248, 4)?;
    let end = start + field(0x24c, 4)?;
    let payload = usize::try_from(start)
        .ok()
        .zip(usize::try_from(end).ok())
        .and_then(|(s, e)| bzimage.get(s..e))
        .ok_or("its payload lies outside the file")?;
    let elf = decompress(payload)?;
    if has_pvh_entry(&elf)? {
        Ok(elf)
    } else {
        Err("the kernel has no PVH entry point (CONFIG_PVH)".into())
    }
}

/// The payload decompressed: at most the size the kernel's build appended
/// to it (its last four bytes, little-endian; gzip's own trailer says the
/// same), which must be at most [`MAX_VMLINUX`].
fn decompress(payload: &[u8]) -> std::result::Result<Vec<u8>, Unsupported> {
    let declared = payload
        .len()
        .checked_sub(4)
        .map(|at| u32::from_le_bytes(payload[at..].try_into().expect("4 bytes")))
        .ok_or("its payload is empty")? as u64;
    if declared > MAX_VMLINUX {
        return Err(format!(
            "its payload says it unpacks to {declared} bytes, more than {MAX_VMLINUX}"
        ));
    }
    let reader: Box<dyn Read + '_> = if payload.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(payload))
    } else if payload.starts_with(b"\xfd7zXZ\0") {
        Box::new(liblzma::read::XzDecoder::new(payload))
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        // The kernel's build appends the unpacked size: one frame only.
        let decoder = zstd::stream::read::Decoder::with_buffer(payload)
            .map_err(|e| e.to_string())?
            .single_frame();
        Box::new(decoder)
    } else {
        return Err(
            "its payload is compressed in a way not read here (not gzip, xz or zstd)".into(),
        );
    };
    let mut out = Vec::new();
    reader
        .take(declared + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("its payload does not decompress: {e}"))?;
    if out.len() as u64 > declared {
        return Err(format!(
            "its payload unpacks to more than the {declared} bytes it declares"
        ));
    }
    Ok(out)
}

/// Does the ELF file `elf` carry Xen's PHYS32_ENTRY note?
fn has_pvh_entry(elf: &[u8]) -> std::result::Result<bool, Unsupported> {
    let parsed =
        goblin::elf::Elf::parse(elf).map_err(|e| format!("its payload is not ELF: {e}"))?;
    let Some(notes) = parsed.iter_note_headers(elf) else {
        return Ok(false);
    };
    for note in notes {
        let note = note.map_err(|e| format!("a broken ELF note: {e}"))?;
        if note.name == "Xen" && note.n_type == XEN_ELFNOTE_PHYS32_ENTRY {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `cache/vmlinux-<digest of kernel>`, made if missing (atomically: a
/// reader never sees half a file); the reason instead when the kernel
/// cannot be booted this way.
pub fn cached_vmlinux(
    kernel: &Path,
    cache: &Path,
) -> Result<std::result::Result<PathBuf, Unsupported>> {
    let file = fs::File::open(kernel).at("opening", kernel)?;
    let size = file.metadata().at("reading", kernel)?.len();
    if size > MAX_BZIMAGE {
        return Ok(Err(format!("larger than {MAX_BZIMAGE} bytes")));
    }
    let bytes = crate::rootfs::read_bounded(file, size, MAX_BZIMAGE).at("reading", kernel)?;
    // qemu gets the file by path: no one else may be able to swap it.
    if let Err(why) = crate::output::private_dir(cache) {
        return Ok(Err(format!("the cache is not private: {why}")));
    }
    let digest = Sha256::digest(&bytes);
    let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let path = cache.join(format!("vmlinux-{name}"));
    // Ours, and no one else could have written it: qemu will run it.
    let trusted = |m: fs::Metadata| {
        m.is_file() && m.uid() == rustix::process::geteuid().as_raw() && m.mode() & 0o022 == 0
    };
    if fs::symlink_metadata(&path).is_ok_and(trusted) {
        return Ok(Ok(path));
    }
    let elf = match vmlinux(&bytes) {
        Ok(elf) => elf,
        Err(why) => return Ok(Err(why)),
    };
    let mut staged = tempfile::NamedTempFile::new_in(cache).at("creating a file in", cache)?;
    staged
        .write_all(&elf)
        .and_then(|()| staged.as_file().sync_all())
        .at("writing", staged.path())?;
    staged
        .persist(&path)
        .map_err(|e| Error::io("renaming into", &path, io::Error::from(e)))?;
    Ok(Ok(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's kernels, if any are readable (Debian: xz, with PVH).
    fn host_kernels() -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir("/boot") else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
                    && fs::File::open(p).is_ok()
            })
            .collect()
    }

    #[test]
    fn the_host_kernel_unpacks_to_an_elf_with_a_pvh_entry() {
        let kernels = host_kernels();
        assert!(!kernels.is_empty(), "scripts/setup.sh installs a kernel");
        for kernel in kernels {
            let bytes = fs::read(&kernel).unwrap();
            let elf = vmlinux(&bytes).unwrap_or_else(|why| panic!("{}: {why}", kernel.display()));
            assert_eq!(&elf[..4], b"\x7fELF");
            assert!(elf.len() > bytes.len(), "unpacked is larger");
        }
    }

    #[test]
    fn damaged_kernels_are_refused_with_a_reason() {
        assert!(vmlinux(b"").unwrap_err().contains("bzImage"));
        let bytes = fs::read(&host_kernels()[0]).unwrap();
        // The payload's length pointing past the end.
        let mut long = bytes.clone();
        long[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(vmlinux(&long).unwrap_err().contains("outside"));
        // The payload's bytes flipped in the middle.
        let mut flipped = bytes.clone();
        let middle = bytes.len() / 2;
        for b in &mut flipped[middle..middle + 4096] {
            *b ^= 0x5a;
        }
        assert!(vmlinux(&flipped).is_err());
    }

    /// A bzImage header around `payload`.
    fn fake_bzimage(payload: &[u8]) -> Vec<u8> {
        let mut image = vec![0u8; 5 * 512];
        image[0x1f1] = 4; // setup sectors
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(payload);
        image
    }

    #[test]
    fn a_payload_unpacks_to_no_more_than_it_declares() {
        // 64 MiB of zeros in 64 KiB of gzip, whose trailer is rewritten to
        // declare 1 MiB.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        for _ in 0..64 {
            gz.write_all(&vec![0u8; 1 << 20]).unwrap();
        }
        let mut payload = gz.finish().unwrap();
        let at = payload.len() - 4;
        payload[at..].copy_from_slice(&(1u32 << 20).to_le_bytes());
        let why = vmlinux(&fake_bzimage(&payload)).unwrap_err();
        assert!(
            why.contains("more than the 1048576 bytes it declares"),
            "{why}"
        );
        payload[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        let why = vmlinux(&fake_bzimage(&payload)).unwrap_err();
        assert!(why.contains("more than 268435456"), "{why}");
    }

    #[test]
    fn a_cache_someone_else_can_change_is_not_used() {
        let kernel = &host_kernels()[0];
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let why = cached_vmlinux(kernel, &open.join("kernels"))
            .unwrap()
            .unwrap_err();
        assert!(why.contains("writable by others"), "{why}");
        assert!(!open.join("kernels").exists(), "nothing made there");
        if rustix::process::geteuid().is_root() {
            // A symlink on the way that another user owns (and could re-point).
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(dir.path(), &link).unwrap();
            rustix::fs::chownat(
                rustix::fs::CWD,
                &link,
                Some(rustix::process::Uid::from_raw(65534)),
                None,
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .unwrap();
            let why = cached_vmlinux(kernel, &link.join("kernels"))
                .unwrap()
                .unwrap_err();
            assert!(why.contains("owned by user 65534"), "{why}");
        }
    }

    #[test]
    fn the_cache_is_made_once_and_replaced_atomically() {
        let kernel = &host_kernels()[0];
        let cache = tempfile::tempdir().unwrap();
        let path = cached_vmlinux(kernel, cache.path()).unwrap().unwrap();
        let first = fs::metadata(&path).unwrap();
        let again = cached_vmlinux(kernel, cache.path()).unwrap().unwrap();
        assert_eq!(path, again);
        assert_eq!(
            fs::metadata(&again).unwrap().modified().unwrap(),
            first.modified().unwrap()
        );
        assert_eq!(
            fs::read_dir(cache.path()).unwrap().count(),
            1,
            "no temporary left"
        );
        let text = cache.path().join("not-a-kernel");
        fs::write(&text, "hello").unwrap();
        assert!(cached_vmlinux(&text, cache.path()).unwrap().is_err());
    }
}
