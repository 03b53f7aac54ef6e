// Command fcdouble is the Firecracker test double of one release (fctest.Build sets
// version): the fake firecracker, or the test jailer when run under a name starting with
// "jailer".
package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/firegopher/firegopher/internal/vmm/firecracker/fctest"
)

// version is set at build time with -ldflags -X main.version=1.16.1.
var version = "0.0.0"

func main() {
	if strings.HasPrefix(filepath.Base(os.Args[0]), "jailer") {
		os.Exit(fctest.JailerMain(version))
	}
	os.Exit(fctest.Main(version))
}
