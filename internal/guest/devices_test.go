//go:build linux

package guest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/vmconfig"
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

// A restored VM takes its root disk from the serials its template read, without reading
// sysfs; a known disk whose node is gone is looked up afresh.
func TestDevicesTakeKnownDisksWhoseNodesExist(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	os.MkdirAll(filepath.Join(sys, "block/vdb"), 0o755)
	os.WriteFile(filepath.Join(sys, "block/vdb/serial"), []byte("root\n"), 0o644)
	os.WriteFile(filepath.Join(dev, "vda"), nil, 0o600)
	os.WriteFile(filepath.Join(dev, "vdb"), nil, 0o600)
	d := Devices{SysDir: sys, DevDir: dev, Poll: time.Millisecond}
	if got := d.DiskSerials(); len(got) != 1 || got["root"] != filepath.Join(dev, "vdb") {
		t.Fatalf("serials: %v", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	d.Known = map[string]string{"root": filepath.Join(dev, "vda")}
	if got, err := d.DiskBySerial(ctx, "root"); err != nil || got != filepath.Join(dev, "vda") {
		t.Fatalf("known disk: %s %v", got, err)
	}
	d.Known = map[string]string{"root": filepath.Join(dev, "vdz")}
	if got, err := d.DiskBySerial(ctx, "root"); err != nil || got != filepath.Join(dev, "vdb") {
		t.Fatalf("known disk without a node: %s %v", got, err)
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

func TestDevicesFindDiskByIndexInKernelNameOrder(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	// 28 disks: vda..vdz, vdaa, vdab; sysfs lists them alphabetically (vdaa before vdb).
	var names []string
	for c := 'a'; c <= 'z'; c++ {
		names = append(names, "vd"+string(c))
	}
	names = append(names, "vdaa", "vdab")
	for _, n := range append(names, "sda", "loop0") {
		os.MkdirAll(filepath.Join(sys, "block", n), 0o755)
		os.WriteFile(filepath.Join(dev, n), nil, 0o600)
	}
	d := Devices{SysDir: sys, DevDir: dev, Poll: time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for i, want := range map[int]string{0: "vda", 1: "vdb", 25: "vdz", 26: "vdaa", 27: "vdab"} {
		if got, err := d.DiskByIndex(ctx, i); err != nil || got != filepath.Join(dev, want) {
			t.Errorf("index %d: %s %v, want %s", i, got, err, want)
		}
	}
}

func TestDevicesWaitForEnoughDisks(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	os.MkdirAll(filepath.Join(sys, "block", "vda"), 0o755)
	os.WriteFile(filepath.Join(dev, "vda"), nil, 0o600)
	d := Devices{SysDir: sys, DevDir: dev, Poll: time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := d.DiskByIndex(ctx, 1); err == nil || !strings.Contains(err.Error(), "virtio disk number 1") {
		t.Fatalf("one disk present, asked for the second: %v", err)
	}
	// The second disk appears while init waits: its sysfs entry first, its node after.
	found := make(chan string)
	go func() {
		got, _ := d.DiskByIndex(context.Background(), 1)
		found <- got
	}()
	os.MkdirAll(filepath.Join(sys, "block", "vdb"), 0o755)
	os.WriteFile(filepath.Join(dev, "vdb"), nil, 0o600)
	if got := <-found; got != filepath.Join(dev, "vdb") {
		t.Fatalf("got %q", got)
	}
}

func TestDevicesDiskPrefersSerial(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	for n, serial := range map[string]string{"vda": "scratch", "vdb": "root"} {
		os.MkdirAll(filepath.Join(sys, "block", n), 0o755)
		os.WriteFile(filepath.Join(sys, "block", n, "serial"), []byte(serial+"\n"), 0o644)
		os.WriteFile(filepath.Join(dev, n), nil, 0o600)
	}
	d := Devices{SysDir: sys, DevDir: dev, Poll: time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if got, err := d.Disk(ctx, vmconfig.Disk{Serial: "root", Index: 0}); err != nil || got != filepath.Join(dev, "vdb") {
		t.Errorf("by serial: %s %v", got, err)
	}
	if got, err := d.Disk(ctx, vmconfig.Disk{Index: 0}); err != nil || got != filepath.Join(dev, "vda") {
		t.Errorf("by index: %s %v", got, err)
	}
}
