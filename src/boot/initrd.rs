//! The ext2 appliance's initrd: an uncompressed newc cpio holding the mini
//! init, the `/modules` load list and the kernel modules needed to reach
//! the root disk (compat-spec §5).
//!
//! Modules are upstream's whitelist plus their `modules.dep` dependencies,
//! dependencies first. Compressed modules are decompressed here, in
//! process; the kernel's `init_module` wants the plain ELF object, and
//! upstream 5.2 ships `.ko.zst` files as they are (the appliance then
//! cannot find its disk).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::cpio;
use crate::appliance::content_lines;
use crate::error::{Error, IoContext, Result};
use crate::pattern::fnmatch;
use crate::report::Reporter;

/// Module basenames (globs) that can be needed to find and mount an ext2
/// root disk under qemu or on ppc64 / pmem hosts.
const BOOT_MODULES: &[&str] = &[
    "ext2.ko*",
    "ext4.ko*", // CONFIG_EXT4_USE_FOR_EXT2 kernels mount ext2 with ext4
    "virtio*.ko*",
    "libata*.ko*",
    "piix*.ko*",
    "sd_mod.ko*",
    "ata_piix.ko*",
    "crc*.ko*",
    "libcrc*.ko*",
    "ibmvscsic.ko*",
    "ibmvscsi.ko*",
    "libnvdimm.ko*",
    "nd_pmem.ko*",
    "nd_btt.ko*",
    "nfit.ko*",
];

/// Matches of the list above that are never wanted.
const NOT_BOOT_MODULES: &[&str] = &["virtio-gpu.ko*"];

/// Per kind of root disk (`root=/dev/vdX`, `root=/dev/sdX`), the modules
/// that find it under qemu; with [`ROOT_FILESYSTEM`] and dependencies they
/// are written to `/modules.KIND`.  With `supermin.modules=root` on the
/// kernel command line (what `boot()` passes), the mini init loads only
/// those, and the whole `/modules` list only if the disk does not appear:
/// under TCG, loading the 50 modules of the list takes over a second.
const ROOT_DISKS: &[(&str, &[&str])] = &[
    ("vd", &["virtio_pci.ko*", "virtio_blk.ko*"]),
    (
        "sd",
        &[
            "virtio_pci.ko*",
            "virtio_scsi.ko*",
            "sd_mod.ko*",
            "ata_piix.ko*",
        ],
    ),
];
/// What mounts the root image (Debian's ext4 mounts ext2), and the crc32c
/// that ext4 asks the crypto API for at mount time (not a dependency in
/// `modules.dep`).
const ROOT_FILESYSTEM: &[&str] = &[
    "ext2.ko*",
    "ext4.ko*",
    "crc32c_generic.ko*",
    "crc32c-intel.ko*",
];

/// `modules.dep`: each module's path (relative to the module directory)
/// and all its dependencies.
pub type ModuleDeps = BTreeMap<String, Vec<String>>;

/// The largest `modules.dep` read (a distribution kernel's is about 1 MB).
const MAX_MODULES_DEP: u64 = 64 << 20;

