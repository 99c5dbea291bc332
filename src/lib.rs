//! supermin: build minimal Linux appliances from the host's package
//! database without installing anything.
//!
//! The flow is one-directional (see `docs` in the README):
//! names -> [`backend::Backend::resolve`] -> files -> [`prepare`] writes a
//! supermin appliance directory; [`build`] reads one back
//! ([`appliance::load`]), assembles a [`build::FileSet`] and hands it to a
//! format writer, inside an [`output::Staging`] directory that is swapped
//! in only when complete.

pub mod appliance;
pub mod backend;
pub mod build;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod init;
pub mod outdir;
pub mod output;
pub mod package;
pub mod pattern;
pub mod prepare;
pub mod process;
pub mod report;
pub mod resolve;
pub mod rootfs;

#[cfg(feature = "python")]
mod python;

use std::path::{Path, PathBuf};

pub use backend::Backend;
pub use build::Format;
pub use error::{Error, Result};
pub use package::{File, FileKind, Package};
pub use prepare::{PrepareOptions, Prepared};
pub use report::Reporter;

/// Options of a build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub format: Format,
    pub include_packagelist: bool,
    /// Warn about packages that are no longer installed instead of failing.
    pub ignore_missing: bool,
    pub if_newer: bool,
    pub lock: Option<PathBuf>,
    /// Options of the ext2 format (ignored for chroot).
    pub ext2: build::ext2::Options,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            format: Format::Chroot,
            include_packagelist: false,
            ignore_missing: false,
            if_newer: false,
            lock: None,
            ext2: build::ext2::Options::default(),
        }
    }
}

/// What a build did.
#[derive(Debug, Clone, Default)]
pub struct BuildOutcome {
    pub output: PathBuf,
    /// `--if-newer` found the output up to date; nothing was written.
    pub skipped: bool,
    pub packages: Vec<Package>,
    /// Paths in the file set.
    pub paths: usize,
    pub stats: build::chroot::Stats,
    /// What the ext2 format wrote (kernel, UUID, initrd modules).
    pub ext2: Option<build::ext2::Outcome>,
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
    if options.format == Format::Ext2 {
        build::ext2fs::check_size(options.ext2.size.unwrap_or(build::ext2::DEFAULT_SIZE))?;
    }
    if options.if_newer
        && output::is_up_to_date(
            output,
            options.format.outputs(),
            inputs,
            backend.database_mtime()?,
        )
    {
        reporter.info(0, || "if-newer: output does not need rebuilding".into());
        return Ok(BuildOutcome {
            output: output.to_path_buf(),
            skipped: true,
            ..Default::default()
        });
    }
    let appliance = appliance::load(inputs)?;
    let set = build::assemble(backend, &appliance, options.ignore_missing, reporter)?;
    let staging = output::Staging::new(output, inputs)?;
    let (stats, ext2) = match options.format {
        Format::Chroot => {
            let out = staging.outdir()?;
            let stats = build::chroot::unpack_base_images(&appliance.base_images, &out, reporter)?;
            let stats = build::chroot::write(
                &set,
                backend.root(),
                &out,
                options.include_packagelist,
                stats,
                reporter,
            )?;
            (stats, None)
        }
        Format::Ext2 => {
            let outcome = build::ext2::write(
                &set,
                &appliance.base_images,
                backend.root(),
                &staging.outdir()?,
                options.include_packagelist,
                &options.ext2,
                reporter,
            )?;
            (outcome.files.clone(), Some(outcome))
        }
    };
    reporter.info(1, || {
        format!(
            "build: {} files ({} bytes), {} hard links",
            stats.files, stats.bytes, stats.hard_links
        )
    });
    // The last moment a cancel is heard: after the swap the work is done.
    reporter.check()?;
    let output = staging.commit()?;
    Ok(BuildOutcome {
        output,
        skipped: false,
        paths: set.entries.len(),
        packages: set.packages,
        stats,
        ext2,
    })
}
