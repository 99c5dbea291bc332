//! The plan of a build (compat-spec §3): which host paths the appliance
//! holds, and where in it.  Packages are resolved, their file lists read,
//! config files and excluded paths dropped, hostfiles globbed, paths
//! missing on the host dropped, and the rest laid out so that no entry
//! goes through a symlink.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::appliance::Appliance;
use crate::backend::alternatives::{self, Link};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::package::Package;
use crate::pattern;
use crate::report::Reporter;
use crate::rootfs::{normalize, RootFs};
use crate::tree::Origin;

/// One path to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Absolute path inside the appliance.
    pub path: PathBuf,
    /// Absolute path inside the backend's root to copy from (resolved
    /// inside that root when read).
    pub source: PathBuf,
    pub origin: Origin,
    /// The package that lists it (an index into [`FileSet::packages`]).
    pub package: Option<u32>,
}

/// The paths of a build, sorted so that every parent precedes its children
/// and no path goes through a symlink.
#[derive(Debug, Clone, Default)]
pub struct FileSet {
    pub entries: Vec<Entry>,
    /// Alternatives links to make (see [`crate::backend::alternatives`]),
    /// sorted by path; excluded paths are already left out.
    pub links: Vec<Link>,
    /// The dependency closure, sorted by name.
    pub packages: Vec<Package>,
}

impl FileSet {
    /// `/packagelist` contents: sorted full names of all resolved packages.
    pub fn packagelist(&self) -> String {
        let mut names: Vec<&str> = self.packages.iter().map(|p| p.full_name.as_str()).collect();
        names.sort_unstable();
        names.iter().map(|n| format!("{n}\n")).collect()
    }
}

/// The packages a build of `appliance` takes: those it names that are
/// installed (the others are an error, or a warning with
/// `ignore_missing`) and their dependencies.
fn closure(
    backend: &dyn Backend,
    appliance: &Appliance,
    ignore_missing: bool,
    reporter: &Reporter,
) -> Result<Vec<crate::package::Package>> {
    let roots = backend.packages_named_or_warn(&appliance.packages, ignore_missing, reporter)?;
    reporter.info(1, || format!("build: {} packages named", roots.len()));
    let packages = backend.resolve(&roots, reporter)?;
    reporter.info(1, || {
        format!("build: {} packages, including dependencies", packages.len())
    });
    Ok(packages)
}

/// Resolve the appliance's packages, list their files, drop config files
/// and excluded paths, add hostfiles, drop paths missing on the host, and
/// lay the result out as a tree.
pub fn plan(
    backend: &dyn Backend,
    appliance: &Appliance,
    ignore_missing: bool,
    reporter: &Reporter,
) -> Result<FileSet> {
    let root = backend.root();
    let packages = closure(backend, appliance, ignore_missing, reporter)?;
    for p in &packages {
        reporter.info(2, || format!("  - {}", p.full_name));
    }

    // File lists (each stats its files on the host): in parallel.
    let counter = reporter.counter("reading file lists", packages.len() as u64);
    let lists: Vec<Vec<crate::package::File>> = packages
        .par_iter()
        .map(|p| {
            reporter.check()?;
            let files = backend.files(p);
            counter.tick();
            files
        })
        .collect::<Result<_>>()?;
    let mut raw: Vec<Entry> = Vec::new();
    let mut excluded = 0usize;
    let listed = lists
        .into_iter()
        .enumerate()
        .flat_map(|(i, list)| list.into_iter().map(move |f| (i as u32, f)));
    for (package, file) in listed {
        if file.is_config {
            continue;
        }
        if appliance.excluded(&file.path) {
            excluded += 1;
            reporter.info(2, || format!("build: excluding {}", file.path.display()));
            continue;
        }
        let source = file.source_path().to_path_buf();
        raw.push(Entry {
            path: file.path,
            source,
            origin: Origin::Package,
            package: Some(package),
        });
    }
    reporter.info(1, || {
        format!(
            "build: {} package files after {excluded} excluded",
            raw.len()
        )
    });
    let mut glob_budget = pattern::GLOB_BUDGET;
    for pattern in &appliance.hostfiles {
        reporter.check()?;
        let cancelled = || reporter.check().is_err();
        let paths = pattern::glob_in_root(root, pattern, &mut glob_budget, &cancelled)
            .map_err(|e| reporter.cancelled_or(Error::Usage(e)))?;
        for path in paths {
            raw.push(Entry {
                source: path.clone(),
                path,
                origin: Origin::Hostfile,
                package: None,
            });
        }
    }
    // Paths that do not exist on the host are dropped.  (Every path is
    // looked up inside the root: another root's absolute symlinks point
    // into it, not into the host.)
    raw.retain(|e| root.symlink_metadata(&e.source).is_ok());
    let raw = apply_diversions(raw);

    let mut layout = Layout {
        root,
        canonical: HashMap::new(),
        entries: BTreeMap::new(),
    };
    for entry in raw {
        layout.add(entry)?;
    }
    let links = alternatives_links(backend, appliance, &layout, reporter)?;
    let entries: Vec<Entry> = layout
        .entries
        .into_values()
        .filter(|e| e.path != Path::new("/"))
        .collect();
    reporter.info(1, || {
        format!(
            "build: {} paths to write, {} alternatives links",
            entries.len(),
            links.len()
        )
    });
    Ok(FileSet {
        entries,
        links,
        packages,
    })
}

