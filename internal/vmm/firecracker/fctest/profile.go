// Package fctest holds test doubles for Firecracker and its jailer, built as one static
// binary per modelled release (see Build): a fake `firecracker` whose API server is driven
// by that release's own API description (every body validated against its schema, unknown
// fields refused), which keeps the release's request-ordering rules, really opens what it is
// given (kernel, initrd, drives with the requested mode, the TAP with TUNSETIFF, the vsock
// socket) and, after InstanceStart, plays the guest: init's side of the control protocol
// over the vsock, with the config from the initrd. It pauses, snapshots and loads
// snapshots (see snapshot.go): a guest saved where init waits for its config comes back,
// reconnects its control channel and takes its config over it. And a test `jailer` that does what the
// real one is documented to do, for real (chroot, setuid), then execs the fake.
//
// A backend under test cannot tell them from the real binaries: same arguments, same
// files, same sockets, same exit codes. Only the guest is pretend: its workload runs as a
// process of the fake, in the fake's root (or in a root unpacked from a tar root drive when
// that root has no /bin/sh, as in a jail).
package fctest

import (
	"fmt"
	"strconv"
	"strings"
)

// Versions are the modelled releases, oldest first.
var Versions = []string{"1.6.0", "1.16.1"}

// Profile is what differs between modelled releases beyond their API descriptions.
type Profile struct {
	Version             string
	major, minor, patch int
}

// NewProfile returns the profile of a modelled release ("1.6.0").
func NewProfile(version string) (Profile, error) {
	parts := strings.Split(version, ".")
	if len(parts) != 3 {
		return Profile{}, fmt.Errorf("fctest: version %q: want MAJOR.MINOR.PATCH", version)
	}
	var n [3]int
	for i, s := range parts {
		v, err := strconv.Atoi(s)
		if err != nil {
			return Profile{}, fmt.Errorf("fctest: version %q: %w", version, err)
		}
		n[i] = v
	}
	return Profile{Version: version, major: n[0], minor: n[1], patch: n[2]}, nil
}

func (p Profile) atLeast(major, minor int) bool {
	return p.major > major || p.major == major && p.minor >= minor
}

// ACPI: from 1.8 Firecracker also describes virtio-mmio devices in the ACPI DSDT, so a
// kernel without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES still finds them.
func (p Profile) ACPI() bool { return p.atLeast(1, 8) }

// CreatesLogFiles: 1.16 creates log_path and metrics_path; 1.6 opens them O_RDWR|O_NONBLOCK
// without O_CREAT, so they must exist (fc v1.6.0 src/vmm/src/logger/logging.rs).
func (p Profile) CreatesLogFiles() bool { return p.atLeast(1, 16) }

// Hotplug: 1.16 routes PUT /drives and /network-interfaces after boot to PCI hotplug
// (fc v1.16.1 src/vmm/src/rpc_interface.rs); 1.6 refuses them as pre-boot only.
func (p Profile) Hotplug() bool { return p.atLeast(1, 16) }

// PCIFlag: --enable-pci exists from 1.13.
func (p Profile) PCIFlag() bool { return p.atLeast(1, 13) }

// ExecNameRule: jailers before 1.13 refuse an exec file whose name does not contain
// "firecracker" (fc v1.6.0 src/jailer/src/env.rs:330).
func (p Profile) ExecNameRule() bool { return !p.atLeast(1, 13) }

// PidFileAlways: from 1.7 the jailer writes <exec>.pid in the chroot even without
// --new-pid-ns; 1.6 only with it.
func (p Profile) PidFileAlways() bool { return p.atLeast(1, 7) }

// ExecCopyChecked: from 1.15 the jailer opens its copy of the exec file O_NOFOLLOW, refuses
// one with more than one link, and chowns it to the jail's uid (fc v1.16.1 env.rs:468-512).
func (p Profile) ExecCopyChecked() bool { return p.atLeast(1, 15) }
