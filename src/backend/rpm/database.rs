//! Reading an RPM database's header blobs: `rpmdb.sqlite` in-process,
//! the older BerkeleyDB/NDB layouts through `rpmdb --exportdb`; another
//! root's database copied out of it first.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::backend_error;
use crate::backend::host_path;
use crate::error::{Error, Result};
use crate::output::{Scratch, ScratchBase};
use crate::rootfs::RootFs;

/// Read every header blob of an `rpmdb.sqlite`, read-only. A database in
/// WAL mode needs its `-shm` index; when the directory is not writable
/// (a non-root user, a read-only mount) and there is nothing in the WAL,
/// the file is opened immutable; otherwise a private copy is read.
pub(super) fn sqlite_blobs(path: &Path, scratch: &ScratchBase) -> Result<Vec<Vec<u8>>> {
    use rusqlite::{Connection, OpenFlags};
    let query = |conn: &Connection| -> rusqlite::Result<Vec<Vec<u8>>> {
        let mut stmt = conn.prepare("SELECT blob FROM Packages ORDER BY hnum")?;
        let rows = stmt.query_map([], |row| row.get::<_, Vec<u8>>(0))?;
        rows.collect()
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let wal_empty = fs::metadata(&wal).map(|m| m.len() == 0).unwrap_or(true);
    let uri = |p: &Path, immutable: bool| {
        format!(
            "file:{}{}",
            p.display()
                .to_string()
                .replace('%', "%25")
                .replace('?', "%3f")
                .replace('#', "%23"),
            if immutable {
                "?immutable=1"
            } else {
                "?mode=ro"
            }
        )
    };
    let first = Connection::open_with_flags(uri(path, wal_empty), flags).and_then(|c| query(&c));
    match first {
        Ok(blobs) => Ok(blobs),
        Err(first_error) => {
            // A copy of the database and its WAL, in a directory we own.
            let scratch = scratch.create()?;
            let copy = scratch.path().join("rpmdb.sqlite");
            fs::copy(path, &copy).map_err(|e| Error::io("copying", path, e))?;
            if !wal_empty {
                fs::copy(&wal, scratch.path().join("rpmdb.sqlite-wal"))
                    .map_err(|e| Error::io("copying", &wal, e))?;
            }
            let conn = Connection::open_with_flags(&copy, OpenFlags::SQLITE_OPEN_READ_WRITE)
                .map_err(|e| {
                    backend_error(format!("{}: {e} (first: {first_error})", path.display()))
                })?;
            query(&conn)
                .map_err(|e| backend_error(format!("{}: not an rpm database: {e}", path.display())))
        }
    }
}

/// The most an rpm database directory copied out of another root may hold
/// (a distribution's full database is a few hundred megabytes).
const MAX_DATABASE_COPY: u64 = 1 << 30;

/// The regular files of the database directory `dir` of `root` (not
/// followed through symlinks, at most [`MAX_DATABASE_COPY`] bytes in all),
/// copied into a private scratch directory.
pub(super) fn copy_database(root: &RootFs, dir: &Path, scratch: &ScratchBase) -> Result<Scratch> {
    let scratch = scratch.create()?;
    let shown = root.display_path(dir);
    let mut left = MAX_DATABASE_COPY;
    let names = root
        .read_dir(dir)
        .map_err(|e| Error::io("listing", &shown, e))?;
    for name in names {
        let path = dir.join(&name);
        let Ok((file, meta)) = root.open_regular(&path) else {
            continue; // a directory, a symlink, a socket: not database data
        };
        left = left.checked_sub(meta.len()).ok_or_else(|| {
            backend_error(format!(
                "{}: the database files hold more than {MAX_DATABASE_COPY} bytes",
                shown.display()
            ))
        })?;
        let dest = scratch.path().join(&name);
        let mut out = fs::File::create(&dest).map_err(|e| Error::io("creating", &dest, e))?;
        std::io::copy(&mut std::io::Read::take(file, meta.len()), &mut out)
            .map_err(|e| Error::io("copying", root.display_path(&path), e))?;
    }
    Ok(scratch)
}

/// `rpmdb --exportdb` output: headers with their magic, one after another.
pub(super) fn exported_blobs(root: &Path, dbpath: &Path) -> Result<Vec<Vec<u8>>> {
    let output = Command::new("rpmdb")
        .arg("--root")
        .arg(root)
        .arg("--dbpath")
        .arg(dbpath)
        .arg("--exportdb")
        .output()
        .map_err(|e| {
            backend_error(format!(
                "{}: a BerkeleyDB/NDB rpm database needs the rpm tools to read it ({e}); install rpm",
                host_path(root, dbpath).display()
            ))
        })?;
    if !output.status.success() {
        return Err(backend_error(format!(
            "rpmdb --exportdb of {}: {}",
            host_path(root, dbpath).display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let mut blobs = Vec::new();
    let mut rest = output.stdout.as_slice();
    while rest.len() >= 16 {
        let il = u32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize;
        let dl = u32::from_be_bytes(rest[12..16].try_into().unwrap()) as usize;
        let end = 16 + il * 16 + dl;
        if rest[0..3] != [0x8e, 0xad, 0xe8] || end > rest.len() {
            return Err(backend_error(
                "rpmdb --exportdb printed something that is not a header list",
            ));
        }
        blobs.push(rest[8..end].to_vec());
        rest = &rest[end..];
    }
    Ok(blobs)
}
