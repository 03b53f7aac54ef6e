#!/usr/bin/env bash
# bench/init: where a VM's boot time goes, read from firegopher-init's own console line
# ("starting workload kernel_ms=… init_ms=…"): kernel start → init, and init → workload
# exec (both stages: modules, mounts, control channel, root disk, switch root, volumes,
# files, network). Medians of N detached runs of `true`; the ratio is init's share of the boot.
# Usage: bench/init/run.sh [N]   (root; make build; firegopher prepare)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-10}
FG=./bin/firegopher
STATE=${FIREGOPHER_STATE_DIR:-/var/lib/firegopher}
k=(); i=()
for _ in $(seq "$N"); do
  id=$("$FG" run -d -- true)
  "$FG" wait "$id" >/dev/null
  line=$(grep -a 'starting workload' "$STATE/vms/$id/console.log")
  k+=("$(sed -E 's/.*kernel_ms=([0-9]+).*/\1/' <<<"$line")")
  i+=("$(sed -E 's/.*init_ms=([0-9]+).*/\1/' <<<"$line")")
  "$FG" rm "$id" >/dev/null
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
km=$(median "${k[@]}"); im=$(median "${i[@]}")
ratio=$(awk -v k="$km" -v i="$im" 'BEGIN {printf "%.2f", i/(k+i)}')
{
  echo "## $(date -u +%Y-%m-%d) — $(nproc) cores, QEMU TCG, N=$N"
  echo
  echo "| stage (inside the guest) | median ms |"
  echo "| --- | ---: |"
  echo "| kernel start → firegopher-init starts | $km |"
  echo "| firegopher-init start → workload exec | $im |"
  echo "| **init's share of boot-to-workload** | **$ratio** |"
  echo
} | tee -a bench/init/RESULTS.md
