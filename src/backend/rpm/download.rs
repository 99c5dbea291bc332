//! Downloading the installed versions of packages with the host's RPM
//! package downloader (dnf5, dnf, yumdownloader, zypper, Mageia's urpmi),
//! never with another root's configuration and never with a name as an
//! option.

use std::path::Path;
use std::process::Command;

use super::backend_error;
use crate::error::Result;
use crate::report::Reporter;

/// The package downloaders, in the order they are looked for (as
/// upstream; urpmi last, as Mageia has dnf too).
const TOOLS: &[&str] = &["dnf5", "dnf", "yumdownloader", "zypper", "urpmi"];

/// Download the installed versions of `names` into `dest` with the first
/// package downloader found in [`TOOLS`].
///
/// The downloader runs as whoever runs supermin, often root, so it must
/// never take its configuration from another root: `dnf --installroot R`
/// reads `R/etc/dnf/dnf.conf`, whose `pluginpath` runs R's owner's code as
/// root.  For the host it uses the host's configuration; for another root
/// only a `--packager-config` the caller vouches for.  Names come from a
/// database that may be hostile too: each must look like an RPM NEVRA and
/// they follow `--`, so none can be read as an option.
pub(super) fn download(
    host: bool,
    names: &[String],
    dest: &Path,
    config: Option<&Path>,
    reporter: &Reporter,
) -> Result<()> {
    let which = |tool: &str| {
        std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
            .unwrap_or(false)
    };
    let Some(tool) = TOOLS.iter().copied().find(|t| which(t)) else {
        return Err(backend_error(format!(
            "no package downloader found ({}) to fetch pristine config files; install one, or \
             use --use-installed",
            TOOLS.join(", ")
        )));
    };
    if !host && config.is_none() {
        return Err(backend_error(
            "pristine config files of another root are downloaded only with a package manager \
             configuration you trust: pass --packager-config FILE (its repositories), or use \
             --use-installed (the root's own copies); its own configuration is never used, as \
             running its plugins would run its owner's code",
        ));
    }
    if let Some(bad) = names.iter().find(|n| !is_nevra(n)) {
        return Err(backend_error(format!(
            "the database names a package {:?}, which is not a package name: refusing to pass it to {tool}",
            crate::error::capped(bad)
        )));
    }
    let mut command = command(tool, names, dest, config)?;
    reporter.info(1, || format!("rpm: running {command:?}"));
    let output = crate::process::output(&mut command, reporter)?
        .map_err(|e| backend_error(format!("cannot run {tool}: {e}")))?;
    if !output.status.success() {
        return Err(backend_error(format!(
            "{tool} could not download {}: {}",
            names.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// The command line of `tool` that downloads `names` into `dest`.
fn command(tool: &str, names: &[String], dest: &Path, config: Option<&Path>) -> Result<Command> {
    let mut command = Command::new(tool);
    match tool {
        "zypper" => {
            command.arg("--non-interactive");
            if let Some(c) = config {
                command.arg("--config").arg(c);
            }
            command.arg("--pkg-cache-dir").arg(dest).arg("download");
        }
        "urpmi" => {
            // As upstream: urpmi downloads everything first, then (not)
            // installs.  It reads only the host's media configuration.
            if config.is_some() {
                return Err(backend_error(
                    "urpmi takes no configuration file: install dnf to download with \
                     --packager-config, or use --use-installed",
                ));
            }
            if !crate::rootfs::is_root() {
                command = Command::new("fakeroot");
                command.arg("urpmi");
            }
            command
                .args(["--quiet", "--auto", "--replacepkgs", "--no-install"])
                .arg("--download-all")
                .arg(dest);
        }
        _ => {
            if tool != "yumdownloader" {
                command.arg("download");
            }
            command.arg("--destdir").arg(dest);
            if let Some(c) = config {
                command.arg(format!("--config={}", c.display()));
            }
        }
    }
    command.arg("--");
    command.args(names);
    Ok(command)
}

/// Does `name` look like an RPM `name-[epoch:]version-release.arch`: an
/// alphanumeric first character, then only what rpm allows in names and
/// versions?  (Never an option to a command line.)
pub(super) fn is_nevra(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-~^:".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_downloader_never_gets_an_option_or_another_roots_configuration() {
        for good in [
            "bash-5.1.8-4.cm2.x86_64",
            "glibc-2.35-1.cm2.x86_64",
            "foo-1:2.0-1.noarch",
            "a_b+c~d^e",
        ] {
            assert!(is_nevra(good), "{good}");
        }
        for bad in [
            "--setopt=pluginpath=/x",
            "-x",
            "",
            "a b",
            "a/b",
            "a;b",
            "a$b",
            "../x",
        ] {
            assert!(!is_nevra(bad), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let reporter = Reporter::new(0).with_messages(Box::new(|_, _| {}));
        let refused = |host: bool, names: &[&str], config: Option<&Path>| {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            download(host, &names, dir.path(), config, &reporter)
                .unwrap_err()
                .to_string()
        };
        // Another root, no configuration of ours: its own is never used.
        let e = refused(false, &["bash-1-1.x86_64"], None);
        assert!(
            e.contains("--packager-config") || e.contains("no package downloader"),
            "{e}"
        );
        // Each downloader's command line ends with the names after `--`.
        let names = vec!["bash-1-1.x86_64".to_string()];
        for tool in TOOLS {
            let c = command(tool, &names, dir.path(), None).unwrap();
            let args: Vec<_> = c
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            assert_eq!(
                args[args.len() - 2..],
                ["--", "bash-1-1.x86_64"],
                "{tool}: {args:?}"
            );
            let dest = dir.path().to_string_lossy();
            assert!(args.iter().any(|a| a.ends_with(&*dest)), "{tool}: {args:?}");
        }
        let c = command("zypper", &names, dir.path(), Some(Path::new("/c"))).unwrap();
        assert!(c.get_args().any(|a| a == "/c"));
        assert!(command("urpmi", &names, dir.path(), Some(Path::new("/c"))).is_err());
        // A name that is an option: refused before anything runs.
        let e = refused(true, &["--setopt=pluginpath=/tmp/x-1-1.x86_64"], None);
        assert!(
            e.contains("not a package name") || e.contains("no package downloader"),
            "{e}"
        );
    }
}
