#!/usr/bin/env bash
# The test suite: unit tests, a short fuzz run, then the end-to-end tests that boot real
# VMs under QEMU. Needs root (VMs, loop mounts) and the host packages.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/host-packages.sh
export PATH=/usr/local/go/bin:$PATH
make build
./bin/firegopher prepare   # first run: ~1 min to fetch the kernel and bootstrap the image
go vet ./...
go test -count=1 ./...
go test -count=1 -run '^$' -fuzz '^FuzzParse$' -fuzztime 15s ./internal/vmconfig
go test -count=1 -tags slow ./internal/image/
go test -count=1 -tags e2e -timeout 10m -v ./internal/testutil/seed/
go test -count=1 -tags e2e -timeout 30m -v ./test/e2e/
# Again with every VM cold-booted (snapshot templates off), but the tests of the templates
# themselves: both start paths must pass everything.
FIREGOPHER_NO_SNAPSHOT=1 go test -count=1 -tags e2e -timeout 30m -skip '^TestSnapshot' ./test/e2e/
