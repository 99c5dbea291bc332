//! Builds the appliance's mini init (`init/main.rs`) as a static executable
//! and leaves it in `OUT_DIR/init` for `src/boot/init.rs` to embed.
//!
//! It is compiled with the same `rustc` for an explicit target with
//! `+crt-static` (glibc's static libc.a, from libc6-dev): an explicit
//! `--target` is what makes rustc honour `+crt-static` for glibc. It needs
//! only `std`, so no nested cargo, lock file or network is involved.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "init/main.rs";
    println!("cargo:rerun-if-changed={source}");
    // Files the init includes with #[path].
    for shared in ["src/boot/protocol.rs", "src/boot/cpio.rs"] {
        println!("cargo:rerun-if-changed={shared}");
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("init");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = env::var("TARGET").expect("TARGET");
    let status = Command::new(&rustc)
        .args([
            "--edition",
            "2021",
            "--crate-name",
            "supermin_init",
            "--crate-type",
            "bin",
        ])
        .args(["--target", &target])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        .args([
            "-C",
            "target-feature=+crt-static",
            "-C",
            "codegen-units=1",
            "-C",
            "lto=fat",
        ])
        .args(["-D", "warnings"])
        .arg("-o")
        .arg(&out)
        .arg(source)
        .env(
            "SUPERMIN_VERSION",
            env::var("CARGO_PKG_VERSION").expect("version"),
        )
        // A wrapper such as RUSTC_WRAPPER or a workspace RUSTFLAGS must not
        // leak the host's dynamic settings into this one binary.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {rustc:?} to build the mini init: {e}"));
    assert!(
        status.success(),
        "building the mini init ({source}) for {target} failed; a static glibc \
         (libc6-dev's libc.a) is needed"
    );
    // Its identity, for the --if-newer stamp: an appliance made with
    // another init is rebuilt even when the version number is the same.
    // Computed here so that a no-op build does not hash 1 MB each time.
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(&out).expect("the mini init just built");
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    println!(
        "cargo:rustc-env=SUPERMIN_INIT_DIGEST={:016x}",
        hasher.finish()
    );
}
