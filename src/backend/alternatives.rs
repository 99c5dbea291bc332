//! Alternatives links: `/usr/bin/awk → /etc/alternatives/awk →
//! /usr/bin/mawk`.
//!
//! No package lists these links (maintainer scripts make them with
//! Debian's `update-alternatives`, Fedora's `alternatives` or SUSE's
//! `update-alternatives`), so an appliance made from file lists alone has
//! no `awk`, `pager` or `editor`; upstream supermin has the same hole.
//! Each group's admin file (`/var/lib/dpkg/alternatives/awk`,
//! `/var/lib/alternatives/awk`) records its links and the files that can
//! fill them, in one format for all three tools.  A build writes the
//! links of every group with a file in the appliance, pointing at the
//! host's choice when that file is in the appliance, else at the
//! highest-priority one that is (what `update-alternatives --auto` would
//! pick among them).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::report::Reporter;
use crate::rootfs::RootFs;

/// Where the chosen links live; the same for every tool.
pub const LINK_DIR: &str = "/etc/alternatives";

/// The most admin files read (Debian desktops have a few hundred).
const MAX_GROUPS: usize = 10_000;

/// The most bytes of one admin file (real ones are under a few KiB), and
/// of all of them together.
const MAX_ADMIN_FILE: u64 = 1 << 20;
const MAX_ADMIN_TOTAL: u64 = 64 << 20;

/// The most slave links, and choices, of one group (real ones have a
/// handful): a group's memory is their product.
const MAX_SLAVES: usize = 256;
const MAX_CHOICES: usize = 1_000;

/// One group as its admin file records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The admin file's name, also the link's name in [`LINK_DIR`].
    pub name: String,
    /// The master link (`/usr/bin/awk`).
    pub link: PathBuf,
    /// Slave names and links (`awk.1.gz`, `/usr/share/man/man1/awk.1.gz`).
    pub slaves: Vec<(String, PathBuf)>,
    pub choices: Vec<Choice>,
}

/// One file that can fill a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub path: PathBuf,
    pub priority: i64,
    /// What each slave link points at with this choice, if anything.
    pub slaves: Vec<Option<PathBuf>>,
}

/// One symlink to write.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Link {
    pub path: PathBuf,
    pub target: PathBuf,
}

/// What `--if-newer` watches of the alternatives (inside the root): the
/// admin directories and [`LINK_DIR`], whose times change when a file in
/// them is replaced, as every tool does to change a group.
pub fn state_files(dirs: &[&str]) -> Vec<PathBuf> {
    dirs.iter().chain([&LINK_DIR]).map(PathBuf::from).collect()
}

/// A name usable as a file name in [`LINK_DIR`] (and a line of the
/// `--if-newer` stamp: no control characters).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(|c: char| c == '/' || c.is_control())
}

/// Parse the admin file of group `name`; an error is the 1-based line at
/// fault and what is wrong there.
pub fn parse(name: &str, text: &str) -> Result<Group, (usize, String)> {
    let mut lines = text.split('\n').enumerate().map(|(i, l)| (i + 1, l));
    let mut next = |what: &str| {
        lines
            .next()
            .ok_or_else(|| (text.split('\n').count(), format!("ends before {what}")))
    };
    let absolute = |(n, line): (usize, &str)| -> Result<PathBuf, (usize, String)> {
        let path = PathBuf::from(line);
        if super::stays_inside(&path) && !line.contains(char::is_control) {
            Ok(path)
        } else {
            Err((
                n,
                format!(
                    "{:?} is not an absolute path (one without '..' or control characters, under 4096 bytes)",
                    crate::error::capped(line)
                ),
            ))
        }
    };
    let (n, mode) = next("the mode")?;
    if mode != "auto" && mode != "manual" {
        return Err((n, format!("mode {mode:?}, expected auto or manual")));
    }
    let link = absolute(next("the master link")?)?;
    let mut slaves = Vec::new();
    loop {
        let (n, slave) = next("the end of the slave links")?;
        if slave.is_empty() {
            break;
        }
        if !is_plain_name(slave) {
            return Err((n, format!("slave name {slave:?} is not a plain name")));
        }
        if slaves.len() == MAX_SLAVES {
            return Err((n, format!("more than {MAX_SLAVES} slave links")));
        }
        slaves.push((slave.to_string(), absolute(next("a slave link")?)?));
    }
    let mut choices = Vec::new();
    // The list ends with an empty line, or at the end of the file.
    while let Ok((n, path)) = next("") {
        if path.is_empty() {
            break;
        }
        if choices.len() == MAX_CHOICES {
            return Err((n, format!("more than {MAX_CHOICES} choices")));
        }
        let path = absolute((n, path))?;
        let (n, priority) = next("a priority")?;
        // Fedora writes `@family@PRIORITY [initscript]`.
        let priority = match priority.strip_prefix('@') {
            Some(rest) => rest.split_once('@').map_or("", |(_, p)| p),
            None => priority,
        };
        let priority = priority
            .split_whitespace()
            .next()
            .and_then(|p| p.parse::<i64>().ok())
            .ok_or_else(|| (n, format!("priority {priority:?} is not a number")))?;
        let mut targets = Vec::with_capacity(slaves.len());
        for _ in &slaves {
            let (n, target) = next("a slave's target")?;
            targets.push(if target.is_empty() {
                None
            } else {
                Some(absolute((n, target))?)
            });
        }
        choices.push(Choice {
            path,
            priority,
            slaves: targets,
        });
    }
    Ok(Group {
        name: name.to_string(),
        link,
        slaves,
        choices,
    })
}

