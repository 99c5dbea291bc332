//! glob(3) and fnmatch(3), exactly as upstream supermin uses them.
//!
//! hostfiles are glob(3) patterns (`GLOB_NOESCAPE`; `*` does not match a
//! leading dot, no brace expansion) and excludefiles are fnmatch(3)
//! patterns *without* `FNM_PATHNAME`, so `*` also matches `/`.  Calling the
//! C library keeps every corner of the pattern language identical to
//! upstream's; this module is the only `unsafe` FFI for it.

use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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

/// Expand a glob(3) `pattern` naming absolute paths inside `root`.
/// Returns absolute appliance paths (with `root` removed), sorted.  No
/// match, or an unreadable directory, gives an empty list, as upstream.
pub fn glob_in_root(root: &Path, pattern: &str) -> Vec<PathBuf> {
    let rooted = if root == Path::new("/") {
        pattern.to_string()
    } else {
        // Escaping is off, so the root is taken literally only if it has no
        // glob metacharacters; roots are plain directories in practice.
        format!(
            "{}{}",
            root.display().to_string().trim_end_matches('/'),
            pattern
        )
    };
    let Ok(c_pattern) = CString::new(rooted) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    // SAFETY: glob_t is plain data; glob fills it and globfree releases it.
    unsafe {
        let mut g: libc::glob_t = std::mem::zeroed();
        if libc::glob(c_pattern.as_ptr(), libc::GLOB_NOESCAPE, None, &mut g) == 0 {
            for i in 0..g.gl_pathc {
                let p = CStr::from_ptr(*g.gl_pathv.add(i));
                out.push(PathBuf::from(OsStr::from_bytes(p.to_bytes())));
            }
        }
        libc::globfree(&mut g);
    }
    // `.*` also matches the `.` and `..` entries of a directory; those
    // are not files to copy, and `..` would lead outside the output.
    let prefix = if root == Path::new("/") {
        0
    } else {
        root.as_os_str().len()
    };
    out.retain(|p| {
        !p.as_os_str()
            .as_bytes()
            .get(prefix..)
            .unwrap_or_default()
            .split(|&b| b == b'/')
            .any(|c| c == b"." || c == b"..")
    });
    if root != Path::new("/") {
        out = out
            .into_iter()
            .filter_map(|p| {
                p.strip_prefix(root)
                    .ok()
                    .map(|rel| Path::new("/").join(rel))
            })
            .collect();
    }
    out
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
        let found = glob_in_root(dir.path(), "/etc/*.conf");
        assert_eq!(
            found,
            vec![PathBuf::from("/etc/a.conf"), PathBuf::from("/etc/b.conf")]
        );
        assert!(
            glob_in_root(dir.path(), "/etc/{a,b}.conf").is_empty(),
            "no brace expansion"
        );
        assert!(glob_in_root(dir.path(), "/nonexistent/*").is_empty());
        assert_eq!(
            glob_in_root(dir.path(), "/etc/.*"),
            vec![PathBuf::from("/etc/.hidden.conf")],
            "never . or .."
        );
    }
}
