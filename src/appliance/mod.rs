//! The supermin appliance directory: reading build inputs (compat-spec §2)
//! and writing what `prepare` produces.

mod read;
mod write;

pub(crate) use read::content_lines;
pub use read::{for_each_tar_member, load, Appliance, BaseImage, Compression, SparseBudget};
pub use write::{write_base_image, write_packages};
