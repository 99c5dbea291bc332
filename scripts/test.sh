#!/usr/bin/env bash
# Every test: the Rust core's unit tests, clippy, then the end-to-end
# pytest suite (real dpkg database, real .debs, Debian's supermin as the
# reference).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
cargo test --quiet
# Lints are errors, for the core and the binding alike; the layout is rustfmt's.
cargo fmt --check
cargo clippy --quiet --all-targets --features python -- -D warnings
# The stubs (.pyi) match the extension as built, defaults included.
.venv/bin/python -m mypy.stubtest supermin._supermin
# The wheel, installed into a fresh venv away from this tree, works.
bash scripts/wheel-smoke.sh
.venv/bin/python -m pytest -q "$@"