/// The most alternatives links one build makes (each is a line of the
/// `--if-newer` stamp; a Debian desktop has a few hundred).
const MAX_LINKS: usize = 4096;

/// The alternatives links of the groups with a file in the appliance, at
/// their canonical paths, sorted (the first group to claim a path keeps
/// it).  A file is in the appliance if a package or hostfile put it at
/// its canonical path.  The appliance mirrors the root: a link is made
/// only where the root has that link (`/usr/bin/awk →
/// /etc/alternatives/awk`, and a symlink `/etc/alternatives/awk`), in a
/// directory the appliance has (or [`alternatives::LINK_DIR`]), so that an
/// admin file can never put a link where the build needs something else.
fn alternatives_links(
    backend: &dyn Backend,
    appliance: &Appliance,
    layout: &Layout<'_>,
    reporter: &Reporter,
) -> Result<Vec<Link>> {
    let root = backend.root();
    // Paths are resolved in a copy, so that a group that is left out adds
    // no directory symlinks to the plan.
    let mut probe = Layout {
        root,
        canonical: layout.canonical.clone(),
        entries: BTreeMap::new(),
    };
    let mut canonical = |path: &Path| -> Option<PathBuf> {
        let (parent, name) = (path.parent()?, path.file_name()?);
        Some(probe.canonical_dir(parent, 0).ok()?.join(name))
    };
    let in_plan = |path: &Path, dir: bool| {
        layout.entries.get(path).is_some_and(|e| {
            if dir {
                root.metadata(&e.source).is_ok_and(|m| m.is_dir())
            } else {
                matches!(e.origin, Origin::Package | Origin::Hostfile)
            }
        })
    };
    let link_dir = Path::new(alternatives::LINK_DIR);
    let mut links: BTreeMap<PathBuf, Link> = BTreeMap::new();
    let mut unrecordable = 0usize;
    alternatives::for_each_group(root, backend.alternatives_dirs(), reporter, |group| {
        reporter.check()?;
        let mut holds = |path: &Path| canonical(path).is_some_and(|c| in_plan(&c, false));
        let current = alternatives::current_choice(root, &group);
        let Some(choice) = alternatives::choose(&group, current.as_deref(), &mut holds) else {
            return Ok(());
        };
        reporter.info(2, || match &current {
            Some(c) if *c != choice.path => format!(
                "build: alternatives: {} → {} (the host's {} is not in the appliance)",
                group.name,
                choice.path.display(),
                c.display()
            ),
            _ => format!(
                "build: alternatives: {} → {}",
                group.name,
                choice.path.display()
            ),
        });
        for link in alternatives::links(&group, choice, &mut holds) {
            let middle = link.path.parent() == Some(link_dir);
            let root_has_it = root.read_link(&link.path).is_ok_and(|t| {
                middle || normalize(&link.path.parent().unwrap_or(link_dir).join(t)) == link.target
            });
            let (Some(path), Some(target)) = (
                canonical(&link.path),
                if middle {
                    canonical(&link.target)
                } else {
                    Some(link.target.clone())
                },
            ) else {
                continue;
            };
            let parent = path.parent().unwrap_or(link_dir);
            if !root_has_it
                || !(parent == link_dir || in_plan(parent, true))
                || appliance.excluded(&link.path)
                || appliance.excluded(&path)
            {
                continue;
            }
            // The stamp records links as UTF-8 lines.
            let recordable = |p: &Path| p.to_str().is_some_and(|s| !s.contains(char::is_control));
            if !recordable(&path) || !recordable(&target) || links.len() == MAX_LINKS {
                unrecordable += 1;
                continue;
            }
            links.entry(path.clone()).or_insert(Link { path, target });
        }
        Ok(())
    })?;
    if unrecordable > 0 {
        reporter.warn(format!(
            "alternatives: {unrecordable} links left out (beyond {MAX_LINKS}, or a path that is not UTF-8 text)"
        ));
    }
    Ok(links.into_values().collect())
}

