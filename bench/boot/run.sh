#!/usr/bin/env bash
# bench/boot: wall time of `firegopher run -- true`, cold (--no-snapshot) and warm (restored
# from its cached snapshot template), against a bare qemu-system-x86_64 that boots the same
# vmlinux with a trivial busybox initrd which powers off at once. All three run in the same
# session, alternating, N times each; the table reports medians and the ratios.
# Usage: bench/boot/run.sh [N]   (needs `make build` and `firegopher prepare` done; root)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-10}
STATE=${FIREGOPHER_STATE_DIR:-/var/lib/firegopher}
FG=./bin/firegopher
[ -x "$FG" ] || { echo "build first: make build" >&2; exit 1; }
command -v busybox >/dev/null || { echo "busybox not found: install the Debian package busybox-static" >&2; exit 1; }

manifest=$(sed 's/sha256://' "$STATE/cache/refs/kernel/default")
vmlinux_digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["vmlinux"].split(":")[1])' "$STATE/cache/blobs/sha256/$manifest")
VMLINUX=$STATE/cache/blobs/sha256/$vmlinux_digest

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/bin"
cp "$(command -v busybox)" "$work/root/bin/busybox"
printf '#!/bin/busybox sh\n/bin/busybox poweroff -f\n' > "$work/root/init"
chmod +x "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc --quiet) > "$work/bare.cpio"

bare() {
  qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp 1 -m 512M -nodefaults -no-user-config \
    -display none -monitor none -serial file:/dev/null -no-reboot \
    -kernel "$VMLINUX" -initrd "$work/bare.cpio" -append "console=ttyS0 panic=-1 rdinit=/init quiet"
}
cold() { "$FG" run --no-snapshot -- true; }
warm() { "$FG" run -- true; }   # restored from the snapshot template

ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
ratio() { awk -v o="$1" -v b="$2" 'BEGIN {printf "%.2f", o/b}'; }

# Warm the page cache and the cached base initrd, and build the template.
cold >/dev/null 2>&1
warm >/dev/null 2>&1
: > "$work/bare.ms"; : > "$work/cold.ms"; : > "$work/warm.ms"
for _ in $(seq "$N"); do
  ms bare >> "$work/bare.ms"
  ms cold >> "$work/cold.ms"
  ms warm >> "$work/warm.ms"
done
b=$(median < "$work/bare.ms"); c=$(median < "$work/cold.ms"); w=$(median < "$work/warm.ms")
{
  echo "## $(date -u +%Y-%m-%d) — $(nproc) cores, QEMU $(qemu-system-x86_64 --version | head -1 | awk '{print $4}'), TCG, N=$N"
  echo
  echo "| what | median ms | × bare |"
  echo "| --- | ---: | ---: |"
  echo "| bare qemu-system-x86_64, same vmlinux, busybox initrd that powers off | $b | 1.00 |"
  echo "| cold \`firegopher run --no-snapshot -- true\` (clone rootfs, initrd, boot, modules, switch root, run, report, reboot) | $c | **$(ratio "$c" "$b")** |"
  echo "| warm \`firegopher run -- true\` (clone rootfs, restore the cached snapshot template with the clone behind its root device, config over the channel, switch root, run, report, reboot) | $w | **$(ratio "$w" "$b")** |"
  echo
} | tee -a bench/boot/RESULTS.md
