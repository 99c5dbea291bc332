//! The crate's one error type.  Every variant names the thing at fault
//! (a package, an input file, an output path, a program) so that the CLI
//! can print `supermin: MESSAGE` and Python callers can read the culprit
//! from the exception's attributes.

use std::io;
use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Package names that are unknown to the database or not installed.
    #[error("{}", package_not_found_message(.names))]
    PackageNotFound { names: Vec<String> },

    /// A supermin appliance input (file or directory) is malformed.
    #[error("{}: {message}", .path.display())]
    BadInput { path: PathBuf, message: String },

    /// The package database, a package file or a package tool failed.
    #[error("{backend}: {message}")]
    Backend { backend: String, message: String },

    /// The output cannot be created, written or replaced.
    #[error("{}: {message}", .path.display())]
    Output { path: PathBuf, message: String },

    /// No usable kernel, or the chosen kernel or its modules are unusable.
    /// `path` is the kernel or module directory at fault, when there is one.
    #[error("{message}")]
    Kernel {
        path: Option<PathBuf>,
        message: String,
    },

    /// An I/O error on a named path, with what we were doing.
    #[error("{context} {}: {source}", .path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// An option has a value we cannot use.
    #[error("{0}")]
    Usage(String),

    /// The caller cancelled the work (Ctrl-C, SIGTERM, a progress callback
    /// that raised).  Nothing was replaced.
    #[error("interrupted; the previous output, if any, was kept")]
    Cancelled,

    /// A bug: a panic caught at the API boundary.
    #[error("internal error: {0}")]
    Internal(String),
}

fn package_not_found_message(names: &[String]) -> String {
    if names.len() == 1 {
        format!(
            "package '{}' is not installed (or unknown to the package database)",
            capped(&names[0])
        )
    } else {
        format!(
            "packages {} are not installed (or unknown to the package database)",
            name_list(names)
        )
    }
}

/// How many names a message lists before it counts the rest.
const NAMES_SHOWN: usize = 10;

/// How much of one name (or line, or path) a message quotes.
const NAME_SHOWN: usize = 120;

/// `text`, cut to [`NAME_SHOWN`] characters with `...` where cut: a
/// message quotes data other people wrote, and a 1 MB package name must
/// not make a 1 MB message.
pub fn capped(text: &str) -> String {
    match text.char_indices().nth(NAME_SHOWN) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// `'a', 'b', 'c'`: the first [`NAMES_SHOWN`] names, quoted and
/// [`capped`], then how many more there are.
pub fn name_list(names: &[String]) -> String {
    let mut text = names
        .iter()
        .take(NAMES_SHOWN)
        .map(|n| format!("'{}'", capped(n)))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > NAMES_SHOWN {
        text.push_str(&format!(" and {} more", names.len() - NAMES_SHOWN));
    }
    text
}

impl Error {
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            context,
            path: path.into(),
            source,
        }
    }

    pub fn bad_input(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::BadInput {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn output(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Output {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn backend(backend: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Backend {
            backend: backend.into(),
            message: message.into(),
        }
    }
}

/// An error and its causes, `outer: inner: ...` (the tar crate, for one,
/// says what it was doing in the error and why in its source).
pub fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// Attach a context and a path to an `io::Result`.
pub trait IoContext<T> {
    fn at(self, context: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, context: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(context, path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_a_few_and_count_the_rest() {
        let many: Vec<String> = (0..10_000).map(|i| format!("pkg{i}")).collect();
        let e = Error::PackageNotFound { names: many }.to_string();
        assert!(e.len() < 300, "{} bytes: {e}", e.len());
        assert!(e.contains("'pkg0'") && e.contains("and 9990 more"), "{e}");
        let huge = "x".repeat(1 << 20);
        let e = Error::PackageNotFound { names: vec![huge] }.to_string();
        assert!(e.len() < 300, "{} bytes", e.len());
        assert_eq!(capped("short"), "short");
        assert_eq!(capped(&"é".repeat(200)).chars().count(), NAME_SHOWN + 3);
    }
}
