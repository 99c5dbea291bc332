//! The supermin appliance directory: reading build inputs (compat-spec §2)
//! and writing what `prepare` produces.

mod read;
mod write;

pub use read::{load, Appliance, BaseImage, Compression};
pub use write::{write_base_image, write_packages};
