//! Checks in front of the `rpm` crate's header parser: the crate trusts
//! the counts and offsets it reads, so hostile headers (another root's
//! database, a downloaded or given `.rpm`) are checked first, and any panic
//! left is caught.

use std::fs;
use std::path::Path;

use super::{backend_error, installed_from};
use crate::error::Result;
use crate::package::Package;

/// Check a header's index before the `rpm` crate sees it: the crate
/// trusts the counts and offsets (allocating what they say, slicing where
/// they point), so hostile input could exhaust memory or panic it.  Limits
/// are rpm's own: at most 0xffff entries and 256 MiB of data.  `bytes`
/// starts at the entry count; returns the header's length.
pub(super) fn check_header(bytes: &[u8]) -> std::result::Result<usize, String> {
    let be32 = |at: usize| -> u32 { u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) };
    let total = header_length(bytes)?;
    if total > bytes.len() {
        return Err(format!(
            "header truncated ({} of {total} bytes)",
            bytes.len()
        ));
    }
    let data = be32(4) as usize;
    for i in 0..be32(0) as usize {
        let at = 8 + i * 16;
        let (kind, offset, count) = (be32(at + 4), be32(at + 8) as usize, be32(at + 12) as usize);
        if kind > 9 || offset > data || count > data.max(1) * 8 {
            return Err(format!(
                "header entry {i} is malformed (type {kind}, offset {offset}, count {count})"
            ));
        }
    }
    Ok(total)
}

/// A header's length from its entry count and data size (the 8 bytes
/// `bytes` starts with), within rpm's limits.
pub(super) fn header_length(bytes: &[u8]) -> std::result::Result<usize, String> {
    if bytes.len() < 8 {
        return Err("header too short".into());
    }
    let entries = u32::from_be_bytes(bytes[0..4].try_into().unwrap()) as usize;
    let data = u32::from_be_bytes(bytes[4..8].try_into().unwrap()) as usize;
    if entries == 0 || entries > 0xffff {
        return Err(format!("header claims {entries} entries"));
    }
    if data > 256 << 20 {
        return Err(format!("header claims {data} bytes of data"));
    }
    Ok(8 + entries * 16 + data)
}

/// Run an `rpm` crate parser, turning a panic on input it did not expect
/// into an error (a last line of defence behind [`check_header`]).
pub(super) fn guarded<T>(
    f: impl FnOnce() -> std::result::Result<T, rpm::Error>,
) -> std::result::Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("the header is malformed".into()),
    }
}

/// The `rpm` crate parses headers inside a package frame only; the
/// database stores bare headers (no magic). Frame one: a lead with the
/// package magic, an empty signature header, then the header with its magic.
pub(super) fn metadata_from_header(
    bare: &[u8],
) -> std::result::Result<rpm::PackageMetadata, String> {
    let length = check_header(bare)?;
    let bare = &bare[..length];
    let mut frame = Vec::with_capacity(96 + 16 + 8 + bare.len());
    frame.extend_from_slice(&[0xed, 0xab, 0xee, 0xdb, 3, 0]);
    frame.resize(96, 0);
    frame[78..80].copy_from_slice(&5u16.to_be_bytes()); // signature type: header
    frame.extend_from_slice(&[0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0]);
    frame.extend_from_slice(&[0u8; 8]); // no entries, no data
    frame.extend_from_slice(&[0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0]);
    frame.extend_from_slice(bare);
    guarded(|| rpm::PackageMetadata::parse(&mut std::io::Cursor::new(frame)))
}

/// A package from a bare header blob (as `rpmdb.sqlite` stores it).
pub fn package_from_header(blob: &[u8]) -> Result<Package> {
    let metadata =
        metadata_from_header(blob).map_err(|e| backend_error(format!("corrupt header: {e}")))?;
    guarded(|| installed_from(&metadata))
        .map(|i| i.package)
        .map_err(|e| backend_error(format!("incomplete header: {e}")))
}

/// Check an `.rpm` file's lead and both headers (see [`check_header`])
/// without reading more than they occupy.
pub(super) fn check_rpm_file(path: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::FileExt;
    let file = fs::File::open(path).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let read = |offset: u64, len: u64| -> std::result::Result<Vec<u8>, String> {
        if offset + len > size {
            return Err(format!(
                "truncated ({size} bytes; a header needs {})",
                offset + len
            ));
        }
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)
            .map_err(|e| e.to_string())?;
        Ok(buf)
    };
    if read(0, 4)? != [0xed, 0xab, 0xee, 0xdb] {
        return Err("no rpm lead magic".into());
    }
    let mut offset = 96u64;
    for (which, pad) in [("signature", true), ("main", false)] {
        let intro = read(offset, 16)?;
        if intro[0..3] != [0x8e, 0xad, 0xe8] {
            return Err(format!("no {which} header magic"));
        }
        let length = header_length(&intro[8..]).map_err(|e| format!("{which} {e}"))? as u64;
        let header = read(offset + 8, length)?;
        check_header(&header).map_err(|e| format!("{which} {e}"))?;
        offset += 8 + length;
        if pad {
            offset = offset.div_ceil(8) * 8;
        }
    }
    Ok(())
}
