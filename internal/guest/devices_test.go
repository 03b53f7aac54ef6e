//go:build linux

package guest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDevicesFindsDiskAndPortBySysfsNames(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	write := func(p, content string) {
		os.MkdirAll(filepath.Dir(filepath.Join(sys, p)), 0o755)
		os.WriteFile(filepath.Join(sys, p), []byte(content), 0o644)
	}
	write("block/vda/serial", "scratch\n")
	write("block/vdb/serial", "root\n")
	write("class/virtio-ports/vport1p1/name", "org.firegopher.ctl\n")
	for _, n := range []string{"vda", "vdb", "vport1p1"} {
		os.WriteFile(filepath.Join(dev, n), nil, 0o600)
	}
	d := Devices{SysDir: sys, DevDir: dev, Poll: time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if got, err := d.DiskBySerial(ctx, "root"); err != nil || got != filepath.Join(dev, "vdb") {
		t.Fatalf("disk: %s %v", got, err)
	}
	if got, err := d.PortByName(ctx, "org.firegopher.ctl"); err != nil || got != filepath.Join(dev, "vport1p1") {
		t.Fatalf("port: %s %v", got, err)
	}
}

func TestDevicesGiveUpWithTheDeviceNamed(t *testing.T) {
	d := Devices{SysDir: t.TempDir(), DevDir: t.TempDir(), Poll: time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := d.DiskBySerial(ctx, "root"); err == nil || !strings.Contains(err.Error(), "disk with serial root") {
		t.Fatalf("got %v", err)
	}
}
