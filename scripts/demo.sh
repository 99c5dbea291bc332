#!/usr/bin/env bash
# The main job: prepare a supermin appliance of bash and coreutils from this
# host, build it as a chroot and run a command inside it, then build it as a
# bootable ext2 appliance and boot it in qemu.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
work="${DEMO_DIR:-/var/tmp/supermin-demo}"
mkdir -p "$work"
.venv/bin/supermin --prepare bash coreutils -o "$work/supermin.d"
echo "prepared $work/supermin.d:"; ls -l "$work/supermin.d"
.venv/bin/supermin --build -f chroot "$work/supermin.d" -o "$work/appliance" --include-packagelist
echo "built $work/appliance ($(find "$work/appliance" | wc -l) paths, $(wc -l < "$work/appliance/packagelist") packages)"
chroot "$work/appliance" /bin/bash -c 'echo "hello from the appliance: $(uname -s), bash $BASH_VERSION, $(ls / | wc -w) top-level entries"'

# The same appliance as a bootable ext2 appliance (this host's kernel), booted
# in qemu (KVM when a guest really runs under it, TCG otherwise); the command
# runs in place of the appliance's /init.
.venv/bin/supermin --build -f ext2 "$work/supermin.d" -o "$work/ext2" --modules boot --size 1G
echo "built $work/ext2:"; ls -l "$work/ext2"
.venv/bin/python - "$work/ext2" <<'PY'
import sys
import supermin

app = supermin.BuildResult.from_output(sys.argv[1])
print(app.boot('echo "hello from the booted appliance: kernel $(uname -r), $(nproc) CPU(s), $(ls /usr/bin | wc -l) programs"',
               root="uuid", timeout=300))
PY
