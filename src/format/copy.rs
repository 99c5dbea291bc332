//! Moving file bytes for the writers: `copy_file_range` between offsets
//! (the kernel moves the data; on a reflink filesystem it may share it),
//! with a portable fallback, a check for a cancel every
//! [`CHECK_EVERY`](crate::report::CHECK_EVERY) bytes, and a variant that
//! keeps a sparse file's holes.

use std::fs;
use std::io;
use std::os::unix::fs::FileExt;

use crate::report::{Reporter, CHECK_EVERY};

/// Copy `length` bytes of `input` from offset `from` to `output` at `to`.
/// Returns the bytes copied: fewer if `input` ends early (it shrank since
/// it was listed).
pub fn copy_range(
    input: &fs::File,
    from: u64,
    output: &fs::File,
    to: u64,
    length: u64,
    reporter: &Reporter,
) -> io::Result<u64> {
    let mut done = 0u64;
    while done < length {
        if reporter.check().is_err() {
            return Err(io::Error::other("cancelled"));
        }
        let step = (length - done).min(CHECK_EVERY);
        let n = copy_some(input, from + done, output, to + done, step)?;
        done += n;
        if n < step {
            break;
        }
    }
    Ok(done)
}

/// Up to `length` bytes, in as few system calls as the kernel allows.
fn copy_some(
    input: &fs::File,
    from: u64,
    output: &fs::File,
    to: u64,
    length: u64,
) -> io::Result<u64> {
    use rustix::io::Errno;
    let mut done = 0u64;
    while done < length {
        let mut off_in = from + done;
        let mut off_out = to + done;
        let step = usize::try_from(length - done).unwrap_or(usize::MAX);
        let n = match rustix::fs::copy_file_range(
            input,
            Some(&mut off_in),
            output,
            Some(&mut off_out),
            step,
        ) {
            Ok(n) => n,
            // Not between these files (another filesystem, a kernel or
            // filesystem without it): read and write.
            Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP) => {
                return read_write(input, from + done, output, to + done, length - done)
                    .map(|n| done + n);
            }
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            break;
        }
        done += n as u64;
    }
    Ok(done)
}

/// The portable fallback of [`copy_some`].
fn read_write(
    input: &fs::File,
    from: u64,
    output: &fs::File,
    to: u64,
    length: u64,
) -> io::Result<u64> {
    let mut buffer = vec![0u8; (1 << 20).min(length as usize)];
    let mut done = 0u64;
    while done < length {
        let want = ((length - done) as usize).min(buffer.len());
        let n = input.read_at(&mut buffer[..want], from + done)?;
        if n == 0 {
            break;
        }
        output.write_all_at(&buffer[..n], to + done)?;
        done += n as u64;
    }
    Ok(done)
}

/// [`copy_range`] into a new file at offset 0, leaving `input`'s holes
/// (found with `SEEK_DATA`/`SEEK_HOLE`) as holes, as `cp` does; the output
/// is `length` bytes long.  Returns the bytes of data copied.
pub fn copy_range_keeping_holes(
    input: &fs::File,
    from: u64,
    output: &fs::File,
    length: u64,
    reporter: &Reporter,
) -> io::Result<u64> {
    use rustix::fs::SeekFrom;
    let end = from + length;
    let mut copied = 0u64;
    let mut offset = from;
    // Where the output's data ends so far.
    let mut written_to = 0u64;
    while offset < end {
        let data = match rustix::fs::seek(input, SeekFrom::Data(offset)) {
            Ok(at) => at,
            Err(rustix::io::Errno::NXIO) => break, // only a hole is left
            Err(e) => return Err(e.into()),
        };
        if data >= end {
            break;
        }
        let hole = rustix::fs::seek(input, SeekFrom::Hole(data))?.min(end);
        let n = copy_range(input, data, output, data - from, hole - data, reporter)?;
        copied += n;
        written_to = data - from + n;
        if n < hole - data {
            break; // the input shrank
        }
        offset = hole;
    }
    // A trailing hole (or bytes the input lost) is only length.
    if written_to < length {
        output.set_len(length)?;
    }
    Ok(copied)
}
