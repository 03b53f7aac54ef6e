// Command fcdouble is the Firecracker test double of one release (fctest.Build sets
// version): the fake firecracker, or the test jailer when built with role "jailer". The
// role is fixed at link time, not read from the binary's name, so that a release's doubles
// can be stored under any name (firegopher's cache stores them by digest), as the real
// binaries can.
package main

import (
	"os"

	"github.com/firegopher/firegopher/internal/vmm/firecracker/fctest"
)

// version and role are set at build time: -ldflags "-X main.version=1.16.1 -X main.role=jailer".
var (
	version = "0.0.0"
	role    = "firecracker"
)

func main() {
	if role == "jailer" {
		os.Exit(fctest.JailerMain(version))
	}
	os.Exit(fctest.Main(version))
}
