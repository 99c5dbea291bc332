//! Inputs the fuzzers (`fuzz/run.sh`) once crashed on, replayed through the
//! same entry points: each must now end in an error, not a panic or an
//! out-of-memory abort.

use std::fs;
use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        run(&fs::read(&path).unwrap());
        count += 1;
    }
    count
}

#[test]
fn package_file_regressions() {
    assert!(replay("package_file", supermin::fuzzing::package_file) > 0);
}

#[test]
fn rpm_header_regressions() {
    assert!(replay("rpm_header", supermin::fuzzing::rpm_header) > 0);
}

#[test]
fn ext2_image_regressions() {
    // Found by hand, not by the fuzzer: they wrote wrong images (a name
    // cut to its low byte of length, a symlink target over the next
    // block), not panics.  Each must now be refused, naming the tarball.
    assert!(replay("ext2_image", supermin::fuzzing::ext2_image) >= 3);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/ext2_image");
    for entry in fs::read_dir(&dir).unwrap() {
        let input = entry.unwrap().path();
        let scratch = tempfile::tempdir().unwrap();
        let appliance = supermin::load_appliance(std::slice::from_ref(&input)).unwrap();
        let err = supermin::format::ext2::image_of_base_images(
            &appliance.base_images,
            scratch.path(),
            16 << 20,
        )
        .expect_err("refused");
        assert!(err.to_string().contains(&*input.to_string_lossy()), "{err}");
    }
}
