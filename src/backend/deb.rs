//! Reading `.deb` files in-process: an `ar` archive whose `data.tar[.gz|.xz|.zst]`
//! member holds the files.  (The `debpkg` crate would do this too, but it
//! cannot be linked beside the `rpm` crate's xz support and is unmaintained;
//! see the README.)

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use super::payload::{self, package_path};
use super::ConfigFile;
use crate::error::{Error, Result};
use crate::package::File;

fn corrupt(deb: &Path, what: impl std::fmt::Display) -> Error {
    Error::backend(
        "deb",
        format!("{}: not a valid .deb file: {what}", deb.display()),
    )
}

/// Open the decompressed `data.tar` stream of a `.deb` and hand it to `f`.
fn with_data_tar<T>(deb: &Path, f: impl FnOnce(&mut dyn Read) -> Result<T>) -> Result<T> {
    with_member(deb, "data.tar", f)
}

/// Open the decompressed `PREFIX[.gz|.xz|.zst]` member of a `.deb`.
fn with_member<T>(
    deb: &Path,
    prefix: &str,
    f: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    let file = std::fs::File::open(deb)
        .map_err(|e| Error::backend("deb", format!("{}: {e}", deb.display())))?;
    let mut archive = ar::Archive::new(std::io::BufReader::new(file));
    while let Some(entry) = archive.next_entry() {
        let entry = entry.map_err(|e| corrupt(deb, e))?;
        let name = String::from_utf8_lossy(entry.header().identifier())
            .trim_end_matches('/')
            .to_string();
        let Some(suffix) = name.strip_prefix(prefix) else {
            continue;
        };
        let mut reader: Box<dyn Read> = match suffix {
            "" => Box::new(entry),
            ".gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            ".xz" => Box::new(liblzma::read::XzDecoder::new(entry)),
            ".zst" => {
                Box::new(zstd::stream::read::Decoder::new(entry).map_err(|e| corrupt(deb, e))?)
            }
            other => {
                return Err(corrupt(
                    deb,
                    format!("unsupported payload compression '{other}'"),
                ))
            }
        };
        let value = f(&mut reader)?;
        // Reading to the end checks the compressor's own checksum (xz,
        // gzip and zstd keep one at the end of the stream), which a tar
        // reader that stops at the end-of-archive marker never reaches.
        std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| corrupt(deb, e))?;
        return Ok(value);
    }
    Err(corrupt(deb, format!("no {prefix} member")))
}

/// A `.deb`'s package (from its `control` file) and files.
pub fn read_package_file(deb: &Path) -> Result<(crate::package::Package, Vec<File>)> {
    let control = with_member(deb, "control.tar", |data| {
        let mut tar = tar::Archive::new(data);
        for entry in tar.entries().map_err(|e| corrupt(deb, e))? {
            let mut entry = entry.map_err(|e| corrupt(deb, e))?;
            if package_path(&entry.path().map_err(|e| corrupt(deb, e))?) == Path::new("/control") {
                let mut text = String::new();
                entry
                    .read_to_string(&mut text)
                    .map_err(|e| corrupt(deb, e))?;
                return Ok(text);
            }
        }
        Err(corrupt(deb, "no control file"))
    })?;
    let stanza = super::deb822::stanzas(&control)
        .into_iter()
        .next()
        .unwrap_or_default();
    let field = |name: &str| {
        stanza
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (name, version, arch) = (field("Package"), field("Version"), field("Architecture"));
    if name.is_empty() {
        return Err(corrupt(deb, "control file has no Package field"));
    }
    let mut depends: Vec<String> = Vec::new();
    for key in ["Pre-Depends", "Depends"] {
        depends.extend(
            field(key)
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string),
        );
    }
    let package = crate::package::Package {
        full_name: format!("{name}_{version}_{arch}"),
        name,
        version,
        arch,
        depends,
        license: None,
        supplier: Some(field("Maintainer")).filter(|m| !m.is_empty()),
        id: None,
    };
    Ok((package, list_files(deb)?))
}

/// The regular files among `wanted` (absolute paths) in a `.deb`'s
/// payload (see [`payload::config_files`] for the limits).
pub fn read_files(deb: &Path, wanted: &HashSet<&Path>) -> Result<Vec<ConfigFile>> {
    with_data_tar(deb, |data| {
        payload::config_files(data, wanted, &|e| corrupt(deb, e))
    })
}

/// Hand `visit` each regular file of a `.deb`'s payload.
pub fn unpack(deb: &Path, visit: &mut super::VisitFile<'_>) -> Result<()> {
    with_data_tar(deb, |data| {
        payload::for_each_file(data, &|e| corrupt(deb, e), &|_| false, visit)
    })
}

/// Every path in a `.deb`'s payload with its kind and mode (the dpkg
/// equivalent of `rpm -qlp`).  Config flags are unknown here and false.
pub fn list_files(deb: &Path) -> Result<Vec<File>> {
    with_data_tar(deb, |data| {
        payload::list(data, &|e| corrupt(deb, e), &mut |_, _| Ok(false))
    })
}
