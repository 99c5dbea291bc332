//! `prepare`: package names -> supermin appliance directory (compat-spec §1).
//!
//! Writes `packages` (the named packages, not their dependencies, which
//! are resolved again at build time) and `base.tar.gz` (every config file
//! of the dependency closure, pristine from the packages or, with
//! `use_installed`, from the host).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::appliance;
use crate::backend::{read_installed, Backend, ConfigFile};
use crate::error::{Error, Result};
use crate::output::ScratchBase;
use crate::package::{FileKind, Package};
use crate::report::Reporter;
use crate::rootfs::RootFs;

#[derive(Debug, Clone, Default)]
pub struct PrepareOptions {
    /// Take config files from the host instead of downloading packages.
    pub use_installed: bool,
    /// Warn about unknown package names instead of failing (upstream's
    /// behaviour; libguestfs' package lists name optional packages).
    pub ignore_missing: bool,
    pub packager_config: Option<PathBuf>,
    /// Download every package with config files even when the host's copies
    /// are verified pristine.
    pub always_download: bool,
    /// Clamp archive mtimes (SOURCE_DATE_EPOCH).
    pub source_date_epoch: Option<u64>,
    /// Where packages are downloaded to.
    pub scratch: ScratchBase,
}

/// What `prepare` wrote.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// Names written to `packages`.
    pub packages: Vec<String>,
    /// The dependency closure.
    pub closure: Vec<Package>,
    /// Paths stored in `base.tar.gz` (empty: no archive written).
    pub config_files: Vec<PathBuf>,
}

/// Write the supermin appliance for `names` into `dir` (a fresh directory).
pub fn prepare(
    backend: &dyn Backend,
    names: &[String],
    dir: &crate::outdir::OutDir,
    options: &PrepareOptions,
    reporter: &Reporter,
) -> Result<Prepared> {
    if names.is_empty() {
        return Err(Error::Usage("prepare: no input packages specified".into()));
    }
    let roots = backend.packages_named_or_warn(names, options.ignore_missing, reporter)?;
    if roots.is_empty() {
        return Err(Error::PackageNotFound {
            names: names.to_vec(),
        });
    }
    let mut written: Vec<String> = roots.iter().map(|p| p.name.clone()).collect();
    written.sort_unstable();
    written.dedup();
    appliance::write_packages(dir, &written)?;

    let closure = backend.resolve(&roots, reporter)?;
    reporter.info(1, || {
        format!(
            "prepare: {} packages after resolving dependencies",
            closure.len()
        )
    });

    // Config files per package (regular files only).
    let mut wanted: Vec<(Package, Vec<PathBuf>)> = Vec::new();
    let counter = reporter.counter("reading file lists", closure.len() as u64);
    for package in &closure {
        reporter.check()?;
        counter.tick();
        let paths: Vec<PathBuf> = backend
            .files(package)?
            .into_iter()
            .filter(|f| f.is_config && matches!(f.kind, FileKind::Regular | FileKind::Missing))
            .map(|f| f.path)
            .collect();
        if !paths.is_empty() {
            wanted.push((package.clone(), paths));
        }
    }
    let count: usize = wanted.iter().map(|(_, p)| p.len()).sum();
    reporter.info(1, || {
        format!("prepare: {count} config files in {} packages", wanted.len())
    });

    reporter.progress("config files", 0, count as u64);
    let mut files = if options.use_installed {
        installed_config_files(backend.root(), &wanted, reporter)?
    } else if wanted.is_empty() {
        Vec::new()
    } else {
        let scratch = options.scratch.create()?;
        backend.pristine_config_files(
            &wanted,
            scratch.path(),
            options.packager_config.as_deref(),
            options.always_download,
            reporter,
        )?
    };
    reporter.progress("config files", count as u64, count as u64);
    // One copy per path (two packages may ship the same conffile).
    let mut by_path: BTreeMap<PathBuf, ConfigFile> = BTreeMap::new();
    for f in files.drain(..) {
        by_path.entry(f.path.clone()).or_insert(f);
    }
    let mut files: Vec<ConfigFile> = by_path.into_values().collect();
    let config_files: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    if files.is_empty() {
        reporter.info(1, || {
            "prepare: no config files; not creating base.tar.gz".into()
        });
    } else {
        appliance::write_base_image(dir, &mut files, options.source_date_epoch)?;
    }
    Ok(Prepared {
        packages: written,
        closure,
        config_files,
    })
}

/// Config files read from the installed system, inside its root (a
/// symlink there is not followed: its target could be the host's).  Files
/// that are missing or not regular are skipped, and unreadable ones (e.g.
/// 0600 files for a non-root user) too, as upstream does, named in one
/// warning.
fn installed_config_files(
    root: &RootFs,
    wanted: &[(Package, Vec<PathBuf>)],
    reporter: &Reporter,
) -> Result<Vec<ConfigFile>> {
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    for path in wanted.iter().flat_map(|(_, paths)| paths) {
        reporter.check()?;
        match root.symlink_metadata(path) {
            Ok(meta) if meta.is_file() => {}
            _ => continue,
        }
        match read_installed(root, path) {
            Ok((data, meta)) => out.push(ConfigFile {
                path: path.clone(),
                mode: meta.mode() & 0o7777,
                mtime: meta.mtime().max(0) as u64,
                data,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                unreadable.push(path.display().to_string())
            }
            // Too large to be a config file.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(Error::io("reading", root.display_path(path), e))
            }
            // Replaced by a symlink or a FIFO since it was listed.
            Err(_) => continue,
        }
        crate::backend::check_config_total(&out)?;
    }
    if !unreadable.is_empty() {
        reporter.warn(format!(
            "{} config files are unreadable and were left out of base.tar.gz: {}",
            unreadable.len(),
            unreadable
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(out)
}
