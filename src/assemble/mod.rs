//! From a supermin appliance to the appliance's [`Tree`], once per build,
//! whatever the format.
//!
//! [`plan()`] decides which host paths go where (packages, hostfiles,
//! excludes, directory symlinks); [`assemble`] then fills the tree: the
//! base images first, the planned host paths over them, `/packagelist`
//! last.  The rules that every format shares live here:
//!
//! - a symlink a base image made is kept over a host path of that name;
//! - host files this user cannot read, and files on kernel pseudo
//!   filesystems (`/proc`, `/sys`), are skipped and named in one warning
//!   (never copied empty, never read without end);
//! - several names of one host inode are one node (hard links);
//! - directories the build makes itself are root-owned, 0755, stamped
//!   with the build time (`SOURCE_DATE_EPOCH` when set).

mod base_images;
pub mod plan;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub use plan::{plan, FileSet};

use crate::appliance::BaseImage;
use crate::backend::alternatives::Link;
use crate::error::{Error, IoContext, Result};
use crate::format::first_few;
use crate::outdir::OutDir;
use crate::package::Package;
use crate::report::Reporter;
use crate::rootfs::{is_pseudo_file_error, FileId, RootFs};
use crate::tree::{Data, Kind, Meta, Node, Origin, ReadFrom, Tree};

/// What the tree holds besides its entries.
#[derive(Debug)]
pub struct Assembled {
    pub tree: Tree,
    /// The dependency closure, sorted by name.
    pub packages: Vec<Package>,
    /// The alternatives links planned (a file already at a link's path
    /// kept its place).
    pub links: Vec<Link>,
    /// Host paths planned.
    pub paths: usize,
    pub skipped: Skipped,
}

/// Host files left out of the tree, and why.
#[derive(Debug, Clone, Default)]
pub struct Skipped {
    /// Host files this user cannot read (non-root builds).
    pub unreadable: Vec<PathBuf>,
    /// Host files on kernel pseudo filesystems, whose sizes are not their
    /// contents.
    pub pseudo: Vec<PathBuf>,
}

/// Choices that shape the tree.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Add `/packagelist` (the closure's full names).
    pub packagelist: bool,
    /// The time stamped on directories the build makes.
    pub now: i64,
    /// The most file data the format can hold ([`crate::Format::capacity`]).
    pub capacity: Option<u64>,
}

/// Owner, mode and time of the directories the build makes itself.
pub fn made_dir(now: i64) -> Meta {
    Meta::new(0o755, 0, 0, now)
}

/// Fill the tree: `images` in order, then the planned host paths read
/// from `root`, then `/packagelist`.  Large base-image members wait in an
/// unnamed file in `spill_dir` (the staging output).
pub fn assemble(
    plan: FileSet,
    images: &[BaseImage],
    root: &RootFs,
    spill_dir: &OutDir,
    options: Options,
    reporter: &Reporter,
) -> Result<Assembled> {
    let mut tree = Tree::new(made_dir(options.now));
    base_images::add(&mut tree, images, spill_dir, options.capacity, reporter)?;
    let skipped = add_host_paths(&mut tree, &plan, root, reporter)?;
    for link in &plan.links {
        // A file a package, hostfile or base image put there stays; a
        // link that has no place in this tree (its parent is a file here)
        // is left out: it is the host's bookkeeping, not the user's input.
        if tree.exists(&link.path) {
            continue;
        }
        let node = Node {
            meta: Meta::new(0o777, 0, 0, options.now),
            kind: Kind::Symlink(link.target.as_os_str().as_bytes().to_vec()),
            origin: Origin::Alternative,
        };
        if let Err(e) = tree.insert(&link.path, node) {
            reporter.warn(format!("alternatives: link left out: {e}"));
        }
    }
    if options.packagelist {
        tree.insert(
            Path::new("/packagelist"),
            Node {
                meta: Meta::new(0o644, 0, 0, options.now),
                kind: Kind::File(Data::Bytes(plan.packagelist().into_bytes())),
                origin: Origin::Generated,
            },
        )?;
    }
    Ok(Assembled {
        tree,
        paths: plan.entries.len(),
        packages: plan.packages,
        links: plan.links,
        skipped,
    })
}

/// The tree of `images` alone (no packages, no hostfiles): what the
/// fuzzers hand the writers.
#[doc(hidden)]
pub fn base_images_only(
    images: &[BaseImage],
    spill_dir: &OutDir,
    capacity: Option<u64>,
    reporter: &Reporter,
) -> Result<Tree> {
    let host = RootFs::host().at("opening", "/")?;
    let options = Options {
        packagelist: false,
        now: 0,
        capacity,
    };
    Ok(assemble(
        FileSet::default(),
        images,
        &host,
        spill_dir,
        options,
        reporter,
    )?
    .tree)
}

/// One path a build would write, and where it comes from.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Kind, mode and size as the root has it (for a base-image member,
    /// as its header says); config flag by upstream's rule.
    pub file: crate::package::File,
    pub origin: Origin,
    /// The name of the package that lists it.
    pub package: Option<String>,
}

