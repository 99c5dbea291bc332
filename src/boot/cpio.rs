//! newc ("070701") cpio archives: what the kernel unpacks an initrd or an
//! initramfs from.  The format is small enough that writing it beats
//! depending on a crate: per entry a header of 13 eight-digit hex fields,
//! the NUL-terminated name and the data, each padded to 4 bytes; a
//! `TRAILER!!!` entry ends the archive.
//!
//! The kernel's reader (init/initramfs.c) makes a second entry with the
//! same inode number and `nlink` > 1 a hard link of the first, and writes
//! any data the entry carries into it; so a file's bytes go with its first
//! name and the other names carry none.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

/// The header fields of one entry.
#[derive(Debug, Clone, Copy, Default)]
pub struct Header {
    /// Unique per file (hard links share one); 0 is the trailer's.
    pub ino: u32,
    /// File type and permission bits, as `st_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    /// Bytes of data that follow the name.
    pub size: u32,
    /// The device number of a device node.
    pub rdev_major: u32,
    pub rdev_minor: u32,
}

/// The largest file a newc header can describe.
pub const MAX_SIZE: u64 = u32::MAX as u64;

/// The bytes an entry named with `name_len` bytes and holding `data_len`
/// bytes of data takes in an archive.
pub const fn entry_len(name_len: usize, data_len: u64) -> u64 {
    (110 + name_len as u64 + 1).next_multiple_of(4) + data_len.next_multiple_of(4)
}

/// The bytes the trailer takes.
pub const TRAILER_LEN: u64 = entry_len(b"TRAILER!!!".len(), 0);

/// Writes entries to `out`, counting the bytes.
pub struct Writer<W: Write> {
    out: W,
    written: u64,
    /// For [`Writer::data_from`], made on first use.
    buffer: Vec<u8>,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Writer {
            out,
            written: 0,
            buffer: Vec::new(),
        }
    }

    /// An entry's header and name; its `header.size` bytes of data must
    /// follow, through [`Writer::data`], then [`Writer::end_data`].
    pub fn header(&mut self, header: &Header, name: &[u8]) -> io::Result<()> {
        let h = header;
        let text = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            h.ino,
            h.mode,
            h.uid,
            h.gid,
            h.nlink,
            h.mtime,
            h.size,
            0, // the device holding the file: one for all
            0,
            h.rdev_major,
            h.rdev_minor,
            name.len() + 1,
            0, // checksum: unused by newc
        );
        self.write(text.as_bytes())?;
        self.write(name)?;
        self.write(&[0])?;
        self.pad()
    }

    /// Data of the current entry.
    pub fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write(bytes)
    }

    /// Exactly `size` bytes of `file` from `offset` as the current entry's
    /// data, as its header declared them: zeros for what a file that shrank
    /// since it was listed lacks, nothing of what it gained.  `between` runs
    /// before each megabyte (a cancel check).
    pub fn data_from(
        &mut self,
        file: &fs::File,
        offset: u64,
        size: u64,
        mut between: impl FnMut() -> io::Result<()>,
    ) -> io::Result<()> {
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.resize(1 << 20, 0);
        let mut done = 0u64;
        let result = loop {
            if done == size {
                break Ok(());
            }
            if let Err(e) = between() {
                break Err(e);
            }
            let want = buffer.len().min((size - done) as usize);
            let got = match file.read_at(&mut buffer[..want], offset + done) {
                Ok(0) => {
                    buffer[..want].fill(0);
                    want
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            };
            if let Err(e) = self.write(&buffer[..got]) {
                break Err(e);
            }
            done += got as u64;
        };
        self.buffer = buffer;
        result
    }

    /// After an entry's data: pad to 4 bytes.
    pub fn end_data(&mut self) -> io::Result<()> {
        self.pad()
    }

    /// A whole entry whose data is in memory.
    pub fn entry(&mut self, header: Header, name: &[u8], data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too large for cpio"))?;
        self.header(&Header { size, ..header }, name)?;
        self.data(data)?;
        self.end_data()
    }

    /// The trailer; the sink and the archive's length.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.entry(
            Header {
                nlink: 1,
                ..Header::default()
            },
            b"TRAILER!!!",
            &[],
        )?;
        Ok((self.out, self.written))
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - self.written % 4) % 4;
        self.write(&[0u8; 3][..n as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_end_with_the_trailer() {
        let mut w = Writer::new(Vec::new());
        let file = Header {
            ino: 1,
            mode: 0o100644,
            nlink: 1,
            ..Header::default()
        };
        w.entry(file, b"a", b"hello").unwrap();
        w.entry(Header { ino: 2, ..file }, b"bb", b"").unwrap();
        let (bytes, n) = w.finish().unwrap();
        assert_eq!(n, bytes.len() as u64);
        assert_eq!(n, entry_len(1, 5) + entry_len(2, 0) + TRAILER_LEN);
        assert_eq!(n % 4, 0);
        // First header: magic, ino 1, mode, ..., size 5, ..., namesize 2.
        assert!(bytes.starts_with(b"07070100000001000081a4"));
        assert_eq!(&bytes[54..62], b"00000005");
        assert_eq!(&bytes[94..102], b"00000002");
        assert_eq!(&bytes[110..112], b"a\0");
        assert_eq!(&bytes[112..117], b"hello");
        let second = 120; // 110 + "a\0" = 112, + 5 = 117, padded to 120
        assert_eq!(&bytes[second..second + 6], b"070701");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("TRAILER!!!"));
    }

    #[test]
    fn file_data_is_exactly_the_declared_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"abcdef").unwrap();
        let file = fs::File::open(&path).unwrap();
        let mut w = Writer::new(Vec::new());
        w.data_from(&file, 2, 3, || Ok(())).unwrap(); // "cde": a part
        w.data_from(&file, 4, 5, || Ok(())).unwrap(); // "ef" then zeros: it shrank
        let (bytes, _) = w.finish().unwrap();
        assert_eq!(&bytes[..8], b"cdeef\0\0\0");
        let mut w = Writer::new(Vec::new());
        let stop = w.data_from(&file, 0, 6, || Err(io::Error::other("stop")));
        assert_eq!(stop.unwrap_err().to_string(), "stop");
    }
}
