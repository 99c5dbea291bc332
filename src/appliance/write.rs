//! Writing a supermin appliance directory (the output of `prepare`).

use std::io::Write;
use std::path::Path;

use crate::backend::ConfigFile;
use crate::error::{IoContext, Result};
use crate::outdir::{OutDir, Parents};

/// A new file `name` (mode `perm`) in the output, made by descriptor.
fn create(dir: &OutDir, name: &str, perm: u32) -> Result<std::fs::File> {
    use std::os::unix::fs::PermissionsExt;
    let at = dir.path().join(name);
    let file = dir
        .place(&Path::new("/").join(name), Parents::Existing)
        .and_then(|p| p.create_file())
        .at("creating", &at)?;
    file.set_permissions(std::fs::Permissions::from_mode(perm))
        .at("setting permissions of", &at)?;
    Ok(file)
}

/// `packages`: one name per line, sorted (bytewise) and de-duplicated.
pub fn write_packages(dir: &OutDir, names: &[String]) -> Result<()> {
    let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    let mut text = String::new();
    for n in names {
        text.push_str(n);
        text.push('\n');
    }
    create(dir, "packages", 0o644)?
        .write_all(text.as_bytes())
        .at("writing", dir.path().join("packages"))
}

/// `base.tar.gz`: the config files as a deterministic archive — entries
/// sorted by path and named `./etc/...` (as upstream's `tar -C dir -T`),
/// regular files only, owner 0:0, mtime clamped to `source_date_epoch`,
/// gzip header without a timestamp or file name.  Identical inputs give
/// identical bytes.
pub fn write_base_image(
    dir: &OutDir,
    files: &mut [ConfigFile],
    source_date_epoch: Option<u64>,
) -> Result<()> {
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let path = dir.path().join("base.tar.gz");
    // Anyone who can read the archive can read every file in it: with a
    // config file not everyone may read (ppp's chap-secrets, 0600), the
    // archive is its owner's only.
    let private = files.iter().any(|f| f.mode & 0o004 == 0);
    let out = create(dir, "base.tar.gz", if private { 0o600 } else { 0o644 })?;
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(std::io::BufWriter::new(out), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut previous: Option<&Path> = None;
    for file in files.iter() {
        if previous == Some(file.path.as_path()) {
            continue; // the same conffile shipped by two packages
        }
        previous = Some(&file.path);
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(file.data.len() as u64);
        header.set_mode(file.mode & 0o7777);
        header.set_uid(0);
        header.set_gid(0);
        header.set_username("root").ok();
        header.set_groupname("root").ok();
        let mtime = match source_date_epoch {
            Some(sde) => file.mtime.min(sde),
            None => file.mtime,
        };
        header.set_mtime(mtime);
        let relative = file.path.strip_prefix("/").unwrap_or(&file.path);
        let name = format!("./{}", relative.display());
        // The tar crate drops a leading "./" from names it is given, so
        // the header's name field is filled in directly, as upstream's tar
        // spells it.  (A name too long for it goes through the crate's
        // GNU long-name path, without the "./"; extraction is the same.)
        match header.as_gnu_mut() {
            Some(gnu) if name.len() < gnu.name.len() => {
                gnu.name = [0; 100];
                gnu.name[..name.len()].copy_from_slice(name.as_bytes());
                header.set_cksum();
                tar.append(&header, file.data.as_slice())
                    .at("writing", &path)?;
            }
            _ => tar
                .append_data(&mut header, relative, file.data.as_slice())
                .at("writing", &path)?,
        }
    }
    let gz = tar.into_inner().at("writing", &path)?;
    let mut buf = gz.finish().at("writing", &path)?;
    buf.flush().at("writing", &path)?;
    buf.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .at("writing", &path)
}
