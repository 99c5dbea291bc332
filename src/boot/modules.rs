//! The kernel's modules inside the appliance (`/lib/modules/VERSION`):
//! every one, or the boot modules and a chosen few with their
//! dependencies.  Any bootable format adds them to its tree the same way.

use std::collections::HashSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use super::{initrd, Kernel};
use crate::error::{Error, IoContext, Result};
use crate::report::Reporter;
use crate::rootfs::FileId;
use crate::tree::{Data, Kind, Meta, Node, Origin, ReadFrom, Tree};

/// Which kernel modules go into the appliance's `/lib/modules/VERSION`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Modules {
    /// All of them, as upstream does (about 400 MB on Debian).
    #[default]
    All,
    /// The boot modules plus these basename globs (`e1000`, `fuse*`), with
    /// their dependencies, and the `modules.*` index files.
    Only(Vec<String>),
    /// No `/lib/modules` at all.
    None,
}

/// The kernel's module tree at `/lib/modules/VERSION`, root-owned: every
/// file, or the boot modules and the named ones.
pub fn add_modules(
    tree: &mut Tree,
    kernel: &Kernel,
    choice: &Modules,
    directory: Meta,
    reporter: &Reporter,
) -> Result<()> {
    let source = &kernel.modules;
    let dest = Path::new("/lib/modules").join(&kernel.version);
    let wanted: Option<HashSet<PathBuf>> = match choice {
        Modules::None => return Ok(()),
        Modules::All => None,
        Modules::Only(extra) => {
            let deps = initrd::read_module_deps(source)?;
            Some(initrd::selected_modules(&deps, extra).into_iter().collect())
        }
    };
    let top = tree.mkdir_p(&dest)?;
    tree.set_meta(top, directory);
    let mut count = 0u64;
    for entry in WalkDir::new(source).min_depth(1).sort_by_file_name() {
        reporter.check()?;
        let entry = entry.map_err(|e| Error::Kernel {
            path: Some(source.clone()),
            message: format!("cannot read the module tree {}: {e}", source.display()),
        })?;
        let relative = entry.path().strip_prefix(source).expect("inside");
        let is_module = relative.to_string_lossy().contains(".ko");
        if let (Some(wanted), true) = (&wanted, is_module) {
            if !wanted.contains(relative) {
                continue;
            }
        }
        let meta = entry
            .metadata()
            .map_err(|e| Error::io("reading", entry.path(), e.into()))?;
        let node_meta = Meta {
            uid: 0,
            gid: 0,
            ..Meta::of(&meta)
        };
        let path = dest.join(relative);
        let kind = if meta.is_dir() {
            // With a selection, directories come with the modules in them.
            if wanted.is_some() && relative.starts_with("kernel") {
                continue;
            }
            let index = tree.mkdir_p(&path)?;
            tree.set_meta(index, node_meta);
            continue;
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(entry.path()).at("reading symlink", entry.path())?;
            Kind::Symlink(target.as_os_str().as_bytes().to_vec())
        } else if meta.is_file() {
            count += 1;
            Kind::File(Data::Host {
                from: ReadFrom::Host,
                path: entry.path().to_path_buf(),
                id: FileId::of(&meta),
                size: meta.len(),
            })
        } else {
            continue;
        };
        tree.insert(
            &path,
            Node {
                meta: node_meta,
                kind,
                origin: Origin::Kernel,
            },
        )?;
    }
    reporter.info(1, || {
        format!("{count} module files from {}", source.display())
    });
    Ok(())
}
