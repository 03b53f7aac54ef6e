//go:build linux

package guest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// LoadModules loads the modules listed in orderFile (paths below root, dependencies first).
// A missing order file means the kernel has everything built in. A module already loaded
// (EEXIST) is fine: the same list serves kernels with some of them built in.
func LoadModules(root, orderFile string) (loaded int, err error) {
	f, err := os.Open(filepath.Join(root, orderFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rel := strings.TrimSpace(sc.Text())
		if rel == "" || strings.HasPrefix(rel, "#") {
			continue
		}
		if err := loadModule(filepath.Join(root, rel)); err != nil {
			return loaded, err
		}
		loaded++
	}
	return loaded, sc.Err()
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load module: %w", err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: %w", filepath.Base(path), err)
	}
	return nil
}
