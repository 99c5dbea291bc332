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

#[cfg(feature = "python")]
mod python;

use std::path::{Path, PathBuf};

pub use appliance::{load as load_appliance, Appliance, BaseImage, Compression};
pub use assemble::{paths as appliance_paths, Skipped};
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
    if options.if_newer
        && output::is_up_to_date(output, format.outputs(), inputs, backend.database_mtime()?)
    {
        // (The command line says upstream's line; a caller sees `skipped`.)
        reporter.info(1, || {
            format!("if-newer: {} is up to date", output.display())
        });
        return Ok(BuildOutcome {
            output: output.to_path_buf(),
            skipped: true,
            ..Default::default()
        });
    }
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
    // The last moment a cancel is heard: after the swap the work is done.
    reporter.check()?;
    let output = staging.commit()?;
    Ok(BuildOutcome {
        output,
        skipped: false,
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
