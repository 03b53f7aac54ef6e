#!/usr/bin/env bash
# bench/stdio: throughput of `exec -i` (stdin over the guest channel) and `cp` (a tar stream
# over it) against ssh piping the same bytes into the same guest (its sshd as the VM's
# workload, reached over the VM's TAP), in MiB/s and as ratios, same session. The VM's
# network lives in a namespace this script makes and deletes. Usage: bench/stdio/run.sh [MiB]
# (root; after `make build` and `firegopher prepare`; builds an image with sshd once).
set -euo pipefail
cd "$(dirname "$0")/../.."
MIB=${1:-200}
FG=$PWD/bin/firegopher
[ -x "$FG" ] || { echo "build first: make build" >&2; exit 1; }
work=$(mktemp -d)
ns=fg-bench-stdio-$$
id=
cleanup() {
  [ -n "$id" ] && ip netns exec "$ns" "$FG" rm -f "$id" >/dev/null 2>&1 || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$FG" images 2>/dev/null | grep -q 'bench-sshd' || "$FG" prepare --name bench-sshd --packages openssh-server >/dev/null
ssh-keygen -q -t ed25519 -N '' -f "$work/key"
head -c "${MIB}M" /dev/urandom > "$work/data"
ip netns add "$ns"
ip -n "$ns" link set lo up
id=$(ip netns exec "$ns" "$FG" run -d -i --net --memory 1G --image bench-sshd --authorized-key "$work/key.pub" \
  -- sh -c 'mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e')
guest=$(ip netns exec "$ns" "$FG" inspect "$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["network"]["guest"])')
sshv() { ip netns exec "$ns" ssh -q -i "$work/key" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "root@$guest" "$@"; }
until sshv true 2>/dev/null; do sleep 0.2; done

secs() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); awk -v n=$((e - s)) 'BEGIN {printf "%.3f", n/1e9}'; }
rate() { awk -v m="$MIB" -v s="$1" 'BEGIN {printf "%.1f", m/s}'; }
stdin_fg() { ip netns exec "$ns" "$FG" exec -i "$id" -- sh -c 'cat > /dev/null' < "$work/data"; }
stdin_ssh() { sshv 'cat > /dev/null' < "$work/data"; }
cp_fg() { ip netns exec "$ns" "$FG" cp "$work/data" "$id:/tmp"; }
cp_ssh() { sshv 'tar -x -C /tmp' < <(tar -c -C "$work" data); }
stdin_fg; stdin_ssh   # warm up
a=$(secs stdin_fg); b=$(secs stdin_ssh); c=$(secs cp_fg); d=$(secs cp_ssh)
{
  echo "## $(date -u +%Y-%m-%d) — $(nproc) cores, QEMU TCG, ${MIB} MiB of random bytes"
  echo
  echo "| what | s | MiB/s |"
  echo "| --- | ---: | ---: |"
  echo "| \`firegopher exec -i VM -- cat > /dev/null\` (guest channel) | $a | $(rate "$a") |"
  echo "| \`ssh VM 'cat > /dev/null'\` (same guest, over its TAP) | $b | $(rate "$b") |"
  echo "| \`firegopher cp FILE VM:/tmp\` (tar over the guest channel) | $c | $(rate "$c") |"
  echo "| \`tar -c FILE \| ssh VM tar -x\` | $d | $(rate "$d") |"
  echo "| **ratio exec -i / ssh** | | **$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", b/a}')** |"
  echo "| **ratio cp / ssh tar** | | **$(awk -v a="$c" -v b="$d" 'BEGIN {printf "%.2f", b/a}')** |"
  echo
  echo "(ratios are throughput: above 1 means the guest channel is faster than ssh)"
  echo
} | tee -a bench/stdio/RESULTS.md
