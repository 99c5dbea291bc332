//! `build`: supermin appliance -> full appliance.
//!
//! [`fileset::assemble`] turns the appliance inputs into a sorted
//! [`FileSet`]; a format writer ([`chroot`]) then writes it.

pub mod chroot;
pub mod ext2;
pub mod ext2fs;
pub mod fileset;
pub mod initrd;
pub mod kernel;

pub use fileset::{assemble, Entry, FileSet, Origin};

use std::str::FromStr;

use crate::error::Error;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Chroot,
    Ext2,
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Format, Error> {
        match s {
            "chroot" | "fs" | "filesystem" => Ok(Format::Chroot),
            "ext2" => Ok(Format::Ext2),
            other => Err(Error::Usage(format!(
                "unknown --format option ({other}): use chroot or ext2"
            ))),
        }
    }
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Chroot => "chroot",
            Format::Ext2 => "ext2",
        }
    }

    /// The files inside OUT whose mtimes `--if-newer` compares.
    pub fn outputs(self) -> &'static [&'static str] {
        match self {
            Format::Chroot => &[],
            Format::Ext2 => &["kernel", "root", "initrd"],
        }
    }
}
