#!/usr/bin/env bash
# bench/boot: wall time of `firegopher run -- true` against a bare qemu-system-x86_64 that
# boots the same vmlinux with a trivial busybox initrd which powers off at once. Both run
# in the same session, alternating, N times each; the table reports medians and the ratio.
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
ours() { "$FG" run -- true; }

ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }

ours >/dev/null 2>&1   # warm the page cache and the cached base initrd
: > "$work/bare.ms"; : > "$work/ours.ms"
for _ in $(seq "$N"); do
  ms bare >> "$work/bare.ms"
  ms ours >> "$work/ours.ms"
done
b=$(median < "$work/bare.ms"); o=$(median < "$work/ours.ms")
ratio=$(awk -v o="$o" -v b="$b" 'BEGIN {printf "%.2f", o/b}')
{
  echo "## $(date -u +%Y-%m-%d) — $(nproc) cores, QEMU $(qemu-system-x86_64 --version | head -1 | awk '{print $4}'), TCG, N=$N"
  echo
  echo "| what | median ms |"
  echo "| --- | ---: |"
  echo "| bare qemu-system-x86_64, same vmlinux, busybox initrd that powers off | $b |"
  echo "| \`firegopher run -- true\` (clone rootfs, initrd, boot, modules, switch root, run, report, reboot) | $o |"
  echo "| **ratio firegopher / bare VMM** | **$ratio** |"
  echo
} | tee -a bench/boot/RESULTS.md
