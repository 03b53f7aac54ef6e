#!/usr/bin/env bash
# bench/clone: a VM's root disk by reflink, qcow2 overlay and sparse copy, for the default
# image and a 5 GiB one (constant-time paths must not grow with the image). Root; after
# `firegopher prepare`. Appends to bench/clone/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=/usr/local/go/bin:$PATH
STATE=${FIREGOPHER_STATE_DIR:-/var/lib/firegopher}
manifest=$(sed 's/sha256://' "$STATE/cache/refs/image/default")
rootfs=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rootfs"].split(":")[1])' "$STATE/cache/blobs/sha256/$manifest")
go run ./bench/clone -image "$STATE/cache/blobs/sha256/$rootfs" "$@" | tee -a bench/clone/RESULTS.md
