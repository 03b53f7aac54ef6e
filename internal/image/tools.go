package image

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// toolPackages names the Debian package that ships each host tool we run.
var toolPackages = map[string]string{
	"mmdebstrap": "mmdebstrap",
	"mkfs.ext4":  "e2fsprogs",
	"debugfs":    "e2fsprogs",
}

// sbinDirs are searched after PATH: a root shell that is not a login shell (sudo, CI
// runners) may lack them, and mkfs.ext4 lives there. A variable so tests can hide them.
var sbinDirs = []string{"/usr/sbin", "/sbin"}

// lookTool finds a host program in PATH, then in sbinDirs.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range sbinDirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, exec.ErrNotFound)
}

// RequireTools checks the host tools exist (by default mmdebstrap and mkfs.ext4) and returns
// an error naming the Debian packages to install (mmdebstrap, e2fsprogs).
func RequireTools(names ...string) error {
	if len(names) == 0 {
		names = []string{"mmdebstrap", "mkfs.ext4"}
	}
	var missing, pkgs []string
	for _, n := range names {
		if _, err := lookTool(n); err == nil {
			continue
		}
		if p, ok := toolPackages[n]; ok {
			missing = append(missing, fmt.Sprintf("%s (Debian package %s)", n, p))
			if !slices.Contains(pkgs, p) {
				pkgs = append(pkgs, p)
			}
		} else {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	msg := "missing host tools: " + strings.Join(missing, ", ")
	if len(pkgs) > 0 {
		msg += "; install with: apt-get install " + strings.Join(pkgs, " ")
	}
	return errors.New(msg)
}
