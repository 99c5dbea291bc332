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
