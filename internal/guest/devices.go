//go:build linux

package guest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Devices finds block devices and virtio-serial ports through sysfs. Drivers probe
// asynchronously after their module loads, so lookups wait (bounded) for the device.
type Devices struct {
	SysDir string // normally /sys
	DevDir string // normally /dev
	// Poll is how often to look again while a device has not appeared.
	Poll time.Duration
}

// SystemDevices looks at the running kernel.
func SystemDevices() Devices {
	return Devices{SysDir: "/sys", DevDir: "/dev", Poll: 10 * time.Millisecond}
}

// DiskBySerial returns the device node of the virtio disk whose serial is serial.
func (d Devices) DiskBySerial(ctx context.Context, serial string) (string, error) {
	return d.waitFor(ctx, "disk with serial "+serial, func() (string, bool) {
		blocks, _ := filepath.Glob(filepath.Join(d.SysDir, "block", "*", "serial"))
		for _, p := range blocks {
			if readTrimmed(p) == serial {
				return filepath.Join(d.DevDir, filepath.Base(filepath.Dir(p))), true
			}
		}
		return "", false
	})
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
