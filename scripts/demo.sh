#!/usr/bin/env bash
# The main job: prepare a supermin appliance of bash and coreutils from this
# host, build it as a chroot, and run a command inside it.
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
