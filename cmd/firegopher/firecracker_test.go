package main

import (
	"os"
	"testing"

	"github.com/firegopher/firegopher/internal/vmm/firecracker/fctest"
)

// asCLIEnv makes this test binary the firegopher command (its main), for the CLI tests:
// they run it, and it re-executes itself as a detached supervisor, as firegopher does.
const asCLIEnv = "FIREGOPHER_TEST_AS_CLI"

func TestMain(m *testing.M) {
	if os.Getenv(asCLIEnv) != "" {
		main()
		os.Exit(0)
	}
	code := m.Run()
	fctest.Cleanup()
	os.Exit(code)
}

// releaseTarball is a release tarball of the fctest doubles of version, laid out as
// Firecracker's, for `firecracker install --from`.
func releaseTarball(t *testing.T, version string) string {
	t.Helper()
	tgz, err := fctest.Tarball(t.TempDir(), version)
	if err != nil {
		t.Fatal(err)
	}
	return tgz
}
