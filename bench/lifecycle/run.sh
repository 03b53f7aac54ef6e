#!/usr/bin/env bash
# bench/lifecycle: costs of supervision, each as a ratio against a baseline measured in the
# same run:
#  - supervisor RSS per VM, against the RSS of the VM's own QEMU process;
#  - `ps -a` latency with 50 records, against `firegopher --help` (process start alone);
#  - start rate: VMs/min of sequential `run -d`, against bare `qemu-system-x86_64` boots of
#    the same kernel with a busybox initrd that powers off.
# Usage: bench/lifecycle/run.sh   (root; make build; firegopher prepare; busybox-static, cpio)
set -euo pipefail
cd "$(dirname "$0")/../.."
FG=$PWD/bin/firegopher
STATE=${FIREGOPHER_STATE_DIR:-/var/lib/firegopher}
export FIREGOPHER_STATE_DIR=$STATE
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
ids=()
cleanup() { for id in "${ids[@]}"; do "$FG" rm -f "$id" >/dev/null 2>&1 || true; done; }
trap cleanup EXIT

# 1. RSS: 5 sleeping VMs.
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
sup=(); vmm=()
for _ in 1 2 3 4 5; do
  id=$("$FG" run -d -- sleep 600); ids+=("$id")
  js=$("$FG" inspect "$id")
  sp=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["supervisor_pid"])' <<<"$js")
  vp=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["vmm_pid"])' <<<"$js")
  sup+=("$(rss "$sp")"); vmm+=("$(rss "$vp")")
done
sup_m=$(printf '%s\n' "${sup[@]}" | median); vmm_m=$(printf '%s\n' "${vmm[@]}" | median)
cleanup; ids=()

# 2. ps latency with 50 records (VMs that ran `true` and exited), made 5 at a time so
# that memory stays bounded.
for _ in $(seq 10); do
  batch=()
  for _ in $(seq 5); do id=$("$FG" run -d --memory 256M -- true); ids+=("$id"); batch+=("$id"); done
  for id in "${batch[@]}"; do "$FG" wait "$id" >/dev/null; done
done
ps_m=$(for _ in $(seq 20); do ms "$FG" ps -a; done | median)
help_m=$(for _ in $(seq 20); do ms "$FG" --help; done | median)
cleanup; ids=()

# 3. Start rate: 10 sequential run -d (until the supervisor says started), and 10 bare boots.
manifest=$(sed 's/sha256://' "$STATE/cache/refs/kernel/default")
vmlinux=$STATE/cache/blobs/sha256/$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["vmlinux"].split(":")[1])' "$STATE/cache/blobs/sha256/$manifest")
work=$(mktemp -d); mkdir -p "$work/root/bin"; cp "$(command -v busybox)" "$work/root/bin/"
printf '#!/bin/busybox sh\n/bin/busybox poweroff -f\n' > "$work/root/init"; chmod +x "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc --quiet) > "$work/bare.cpio"
s=$(date +%s%N)
for _ in $(seq 10); do id=$("$FG" run -d -- sleep 600); ids+=("$id"); done
e=$(date +%s%N); ours_rate=$(awk -v d=$(( (e - s) / 1000000 )) 'BEGIN {printf "%.1f", 10*60000/d}')
cleanup; ids=()
s=$(date +%s%N)
for _ in $(seq 10); do
  qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp 1 -m 512M -nodefaults -no-user-config \
    -display none -monitor none -serial file:/dev/null -no-reboot \
    -kernel "$vmlinux" -initrd "$work/bare.cpio" -append "console=ttyS0 panic=-1 rdinit=/init quiet"
done
e=$(date +%s%N); bare_rate=$(awk -v d=$(( (e - s) / 1000000 )) 'BEGIN {printf "%.1f", 10*60000/d}')
rm -rf "$work"

{
  echo "## $(date -u +%Y-%m-%d) — $(nproc) cores, QEMU TCG"
  echo
  echo "| measure | firegopher | baseline | ratio |"
  echo "| --- | ---: | ---: | ---: |"
  echo "| RSS per VM, KiB: supervisor vs its QEMU (median of 5) | $sup_m | $vmm_m | $(awk -v a="$sup_m" -v b="$vmm_m" 'BEGIN {printf "%.3f", a/b}') |"
  echo "| \`ps -a\` with 50 records, ms vs \`firegopher --help\` (median of 20) | $ps_m | $help_m | $(awk -v a="$ps_m" -v b="$help_m" 'BEGIN {printf "%.2f", a/b}') |"
  echo "| start rate, VMs/min: sequential \`run -d\` vs bare QEMU boots | $ours_rate | $bare_rate | $(awk -v a="$ours_rate" -v b="$bare_rate" 'BEGIN {printf "%.2f", a/b}') |"
  echo
  echo "\`run -d\` returns once the VMM runs and the guest's control channel is up (the boot goes on in the background); a bare boot is timed to power-off."
  echo
} | tee -a bench/lifecycle/RESULTS.md
