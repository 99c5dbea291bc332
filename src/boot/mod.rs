//! What any bootable format needs besides the tree: a kernel (found on
//! the host or named by `SUPERMIN_KERNEL`), its modules, an initrd with
//! the mini init, the modules in the appliance, and `OUT/kernel`.  The
//! ext2 and initramfs formats call these pieces.

pub mod cpio;
pub mod init;
pub mod initrd;
pub mod kernel;
pub mod kernel_package;
mod modules;
pub mod protocol;
pub mod pvh;
pub mod run;

use std::path::{Path, PathBuf};

pub use kernel::Kernel;
pub use modules::{add_modules, Modules};

use crate::error::{IoContext, Result};
use crate::outdir::{OutDir, Parents};
use crate::report::Reporter;

/// How the kernel is chosen and installed.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Copy the kernel into OUT instead of symlinking it.
    pub copy_kernel: bool,
    /// The architecture whose kernel to look for (default: the host's).
    pub host_cpu: Option<String>,
    /// `SUPERMIN_KERNEL`, `SUPERMIN_KERNEL_VERSION`, `SUPERMIN_MODULES`.
    pub kernel: kernel::Overrides,
    /// The modules in the appliance's `/lib/modules`; `None`: the
    /// format's default (ext2: all of them, as upstream; initramfs: none,
    /// as every byte of it is unpacked into memory at every boot).
    pub modules: Option<Modules>,
}

/// What a bootable format wrote besides its root.
#[derive(Debug, Clone)]
pub struct Booted {
    pub kernel: Kernel,
    /// The modules the initrd loads, in load order.
    pub initrd_modules: Vec<String>,
    pub initrd_bytes: u64,
    /// The root filesystem's UUID, where there is one.
    pub root_uuid: Option<String>,
}

/// The kernel to boot: first, so that a host without one fails before
/// any other work.
pub fn find_kernel(options: &Options, reporter: &Reporter) -> Result<Kernel> {
    let search = kernel::Search::host(options.host_cpu.as_deref());
    reporter.progress("finding the kernel", 0, 1);
    let found = kernel::find(&options.kernel, &search, reporter);
    if found.is_ok() {
        reporter.progress("finding the kernel", 1, 1);
    }
    found
}

/// `OUT/initrd` (mode 0644): the mini init and the modules that find the
/// root, in a newc cpio.
pub fn write_initrd(
    kernel: &Kernel,
    out: &OutDir,
    epoch: Option<u64>,
    reporter: &Reporter,
) -> Result<initrd::Initrd> {
    let path = out.path().join("initrd");
    let place = out
        .place(Path::new("/initrd"), Parents::Existing)
        .at("creating", &path)?;
    let file = place.create_file().at("creating", &path)?;
    reporter.progress("writing the initrd", 0, 1);
    let written = initrd::write(
        &kernel.modules,
        init::MINI_INIT,
        &path,
        file,
        epoch,
        reporter,
    )?;
    place.chmod(0o644).at("setting permissions of", &path)?;
    reporter.progress("writing the initrd", 1, 1);
    Ok(written)
}

/// `OUT/kernel`: a symlink to the kernel, or a copy of it.
pub fn install_kernel(kernel: &Kernel, out: &OutDir, copy: bool) -> Result<PathBuf> {
    let path = out.path().join("kernel");
    let place = out
        .place(Path::new("/kernel"), Parents::Existing)
        .at("creating", &path)?;
    kernel::install(kernel, &place, &path, copy)?;
    Ok(path)
}
