//! supermin: build minimal Linux appliances from the host's package
//! database without installing anything.
//!
//! The flow is one-directional:
//!
//! ```text
//! names --resolve--> closure --file lists--> plan --assemble--> tree --format--> OUT
//! ```
//!
//! [`backend::Backend`] resolves names to a closure and lists its files;
//! [`prepare()`] writes a supermin appliance directory; [`build()`] reads
//! one back ([`appliance::load`]), [`assemble::plan`]s the host paths,
//! [`assemble::assemble`]s the one format-neutral [`tree::Tree`], and
//! hands it to a [`format::Format`] writer, inside an [`output::Staging`]
//! directory that is swapped in only when complete.

// The public API: the modules whose types appear in it, and re-exports.
pub mod backend;
pub mod boot;
pub mod error;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod outdir;
pub mod owners;
pub mod report;
pub mod resolve;
pub mod rootfs;
pub mod tree;

// Implementation: reached through the functions and re-exports below.
mod appliance;
mod assemble;
mod output;
mod package;
mod pattern;
mod prepare;
mod process;
pub mod stamp;

#[cfg(feature = "python")]
mod python;

use std::path::{Path, PathBuf};

use error::IoContext;

pub use appliance::{load as load_appliance, Appliance, BaseImage, Compression};
pub use assemble::{listing as appliance_listing, Listed, Skipped};
pub use backend::Backend;
pub use error::{Error, Result};
pub use format::{Format, FORMATS};
pub use output::{Scratch, ScratchBase};
pub use package::{File, FileKind, Package};
pub use prepare::{PrepareOptions, Prepared};
pub use report::{Cancel, Reporter};

/// Options of a build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub format: &'static dyn Format,
    pub include_packagelist: bool,
    /// Warn about packages that are no longer installed instead of failing.
    pub ignore_missing: bool,
    pub if_newer: bool,
    pub lock: Option<PathBuf>,
    /// What the formats are asked for (epoch, kernel, ext2 image).
    pub formats: format::Options,
    /// The package database's files as they were before the backend read
    /// them ([`backend::database_state`]); `None`: taken when the build
    /// starts (a change between the backend's read and then is missed by
    /// the stamp until the next change).
    pub database: Option<stamp::DatabaseState>,
    /// The command line that asked for this build (the CLI gives it): the
    /// stamp then holds a quick record for the native launcher.
    pub invocation: Option<stamp::Invocation>,
    /// Bootable formats: where a kernel may come from besides the host
    /// (`--kernel-package`); `None`: the host's only.
    pub kernel_packages: Option<KernelPackages>,
}

/// A kernel from distribution packages ([`boot::kernel_package`]).
#[derive(Debug, Clone, Default)]
pub struct KernelPackages {
    /// A package file, or package names (comma-separated) to download;
    /// `None`: the backend's kernel packages, only when the host has no
    /// kernel.
    pub given: Option<String>,
    /// The cache of unpacked kernels (`$XDG_CACHE_HOME/supermin/kernels`).
    pub cache: PathBuf,
    /// The downloader's configuration (`--packager-config`).
    pub packager_config: Option<PathBuf>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            format: &format::chroot::Chroot,
            include_packagelist: false,
            ignore_missing: false,
            if_newer: false,
            lock: None,
            formats: format::Options::default(),
            database: None,
            invocation: None,
            kernel_packages: None,
        }
    }
}

/// What a build wrote.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Regular files in the appliance (each inode once), and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Extra names of those files.
    pub hard_links: u64,
    /// Host files left out: unreadable by this user, or on pseudo
    /// filesystems.
    pub skipped: assemble::Skipped,
    /// Set-id bits dropped because owners could not be kept.
    pub setid_dropped: u64,
}

/// What a build did.
#[derive(Debug, Clone, Default)]
pub struct BuildOutcome {
    pub output: PathBuf,
    /// `--if-newer` found the output up to date; nothing was written.
    pub skipped: bool,
    /// Why `--if-newer` rebuilt ("output missing", "libc6 2.36-9 → 2.36-10",
    /// "options changed"...); empty without `--if-newer` or when skipped.
    pub rebuilt_because: Vec<String>,
    pub packages: Vec<Package>,
    /// Host paths planned.
    pub paths: usize,
    pub stats: Stats,
    /// Bootable formats: the kernel and initrd.
    pub boot: Option<boot::Booted>,
}

