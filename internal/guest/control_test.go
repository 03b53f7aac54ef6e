//go:build linux

package guest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/vmconfig"
)

func TestParseControl(t *testing.T) {
	vsock := func(port uint32) Control { return Control{Transport: vmconfig.ControlVsock, VsockPort: port} }
	serial := func(name string) Control { return Control{Transport: vmconfig.ControlVirtioSerial, PortName: name} }
	for _, tc := range []struct {
		cmdline string
		want    Control
	}{
		{"", DefaultControl},
		{"console=ttyS0 panic=-1 rdinit=/init quiet\n", DefaultControl},
		{"console=ttyS0 firegopher.control=vsock:1024 reboot=k\n", vsock(1024)},
		{vmconfig.VsockControlArg(vmconfig.DefaultVsockPort), vsock(vmconfig.DefaultVsockPort)},
		{"firegopher.control=virtio-serial:my.port", serial("my.port")},
		{vmconfig.VirtioSerialControlArg("other"), serial("other")},
		{`firegopher.control="vsock:52" quiet`, vsock(52)},
		{"firegopher.control=vsock:7\tfiregopher.control=vsock:8", vsock(8)}, // the last one counts
		{"firegopher.controlx=vsock:7 xfiregopher.control=vsock:7", DefaultControl},
		{"quiet -- firegopher.control=vsock:7", DefaultControl}, // init's argv, not a parameter
		{"firegopher.control=vsock:4294967294", vsock(4294967294)},
	} {
		got, err := ParseControl(tc.cmdline)
		if err != nil || got != tc.want {
			t.Errorf("%q: got %+v, %v; want %+v", tc.cmdline, got, err, tc.want)
		}
	}
}

func TestParseControlNamesWhatIsWrong(t *testing.T) {
	for cmdline, want := range map[string]string{
		"firegopher.control":                   "no value",
		"firegopher.control=":                  `transport ""`,
		"firegopher.control=tcp:1":             `transport "tcp"`,
		"firegopher.control=vsock":             `port ""`,
		"firegopher.control=vsock:":            `port ""`,
		"firegopher.control=vsock:x1":          `port "x1"`,
		"firegopher.control=vsock:-1":          `port "-1"`,
		"firegopher.control=vsock:4294967296":  `port "4294967296"`,
		"firegopher.control=vsock:4294967295":  "VMADDR_PORT_ANY",
		"firegopher.control=virtio-serial":     "empty port name",
		"firegopher.control=virtio-serial:":    "empty port name",
		"ok firegopher.control=vsock:9 quiet ": "", // control case: no error
	} {
		_, err := ParseControl(cmdline)
		if want == "" {
			if err != nil {
				t.Errorf("%q: %v", cmdline, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), vmconfig.ControlParam) {
			t.Errorf("%q: got %v, want an error naming %s and %q", cmdline, err, vmconfig.ControlParam, want)
		}
	}
}

func TestControlString(t *testing.T) {
	if s := (Control{Transport: vmconfig.ControlVsock, VsockPort: 1024}).String(); s != "vsock:1024" {
		t.Errorf("got %q", s)
	}
	if s := DefaultControl.String(); s != "virtio-serial:org.firegopher.ctl" {
		t.Errorf("got %q", s)
	}
}

// The vsock syscalls cannot run here (no vhost-vsock); the retry policy around them can.
func TestDialRetryingWaitsForTheHostAndTransport(t *testing.T) {
	errs := []error{unix.ENODEV, unix.ECONNREFUSED, unix.ECONNRESET, unix.ETIMEDOUT, unix.EINTR}
	calls := 0
	fd, err := dialRetrying(context.Background(), time.Millisecond, "vsock port 1024 on the host", func() (int, error) {
		calls++
		if calls <= len(errs) {
			return -1, errs[calls-1]
		}
		return 42, nil
	})
	if err != nil || fd != 42 || calls != len(errs)+1 {
		t.Fatalf("fd %d err %v after %d calls", fd, err, calls)
	}
}

func TestDialRetryingFailsAtOnceForGood(t *testing.T) {
	calls := 0
	_, err := dialRetrying(context.Background(), time.Millisecond, "vsock port 1024 on the host", func() (int, error) {
		calls++
		return -1, unix.EAFNOSUPPORT
	})
	if calls != 1 || !errors.Is(err, unix.EAFNOSUPPORT) || !strings.Contains(err.Error(), "vsock port 1024") {
		t.Fatalf("%d calls, %v", calls, err)
	}
}

func TestDialRetryingGivesUpAtTheDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := dialRetrying(ctx, time.Millisecond, "vsock port 1024 on the host", func() (int, error) {
		return -1, unix.ECONNREFUSED
	})
	if !errors.Is(err, unix.ECONNREFUSED) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
}