pub fn read_module_deps(modules: &Path) -> Result<ModuleDeps> {
    let path = modules.join("modules.dep");
    let text = fs::File::open(&path)
        .and_then(|f| {
            let size = f.metadata()?.len();
            crate::rootfs::read_bounded(f, size, MAX_MODULES_DEP)
        })
        .and_then(|bytes| {
            String::from_utf8(bytes)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "is not UTF-8 text"))
        })
        .map_err(|e| Error::Kernel {
            path: Some(path.clone()),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
    let junk = |n: usize, what: String| Error::Kernel {
        path: Some(path.clone()),
        message: format!(
            "{}: line {n}: {what} (run depmod to regenerate it)",
            path.display()
        ),
    };
    let mut deps = ModuleDeps::new();
    for (n, line) in content_lines(&text) {
        let Some((module, needs)) = line.split_once(':') else {
            return Err(junk(
                n,
                format!(
                    "not `module: dependencies`: {:?}",
                    crate::error::capped(line)
                ),
            ));
        };
        let needs: Vec<String> = needs.split_whitespace().map(str::to_string).collect();
        // Paths are relative to the module directory; one that leaves it
        // would put an arbitrary file into the initrd under a module name.
        for m in std::iter::once(module).chain(needs.iter().map(String::as_str)) {
            if !is_module_path(m) {
                return Err(junk(
                    n,
                    format!("{:?} is not a module path", crate::error::capped(m)),
                ));
            }
        }
        deps.insert(module.to_string(), needs);
    }
    Ok(deps)
}

/// `kernel/fs/ext2/ext2.ko[.xz|.zst|.gz]`: relative to the module
/// directory as kmod's depmod writes it, no `..`, a `.ko` file name.
fn is_module_path(m: &str) -> bool {
    let name = basename(m);
    !m.starts_with('/')
        && !m.split('/').any(|c| c == "..")
        && [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
            .iter()
            .any(|suffix| name.len() > suffix.len() && name.ends_with(suffix))
}

fn basename(module: &str) -> &str {
    module.rsplit('/').next().unwrap_or(module)
}

/// Does the module at `path` match one of the basename globs?
pub fn module_matches(path: &str, globs: &[&str]) -> bool {
    globs.iter().any(|g| fnmatch(g, Path::new(basename(path))))
}

/// The modules to load, dependencies first, each once: a depth-first walk
/// from every module matching `wanted` (and not `unwanted`), in path order.
pub fn modules_in_load_order(deps: &ModuleDeps, wanted: &[&str], unwanted: &[&str]) -> Vec<String> {
    // A depth-first post-order walk with an explicit stack: `modules.dep`
    // is data, and a chain tens of thousands deep must not overflow the
    // thread's stack.  modules.dep lists every (transitive) dependency;
    // visiting them in sorted order keeps the result independent of its
    // line order.
    let mut seen: HashSet<&str> = HashSet::new();
    let mut order = Vec::new();
    for module in deps.keys() {
        if !module_matches(module, wanted) || module_matches(module, unwanted) {
            continue;
        }
        if !seen.insert(module.as_str()) {
            continue;
        }
        // (module, its remaining dependencies)
        let mut stack: Vec<(&str, std::collections::btree_set::IntoIter<&String>)> =
            vec![(module.as_str(), needs_of(deps, module))];
        while let Some((current, needs)) = stack.last_mut() {
            match needs.next() {
                Some(need) => {
                    if seen.insert(need.as_str()) {
                        stack.push((need.as_str(), needs_of(deps, need)));
                    }
                }
                None => {
                    order.push(current.to_string());
                    stack.pop();
                }
            }
        }
    }
    order
}

/// The dependencies `modules.dep` lists for `module`, sorted.
fn needs_of<'a>(
    deps: &'a ModuleDeps,
    module: &str,
) -> std::collections::btree_set::IntoIter<&'a String> {
    deps.get(module)
        .into_iter()
        .flatten()
        .collect::<BTreeSet<&String>>()
        .into_iter()
}

/// The boot modules (upstream's whitelist), in load order.
pub fn boot_modules(deps: &ModuleDeps) -> Vec<String> {
    modules_in_load_order(deps, BOOT_MODULES, NOT_BOOT_MODULES)
}

