#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 machine (as root): system packages,
# a virtualenv in .venv with maturin and pytest, and this project built and
# installed into it (release build of the Rust core).
set -euo pipefail
cd "$(dirname "$0")/.."

# A kernel and qemu: the ext2 format boots the host's kernel, and the tests
# boot every kind of appliance they build.  gawk beside Debian's required
# mawk: the tests check that `awk` stays mawk (as on hosts with libguestfs).
# makepkg and pacman: the pacman tests build Arch packages and install them
# into a root of their own.
need_apt=()
for pkg in supermin xz-utils zstd e2fsprogs cpio rpm createrepo-c dnf dnf-plugins-core busybox-static db5.3-util "linux-image-$(dpkg --print-architecture)" qemu-system-x86 gawk makepkg pacman-package-manager fakeroot; do
    dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian's supermin 5.2.2 is the reference the tests and benchmarks
    # compare against.
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# apt-get download (pristine config files) needs package lists.
if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
    apt-get update -qq
fi

command -v cargo >/dev/null || { echo "setup: cargo (Rust) is required; install it with rustup" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check "maturin>=1.5,<2" "pytest>=7" "mypy>=1.18"
# Build and install the extension (release profile) into the venv.
VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH" .venv/bin/maturin develop --release -q >/dev/null
echo "setup: ready ($(.venv/bin/supermin --version))" >&2
