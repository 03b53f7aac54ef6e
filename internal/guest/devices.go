//go:build linux

package guest

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/firegopher/firegopher/internal/vmconfig"
)

// Devices finds block devices and virtio-serial ports through sysfs. Drivers probe
// asynchronously after their module loads, so lookups wait (bounded) for the device.
type Devices struct {
	SysDir string // normally /sys
	DevDir string // normally /dev
	// Poll is how often to look again while a device has not appeared.
	Poll time.Duration
	// Known are disks by serial read earlier (DiskSerials), which DiskBySerial takes without
	// asking the devices again if their nodes exist.
	Known map[string]string
}

// SystemDevices looks at the running kernel.
func SystemDevices() Devices {
	return Devices{SysDir: "/sys", DevDir: "/dev", Poll: 10 * time.Millisecond}
}

// DiskBySerial returns the device node of the virtio disk whose serial is serial.
func (d Devices) DiskBySerial(ctx context.Context, serial string) (string, error) {
	if dev, ok := d.Known[serial]; ok && serial != "" {
		if _, err := os.Stat(dev); err == nil {
			return dev, nil
		}
	}
	return d.waitFor(ctx, "disk with serial "+serial, func() (string, bool) {
		dev, ok := d.DiskSerials()[serial]
		return dev, ok
	})
}

// DiskSerials returns the device node of every disk present now that has a serial, by
// serial. Reading a virtio disk's serial is a request to the device: a snapshot template
// reads them before it is saved, and the VMs restored from it (same devices, the
// template's key holds their layout) take them as Known.
func (d Devices) DiskSerials() map[string]string {
	disks := map[string]string{}
	blocks, _ := filepath.Glob(filepath.Join(d.SysDir, "block", "*", "serial"))
	for _, p := range blocks {
		if serial := readTrimmed(p); serial != "" {
			disks[serial] = filepath.Join(d.DevDir, filepath.Base(filepath.Dir(p)))
		}
	}
	return disks
}

// DiskByIndex returns the device node of the virtio disk at 0-based position i (vda, vdb,
// ..., vdz, vdaa): it waits until at least i+1 virtio disks exist. The kernel names them in
// probe order, which is the order the VMM attached them in.
func (d Devices) DiskByIndex(ctx context.Context, i int) (string, error) {
	if i < 0 {
		return "", fmt.Errorf("disk index %d is negative", i)
	}
	return d.waitFor(ctx, fmt.Sprintf("virtio disk number %d (from 0)", i), func() (string, bool) {
		disks, _ := filepath.Glob(filepath.Join(d.SysDir, "block", "vd*"))
		if len(disks) <= i {
			return "", false
		}
		names := make([]string, len(disks))
		for k, p := range disks {
			names[k] = filepath.Base(p)
		}
		slices.SortFunc(names, func(a, b string) int {
			return cmp.Or(cmp.Compare(len(a), len(b)), strings.Compare(a, b))
		})
		return filepath.Join(d.DevDir, names[i]), true
	})
}

// Disk returns the device node of disk: by serial when it has one, else by index.
func (d Devices) Disk(ctx context.Context, disk vmconfig.Disk) (string, error) {
	if disk.Serial != "" {
		return d.DiskBySerial(ctx, disk.Serial)
	}
	return d.DiskByIndex(ctx, disk.Index)
}

// PortByName returns the device node of the virtio-serial port named name.
func (d Devices) PortByName(ctx context.Context, name string) (string, error) {
	return d.waitFor(ctx, "virtio-serial port "+name, func() (string, bool) {
		ports, _ := filepath.Glob(filepath.Join(d.SysDir, "class", "virtio-ports", "*", "name"))
		for _, p := range ports {
			if readTrimmed(p) == name {
				return filepath.Join(d.DevDir, filepath.Base(filepath.Dir(p))), true
			}
		}
		return "", false
	})
}

// NICByMAC returns the name of the network interface whose address is mac (a NIC
// hot-plugged into a VM restored from a snapshot template appears after init is running).
func (d Devices) NICByMAC(ctx context.Context, mac string) (string, error) {
	mac = strings.ToLower(mac)
	dir, err := d.waitFor(ctx, "network interface with MAC "+mac, func() (string, bool) {
		addrs, _ := filepath.Glob(filepath.Join(d.SysDir, "class", "net", "*", "address"))
		for _, p := range addrs {
			if readTrimmed(p) == mac {
				return filepath.Dir(p), true
			}
		}
		return "", false
	})
	return filepath.Base(dir), err
}

func (d Devices) waitFor(ctx context.Context, what string, find func() (string, bool)) (string, error) {
	t := time.NewTicker(d.Poll)
	defer t.Stop()
	for {
		if dev, ok := find(); ok {
			// devtmpfs creates the node a moment after sysfs shows the device.
			if _, err := os.Stat(dev); err == nil {
				return dev, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no %s appeared: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}

func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
