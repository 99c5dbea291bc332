//! Output formats: writers of the appliance's [`Tree`].
//!
//! A format is one type implementing [`Format`] and one line in
//! [`FORMATS`]; the names the command line, `build(format=...)`, `--help`
//! and the Python stubs accept all come from that table.  A format gets
//! the finished tree (the same for every format) and the staging output
//! directory, and writes its files there; the build swaps the directory
//! in only when the writer returned.  Bootable formats call the pieces in
//! [`crate::boot`] (kernel, modules, initrd, mini init).

pub mod chroot;
mod copy;
pub mod ext2;
pub mod initramfs;
pub mod tar;

use std::fmt;

use crate::boot;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::outdir::{OutDir, Parents};
use crate::report::Reporter;
use crate::tree::{Sources, Tree};

pub use copy::{copy_range, copy_range_keeping_holes};

/// An output format.
pub trait Format: Send + Sync {
    /// The name `-f`/`--format` and `build(format=...)` take.
    fn name(&self) -> &'static str;
    /// Other names accepted for it (upstream's `fs` for `chroot`).
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }
    /// One line for `--help`.
    fn summary(&self) -> &'static str;
    /// The files inside OUT whose times `--if-newer` compares (none: OUT
    /// itself).
    fn outputs(&self) -> &'static [&'static str];
    /// The most file data the output can hold (an image's size): base
    /// images holding more are refused while they are read, naming the
    /// member, before they fill memory or the disk.
    fn capacity(&self, _options: &Options) -> Option<u64> {
        None
    }
    /// Refuse options this format cannot honour, before any work is done.
    fn check(&self, _options: &Options) -> Result<()> {
        Ok(())
    }
    /// Write `tree` into `out`, the staging output directory.
    fn write(&self, tree: Tree, out: &OutDir, cx: &Context<'_>) -> Result<Written>;
}

impl fmt::Debug for dyn Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq for dyn Format {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

/// Every format, in the order `--help` lists them.
pub static FORMATS: &[&dyn Format] = &[
    &chroot::Chroot,
    &ext2::Ext2,
    &initramfs::Initramfs,
    &tar::Tar,
];

/// The format called `name` (or one of its aliases).
pub fn find(name: &str) -> Result<&'static dyn Format> {
    FORMATS
        .iter()
        .copied()
        .find(|f| f.name() == name || f.aliases().contains(&name))
        .ok_or_else(|| {
            let names: Vec<&str> = FORMATS.iter().map(|f| f.name()).collect();
            Error::Usage(format!(
                "unknown --format option ({}): use {}",
                shown(name),
                names.join(", ")
            ))
        })
}

/// A name from the user, cut short if it is long.
fn shown(name: &str) -> String {
    match name.char_indices().nth(64) {
        Some((end, _)) => format!("{}...", &name[..end]),
        None => name.to_string(),
    }
}

/// What the formats are asked for (the format-specific parts are read
/// only by the formats that use them).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `SOURCE_DATE_EPOCH`: times are clamped to it (ext2, tar) and the
    /// build's own directories stamped with it.
    pub epoch: Option<u64>,
    /// Kernel selection and installation (bootable formats).
    pub boot: boot::Options,
    /// The ext2 root image.
    pub ext2: ext2::Options,
    /// The initramfs.
    pub initramfs: initramfs::Options,
}

/// Everything a writer may need besides the tree.
pub struct Context<'a> {
    pub sources: Sources<'a>,
    pub options: &'a Options,
    /// The build time (`SOURCE_DATE_EPOCH` when set).
    pub now: i64,
    pub reporter: &'a Reporter,
}

/// What a writer did beyond writing the tree.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// Set-user-ID and set-group-ID bits dropped because the owner could
    /// not be kept (non-root chroot builds), as `cp -p` and GNU tar do.
    pub setid_dropped: u64,
    /// Bootable formats: the kernel and initrd.
    pub boot: Option<boot::Booted>,
}

/// Mode 0644 for the single file `name` in `out` that holds the whole
/// appliance (an ext2 image, a tar), or 0600 if it holds files not
/// everyone may read: anyone who can read the image can read every file
/// in it (`/etc/shadow` from a hostfiles list, a 0600 key).
pub(crate) fn set_private_if_needed(
    tree: &Tree,
    out: &OutDir,
    name: &str,
    reporter: &Reporter,
) -> Result<()> {
    let perm = if tree.everything_world_readable() {
        0o644
    } else {
        0o600
    };
    let path = out.path().join(name.trim_start_matches('/'));
    out.place(Path::new(name), Parents::Existing)
        .and_then(|p| p.chmod(perm))
        .at("setting permissions of", &path)?;
    if perm == 0o600 {
        reporter.info(1, || {
            format!(
                "{}: it holds files not everyone may read, so it is mode 0600",
                path.display()
            )
        });
    }
    Ok(())
}

/// The first five of `items`, comma-separated, with `...` if there are
/// more: a warning names a few culprits, not thousands.
pub(crate) fn first_few(items: &[String]) -> String {
    let mut text = items[..items.len().min(5)].join(", ");
    if items.len() > 5 {
        text.push_str(&format!(", ... ({} more)", items.len() - 5));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_find_one_format_each() {
        let mut seen = std::collections::HashSet::new();
        for f in FORMATS {
            for name in std::iter::once(&f.name()).chain(f.aliases()) {
                assert!(seen.insert(*name), "{name} twice");
                assert_eq!(find(name).unwrap().name(), f.name());
            }
        }
        assert_eq!(find("fs").unwrap().name(), "chroot");
        let e = find("ext4").unwrap_err().to_string();
        assert!(e.contains("chroot, ext2, initramfs, tar"), "{e}");
    }
}