/// `supermin --prepare`: write the supermin appliance for `names` to
/// `output`, atomically replacing any previous one.
pub fn prepare(
    backend: &dyn Backend,
    names: &[String],
    output: &Path,
    options: &PrepareOptions,
    lock: Option<&Path>,
    reporter: &Reporter,
) -> Result<Prepared> {
    let _lock = lock
        .map(|l| output::Lock::acquire(l, reporter))
        .transpose()?;
    let staging = output::Staging::new(output, &[])?;
    let prepared = prepare::prepare(backend, names, &staging.outdir()?, options, reporter)?;
    reporter.info(1, || {
        format!(
            "prepare: renaming {} to {}",
            staging.path().display(),
            staging.output().display()
        )
    });
    // The last moment a cancel is heard: after the swap the work is done.
    reporter.check()?;
    staging.commit()?;
    Ok(prepared)
}

/// `supermin --build`: build a full appliance from supermin appliance
/// `inputs` into `output`, atomically replacing any previous one.
pub fn build(
    backend: &dyn Backend,
    inputs: &[PathBuf],
    output: &Path,
    options: &BuildOptions,
    reporter: &Reporter,
) -> Result<BuildOutcome> {
    if inputs.is_empty() {
        return Err(Error::Usage(
            "build: no input supermin appliance specified".into(),
        ));
    }
    // The lock comes first, so that two builders never both decide to build.
    let _lock = options
        .lock
        .as_deref()
        .map(|l| output::Lock::acquire(l, reporter))
        .transpose()?;
    output::check_location(output, inputs)?;
    let format = options.format;
    format.check(&options.formats)?;
    let packaged = with_packaged_kernel(backend, options, reporter)?;
    let options = packaged.as_ref().unwrap_or(options);
    let database = match &options.database {
        Some(state) => state.clone(),
        None => backend::database_state(backend.root().path(), Some(backend.name()))?,
    };
    let mut current = current_state(inputs, options, backend.root().path(), database, reporter)?;
    let mut rebuilt_because = Vec::new();
    if options.if_newer {
        match if_newer(output, options, &mut current, Some(backend), reporter)? {
            Verdict::UpToDate => {
                return Ok(BuildOutcome {
                    output: output.to_path_buf(),
                    skipped: true,
                    ..Default::default()
                })
            }
            Verdict::Build(reasons) => rebuilt_because = reasons,
            Verdict::ReadDatabase => unreachable!("the database was given"),
        }
    }
    // Before the build reads them: an input edited during the build then
    // no longer matches the stamp.
    current.digest_inputs();
    let appliance = appliance::load(inputs)?;
    let plan = assemble::plan(backend, &appliance, options.ignore_missing, reporter)?;
    let staging = output::Staging::new(output, inputs)?;
    let out = staging.outdir()?;
    let now = options
        .formats
        .epoch
        .map(|e| e.min(i64::MAX as u64) as i64)
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    let assembled = assemble::assemble(
        plan,
        &appliance.base_images,
        backend.root(),
        &out,
        assemble::Options {
            packagelist: options.include_packagelist,
            now,
            capacity: format.capacity(&options.formats),
        },
        reporter,
    )?;
    let (files, bytes, hard_links) = assembled.tree.file_counts();
    let host = rootfs::RootFs::host().map_err(|e| Error::io("opening", "/", e))?;
    let context = format::Context {
        sources: tree::Sources {
            build: backend.root(),
            host: &host,
        },
        options: &options.formats,
        now,
        reporter,
    };
    reporter.info(1, || {
        format!(
            "build: writing {} ({files} files, {bytes} bytes, {hard_links} hard links)",
            format.name()
        )
    });
    let written = format.write(assembled.tree, &out, &context)?;
    if let Some(booted) = &written.boot {
        current.confirm_kernel(&booted.kernel);
    }
    let stamped = match stamp::Stamp::new(&current, &assembled.packages, &assembled.links, format) {
        Some(stamp) => stamp
            .store(&staging.dir()?, format)
            .at("writing the stamp in", staging.path())?,
        None => false,
    };
    if !stamped {
        reporter.info(1, || {
            "build: no stamp (an input or the kernel changed during the build, a \
             path that cannot be written in one, or no user attributes here)"
                .to_string()
        });
    }
    // The last moment a cancel is heard: after the swap the work is done.
    reporter.check()?;
    let output = staging.commit()?;
    Ok(BuildOutcome {
        output,
        skipped: false,
        rebuilt_because,
        paths: assembled.paths,
        packages: assembled.packages,
        stats: Stats {
            files,
            bytes,
            hard_links,
            skipped: assembled.skipped,
            setid_dropped: written.setid_dropped,
        },
        boot: written.boot,
    })
}

