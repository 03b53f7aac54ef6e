// Command up-images builds and pushes the images bench/up boots: a kernel image in
// falcosecurity/kernel-testing's layout (the cached Debian kernel, a busybox initrd like
// theirs) and a rootfs container image with systemd, sshd and python3.
//
//	up-images build DIR        writes DIR/kernel and DIR/rootfs (OCI layouts)
//	up-images push LAYOUT REF  pushes a layout's image (run it where the registry is)
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/firegopher/firegopher/internal/testutil/seed"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "up-images:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	switch {
	case len(args) == 2 && args[0] == "build":
		return build(args[1])
	case len(args) == 3 && args[0] == "push":
		return seed.PushLayout(args[1], args[2])
	}
	return fmt.Errorf("usage: up-images build DIR | push LAYOUT REF")
}

func build(dir string) error {
	state := os.Getenv("FIREGOPHER_STATE_DIR")
	if state == "" {
		state = "/var/lib/firegopher"
	}
	scratch, err := os.MkdirTemp("", "up-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	k, err := seed.DefaultKernelImage(filepath.Join(state, "cache"), scratch)
	if err != nil {
		return err
	}
	if err := seed.WriteLayout(filepath.Join(dir, "kernel"), k); err != nil {
		return err
	}
	r, err := seed.RootfsImage(context.Background(), scratch)
	if err != nil {
		return err
	}
	return seed.WriteLayout(filepath.Join(dir, "rootfs"), r)
}
