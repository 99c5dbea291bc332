#!/usr/bin/env bash
# The wheel as users get it: built with `maturin build --release` (one
# abi3 wheel for every CPython >= 3.9), installed into a fresh venv away
# from the source tree, then imported, asked for a closure, used for a
# chroot build, and run as the `supermin` command.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf target/wheels
if ! said=$(.venv/bin/maturin build --release -q -o target/wheels 2>&1); then
    echo "$said" >&2
    exit 1
fi
wheels=(target/wheels/*.whl)
[ ${#wheels[@]} -eq 1 ] || { echo "wheel-smoke: expected one wheel, got ${wheels[*]}" >&2; exit 1; }
wheel="$PWD/${wheels[0]}"
case "$wheel" in *-cp39-abi3-*) ;; *) echo "wheel-smoke: $wheel is not an abi3 wheel" >&2; exit 1 ;; esac
work=$(mktemp -d /var/tmp/supermin-wheel.XXXXXX)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check "$wheel"
cd "$work"
version=$("$work/venv/bin/supermin" --version)
"$work/venv/bin/python" - "$PWD" "$version" <<'PY'
import subprocess, sys
from pathlib import Path

import supermin

work, version = Path(sys.argv[1]), sys.argv[2]
where = Path(supermin.__file__).resolve()
assert where.is_relative_to(work / "venv"), f"imported from {where}, not the installed wheel"
assert version == f"supermin {supermin.__version__}", version
closure = [p.name for p in supermin.Backend.detect().resolve(["bash"])]
assert "bash" in closure and "libc6" in closure, closure
result = supermin.build(["bash"], work / "chroot", format="chroot")
out = subprocess.run(["chroot", str(result.output), "/bin/bash", "-c", "echo $BASH_VERSION"],
                     capture_output=True, text=True, check=True).stdout
print(f"wheel-smoke: {where.parent} ({version}): {len(closure)} packages, bash {out.strip()} in a chroot")
PY
