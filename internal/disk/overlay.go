package disk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Overlay: dst is a qcow2 file whose backing file is src, read-only; a clone costs a few
// hundred KiB and constant time, whatever src's size. Only a VMM that reads qcow2 can use it.
const Overlay Method = "qcow2-overlay"

// MakeOverlay creates dst as a qcow2 overlay of the raw image src (which must never be
// written again: the cache's blobs are not). dst must not exist; on error it does not.
func MakeOverlay(ctx context.Context, src, dst string) error {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		return errors.New("qemu-img not found: install the Debian package qemu-utils")
	}
	abs, err := filepath.Abs(src)
	if err != nil {
		return err
	}
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("overlay: %s exists", dst)
	}
	out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", abs, dst).CombinedOutput()
	if err != nil {
		os.Remove(dst)
		return fmt.Errorf("overlay of %s: %v: %s", src, err, out)
	}
	return nil
}
