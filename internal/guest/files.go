//go:build linux

package guest

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/firegopher/firegopher/internal/vmconfig"
)

// ApplyFiles writes the VM's files below root with their modes and owners. Parent
// directories that do not exist are created 0755 root-owned; list a directory as a File
// of its own to give it another mode (e.g. ~/.ssh 0700).
func ApplyFiles(root string, files []vmconfig.File) error {
	for _, f := range files {
		p := filepath.Join(root, f.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("file %s: %w", f.Path, err)
		}
		mode := os.FileMode(f.Mode & 0o777)
		if f.Dir {
			if err := os.MkdirAll(p, mode); err != nil {
				return fmt.Errorf("file %s: %w", f.Path, err)
			}
		} else {
			// Replace, never write through an existing symlink planted in the image.
			os.Remove(p)
			if err := os.WriteFile(p, f.Data, mode); err != nil {
				return fmt.Errorf("file %s: %w", f.Path, err)
			}
		}
		if err := os.Lchown(p, f.UID, f.GID); err != nil {
			return fmt.Errorf("file %s: %w", f.Path, err)
		}
		// chmod after chown: chown clears setuid/setgid bits.
		if err := os.Chmod(p, modeBits(f.Mode)); err != nil {
			return fmt.Errorf("file %s: %w", f.Path, err)
		}
	}
	return nil
}

func modeBits(m uint32) os.FileMode {
	mode := os.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	return mode
}
