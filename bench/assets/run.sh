#!/usr/bin/env bash
# bench/assets: cold pull vs warm start of a rootfs image from a real registry (Debian's
# docker-registry on loopback, fed by `firegopher push` of the default image). Cold = pull
# into an empty cache (download, digest check, store); warm = the same pull again (manifest
# check only) and `run --image REF -- true` against `run -- true` on the default image.
# Usage: bench/assets/run.sh [N]   (root; make build; firegopher prepare; docker-registry)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-5}
FG=$PWD/bin/firegopher
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/config.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/data}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/config.yml" & reg=$!
trap 'kill $reg; rm -rf "$work"' EXIT
until curl -sf "http://127.0.0.1:$port/v2/" >/dev/null; do sleep 0.1; done
ref=localhost:$port/bench/base-image:1
"$FG" push image/default "$ref" >/dev/null
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
cold=$(for i in $(seq "$N"); do rm -rf "$work/s$i"; ms "$FG" --state-dir "$work/s$i" pull "$ref"; done | median)
warm=$(for i in $(seq "$N"); do ms "$FG" --state-dir "$work/s1" pull "$ref"; done | median)
"$FG" pull "$ref" >/dev/null 2>&1
run_ref=$(for _ in $(seq "$N"); do ms "$FG" run --image "$ref" -- true; done | median)
run_def=$(for _ in $(seq "$N"); do ms "$FG" run -- true; done | median)
size=$(du -m --apparent-size "$(ls -S "$work"/s1/cache/blobs/sha256/* | head -1)" | cut -f1)
{
  echo "## $(date -u +%Y-%m-%d) — $(nproc) cores, loopback registry, ${size} MiB rootfs image, N=$N"
  echo
  echo "| measure | ms | baseline ms | ratio |"
  echo "| --- | ---: | ---: | ---: |"
  echo "| pull, cold cache vs warm (already cached) | $cold | $warm | $(awk -v a="$cold" -v b="$warm" 'BEGIN {printf "%.1f", a/b}') |"
  echo "| \`run --image REF -- true\` (cached) vs \`run -- true\` (default image) | $run_ref | $run_def | $(awk -v a="$run_ref" -v b="$run_def" 'BEGIN {printf "%.2f", a/b}') |"
  echo
} | tee -a bench/assets/RESULTS.md