/// `options` with the kernel of a distribution package as the kernel
/// override, when the format boots and either `--kernel-package` names one
/// or the host has no kernel (then the backend's kernel packages); `None`
/// to use `options` as they are.
fn with_packaged_kernel(
    backend: &dyn Backend,
    options: &BuildOptions,
    reporter: &Reporter,
) -> Result<Option<BuildOptions>> {
    let boot = &options.formats.boot;
    let Some(packages) = &options.kernel_packages else {
        return Ok(None);
    };
    if !options.format.outputs().contains(&"kernel") {
        return Ok(None);
    }
    if boot.kernel.kernel.is_some() {
        if packages.given.is_some() {
            return Err(Error::Usage(
                "--kernel-package and SUPERMIN_KERNEL both name a kernel: give one".into(),
            ));
        }
        return Ok(None);
    }
    let from_names = |names: &[String]| {
        boot::kernel_package::kernel_from_names(
            backend,
            names,
            &packages.cache,
            packages.packager_config.as_deref(),
            boot.host_cpu.as_deref(),
            reporter,
        )
    };
    let kernel = match &packages.given {
        Some(given) if given.contains('/') || Path::new(given).is_file() => {
            boot::kernel_package::kernel_from_files(
                &[PathBuf::from(given)],
                &packages.cache,
                boot.host_cpu.as_deref(),
                reporter,
            )?
        }
        Some(given) => {
            let names: Vec<String> = given.split(',').map(|n| n.trim().to_string()).collect();
            from_names(&names)?
        }
        None => {
            let host = match boot::find_kernel(boot, &reporter.quiet()) {
                Ok(_) => return Ok(None),
                Err(e) => e,
            };
            // SUPERMIN_MODULES or SUPERMIN_KERNEL_VERSION chose for the
            // host's kernel: their error, not another kernel.
            if boot.kernel.modules.is_some() || boot.kernel.version.is_some() {
                return Err(host);
            }
            let names: Vec<String> = backend
                .kernel_packages()
                .iter()
                .map(|n| n.to_string())
                .collect();
            if names.is_empty() {
                return Err(host);
            }
            reporter.info(1, || {
                format!(
                    "kernel: none on this host; taking the distribution's ({})",
                    names.join(" ")
                )
            });
            from_names(&names).map_err(|e| Error::Kernel {
                path: None,
                message: format!(
                    "{host}\nNor could the distribution's kernel package ({}) be used: {e}\n\
                     (--kernel-package FILE takes a kernel package file you have.)",
                    names.join(" ")
                ),
            })?
        }
    };
    reporter.info(1, || {
        format!(
            "kernel: {} (version {}) from a kernel package",
            kernel.path.display(),
            kernel.version
        )
    });
    let mut options = options.clone();
    options.formats.boot.kernel = boot::kernel::Overrides {
        kernel: Some(kernel.path),
        version: Some(kernel.version),
        modules: Some(kernel.modules),
    };
    // OUT/kernel must not depend on a cache the user may clear.
    options.formats.boot.copy_kernel = true;
    Ok(Some(options))
}

/// What `--if-newer` decided.
enum Verdict {
    UpToDate,
    Build(Vec<String>),
    /// Only reading the package database can tell.
    ReadDatabase,
}

/// The build's options as one line for the stamp: any change rebuilds.
fn options_text(options: &BuildOptions, root: &Path) -> String {
    format!(
        "format={} root={:?} packagelist={} ignore-missing={} {:?}",
        options.format.name(),
        root,
        options.include_packagelist,
        options.ignore_missing,
        options.formats
    )
}

