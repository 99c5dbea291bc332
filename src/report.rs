//! Messages (`-v`), progress and cancellation for long operations.
//!
//! The core never prints unless asked: verbosity 0 is silent except for
//! warnings.  Progress goes to an optional callback so that the Python layer
//! can draw a bar or forward it to a caller.  The caller may cancel a
//! running build (Ctrl-C, a callback that raised) through [`Cancel`]; long
//! loops call [`Reporter::check`] and stop with [`Error::Cancelled`].

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// How many bytes long copies move between two checks for a cancel: tens
/// of milliseconds of work at disk speed.
pub const CHECK_EVERY: u64 = 64 << 20;

use crate::error::{Error, Result};

/// A flag the caller raises to stop a build; the work notices it at its
/// next [`Reporter::check`] (many times a second).
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A progress callback: `(stage, done, total)`.
pub type ProgressFn = dyn Fn(&str, u64, u64) + Send + Sync;

/// Where messages go: `(is_warning, text)`, the text without the
/// `supermin: ` prefix.  Without one, they are printed on stderr.
pub type MessageFn = dyn Fn(bool, String) + Send + Sync;

/// Where messages and progress go.  Cheap to pass by reference everywhere.
#[derive(Default)]
pub struct Reporter {
    pub verbose: u8,
    progress: Option<Box<ProgressFn>>,
    messages: Option<Box<MessageFn>>,
    cancel: Cancel,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("verbose", &self.verbose)
            .finish()
    }
}

impl Reporter {
    pub fn new(verbose: u8) -> Self {
        Reporter {
            verbose,
            progress: None,
            messages: None,
            cancel: Cancel::default(),
        }
    }

    /// Send messages to `f` instead of stderr.
    pub fn with_messages(mut self, f: Box<MessageFn>) -> Self {
        self.messages = Some(f);
        self
    }

    /// Use `cancel` to learn that the caller wants the work stopped.
    pub fn with_cancel(mut self, cancel: Cancel) -> Self {
        self.cancel = cancel;
        self
    }

    /// A reporter that says nothing but hears the same cancel (for work
    /// done twice, such as `--if-newer` resolving the closure again).
    pub fn quiet(&self) -> Reporter {
        Reporter::new(0).with_cancel(self.cancel.clone())
    }

    /// `Err(Error::Cancelled)` once the caller has cancelled: long loops
    /// call this for every item, so that a build stops within a second.
    pub fn check(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    pub fn with_progress(mut self, f: Box<ProgressFn>) -> Self {
        self.progress = Some(f);
        self
    }

    /// A message when the verbosity is at least `level` (`supermin: MSG`
    /// on stderr, unless a message sink was given).
    pub fn info(&self, level: u8, msg: impl FnOnce() -> String) {
        if self.verbose >= level {
            match &self.messages {
                Some(f) => f(false, msg()),
                None => eprintln!("supermin: {}", msg()),
            }
        }
    }

    /// Warnings are always given.
    pub fn warn(&self, msg: impl AsRef<str>) {
        match &self.messages {
            Some(f) => f(true, msg.as_ref().to_string()),
            None => eprintln!("supermin: warning: {}", msg.as_ref()),
        }
    }

    pub fn progress(&self, stage: &str, done: u64, total: u64) {
        if let Some(f) = &self.progress {
            f(stage, done, total);
        }
    }

    /// `io::copy` that checks for a cancel every [`CHECK_EVERY`] bytes, so
    /// that one huge file does not hold a cancelled build (a file-to-file
    /// copy still goes through `copy_file_range`).  A cancel is an I/O
    /// error ("cancelled") that callers turn into [`Error::Cancelled`]
    /// with [`Reporter::cancelled_or`].
    pub fn copy(&self, reader: &mut impl Read, writer: &mut impl Write) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            if self.cancel.is_cancelled() {
                return Err(io::Error::other("cancelled"));
            }
            let n = io::copy(&mut reader.by_ref().take(CHECK_EVERY), writer)?;
            total += n;
            if n < CHECK_EVERY {
                return Ok(total);
            }
        }
    }

    /// `Error::Cancelled` if the caller cancelled (whatever `err` says:
    /// work stopped by a cancel fails in odd ways), else `err`.
    pub fn cancelled_or(&self, err: Error) -> Error {
        if self.cancel.is_cancelled() {
            Error::Cancelled
        } else {
            err
        }
    }

    /// A counter that reports about a hundred times over `total` steps;
    /// safe to tick from many threads.
    pub fn counter<'a>(&'a self, stage: &'a str, total: u64) -> Counter<'a> {
        self.progress(stage, 0, total);
        Counter {
            reporter: self,
            stage,
            total,
            done: AtomicU64::new(0),
            step: (total / 100).max(1),
        }
    }
}

pub struct Counter<'a> {
    reporter: &'a Reporter,
    stage: &'a str,
    total: u64,
    done: AtomicU64,
    step: u64,
}

impl Counter<'_> {
    pub fn tick(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if done % self.step == 0 || done == self.total {
            self.reporter.progress(self.stage, done, self.total);
        }
    }
}