/// Hand `each` every readable group in the admin directories `dirs`
/// (inside `root`), one at a time, by name within a directory; a group in
/// two directories is read from the first.  A malformed admin file leaves
/// its group out with a warning that names the file and line: one bad
/// group must not stop a build.  At most [`MAX_GROUPS`] files and
/// [`MAX_ADMIN_TOTAL`] bytes are read.
pub fn for_each_group(
    root: &RootFs,
    dirs: &[&str],
    reporter: &Reporter,
    mut each: impl FnMut(Group) -> crate::error::Result<()>,
) -> crate::error::Result<()> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut bytes_read = 0u64;
    for dir in dirs {
        let Ok(mut names) = root.read_dir(Path::new(dir)) else {
            continue;
        };
        names.sort();
        for name in names {
            let Some(name) = name.to_str() else { continue };
            // update-alternatives' own temporary and backup files.
            if !is_plain_name(name)
                || name.starts_with('.')
                || name.contains(".dpkg-")
                || name.ends_with(".new")
                || seen.contains(name)
            {
                continue;
            }
            if seen.len() == MAX_GROUPS || bytes_read > MAX_ADMIN_TOTAL {
                reporter.warn(format!(
                    "alternatives: more than {MAX_GROUPS} admin files or {} MiB under {}; the rest are left out",
                    MAX_ADMIN_TOTAL >> 20,
                    root.display_path(Path::new(dir)).display()
                ));
                return Ok(());
            }
            seen.insert(name.to_string());
            let path = Path::new(dir).join(name);
            let shown = root.display_path(&path);
            let text = match root.read(&path, MAX_ADMIN_FILE) {
                Ok(bytes) => {
                    bytes_read += bytes.len() as u64;
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                Err(e) => {
                    reporter.warn(format!(
                        "alternatives: {}: {e}; its links are left out",
                        shown.display()
                    ));
                    continue;
                }
            };
            match parse(name, &text) {
                Ok(group) => each(group)?,
                Err((line, what)) => reporter.warn(format!(
                    "alternatives: {}: line {line}: {what}; its links are left out",
                    shown.display()
                )),
            }
        }
    }
    Ok(())
}

/// The host's choice for `group`: where its link in [`LINK_DIR`] points.
pub fn current_choice(root: &RootFs, group: &Group) -> Option<PathBuf> {
    let link = Path::new(LINK_DIR).join(&group.name);
    let target = root.read_link(&link).ok()?;
    Some(crate::rootfs::normalize(&Path::new(LINK_DIR).join(target)))
}

/// The choice an appliance gets: the host's `current` one if `holds` it,
/// else the highest priority among those it holds (the first listed on a
/// tie); `None` if it holds none.
pub fn choose<'g>(
    group: &'g Group,
    current: Option<&Path>,
    mut holds: impl FnMut(&Path) -> bool,
) -> Option<&'g Choice> {
    let held: Vec<&Choice> = group.choices.iter().filter(|c| holds(&c.path)).collect();
    if let Some(current) = current {
        if let Some(choice) = held.iter().find(|c| c.path == current) {
            return Some(*choice);
        }
    }
    held.into_iter()
        .reduce(|best, c| if c.priority > best.priority { c } else { best })
}

