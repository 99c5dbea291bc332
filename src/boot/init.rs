//! The mini init (`init/main.rs`), built static by `build.rs` and embedded
//! here so that an installed wheel carries it: no separate file to find.

/// The static `/init` executable for the initrd.
pub const MINI_INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/init"));