/// Every path a build of `appliance` would write, sorted, with its
/// origin: package files (with their package), hostfiles, directories
/// they imply, alternatives links, and base-image members (which the
/// build unpacks over the others), for `Appliance.files()`.
pub fn listing(
    backend: &dyn crate::backend::Backend,
    appliance: &crate::appliance::Appliance,
    ignore_missing: bool,
    reporter: &Reporter,
) -> Result<Vec<Listed>> {
    use crate::package::{File, FileKind};
    let plan = plan(backend, appliance, ignore_missing, reporter)?;
    let root = backend.root();
    let mut out: std::collections::BTreeMap<PathBuf, Listed> = Default::default();
    for entry in plan.entries {
        reporter.check()?;
        let mut file = crate::backend::file_in_root(root, entry.source, false);
        file.path = entry.path.clone();
        file.is_config = crate::backend::is_config(&file.path, file.kind, false);
        let package = entry
            .package
            .and_then(|i| plan.packages.get(i as usize))
            .map(|p| p.name.clone());
        out.insert(
            entry.path,
            Listed {
                file,
                origin: entry.origin,
                package,
            },
        );
    }
    for link in plan.links {
        let file = File {
            path: link.path.clone(),
            source: None,
            kind: FileKind::Symlink,
            mode: 0o120777,
            size: link.target.as_os_str().len() as u64,
            is_config: false,
        };
        out.insert(
            link.path,
            Listed {
                file,
                origin: Origin::Alternative,
                package: None,
            },
        );
    }
    for (i, image) in appliance.base_images.iter().enumerate() {
        for mut file in image.members()? {
            file.is_config = crate::backend::is_config(&file.path, file.kind, false);
            out.insert(
                file.path.clone(),
                Listed {
                    file,
                    origin: Origin::BaseImage(i as u32),
                    package: None,
                },
            );
        }
    }
    // The directories the build makes for links and members whose parents
    // nothing lists.
    let missing: std::collections::BTreeSet<PathBuf> = out
        .keys()
        .flat_map(|p| p.ancestors().skip(1))
        .filter(|d| *d != Path::new("/") && !out.contains_key(*d))
        .map(Path::to_path_buf)
        .collect();
    for dir in missing {
        let file = crate::backend::file_in_root(root, dir.clone(), false);
        let listed = Listed {
            file,
            origin: Origin::Implied,
            package: None,
        };
        out.insert(dir, listed);
    }
    Ok(out.into_values().collect())
}

/// The planned host paths, with the host's owners, modes and times.
fn add_host_paths(
    tree: &mut Tree,
    plan: &FileSet,
    root: &RootFs,
    reporter: &Reporter,
) -> Result<Skipped> {
    let mut skipped = Skipped::default();
    let mut first_of_inode: std::collections::HashMap<FileId, usize> = Default::default();
    let counter = reporter.counter("listing files", plan.entries.len() as u64);
    for entry in &plan.entries {
        reporter.check()?;
        counter.tick();
        let source = &entry.source;
        let meta = match root.symlink_metadata(source) {
            Ok(m) => m,
            Err(_) if entry.origin == Origin::Implied => {
                tree.mkdir_p(&entry.path)?;
                continue;
            }
            Err(_) => continue,
        };
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir(Default::default())
        } else if ft.is_symlink() {
            // As upstream: a symlink from a base image is kept.
            if tree.exists(&entry.path) {
                continue;
            }
            let target = root
                .read_link(source)
                .at("reading symlink", root.display_path(source))?;
            Kind::Symlink(target.as_os_str().as_bytes().to_vec())
        } else if ft.is_file() {
            let id = FileId::of(&meta);
            if meta.nlink() > 1 {
                if let Some(&first) = first_of_inode.get(&id) {
                    tree.link(&entry.path, first)?;
                    continue;
                }
            }
            match root.check_readable(source, id) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    skipped.unreadable.push(root.display_path(source));
                    continue;
                }
                Err(e) if is_pseudo_file_error(&e) => {
                    skipped.pseudo.push(root.display_path(source));
                    continue;
                }
                Err(e) => return Err(Error::io("reading", root.display_path(source), e)),
            }
            let index = tree.insert(
                &entry.path,
                Node {
                    meta: Meta::of(&meta),
                    kind: Kind::File(Data::Host {
                        from: ReadFrom::Build,
                        path: source.clone(),
                        id,
                        size: meta.len(),
                    }),
                    origin: entry.origin,
                },
            )?;
            if meta.nlink() > 1 {
                first_of_inode.insert(id, index);
            }
            continue;
        } else {
            Kind::Special {
                file_type: (meta.mode() & libc::S_IFMT) as u16,
                rdev: meta.rdev(),
            }
        };
        tree.insert(
            &entry.path,
            Node {
                meta: Meta::of(&meta),
                kind,
                origin: entry.origin,
            },
        )?;
    }
    warn_skipped(&skipped, reporter);
    Ok(skipped)
}

/// One warning each for host files this user cannot read and files on
/// pseudo filesystems.
fn warn_skipped(skipped: &Skipped, reporter: &Reporter) {
    let names = |paths: &[PathBuf]| -> Vec<String> {
        paths.iter().map(|p| p.display().to_string()).collect()
    };
    if !skipped.unreadable.is_empty() {
        reporter.warn(format!(
            "{} host files are unreadable by this user and were skipped: {}",
            skipped.unreadable.len(),
            first_few(&names(&skipped.unreadable))
        ));
    }
    if !skipped.pseudo.is_empty() {
        reporter.warn(format!(
            "{} host files are on kernel pseudo filesystems (/proc, /sys, ...), whose sizes are not their contents, and were skipped: {}",
            skipped.pseudo.len(),
            first_few(&names(&skipped.pseudo))
        ));
    }
}
