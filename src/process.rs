//! Running an external program (`apt-get download`, `dnf download`,
//! `rpmdb --exportdb`) so that cancelling the build stops it too.
//!
//! `Command::output` waits however long the program takes; a user who
//! interrupts a notebook cell (SIGINT to the kernel process only, not to
//! the children) would wait for a whole download.  Here the child is
//! polled and killed once the caller cancels.

use std::io::{self, Read};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::error::Result;
use crate::report::Reporter;

/// How often a running child is checked for cancellation.
const POLL: Duration = Duration::from_millis(50);

/// Run `command` to completion, capturing its stdout and stderr, unless
/// the caller cancels first: then it is killed and the result is
/// [`crate::Error::Cancelled`].  The inner error is the program's failure
/// to start.
pub fn output(command: &mut Command, reporter: &Reporter) -> Result<io::Result<Output>> {
    reporter.check()?;
    let mut child = match command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    // Drain both pipes on threads, so that a chatty child never blocks.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = loop {
        if reporter.check().is_err() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = (stdout.join(), stderr.join());
            return Err(crate::Error::Cancelled);
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => return Ok(Err(e)),
        }
    };
    Ok(Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Cancel;

    #[test]
    fn a_cancel_kills_the_program() {
        let cancel = Cancel::default();
        let reporter = Reporter::new(0).with_cancel(cancel.clone());
        let flag = cancel.clone();
        let started = std::time::Instant::now();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            flag.cancel();
        });
        let r = output(Command::new("sleep").arg("30"), &reporter);
        assert!(matches!(r, Err(crate::Error::Cancelled)));
        assert!(started.elapsed() < Duration::from_secs(5));
        let reporter = Reporter::new(0);
        let out = output(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            &reporter,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (out.stdout.as_slice(), out.stderr.as_slice()),
            (&b"out\n"[..], &b"err\n"[..])
        );
        assert_eq!(out.status.code(), Some(3));
    }
}
