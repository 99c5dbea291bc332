#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 machine (as root): system packages,
# a virtualenv in .venv, and this project built and installed into it
# (release build of the Rust core).
#   bash scripts/setup.sh           what the demo needs
#   bash scripts/setup.sh --tests   and what the tests need besides
set -euo pipefail
cd "$(dirname "$0")/.."
tests=false
[ "${1:-}" = "--tests" ] && tests=true

# The demo: a C library to link the static mini init and launcher
# (libc6-dev), python3-venv, a kernel and qemu (the ext2 appliance boots
# the host's kernel), kmod (depmod, for kernels taken from packages).
want=(libc6-dev python3-venv kmod "linux-image-$(dpkg --print-architecture)" qemu-system-x86)
if $tests; then
    # Debian's supermin 5.2.2, the reference the tests and benchmarks
    # compare against; rpm (the oracle, rpmbuild), createrepo-c, dnf and
    # its download plugin, busybox-static (a program for RPM-built
    # appliances to run) and db5.3-util (an old-style BerkeleyDB rpm
    # database); makepkg, pacman (the oracle, repo-add, vercmp) and
    # fakeroot for the pacman tests; gawk beside Debian's required mawk
    # (the provider-choice tests); e2fsprogs, cpio, xz-utils and zstd to
    # check what the build writes; dpkg-dev (dpkg-scanpackages) for an apt
    # repository of the tests' own.
    want+=(supermin xz-utils zstd e2fsprogs cpio rpm createrepo-c dnf dnf-plugins-core busybox-static
           db5.3-util gawk makepkg pacman-package-manager fakeroot dpkg-dev)
fi
need_apt=()
for pkg in "${want[@]}"; do
    dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
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
pip=(.venv/bin/pip install -q --disable-pip-version-check)
# (Installed under this project's old distribution name by earlier set-ups.)
if .venv/bin/pip show -q supermin >/dev/null 2>&1; then
    .venv/bin/pip uninstall -q -y supermin
fi
"${pip[@]}" "maturin>=1.5,<2"
if $tests; then
    # pytest; mypy for stubtest; pandas (files as DataFrames); the SPDX
    # and CycloneDX projects' validators for the SBOMs; nbclient, nbformat
    # and ipykernel to run the example notebook as Jupyter does.
    "${pip[@]}" "pytest>=7" "mypy>=1.18" "pandas>=2" "spdx-tools>=0.8" "cyclonedx-python-lib[json-validation]>=8" \
        "nbclient>=0.10" "nbformat>=5" "ipykernel>=6"
fi
# Build and install the extension (release profile) into the venv.
VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH" .venv/bin/maturin develop --release -q >/dev/null
echo "setup: ready ($(.venv/bin/supermin --version))" >&2
