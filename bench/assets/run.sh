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

# Flattening throughput: the default image's tree (extracted with debugfs, no mount) as a
# one-layer container image in an OCI layout, pulled (flatten + mkfs.ext4 -d) against the
# baseline `tar -x` + `mkfs.ext4 -d` of the same tar.
state=${FIREGOPHER_STATE_DIR:-/var/lib/firegopher}
manifest=$(sed 's/sha256://' "$state/cache/refs/image/default")
blob=$state/cache/blobs/sha256/$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rootfs"].split(":")[1])' "$state/cache/blobs/sha256/$manifest")
mkdir -p "$work/tree"
debugfs -R "rdump / $work/tree" "$blob" >/dev/null 2>&1
tar -C "$work/tree" --numeric-owner -cf "$work/layer.tar" .
mib=$(( $(stat -c %s "$work/layer.tar") / 1048576 ))
L=$work/layout; mkdir -p "$L/blobs/sha256"
put() { local d; d=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" "$L/blobs/sha256/$d"; echo "$d"; }
layer=$(put "$work/layer.tar"); lsize=$(stat -c %s "$work/layer.tar")
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$layer" > "$work/config.json"
cfg=$(put "$work/config.json"); csize=$(stat -c %s "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%d}]}' "$cfg" "$csize" "$layer" "$lsize" > "$work/manifest.json"
man=$(put "$work/manifest.json"); msize=$(stat -c %s "$work/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' "$man" "$msize" > "$L/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$L/oci-layout"
baseline() { rm -rf "$work/x" "$work/x.ext4"; mkdir "$work/x"; tar -C "$work/x" -xf "$work/layer.tar" && truncate -s $(( mib * 2 + 256 ))M "$work/x.ext4" && mkfs.ext4 -q -d "$work/x" "$work/x.ext4"; }
ours() { rm -rf "$work/fs"; "$FG" --state-dir "$work/fs" pull --kind image --name flat "oci:$L"; }
tb=$(for _ in $(seq "$N"); do ms baseline; done | median)
to=$(for _ in $(seq "$N"); do ms ours; done | median)
{
  echo "| measure | firegopher | baseline | ratio |"
  echo "| --- | ---: | ---: | ---: |"
  echo "| flatten a ${mib} MiB layer into ext4, MiB/s: \`pull oci:layout\` vs \`tar -x\` + \`mkfs.ext4 -d\` | $(awk -v m="$mib" -v t="$to" 'BEGIN {printf "%.0f", m*1000/t}') | $(awk -v m="$mib" -v t="$tb" 'BEGIN {printf "%.0f", m*1000/t}') | $(awk -v a="$tb" -v b="$to" 'BEGIN {printf "%.2f", a/b}') |"
  echo
} | tee -a bench/assets/RESULTS.md
