//! The stamp's text layout: what the library (`src/stamp/mod.rs`) writes
//! and reads, and what the native launcher (`launcher/main.rs`, which
//! includes this file with `#[path]`) reads.  One file, so that neither
//! can drift from the other.
//!
//! A stamp is UTF-8 text: [`HEADER`], then one line per fact, each a kind
//! and tab-separated fields ([`field_count`]), then `end`.  Lines end at
//! `\n` only; no field holds a tab, a newline or a carriage return.

/// The stamp file in an output of named files.
pub const FILE_NAME: &str = ".supermin-stamp";
/// The first line; a stamp of another layout is not read.
pub const HEADER: &str = "supermin-stamp 1";
/// The largest stamp read (a closure of thousands of packages is ~200 KB).
pub const MAX_STAMP: u64 = 8 << 20;
/// The build of supermin that writes and trusts stamps: its version and
/// its mini init (both set by `build.rs`).
pub const MADE_BY: &str = concat!(
    env!("SUPERMIN_VERSION"),
    " init-",
    env!("SUPERMIN_INIT_DIGEST")
);

/// How many tab-separated fields a line of this kind has (the kind
/// included); `None` for a kind the layout does not have.  The `quick-`
/// lines are the launcher's quick record.
pub fn field_count(kind: &str) -> Option<usize> {
    Some(match kind {
        "made-by" | "options" => 2,
        "database" => 5,
        "database-missing" => 2,
        "input" => 6,
        "kernel" => 6,
        "kernel-modules" => 4,
        "kernel-modules-missing" => 1,
        "package" => 4,
        "link" => 3,
        "quick-arg" | "quick-cwd" | "quick-unset" | "quick-release" | "quick-output" => 2,
        "quick-absent" => 2,
        "quick-env" => 3,
        "quick-file" => 5,
        "end" => 1,
        _ => return None,
    })
}
