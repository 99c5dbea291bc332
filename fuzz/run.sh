#!/usr/bin/env bash
# Run every fuzz target for a bounded time (default 60 s each), seeded with
# real inputs from this machine and tests/data.  Not run in CI.
#   bash fuzz/run.sh [SECONDS]
# Crashes land in fuzz/artifacts/<target>/; keep each as a regression input
# under fuzz/regressions/<target>/ (the Rust test `fuzz_regressions` replays
# them) once fixed.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
seed() {  # seed TARGET FILE...
    mkdir -p "corpus/$1"
    for f in "${@:2}"; do [ -f "$f" ] && cp -n "$f" "corpus/$1/" 2>/dev/null || true; done
}
seed appliance_input /var/tmp/supermin-demo/supermin.d/base.tar.gz
seed ext2_image /var/tmp/supermin-demo/supermin.d/base.tar.gz
seed chroot_unpack /var/tmp/supermin-demo/supermin.d/base.tar.gz regressions/ext2_image/*.tar
seed package_file ../tests/data/rpm/packages/v4/*.rpm ../tests/data/rpm/packages/v6/*.rpm \
    $(ls /var/cache/apt/archives/*.deb 2>/dev/null | head -3)
# An .apk (control and data gzip streams, as abuild makes them).
python3 - <<'PY'
import gzip, io, os, tarfile
def tar(members, cut):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    out = buf.getvalue()
    while cut and out.endswith(bytes(512)):
        out = out[:-512]
    return out
info = b"pkgname = hello\npkgver = 1.0-r0\narch = x86_64\ndepend = musl\ndatahash = 00\n"
os.makedirs("corpus/package_file", exist_ok=True)
with open("corpus/package_file/hello.apk", "wb") as f:
    f.write(gzip.compress(tar([(".PKGINFO", info)], True)) + gzip.compress(tar([("etc/hello.conf", b"hi\n")], False)))
PY
head -c 200000 /var/lib/dpkg/status > /tmp/supermin-fuzz-status && seed dpkg_status /tmp/supermin-fuzz-status
seed modules_dep /lib/modules/*/modules.dep
seed alternatives_admin /var/lib/dpkg/alternatives/*
seed apk_installed ../tests/data/apk/alpine-3.4-root/lib/apk/db/installed
printf '%%NAME%%\na\n\n%%VERSION%%\n1-1\n\n%%PROVIDES%%\nso.so=1-64\n\n%%FILES%%\nusr/\nusr/a\n' > /tmp/supermin-fuzz-pacman && seed pacman_local /tmp/supermin-fuzz-pacman
python3 - <<'PY'
import os, sqlite3
db = "../tests/data/rpm/rpmdb-mariner-2.0/rpmdb.sqlite"
if os.path.exists(db):
    os.makedirs("corpus/rpm_header", exist_ok=True)
    con = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    for hnum, blob in con.execute("SELECT hnum, blob FROM Packages LIMIT 10"):
        open(f"corpus/rpm_header/{hnum}", "wb").write(blob)
PY
for target in appliance_input ext2_image chroot_unpack package_file rpm_header dpkg_status pacman_local apk_installed alternatives_admin modules_dep; do
    echo "== $target ($seconds s)"
    cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
        -max_len=1048576 || echo "!! $target found a crash: see fuzz/artifacts/$target/"
done
