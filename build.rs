//! Builds two small static executables with plain `rustc`:
//!
//! - the appliance's mini init (`init/main.rs`), left in `OUT_DIR/init`
//!   for `src/boot/init.rs` to embed;
//! - the native `supermin` launcher (`launcher/main.rs`), left in
//!   `target/supermin-launcher`, where the symlink
//!   `wheel-data/scripts/supermin` leads: the wheel's `scripts` data
//!   (`[tool.maturin] data` in pyproject.toml), so that `pip install`
//!   puts it on PATH as the `supermin` command.  (maturin wants that
//!   directory to exist before it builds; a symlink keeps the binary out
//!   of git.)
//!
//! Each is compiled with the same `rustc` for an explicit target with
//! `+crt-static` (glibc's static libc.a, from libc6-dev): an explicit
//! `--target` is what makes rustc honour `+crt-static` for glibc. They
//! need only `std`, so no nested cargo, lock file or network is involved.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=init/main.rs");
    println!("cargo:rerun-if-changed=launcher/main.rs");
    // Files the init and the launcher include with #[path].
    for shared in [
        "src/boot/protocol.rs",
        "src/boot/cpio.rs",
        "src/stamp/layout.rs",
    ] {
        println!("cargo:rerun-if-changed={shared}");
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let version = env::var("CARGO_PKG_VERSION").expect("version");

    let init = out_dir.join("init");
    compile(
        "init/main.rs",
        "supermin_init",
        &init,
        &[("SUPERMIN_VERSION", &version)],
    );
    // Its identity, for the --if-newer stamp: an appliance made with
    // another init is rebuilt even when the version number is the same.
    // Computed here so that a no-op build does not hash 1 MB each time.
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(&init).expect("the mini init just built");
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    let digest = format!("{:016x}", hasher.finish());
    // Both, for the stamp's `MADE_BY` (src/stamp/layout.rs), here and in
    // the launcher.
    println!("cargo:rustc-env=SUPERMIN_INIT_DIGEST={digest}");
    println!("cargo:rustc-env=SUPERMIN_VERSION={version}");

    // The launcher knows which stamps are this build's (version and init).
    let launcher = out_dir.join("supermin");
    compile(
        "launcher/main.rs",
        "supermin_launcher",
        &launcher,
        &[
            ("SUPERMIN_VERSION", &version),
            ("SUPERMIN_INIT_DIGEST", &digest),
        ],
    );
    // `wheel-data/scripts/supermin` (in git) is a symlink to this file.
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let dest = manifest.join("target/supermin-launcher");
    std::fs::create_dir_all(manifest.join("target")).expect("creating target/");
    // Replaced by rename: a running launcher keeps its old file.
    let staged = manifest.join("target/.supermin-launcher.new");
    std::fs::copy(&launcher, &staged).expect("copying the launcher");
    std::fs::rename(&staged, &dest).expect("installing the launcher");
}

/// `rustc` `source` into the static executable `out`, with `env` set for
/// its `env!()`s.
fn compile(source: &str, crate_name: &str, out: &Path, env: &[(&str, &str)]) {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = env::var("TARGET").expect("TARGET");
    let status = Command::new(&rustc)
        .args([
            "--edition",
            "2021",
            "--crate-name",
            crate_name,
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
        .arg(out)
        .arg(source)
        .envs(env.iter().copied())
        // A wrapper such as RUSTC_WRAPPER or a workspace RUSTFLAGS must not
        // leak the host's dynamic settings into these binaries.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {rustc:?} to build {source}: {e}"));
    assert!(
        status.success(),
        "building {source} for {target} failed; a static glibc \
         (libc6-dev's libc.a) is needed"
    );
}
