//! The names the host side and the mini init (`init/main.rs`, which
//! includes this file with `#[path]`) must agree on: marker files in the
//! initrd, the run directory, the devices of a run's channels.  One file,
//! so that neither side can drift from the other.

/// Present at the initrd's root in an initramfs appliance, whose tree is
/// in `/root` already (no disk to find).
pub const INITRAMFS_MARKER: &str = "supermin-initramfs";

/// Where `supermin.run=@` finds what `supermin.run()` appended to the
/// initrd: `command`, the input files under `in/`, the marker file
/// `outputs`, the guest mount point of a share in `share`, and drivers to
/// load (in name order) under `modules/`.
pub const RUN_DIR: &str = "supermin-run";

/// The serial number of a run's output disk, how the guest finds it.
pub const OUTPUT_DISK_SERIAL: &str = "supermin-out";

/// Where the command leaves the files it sends back.
pub const GUEST_OUTPUT_DIR: &str = "/out";

/// The 9p mount tag of a host directory shared with a run.
pub const SHARE_TAG: &str = "supermin-share";
