#!/usr/bin/env bash
# The main job's set-up: host packages, build and install, then the default kernel and
# root filesystem into the cache. Afterwards `firegopher run -- CMD` boots a VM.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/host-packages.sh
export PATH=/usr/local/go/bin:$PATH
make install
firegopher prepare
