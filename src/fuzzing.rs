//! Entry points for the `cargo fuzz` targets in `fuzz/` (not an API).
//!
//! Each takes arbitrary bytes, feeds them to one parser the way real input
//! arrives (through a file where the parser reads files), and must return
//! an error or a value: a panic is a bug.

use std::fs;
use std::path::PathBuf;

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// A supermin appliance input file: sniffing, decompression, and reading
/// a base image's members.
pub fn appliance_input(data: &[u8]) {
    let dir = scratch();
    let input = dir.path().join("input");
    fs::write(&input, data).expect("write");
    if let Ok(appliance) = crate::appliance::load(&[input]) {
        for image in &appliance.base_images {
            let _ = image.members();
        }
    }
}

/// A base image unpacked as the chroot format does, into `DIR/out`: the
/// unpacker (tar semantics inside the output, through descriptors) must
/// never create anything outside `out`, whatever the tarball says.
pub fn chroot_unpack(data: &[u8]) {
    let dir = scratch();
    let input = dir.path().join("input");
    fs::write(&input, data).expect("write");
    let out = dir.path().join("out");
    fs::create_dir(&out).expect("mkdir");
    let Ok(appliance) = crate::appliance::load(std::slice::from_ref(&input)) else {
        return;
    };
    let outdir = crate::outdir::OutDir::open(&out).expect("open out");
    let _ = crate::format::chroot::write_base_images(
        &appliance.base_images,
        &outdir,
        &crate::report::Reporter::new(0).with_messages(Box::new(|_, _| {})),
    );
    let mut names: Vec<_> = fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["input", "out"],
        "the unpacker wrote outside its output"
    );
}

/// A package file: `.deb` (ar, control and data tarballs) or `.rpm`
/// (lead, headers, file list).
pub fn package_file(data: &[u8]) {
    let dir = scratch();
    let path = dir.path().join("package");
    fs::write(&path, data).expect("write");
    let _ = crate::backend::read_package_file(&path);
}

/// An rpm header blob as the rpm database stores it.
pub fn rpm_header(data: &[u8]) {
    let _ = crate::backend::rpm::package_from_header(data);
}

/// A dpkg `status` file: stanzas, relations, provides, and the closure of
/// everything it lists.
pub fn dpkg_status(data: &[u8]) {
    let dir = scratch();
    let admin: PathBuf = dir.path().join("var/lib/dpkg");
    fs::create_dir_all(admin.join("info")).expect("mkdir");
    fs::write(admin.join("status"), data).expect("write");
    if let Ok(backend) =
        crate::backend::open("dpkg", dir.path(), &crate::output::ScratchBase::default())
    {
        let all = backend.packages();
        let _ = backend.resolve(&all, &crate::report::Reporter::default());
    }
}

/// A pacman local database entry: `data` is the `desc` and the `files`
/// of package `a-1-1` (the directory name a valid `desc` must match),
/// beside a valid `b` that depends on `a`; then the closure and file
/// lists of everything.
pub fn pacman_local(data: &[u8]) {
    let dir = scratch();
    let local = dir.path().join("var/lib/pacman/local");
    for (name, desc, files) in [
        ("a-1-1", data, data),
        (
            "b-2-1",
            &b"%NAME%\nb\n\n%VERSION%\n2-1\n\n%DEPENDS%\na>=1\nso.so=1-64\n"[..],
            &b"%FILES%\nusr/\nusr/b\n"[..],
        ),
    ] {
        fs::create_dir_all(local.join(name)).expect("mkdir");
        fs::write(local.join(name).join("desc"), desc).expect("write");
        fs::write(local.join(name).join("files"), files).expect("write");
    }
    if let Ok(backend) =
        crate::backend::open("pacman", dir.path(), &crate::output::ScratchBase::default())
    {
        let all = backend.packages();
        let _ = backend.resolve(&all, &crate::report::Reporter::default());
        for p in &all {
            if let Ok(files) = backend.files(p) {
                assert!(files.iter().all(|f| crate::backend::stays_inside(&f.path)));
            }
        }
    }
}

/// An apk `installed` database: its records, the closure and file lists
/// of everything.
pub fn apk_installed(data: &[u8]) {
    let dir = scratch();
    let db = dir.path().join("lib/apk/db");
    fs::create_dir_all(&db).expect("mkdir");
    fs::write(db.join("installed"), data).expect("write");
    if let Ok(backend) =
        crate::backend::open("apk", dir.path(), &crate::output::ScratchBase::default())
    {
        let all = backend.packages();
        let _ = backend.resolve(&all, &crate::report::Reporter::default());
        for p in &all {
            if let Ok(files) = backend.files(p) {
                assert!(files.iter().all(|f| crate::backend::stays_inside(&f.path)));
            }
            let _ = backend.shipped(p);
        }
    }
}

/// An alternatives admin file: the parser, the choice and the links, none
/// of which may name a path outside the appliance.
pub fn alternatives_admin(data: &[u8]) {
    use crate::backend::alternatives::{choose, links, parse};
    let Ok(group) = parse("fuzzed", &String::from_utf8_lossy(data)) else {
        return;
    };
    let mut flip = false;
    let mut holds = |_: &std::path::Path| {
        flip = !flip;
        flip
    };
    if let Some(choice) = choose(&group, Some(std::path::Path::new("/usr/bin/x")), &mut holds) {
        for link in links(&group, choice, &mut holds) {
            assert!(crate::backend::stays_inside(&link.path), "{link:?}");
            assert!(crate::backend::stays_inside(&link.target), "{link:?}");
        }
    }
}

/// A kernel's `modules.dep`, and the initrd's choice of modules from it.
pub fn modules_dep(data: &[u8]) {
    let dir = scratch();
    fs::write(dir.path().join("modules.dep"), data).expect("write");
    if let Ok(deps) = crate::boot::initrd::read_module_deps(dir.path()) {
        let _ = crate::boot::initrd::boot_modules(&deps);
        let _ = crate::boot::initrd::selected_modules(&deps, &["e1000*".to_string()]);
    }
}

/// A base image written as an ext2 image (16 MiB): the in-memory tree and
/// the ext2 writer.  A bad image is a bug too, not only a panic: every
/// 64th image written is checked with `e2fsck -fn`.
pub fn ext2_image(data: &[u8]) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static WRITTEN: AtomicUsize = AtomicUsize::new(0);
    let dir = scratch();
    let input = dir.path().join("input");
    fs::write(&input, data).expect("write");
    let Ok(appliance) = crate::appliance::load(&[input]) else {
        return;
    };
    let written =
        crate::format::ext2::image_of_base_images(&appliance.base_images, dir.path(), 16 << 20);
    if written.is_ok() && WRITTEN.fetch_add(1, Ordering::Relaxed) % 64 == 0 {
        let image = dir.path().join("root");
        let check = std::process::Command::new("e2fsck")
            .args(["-fn"])
            .arg(&image)
            .output()
            .expect("e2fsck (e2fsprogs) to check images with");
        assert!(
            check.status.success(),
            "e2fsck rejects the image: {}",
            String::from_utf8_lossy(&check.stdout)
        );
    }
}
