package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/supervisor"
	"github.com/firegopher/firegopher/internal/tarcopy"
)

func newCpCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "cp VM:/PATH DEST | SRC VM:/DIR",
		Short: "Copy files and trees between the host and a running VM (modes, owners, symlinks kept)",
		Long: "Files travel as a tar stream over the VM's control channel; nothing is mounted and no tool\n" +
			"of the guest image is needed. Out of the VM: DEST is created, or PATH is copied into DEST if\n" +
			"it is an existing directory. Into the VM: SRC is copied into the existing directory DIR.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			srcVM, srcPath, srcIn := splitVMPath(args[0])
			dstVM, dstPath, dstIn := splitVMPath(args[1])
			switch {
			case srcIn && !dstIn:
				return copyOut(g, srcVM, srcPath, args[1])
			case !srcIn && dstIn:
				return copyIn(g, args[0], dstVM, dstPath)
			}
			return errors.New("cp: exactly one side must be VM:/PATH")
		},
	}
}

// splitVMPath reads VM:/PATH; a host path with a colon must start with / or . to stay one.
func splitVMPath(s string) (vm, p string, ok bool) {
	if strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".") {
		return "", s, false
	}
	vm, p, ok = strings.Cut(s, ":")
	return vm, p, ok && vm != ""
}

func dialVM(g *globalFlags, ref string) (*supervisor.Client, error) {
	_, vm, err := lookup(g, ref)
	if err != nil {
		return nil, err
	}
	c, err := supervisor.Dial(vm.Dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", vm.ID, err)
	}
	return c, nil
}

func guestPath(p string) error {
	if !strings.HasPrefix(p, "/") || filepath.Clean(p) != p || strings.Contains(p, "/../") {
		return fmt.Errorf("cp: %q: the guest path must be absolute and clean (inside the guest's root)", p)
	}
	return nil
}

func copyOut(g *globalFlags, ref, src, dst string) error {
	if err := guestPath(src); err != nil {
		return err
	}
	c, err := dialVM(g, ref)
	if err != nil {
		return err
	}
	defer c.Close()
	// Into an existing directory, or as a new name beside it (via a scratch dir, renamed).
	into, rename := dst, ""
	if fi, err := os.Stat(dst); err != nil || !fi.IsDir() {
		if into, err = os.MkdirTemp(filepath.Dir(dst), ".firegopher-cp-"); err != nil {
			return err
		}
		defer os.RemoveAll(into)
		rename = filepath.Join(into, filepath.Base(src))
	}
	if err := c.Exec(agent.Exec{Copy: &agent.Copy{Out: true, Path: src}}); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	extracted := make(chan error, 1)
	go func() { extracted <- tarcopy.Extract(pr, into); io.Copy(io.Discard, pr) }()
	var stderr strings.Builder
	exit, err := c.Stream(context.Background(), supervisor.Stdio{Stdout: pw, Stderr: &stderr})
	pw.Close()
	if xerr := <-extracted; err == nil && xerr != nil {
		err = xerr
	}
	if err == nil && exit.Code != 0 {
		err = fmt.Errorf("%s", exit.Error)
	}
	if err != nil {
		return err
	}
	if rename != "" {
		return os.Rename(rename, dst)
	}
	return nil
}

func copyIn(g *globalFlags, src, ref, dst string) error {
	if err := guestPath(dst); err != nil {
		return err
	}
	if _, err := os.Lstat(src); err != nil {
		return fmt.Errorf("cp: %w", err)
	}
	c, err := dialVM(g, ref)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Exec(agent.Exec{Stdin: true, Copy: &agent.Copy{Path: dst}}); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarcopy.Write(pw, src)) }()
	exit, err := c.Stream(context.Background(), supervisor.Stdio{Stdin: pr, Stdout: io.Discard, Stderr: io.Discard})
	if err == nil && exit.Code != 0 {
		err = fmt.Errorf("%s", exit.Error)
	}
	return err
}