/// The links of `group` with `choice`: the master link and each slave
/// whose target the appliance `holds` (as `update-alternatives` leaves
/// out a slave with no target), each through [`LINK_DIR`].
pub fn links(group: &Group, choice: &Choice, mut holds: impl FnMut(&Path) -> bool) -> Vec<Link> {
    let via = |name: &str, link: &Path, target: &Path| {
        let middle = Path::new(LINK_DIR).join(name);
        [
            Link {
                path: link.to_path_buf(),
                target: middle.clone(),
            },
            Link {
                path: middle,
                target: target.to_path_buf(),
            },
        ]
    };
    let mut out: Vec<Link> = via(&group.name, &group.link, &choice.path).into();
    for ((name, link), target) in group.slaves.iter().zip(&choice.slaves) {
        if let Some(target) = target.as_deref().filter(|t| holds(t)) {
            out.extend(via(name, link, target));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWK: &str =
        "auto\n/usr/bin/awk\nawk.1.gz\n/usr/share/man/man1/awk.1.gz\nnawk\n/usr/bin/nawk\n\n\
/usr/bin/gawk\n10\n/usr/share/man/man1/gawk.1.gz\n/usr/bin/gawk\n\
/usr/bin/mawk\n5\n/usr/share/man/man1/mawk.1.gz\n/usr/bin/mawk\n\n";

    #[test]
    fn a_debian_admin_file_parses() {
        let g = parse("awk", AWK).unwrap();
        assert_eq!(g.link, Path::new("/usr/bin/awk"));
        assert_eq!(g.slaves.len(), 2);
        assert_eq!(g.choices.len(), 2);
        assert_eq!(g.choices[1].priority, 5);
        assert_eq!(
            g.choices[1].slaves[1].as_deref(),
            Some(Path::new("/usr/bin/mawk"))
        );
    }

    #[test]
    fn fedora_families_and_initscripts_and_empty_slaves_parse() {
        let text = "manual\n/usr/bin/java\njre\n/usr/lib/jvm/jre\n\n\
/usr/lib/jvm/java-17/bin/java\n@java-17@1700 jexec\n\n\
/usr/lib/jvm/java-21/bin/java\n2100\n/usr/lib/jvm/java-21/jre\n";
        let g = parse("java", text).unwrap();
        assert_eq!(g.choices[0].priority, 1700);
        assert_eq!(g.choices[0].slaves, vec![None]);
        assert_eq!(g.choices[1].priority, 2100);
    }

    #[test]
    fn malformed_files_name_the_line() {
        assert_eq!(parse("x", "sometimes\n").unwrap_err().0, 1);
        assert_eq!(parse("x", "auto\nusr/bin/x\n").unwrap_err().0, 2);
        assert_eq!(parse("x", "auto\n/usr/bin/x\n../y\n/z\n").unwrap_err().0, 3);
        assert_eq!(
            parse("x", "auto\n/usr/bin/x\ns\n/a/../b\n").unwrap_err().0,
            4
        );
        assert_eq!(
            parse("x", "auto\n/usr/bin/x\n\n/usr/bin/y\nhigh\n")
                .unwrap_err()
                .0,
            5
        );
        let (line, what) =
            parse("x", "auto\n/usr/bin/x\ns\n/l\n\n/usr/bin/y\n1\nrel\n").unwrap_err();
        assert_eq!(line, 8, "{what}");
        assert!(parse("x", "auto\n").is_err());
    }

    #[test]
    fn the_hosts_choice_wins_when_held_else_the_best_held() {
        let g = parse("awk", AWK).unwrap();
        let gawk = Path::new("/usr/bin/gawk");
        let only_mawk = |p: &Path| p.starts_with("/usr/bin") && !p.ends_with("gawk");
        assert_eq!(
            choose(&g, Some(gawk), only_mawk).unwrap().path,
            Path::new("/usr/bin/mawk")
        );
        assert_eq!(choose(&g, Some(gawk), |_| true).unwrap().path, gawk);
        let mawk = Path::new("/usr/bin/mawk");
        assert_eq!(choose(&g, Some(mawk), |_| true).unwrap().path, mawk);
        assert_eq!(choose(&g, None, |_| true).unwrap().path, gawk);
        assert!(choose(&g, None, |_| false).is_none());
    }

    #[test]
    fn slaves_without_a_held_target_are_left_out() {
        let g = parse("awk", AWK).unwrap();
        let links = links(&g, &g.choices[1], |p| !p.starts_with("/usr/share/man"));
        let shown: Vec<String> = links
            .iter()
            .map(|l| format!("{} -> {}", l.path.display(), l.target.display()))
            .collect();
        assert_eq!(
            shown,
            [
                "/usr/bin/awk -> /etc/alternatives/awk",
                "/etc/alternatives/awk -> /usr/bin/mawk",
                "/usr/bin/nawk -> /etc/alternatives/nawk",
                "/etc/alternatives/nawk -> /usr/bin/mawk",
            ]
        );
    }
}
