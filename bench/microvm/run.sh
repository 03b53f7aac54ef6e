#!/usr/bin/env bash
# bench/microvm: does `tsc_early_khz=<host kHz> tsc=reliable` stop QEMU -M microvm from hanging
# at boot under TCG? Boots the cached default Debian kernel with a tiny busybox initrd whose
# /init prints a marker and reboots, N times per variant (microvm with the fix, microvm
# without it, q35), interleaved, each bounded by a timeout; writes RESULTS.md, boots.csv and
# the serial log of every hang or failure under hangs/.
# Usage: bench/microvm/run.sh [-fix 200] [-nofix 100] [-q35 100] [-timeout 30s] [-smp 1]
# Needs: the default kernel in the cache (`firegopher prepare`), busybox-static, cpio, Go.
# About 15 minutes of CPU with the defaults: run it under nohup.
set -euo pipefail
cd "$(dirname "$0")/../.."
STATE=${FIREGOPHER_STATE_DIR:-/var/lib/firegopher}
export PATH=/usr/local/go/bin:$PATH

ref=$STATE/cache/refs/kernel/default
[ -r "$ref" ] || { echo "no default kernel in $STATE/cache: run firegopher prepare" >&2; exit 1; }
manifest=$STATE/cache/blobs/sha256/$(sed 's/^sha256://' "$ref")
vmlinux_digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["vmlinux"].split(":")[1])' "$manifest")
VMLINUX=$STATE/cache/blobs/sha256/$vmlinux_digest

BUSYBOX=$(command -v busybox || true)
if [ -z "$BUSYBOX" ] || ! file -L "$BUSYBOX" | grep -q 'statically linked'; then
  echo "need a static busybox: apt-get install -y busybox-static" >&2; exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/bin" "$work/root/dev" "$work/root/proc"
cp "$BUSYBOX" "$work/root/bin/busybox"
cat > "$work/root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox echo MICROVM-BENCH-BOOTED
/bin/busybox reboot -f
INIT
chmod 0755 "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc --quiet) > "$work/initrd.cpio"

go run ./bench/microvm -vmlinux "$VMLINUX" -initrd "$work/initrd.cpio" -out bench/microvm "$@"
