#!/usr/bin/env bash
# bench/up: wall time from `firegopher up` to every machine accepting the run's SSH key, for
# 1 and for 3 machines (ratio), and one machine's boot-to-SSH under `up` against
# `firegopher run -d --system --net` of the same rootfs image (ratio), in the same session.
# Images: a kernel image in kernel-testing's layout and a systemd+sshd rootfs image, pushed to
# Debian's docker-registry. Everything networked (registry, VMs, TAPs, DHCP, ssh) lives in a
# network namespace this script makes and deletes. Usage: bench/up/run.sh [N] (root; after
# `make build` and `firegopher prepare`). Each measurement is the median of N (default 3).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-3}
export PATH=/usr/local/go/bin:$PATH
FG=$PWD/bin/firegopher
[ -x "$FG" ] || { echo "build first: make build" >&2; exit 1; }
work=$(mktemp -d)
ns=fg-bench-up-$$
reg_pid=
cleanup() {
  for r in bench-up-1 bench-up-3; do ip netns exec "$ns" "$FG" down "$r" >/dev/null 2>&1 || true; done
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/up-images" ./bench/up
"$work/up-images" build "$work/images"
ip netns add "$ns"
ip -n "$ns" link set lo up
cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:5000}
YML
ip netns exec "$ns" docker-registry serve "$work/registry.yml" & reg_pid=$!
until ip netns exec "$ns" curl -sf -m 2 http://127.0.0.1:5000/v2/ >/dev/null; do sleep 0.2; done
repo=localhost:5000/falcosecurity/kernel-testing
ip netns exec "$ns" "$work/up-images" push "$work/images/kernel" "$repo/debian-kernel:6.1-x86_64-main"
ip netns exec "$ns" "$work/up-images" push "$work/images/rootfs" "$repo/debian-image:12-x86_64-main"

vars() { # vars RUN_ID MACHINES
  mkdir -p "$work/pb-$1/group_vars/all"
  {
    echo "run_id: $1"; echo "cpus: 1"; echo "memory: 512"; echo "ssh_key_path: $work/keys"
    echo "machines:"
    for i in $(seq "$2"); do
      echo "  - {name: m$i, kernel: \"$repo/debian-kernel:6.1-x86_64-main\", rootfs: \"$repo/debian-image:12-x86_64-main\", arch: x86_64}"
    done
  } > "$work/pb-$1/group_vars/all/vars.yml"
  echo "$work/pb-$1/group_vars/all/vars.yml"
}
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
up() { ip netns exec "$ns" "$FG" up -f "$1"; }
down() { ip netns exec "$ns" "$FG" down "$1" >/dev/null 2>&1; }

v1=$(vars bench-up-1 1); v3=$(vars bench-up-3 3)
up "$v1" >/dev/null 2>&1 && down bench-up-1   # pulls, key pair, cached base: not measured
image="$repo/debian-image:12-x86_64-main"
system_to_ssh() {
  local id guest s
  s=$(date +%s%N)
  id=$(ip netns exec "$ns" "$FG" run -d --system --net --cpus 1 --memory 512 --image "$image" \
    --authorized-key "$work/keys/firecracker_machines.pub")
  guest=$(ip netns exec "$ns" "$FG" inspect "$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["network"]["guest"])')
  until ip netns exec "$ns" ssh -q -i "$work/keys/firecracker_machines" -o BatchMode=yes -o ConnectTimeout=2 \
      -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "root@$guest" true 2>/dev/null; do sleep 0.2; done
  echo $(( ($(date +%s%N) - s) / 1000000 ))
  ip netns exec "$ns" "$FG" rm -f "$id" >/dev/null
}
system_to_ssh >/dev/null   # pulls the image for run
: > "$work/up1"; : > "$work/up3"; : > "$work/sys"
for _ in $(seq "$N"); do
  ms up "$v1" >> "$work/up1"; down bench-up-1
  ms up "$v3" >> "$work/up3"; down bench-up-3
  system_to_ssh >> "$work/sys"
done
u1=$(median < "$work/up1"); u3=$(median < "$work/up3"); sy=$(median < "$work/sys")
{
  echo "## $(date -u +%Y-%m-%d) — $(nproc) cores, QEMU $(qemu-system-x86_64 --version | head -1 | awk '{print $4}'), TCG, N=$N"
  echo
  echo "| what | median ms |"
  echo "| --- | ---: |"
  echo "| \`firegopher up\`, 1 machine, until it accepts the run's key | $u1 |"
  echo "| \`firegopher up\`, 3 machines in parallel, until all accept the key | $u3 |"
  echo "| \`firegopher run -d --system --net\` of the same rootfs, until ssh works | $sy |"
  echo "| **ratio 3 machines / 1 machine** | **$(awk -v a="$u3" -v b="$u1" 'BEGIN {printf "%.2f", a/b}')** |"
  echo "| **ratio up (own initrd, microvm) / run --system (our init, q35)** | **$(awk -v a="$u1" -v b="$sy" 'BEGIN {printf "%.2f", a/b}')** |"
  echo
} | tee -a bench/up/RESULTS.md
