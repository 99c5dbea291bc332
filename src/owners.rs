//! Which installed packages own a path (`Backend.owner()`, the in-process
//! `dpkg -S` / `rpm -qf`).  Packages list paths as their database has
//! them: on a merged-/usr system dpkg lists `/bin/ls`, which is the file
//! at `/usr/bin/ls`.  So both the listed paths and the path asked about
//! are compared with their directories resolved inside the root (the last
//! component is not followed: a symlink's owner is the link's).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::backend::Backend;
use crate::error::Result;
use crate::package::Package;
use crate::report::Reporter;
use crate::rootfs::{normalize, RootFs};

/// Every installed package's paths, by their resolved form.
#[derive(Debug, Default)]
pub struct OwnerIndex {
    packages: Vec<Package>,
    /// Indexes into `packages`.
    by_path: HashMap<PathBuf, Vec<u32>>,
}

/// Resolves directories inside a root, each once.
struct Resolver<'a> {
    root: &'a RootFs,
    dirs: HashMap<PathBuf, PathBuf>,
}

impl Resolver<'_> {
    /// `path` with its directory resolved inside the root; as written
    /// (normalized) where that directory does not exist.
    fn resolve(&mut self, path: &Path) -> PathBuf {
        let path = normalize(path);
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return path;
        };
        if let Some(resolved) = self.dirs.get(dir) {
            return resolved.join(name);
        }
        let resolved = self
            .root
            .canonical(dir)
            .unwrap_or_else(|_| dir.to_path_buf());
        self.dirs.insert(dir.to_path_buf(), resolved.clone());
        resolved.join(name)
    }
}

impl OwnerIndex {
    /// Read every installed package's file list (in parallel, as a build
    /// does) and index it.
    pub fn build(backend: &dyn Backend, reporter: &Reporter) -> Result<OwnerIndex> {
        let packages = backend.packages();
        let counter = reporter.counter("indexing file lists", packages.len() as u64);
        let lists: Vec<Vec<crate::package::File>> = packages
            .par_iter()
            .map(|p| {
                reporter.check()?;
                counter.tick();
                backend.files(p)
            })
            .collect::<Result<_>>()?;
        let mut resolver = Resolver {
            root: backend.root(),
            dirs: HashMap::new(),
        };
        let mut by_path: HashMap<PathBuf, Vec<u32>> = HashMap::new();
        for (i, list) in lists.iter().enumerate() {
            for file in list {
                let owners = by_path.entry(resolver.resolve(&file.path)).or_default();
                if owners.last() != Some(&(i as u32)) {
                    owners.push(i as u32);
                }
            }
        }
        Ok(OwnerIndex { packages, by_path })
    }

    /// The packages that list `path` (absolute inside the root).
    pub fn owners(&self, root: &RootFs, path: &Path) -> Vec<&Package> {
        let mut resolver = Resolver {
            root,
            dirs: HashMap::new(),
        };
        let key = resolver.resolve(&Path::new("/").join(path));
        self.by_path
            .get(&key)
            .map(|o| o.iter().map(|&i| &self.packages[i as usize]).collect())
            .unwrap_or_default()
    }
}
