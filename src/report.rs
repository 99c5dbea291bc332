//! Messages (`-v`) and progress for long operations.
//!
//! The core never prints unless asked: verbosity 0 is silent except for
//! warnings.  Progress goes to an optional callback so that the Python layer
//! can draw a bar or forward it to a caller.

use std::sync::atomic::{AtomicU64, Ordering};

/// A progress callback: `(stage, done, total)`.
pub type ProgressFn = dyn Fn(&str, u64, u64) + Send + Sync;

/// Where messages and progress go.  Cheap to pass by reference everywhere.
#[derive(Default)]
pub struct Reporter {
    pub verbose: u8,
    progress: Option<Box<ProgressFn>>,
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
        }
    }

    pub fn with_progress(mut self, f: Box<ProgressFn>) -> Self {
        self.progress = Some(f);
        self
    }

    /// Print `supermin: MSG` on stderr when the verbosity is at least `level`.
    pub fn info(&self, level: u8, msg: impl FnOnce() -> String) {
        if self.verbose >= level {
            eprintln!("supermin: {}", msg());
        }
    }

    /// Warnings are always printed.
    pub fn warn(&self, msg: impl AsRef<str>) {
        eprintln!("supermin: warning: {}", msg.as_ref());
    }

    pub fn progress(&self, stage: &str, done: u64, total: u64) {
        if let Some(f) = &self.progress {
            f(stage, done, total);
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