/// When a path is claimed both by its owner at that path and by a diverted
/// copy (a dpkg diversion whose diverting package is also in the
/// appliance), the diverting package keeps the path and the original goes
/// where the host keeps it, so the appliance mirrors the host.  A diverted
/// copy alone keeps its package path (upstream's behaviour).
fn apply_diversions(mut raw: Vec<Entry>) -> Vec<Entry> {
    let claimed: HashSet<PathBuf> = raw
        .iter()
        .filter(|e| e.source == e.path)
        .map(|e| e.path.clone())
        .collect();
    for e in &mut raw {
        if e.source != e.path && claimed.contains(&e.path) {
            e.path = e.source.clone();
        }
    }
    raw
}

/// Places entries at their canonical paths: no parent directory of an
/// entry is a symlink on the host.  A path through a directory symlink
/// (`/lib/x` with `/lib -> usr/lib`) is written at its target
/// (`/usr/lib/x`) and the symlink itself is added, as upstream does.
struct Layout<'a> {
    root: &'a RootFs,
    canonical: HashMap<PathBuf, PathBuf>,
    entries: BTreeMap<PathBuf, Entry>,
}

impl Layout<'_> {
    fn add(&mut self, entry: Entry) -> Result<()> {
        let path = match (entry.path.parent(), entry.path.file_name()) {
            (Some(parent), Some(name)) => self.canonical_dir(parent, 0)?.join(name),
            _ => entry.path.clone(),
        };
        if self.entries.contains_key(&path) {
            return Ok(());
        }
        self.add_ancestors(&path);
        self.entries.insert(
            path.clone(),
            Entry {
                path: path.clone(),
                ..entry
            },
        );
        // A listed symlink to a directory: its target must exist too.
        if self.is_dir_symlink(&path) {
            self.canonical_dir(&path, 0)?;
        }
        Ok(())
    }

    /// Is `path` a symlink to a directory (inside the root)?
    fn is_dir_symlink(&self, path: &Path) -> bool {
        self.root
            .symlink_metadata(path)
            .is_ok_and(|m| m.file_type().is_symlink())
            && self.root.metadata(path).is_ok_and(|m| m.is_dir())
    }

    fn add_ancestors(&mut self, path: &Path) {
        for dir in path.ancestors().skip(1) {
            if dir == Path::new("/") || self.entries.contains_key(dir) {
                continue;
            }
            let dir = dir.to_path_buf();
            self.entries.insert(
                dir.clone(),
                Entry {
                    source: dir.clone(),
                    path: dir,
                    origin: Origin::Implied,
                    package: None,
                },
            );
        }
    }

    /// The path of `dir` with every symlink to a directory resolved inside
    /// the root (chroot semantics: `..` stops at `/`).  More than 40
    /// symlinks (the kernel's limit) is an error, never a path left
    /// partly resolved: a writer would follow the rest outside the output.
    fn canonical_dir(&mut self, dir: &Path, hops: usize) -> Result<PathBuf> {
        if let Some(c) = self.canonical.get(dir) {
            return Ok(c.clone());
        }
        if hops > MAX_SYMLINKS {
            return Err(Error::backend(
                "build",
                format!(
                    "{}: too many levels of symbolic links inside the root",
                    self.root.display_path(dir).display()
                ),
            ));
        }
        let result = match (dir.parent(), dir.file_name()) {
            (Some(parent), Some(name)) => {
                let candidate = self.canonical_dir(parent, hops)?.join(name);
                let target = self
                    .is_dir_symlink(&candidate)
                    .then(|| self.root.read_link(&candidate).ok())
                    .flatten();
                match target {
                    Some(target) => {
                        self.add_ancestors(&candidate);
                        self.entries
                            .entry(candidate.clone())
                            .or_insert_with(|| Entry {
                                path: candidate.clone(),
                                source: candidate.clone(),
                                origin: Origin::Implied,
                                package: None,
                            });
                        let base = candidate.parent().unwrap_or(Path::new("/"));
                        let target = normalize(&base.join(target));
                        let resolved = self.canonical_dir(&target, hops + 1)?;
                        self.add_ancestors(&resolved.join("x"));
                        resolved
                    }
                    None => candidate,
                }
            }
            _ => dir.to_path_buf(),
        };
        self.canonical.insert(dir.to_path_buf(), result.clone());
        Ok(result)
    }
}