/// The module's name once decompressed (`virtio_blk.ko.xz` -> `virtio_blk.ko`).
pub fn decompressed_name(module: &str) -> &str {
    let name = basename(module);
    [".xz", ".zst", ".gz"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

/// A module file's contents, decompressed according to its name.
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    let file = fs::File::open(path).at("reading module", path)?;
    let name = path.to_string_lossy();
    let mut out = Vec::new();
    let result = if name.ends_with(".xz") {
        liblzma::read::XzDecoder::new(file).read_to_end(&mut out)
    } else if name.ends_with(".zst") {
        zstd::stream::read::Decoder::new(file).and_then(|mut d| d.read_to_end(&mut out))
    } else if name.ends_with(".gz") {
        flate2::read::GzDecoder::new(file).read_to_end(&mut out)
    } else {
        io::BufReader::new(file).read_to_end(&mut out)
    };
    result.map_err(|e| Error::Kernel {
        path: Some(path.to_path_buf()),
        message: format!("cannot read kernel module {}: {e}", path.display()),
    })?;
    Ok(out)
}

/// What went into an initrd.
#[derive(Debug, Clone, Default)]
pub struct Initrd {
    /// Module basenames in load order, as written to `/modules`.
    pub modules: Vec<String>,
    pub bytes: u64,
}

/// Write the initrd for the module tree `modules` to `dest`.
pub fn write(
    modules: &Path,
    init: &[u8],
    dest: &Path,
    file: fs::File,
    epoch: Option<u64>,
    reporter: &Reporter,
) -> Result<Initrd> {
    let deps = read_module_deps(modules)?;
    let order = boot_modules(&deps);
    reporter.info(1, || {
        format!("initrd: {} modules from {}", order.len(), modules.display())
    });
    // Two modules with one basename cannot both live in the flat initrd;
    // the first in load order wins, as with upstream's copy.
    let mut names = HashSet::new();
    let order: Vec<&String> = order
        .iter()
        .filter(|m| names.insert(decompressed_name(m).to_string()))
        .collect();
    let contents: Vec<Vec<u8>> = order
        .par_iter()
        .map(|m| {
            reporter.check()?;
            read_module(&modules.join(m.as_str()))
        })
        .collect::<Result<_>>()?;

    let mtime_of = |path: &Path| -> u64 {
        let mtime = fs::metadata(path)
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        epoch.map_or(mtime, |e| mtime.min(e))
    };
    let load_list: Vec<String> = order
        .iter()
        .map(|m| decompressed_name(m).to_string())
        .collect();
    let lines = |names: &[String]| -> Vec<u8> {
        names
            .iter()
            .flat_map(|n| format!("{n}\n").into_bytes())
            .collect()
    };
    let list = lines(&load_list);
    let generated = epoch.unwrap_or(0);

    let mut members: Vec<Member> = vec![
        Member {
            name: "init".into(),
            mode: 0o100755,
            mtime: generated,
            data: init.to_vec(),
        },
        Member {
            name: "modules".into(),
            mode: 0o100644,
            mtime: generated,
            data: list,
        },
    ];
    for (kind, disk) in ROOT_DISKS {
        let globs: Vec<&str> = disk.iter().chain(ROOT_FILESYSTEM).copied().collect();
        let names: Vec<String> = modules_in_load_order(&deps, &globs, NOT_BOOT_MODULES)
            .iter()
            .map(|m| decompressed_name(m).to_string())
            .filter(|name| load_list.contains(name))
            .collect();
        members.push(Member {
            name: format!("modules.{kind}"),
            mode: 0o100644,
            mtime: generated,
            data: lines(&names),
        });
    }
    for (module, data) in order.iter().zip(contents) {
        members.push(Member {
            name: decompressed_name(module).to_string(),
            mode: 0o100644,
            mtime: mtime_of(&modules.join(module.as_str())),
            data,
        });
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));

    let mut out = io::BufWriter::new(file);
    let bytes = write_newc(&mut out, &members).at("writing", dest)?;
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .at("writing", dest)?;
    Ok(Initrd {
        modules: load_list,
        bytes,
    })
}

/// One regular file of the initrd.
struct Member {
    name: String,
    mode: u32,
    mtime: u64,
    data: Vec<u8>,
}

/// `members` as a cpio archive, owner 0:0, inode numbers in order; the
/// bytes written.
fn write_newc(out: &mut impl Write, members: &[Member]) -> io::Result<u64> {
    let mut archive = cpio::Writer::new(out);
    for (i, m) in members.iter().enumerate() {
        let header = cpio::Header {
            ino: i as u32 + 1,
            mode: m.mode,
            nlink: 1,
            mtime: m.mtime.min(u32::MAX as u64) as u32,
            ..cpio::Header::default()
        };
        archive.entry(header, m.name.as_bytes(), &m.data)?;
    }
    Ok(archive.finish()?.1)
}

