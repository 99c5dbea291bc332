//! glob(3) and fnmatch(3), as upstream supermin uses them.
//!
//! hostfiles are glob(3) patterns (`GLOB_NOESCAPE`; `*` does not match a
//! leading dot, no brace expansion) and excludefiles are fnmatch(3)
//! patterns *without* `FNM_PATHNAME`, so `*` also matches `/`.  Names are
//! matched by the C library's fnmatch(3), so every corner of the pattern
//! language is upstream's; directories are listed here, inside the root
//! (glob(3) itself would follow a root's symlinks into the host).  The
//! unit tests hold the result to glob(3)'s.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::rootfs::RootFs;

/// Does `path` match the fnmatch(3) `pattern` (flags: `FNM_NOESCAPE` only)?
pub fn fnmatch(pattern: &str, path: &Path) -> bool {
    let (Ok(pattern), Ok(path)) = (
        CString::new(pattern),
        CString::new(path.as_os_str().as_bytes()),
    ) else {
        return false;
    };
    // SAFETY: both arguments are valid NUL-terminated strings.
    unsafe { libc::fnmatch(pattern.as_ptr(), path.as_ptr(), libc::FNM_NOESCAPE) == 0 }
}

/// Expand a glob(3) `pattern` of absolute paths inside `root`, as glibc's
/// glob(3) with `GLOB_NOESCAPE` does, but with every directory listed and
/// every path checked inside the root (a symlink there to `/etc` lists the
/// root's `/etc`, never the host's).  Component by component: one with
/// `*`, `?` or `[` is matched against the directory's names with
/// fnmatch(3) `FNM_PERIOD` (so `*` does not match a leading dot); a plain
/// one is taken as it is.  A match must exist (`lstat`); a pattern ending
/// in `/` matches directories only.  Returns sorted appliance paths; no
/// match, or an unreadable directory, gives an empty list, as upstream.
///
/// `budget` is how many bytes of names may still be read and candidate
/// paths made, shared by all the patterns of a build ([`GLOB_BUDGET`]):
/// `*/*/*...` over directories of symlinks to `.` grows exponentially (as
/// it does for glob(3)), wide steps followed by thousands of components
/// multiply, and listing a wide directory many times costs as much even
/// when nothing matches; running out is an error naming the pattern.
/// `cancelled` is asked before each directory is read.
pub fn glob_in_root(
    root: &RootFs,
    pattern: &str,
    budget: &mut usize,
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<PathBuf>, String> {
    let only_dirs = pattern.ends_with('/');
    let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    let mut found: Vec<PathBuf> = vec![PathBuf::from("/")];
    let over = || {
        format!(
            "hostfiles pattern {:?} reaches more paths than a build may look at \
             ({GLOB_BUDGET} bytes of them, with the patterns before it)",
            crate::error::capped(pattern)
        )
    };
    // Every name read and every candidate made is paid for, as it is.
    let pay = |budget: &mut usize, cost: usize| -> Result<(), String> {
        *budget = budget.checked_sub(cost).ok_or_else(over)?;
        Ok(())
    };
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let mut next = Vec::new();
        for dir in &found {
            if has_magic(part) {
                if cancelled() {
                    return Err("cancelled".into());
                }
                let Ok(mut names) = root.read_dir(dir) else {
                    continue;
                };
                pay(budget, names.iter().map(|n| n.len() + 1).sum())?;
                names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
                for name in names.into_iter().filter(|name| matches_name(part, name)) {
                    let path = dir.join(name);
                    pay(budget, path.as_os_str().len() + 1)?;
                    next.push(path);
                }
            } else if *part != "." && *part != ".." {
                let path = dir.join(part);
                pay(budget, path.as_os_str().len() + 1)?;
                next.push(path);
            }
        }
        if last {
            next.retain(|p| root.symlink_metadata(p).is_ok());
        }
        found = next;
    }
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    if only_dirs {
        found.retain(|p| root.metadata(p).is_ok_and(|m| m.is_dir()));
    }
    found.sort();
    Ok(found)
}

/// How many bytes of candidate paths the hostfiles patterns of one build
/// may make in all (a whole `/usr/lib/*/*`, a few tens of thousands of
/// paths, is a few megabytes).
pub const GLOB_BUDGET: usize = 64 << 20;

/// Does a glob component need matching (glob(3) with `GLOB_NOESCAPE`)?
fn has_magic(part: &str) -> bool {
    part.contains(['*', '?', '['])
}

