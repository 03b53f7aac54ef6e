package vmm

import (
	"errors"
	"strings"
	"testing"
)

func TestDefaultBackend(t *testing.T) {
	noKVM := errors.New("/dev/kvm: no such file or directory")
	for _, c := range []struct {
		kvmErr   error
		release  string
		want     string
		whyHolds string
	}{
		{nil, "1.16.1", Firecracker, "v1.16.1"},
		{nil, "", QEMU, "no Firecracker release"},
		{noKVM, "1.16.1", QEMU, "/dev/kvm: no such file"},
		{noKVM, "", QEMU, "KVM is not usable"},
	} {
		name, why := DefaultBackend(c.kvmErr, c.release)
		if name != c.want || !strings.Contains(why, c.whyHolds) {
			t.Errorf("DefaultBackend(%v, %q) = %q, %q; want %q saying %q", c.kvmErr, c.release, name, why, c.want, c.whyHolds)
		}
	}
}