/// The kernel's limit on symlinks in one lookup (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn paths_through_directory_symlinks_are_written_at_the_target() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/lib/x")).unwrap();
        std::fs::write(root.path().join("usr/lib/x/libc.so"), "").unwrap();
        symlink("usr/lib", root.path().join("lib")).unwrap();
        let rootfs = RootFs::open(root.path()).unwrap();
        let mut layout = Layout {
            root: &rootfs,
            canonical: HashMap::new(),
            entries: BTreeMap::new(),
        };
        let p = PathBuf::from("/lib/x/libc.so");
        layout
            .add(Entry {
                path: p.clone(),
                source: p.clone(),
                origin: Origin::Package,
                package: None,
            })
            .unwrap();
        let paths: Vec<_> = layout
            .entries
            .keys()
            .map(|p| p.to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "/lib",
                "/usr",
                "/usr/lib",
                "/usr/lib/x",
                "/usr/lib/x/libc.so"
            ]
        );
        assert_eq!(
            layout.entries[Path::new("/usr/lib/x/libc.so")].source,
            p,
            "bytes still read from the listed path"
        );
    }

    #[test]
    fn another_roots_absolute_symlinks_lay_out_inside_it() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/lib/x")).unwrap();
        std::fs::create_dir_all(root.path().join("opt")).unwrap();
        symlink("/usr/lib", root.path().join("lib")).unwrap();
        symlink("../../../../lib", root.path().join("opt/up")).unwrap();
        symlink("loop", root.path().join("loop")).unwrap();
        let rootfs = RootFs::open(root.path()).unwrap();
        let mut layout = Layout {
            root: &rootfs,
            canonical: HashMap::new(),
            entries: BTreeMap::new(),
        };
        for p in ["/lib/x/a.so", "/opt/up/x/b", "/loop/c"] {
            layout
                .add(Entry {
                    path: p.into(),
                    source: p.into(),
                    origin: Origin::Package,
                    package: None,
                })
                .unwrap();
        }
        let paths: Vec<_> = layout.entries.keys().cloned().collect();
        for placed in ["/usr/lib/x/a.so", "/usr/lib/x/b", "/loop/c"] {
            assert!(
                paths.contains(&PathBuf::from(placed)),
                "{placed}: {paths:?}"
            );
        }
    }

    #[test]
    fn diverted_copies_yield_to_the_diverter() {
        let e = |p: &str, s: &str| Entry {
            path: p.into(),
            source: s.into(),
            origin: Origin::Package,
            package: None,
        };
        let out = apply_diversions(vec![
            e("/bin/sh", "/bin/sh.distrib"),
            e("/bin/sh", "/bin/sh"),
        ]);
        assert_eq!(out[0].path, PathBuf::from("/bin/sh.distrib"));
        let alone = apply_diversions(vec![e("/usr/bin/perf", "/usr/bin/perf.wrapper")]);
        assert_eq!(alone[0].path, PathBuf::from("/usr/bin/perf"));
    }
}