/// fnmatch(3) of one directory entry name, with `FNM_PERIOD`: a leading
/// dot must be matched by a dot.  `.` and `..` never match: they are not
/// files to copy, and `..` would lead outside the output.
fn matches_name(part: &str, name: &OsStr) -> bool {
    if name == "." || name == ".." {
        return false;
    }
    let (Ok(pattern), Ok(name)) = (CString::new(part), CString::new(name.as_bytes())) else {
        return false;
    };
    // SAFETY: both arguments are valid NUL-terminated strings.
    unsafe {
        libc::fnmatch(
            pattern.as_ptr(),
            name.as_ptr(),
            libc::FNM_NOESCAPE | libc::FNM_PERIOD,
        ) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_star_crosses_slashes() {
        assert!(fnmatch(
            "/usr/share/doc/*",
            Path::new("/usr/share/doc/bash/README")
        ));
        assert!(!fnmatch("/usr/share/doc/*", Path::new("/usr/share/doc")));
        assert!(fnmatch("*.pyc", Path::new("/usr/lib/python3/x.pyc")));
        assert!(fnmatch("/a\\b", Path::new("/a\\b")), "no escaping");
    }

    #[test]
    fn glob_skips_leading_dots_and_finds_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        for name in ["a.conf", "b.conf", ".hidden.conf"] {
            std::fs::write(dir.path().join("etc").join(name), "x").unwrap();
        }
        let root = RootFs::open(dir.path()).unwrap();
        let found =
            glob_in_root(&root, "/etc/*.conf", &mut GLOB_BUDGET.clone(), &|| false).unwrap();
        assert_eq!(
            found,
            vec![PathBuf::from("/etc/a.conf"), PathBuf::from("/etc/b.conf")]
        );
        assert!(
            glob_in_root(&root, "/etc/{a,b}.conf", &mut GLOB_BUDGET.clone(), &|| {
                false
            })
            .unwrap()
            .is_empty(),
            "no brace expansion"
        );
        assert!(
            glob_in_root(&root, "/nonexistent/*", &mut GLOB_BUDGET.clone(), &|| false)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            glob_in_root(&root, "/etc/.*", &mut GLOB_BUDGET.clone(), &|| false).unwrap(),
            vec![PathBuf::from("/etc/.hidden.conf")],
            "never . or .."
        );
    }

    /// glob(3) itself, the oracle, on a directory of the host.
    fn libc_glob(pattern: &str) -> Vec<PathBuf> {
        let c = CString::new(pattern).unwrap();
        let mut out = Vec::new();
        // SAFETY: glob_t is plain data; glob fills it, globfree frees it.
        unsafe {
            let mut g: libc::glob_t = std::mem::zeroed();
            if libc::glob(c.as_ptr(), libc::GLOB_NOESCAPE, None, &mut g) == 0 {
                for i in 0..g.gl_pathc {
                    let p = std::ffi::CStr::from_ptr(*g.gl_pathv.add(i));
                    out.push(PathBuf::from(OsStr::from_bytes(p.to_bytes())));
                }
            }
            libc::globfree(&mut g);
        }
        out
    }

    #[test]
    fn glob_agrees_with_glibc() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["etc/a.d", "etc/b.d", "etc/.hid.d", "usr/lib/x", "data"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        for f in [
            "etc/a.d/one.conf",
            "etc/a.d/two.conf",
            "etc/b.d/one.conf",
            "etc/.hid.d/one.conf",
            "etc/plain",
            "etc/[x]",
            "etc/q?",
            "usr/lib/x/lib.so",
            "data/file",
        ] {
            std::fs::write(d.join(f), "x").unwrap();
        }
        symlink("usr/lib", d.join("lib")).unwrap();
        symlink("nowhere", d.join("etc/dangling")).unwrap();
        symlink("plain", d.join("etc/to-plain")).unwrap();
        let root = RootFs::open(d).unwrap();
        let prefix = d.to_str().unwrap();
        for pattern in [
            "/etc/*",
            "/etc/*.d/*.conf",
            "/etc/*/one.conf",
            "/etc/.*",
            "/etc/.*/*",
            "/etc/?lain",
            "/etc/[ab].d/one.conf",
            "/etc/[!a]*",
            "/etc/[x]",
            "/etc/q?",
            "/etc/plain",
            "/etc/dangling",
            "/etc/missing",
            "/lib/*/*.so",
            "/lib/x/lib.so",
            "/*/x",
            "/etc/*/",
            "/etc//plain",
            "/*",
            "/etc/to-plain/*",
            "/etc/plain/x",
            "/etc/*[",
        ] {
            let ours = glob_in_root(&root, pattern, &mut GLOB_BUDGET.clone(), &|| false).unwrap();
            let mut theirs: Vec<PathBuf> = libc_glob(&format!("{prefix}{pattern}"))
                .into_iter()
                // glob(3) also gives the `.` and `..` entries; we never do.
                .filter(|p| {
                    !p.as_os_str()
                        .as_bytes()
                        .split(|&b| b == b'/')
                        .any(|c| c == b"." || c == b"..")
                })
                .map(|p| {
                    let rel = p.strip_prefix(d).unwrap();
                    Path::new("/").join(rel)
                })
                .collect();
            theirs.sort();
            assert_eq!(ours, theirs, "{pattern}");
        }
    }
}