/// Paths (relative to the module directory) of the modules to copy into the
/// root image when only some are wanted: the boot modules and the ones
/// named in `extra` (basename globs, e.g. `e1000*` or `fuse.ko*`), with
/// their dependencies.
pub fn selected_modules(deps: &ModuleDeps, extra: &[String]) -> Vec<PathBuf> {
    let mut wanted: Vec<&str> = BOOT_MODULES.to_vec();
    let globs: Vec<String> = extra
        .iter()
        .map(|e| {
            if e.contains(".ko") {
                e.clone()
            } else {
                format!("{e}.ko*")
            }
        })
        .collect();
    wanted.extend(globs.iter().map(String::as_str));
    let mut order = modules_in_load_order(deps, &wanted, NOT_BOOT_MODULES);
    order.sort();
    order.into_iter().map(PathBuf::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(text: &str) -> ModuleDeps {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("modules.dep"), text).unwrap();
        read_module_deps(dir.path()).unwrap()
    }

    #[test]
    fn a_dependency_chain_deeper_than_the_stack_is_walked() {
        // 100,000 modules each needing the next: a recursive walk
        // overflowed the stack at 30,000.
        let n = 100_000;
        let mut text = String::new();
        for i in 0..n {
            if i + 1 < n {
                text.push_str(&format!("kernel/m{i}.ko: kernel/m{}.ko\n", i + 1));
            } else {
                text.push_str(&format!("kernel/m{i}.ko:\n"));
            }
        }
        let d = deps(&text);
        let order = modules_in_load_order(&d, &["m0.ko"], &[]);
        assert_eq!(order.len(), n);
        assert_eq!(order[0], format!("kernel/m{}.ko", n - 1));
        assert_eq!(order[n - 1], "kernel/m0.ko");
    }

    #[test]
    fn dependencies_come_first_and_once() {
        let d = deps(
            "kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz\n\
             kernel/lib/crc16.ko.xz:\n\
             kernel/fs/mbcache.ko.xz:\n\
             kernel/fs/jbd2/jbd2.ko.xz:\n\
             kernel/drivers/block/virtio_blk.ko.zst: kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/virtio/virtio_ring.ko:\n\
             kernel/drivers/gpu/drm/virtio/virtio-gpu.ko: kernel/drivers/gpu/drm/drm.ko\n\
             kernel/drivers/gpu/drm/drm.ko:\n\
             kernel/net/foo.ko:\n",
        );
        let order = boot_modules(&d);
        assert_eq!(
            order,
            [
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/block/virtio_blk.ko.zst",
                "kernel/fs/jbd2/jbd2.ko.xz",
                "kernel/fs/mbcache.ko.xz",
                "kernel/lib/crc16.ko.xz",
                "kernel/fs/ext4/ext4.ko.xz",
            ]
        );
        assert_eq!(decompressed_name("kernel/fs/ext4/ext4.ko.xz"), "ext4.ko");
        assert_eq!(decompressed_name("a/b.ko"), "b.ko");
        let only = selected_modules(&d, &["foo".to_string()]);
        assert!(only.contains(&PathBuf::from("kernel/net/foo.ko")));
        assert!(!only.iter().any(|p| p.to_string_lossy().contains("drm")));
    }

    #[test]
    fn junk_in_modules_dep_is_an_error_naming_the_line() {
        for (text, line, says) in [
            (
                "kernel/a.ko:\ngarbage without colon\n",
                2,
                "not `module: dependencies`",
            ),
            (
                "kernel/a.ko: ../../../../etc/shadow.ko\n",
                1,
                "not a module path",
            ),
            ("kernel/a.ko: /etc/passwd\n", 1, "not a module path"),
            ("kernel/a.ko:\n\nREADME:\n", 3, "not a module path"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("modules.dep"), text).unwrap();
            let e = read_module_deps(dir.path()).unwrap_err().to_string();
            assert!(e.contains(&format!("modules.dep: line {line}: ")), "{e}");
            assert!(e.contains(says), "{e}");
        }
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("modules.dep"), b"kernel/a.ko: \xff\xfe\n").unwrap();
        let e = read_module_deps(dir.path()).unwrap_err().to_string();
        assert!(e.contains("modules.dep") && e.contains("UTF-8"), "{e}");
    }
}
