package disk

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestOverlayIsSmallAndBackedByTheImage(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img not found: install the Debian package qemu-utils")
	}
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	f, _ := os.Create(base)
	f.Truncate(1 << 30) // 1 GiB, sparse
	f.WriteAt([]byte("data"), 512<<20)
	f.Close()
	os.Chmod(base, 0o444)
	dst := filepath.Join(dir, "vm.qcow2")
	if err := MakeOverlay(context.Background(), base, dst); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dst)
	if err != nil || fi.Size() > 1<<20 {
		t.Fatalf("overlay size %v %v: want well under a MiB for a 1 GiB image", fi, err)
	}
	info, _ := exec.Command("qemu-img", "info", dst).Output()
	if !strings.Contains(string(info), "backing file: "+base) || !strings.Contains(string(info), "virtual size: 1 GiB") {
		t.Fatalf("qemu-img info:\n%s", info)
	}
	if err := MakeOverlay(context.Background(), base, dst); err == nil {
		t.Fatal("an existing destination must be refused")
	}
}
