#!/usr/bin/env bash
# bench/shim: `ctr run --rm` of `true` through containerd and the shim, against
# `firegopher run -- true` of the same root disk, as a ratio (goal <= 1.10). Root; needs
# containerd and busybox-static (scripts/host-packages.sh) and `firegopher prepare`.
# Appends to bench/shim/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=/usr/local/go/bin:$PATH
make build >/dev/null
go run ./bench/shim -bin bin "$@" | tee -a bench/shim/RESULTS.md