/// What a build would be made from now, before it reads anything.
fn current_state(
    inputs: &[PathBuf],
    options: &BuildOptions,
    root: &Path,
    database: stamp::DatabaseState,
    reporter: &Reporter,
) -> Result<stamp::Current> {
    // The kernel a bootable format would pick, before the build picks it
    // (quietly: the build says which when it does).
    let quiet = reporter.quiet();
    let kernel = options.format.outputs().contains(&"kernel").then(|| {
        boot::find_kernel(&options.formats.boot, &quiet)
            .map_err(|e| e.to_string())
            .and_then(|k| stamp::KernelIdentity::of(&k).map_err(|e| e.to_string()))
    });
    let mut current =
        stamp::Current::new(options_text(options, root), inputs, kernel, Some(database)).map_err(
            |e| Error::BadInput {
                path: inputs.first().cloned().unwrap_or_default(),
                message: format!("cannot read the inputs: {e}"),
            },
        )?;
    current.set_invocation(options.invocation.clone());
    Ok(current)
}

/// `--if-newer`: is `output` what a build would make now?  The stamp
/// decides (see [`stamp`]); an output without one, upstream's rule.
/// Without `backend` a changed database gives [`Verdict::ReadDatabase`].
fn if_newer(
    output: &Path,
    options: &BuildOptions,
    current: &mut stamp::Current,
    backend: Option<&dyn Backend>,
    reporter: &Reporter,
) -> Result<Verdict> {
    let format = options.format;
    let inputs = current.input_roots.clone();
    // The closure a build would take now and its alternatives links,
    // planned again (quietly) when the database changed: a package added
    // to it (a new provider, one that --ignore-missing left out) or an
    // alternative set elsewhere rebuilds as surely as a new version.
    let closure = |backend: &dyn Backend| {
        let quiet = reporter.quiet();
        appliance::load(&inputs)
            .and_then(|a| assemble::plan(backend, &a, options.ignore_missing, &quiet))
            .map(|plan| (plan.packages, plan.links))
            .map_err(|e| e.to_string())
    };
    let mut resolve = backend.map(|b| move || closure(b));
    let decision = stamp::decide(
        output,
        format,
        current,
        resolve.as_mut().map(|r| r as stamp::Closure<'_>),
    );
    let verdict = match decision {
        stamp::Decision::UpToDate { refresh } => {
            if let Some((stamp, dir)) = refresh {
                // Best effort, into the directory the stamp was read from:
                // an output this user cannot write is still up to date.
                let stored = stamp.store(&dir, format);
                reporter.info(2, || format!("if-newer: stamp refreshed: {stored:?}"));
            }
            Verdict::UpToDate
        }
        stamp::Decision::Rebuild(reasons) => Verdict::Build(reasons),
        stamp::Decision::ReadDatabase => Verdict::ReadDatabase,
        stamp::Decision::NoStamp => {
            let newest = match (backend, current.database_newest()) {
                (_, Some(t)) => t,
                (Some(b), None) => b.database_mtime()?,
                (None, None) => return Ok(Verdict::ReadDatabase),
            };
            if output::is_up_to_date(output, format.outputs(), &current.input_roots, newest) {
                Verdict::UpToDate
            } else {
                Verdict::Build(vec![
                    "no stamp, and an input or the package database is newer than the output"
                        .into(),
                ])
            }
        }
    };
    match &verdict {
        // (The command line says upstream's line; a caller sees `skipped`.)
        Verdict::UpToDate => reporter.info(1, || {
            format!("if-newer: {} is up to date", output.display())
        }),
        // Said once, by the build that follows (with the database read).
        Verdict::Build(reasons) if backend.is_some() => reporter.info(1, || {
            format!(
                "if-newer: rebuilding {}: {}",
                output.display(),
                reasons.join("; ")
            )
        }),
        _ => {}
    }
    Ok(verdict)
}

/// `--if-newer` before the package database is opened: `true` if the
/// output is up to date by its stamp and the database's files alone (or
/// by upstream's rule when it has no stamp).  `false` means "open the
/// database and call [`build`]", which decides again and says why.
pub fn is_up_to_date(
    inputs: &[PathBuf],
    output: &Path,
    options: &BuildOptions,
    root: &Path,
    reporter: &Reporter,
) -> Result<bool> {
    let _lock = options
        .lock
        .as_deref()
        .map(|l| output::Lock::acquire(l, reporter))
        .transpose()?;
    let database = match &options.database {
        Some(state) => state.clone(),
        None => backend::database_state(root, None)?,
    };
    let mut current = current_state(inputs, options, root, database, reporter)?;
    Ok(matches!(
        if_newer(output, options, &mut current, None, reporter)?,
        Verdict::UpToDate
    ))
}
