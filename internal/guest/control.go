//go:build linux

package guest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/vmconfig"
)

// Control says how init reaches the host: which transport and which address on it.
type Control struct {
	// Transport is vmconfig.ControlVirtioSerial or vmconfig.ControlVsock.
	Transport string
	// PortName names the virtio-serial port.
	PortName string
	// VsockPort is the host's vsock port (the host is always CID 2).
	VsockPort uint32
}

// DefaultControl is the channel of a kernel command line that names none.
var DefaultControl = Control{Transport: vmconfig.ControlVirtioSerial, PortName: vmconfig.ControlPortName}

func (c Control) String() string {
	if c.Transport == vmconfig.ControlVsock {
		return fmt.Sprintf("%s:%d", c.Transport, c.VsockPort)
	}
	return c.Transport + ":" + c.PortName
}

// ReadControl reads the control channel's description from the kernel command line at path
// (/proc/cmdline).
func ReadControl(path string) (Control, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Control{}, err
	}
	return ParseControl(string(b))
}

// ParseControl finds vmconfig.ControlParam in a kernel command line; the last one counts, as
// for the kernel's own parameters. Without it the channel is DefaultControl.
func ParseControl(cmdline string) (Control, error) {
	c := DefaultControl
	for _, arg := range cmdlineArgs(cmdline) {
		name, value, hasValue := strings.Cut(arg, "=")
		if name != vmconfig.ControlParam {
			continue
		}
		if !hasValue {
			return Control{}, fmt.Errorf("%s: no value (want %s:NAME or %s:PORT)", name, vmconfig.ControlVirtioSerial, vmconfig.ControlVsock)
		}
		var err error
		if c, err = parseControlValue(value); err != nil {
			return Control{}, fmt.Errorf("%s=%s: %w", name, value, err)
		}
	}
	return c, nil
}

func parseControlValue(value string) (Control, error) {
	transport, addr, _ := strings.Cut(value, ":")
	switch transport {
	case vmconfig.ControlVirtioSerial:
		if addr == "" {
			return Control{}, errors.New("empty port name")
		}
		return Control{Transport: transport, PortName: addr}, nil
	case vmconfig.ControlVsock:
		port, err := strconv.ParseUint(addr, 10, 32)
		if err != nil {
			return Control{}, fmt.Errorf("port %q: want a decimal number below %d", addr, uint64(unix.VMADDR_PORT_ANY))
		}
		if port == unix.VMADDR_PORT_ANY {
			return Control{}, fmt.Errorf("port %d: reserved (VMADDR_PORT_ANY)", port)
		}
		return Control{Transport: transport, VsockPort: uint32(port)}, nil
	}
	return Control{}, fmt.Errorf("transport %q: want %s:NAME or %s:PORT", transport, vmconfig.ControlVirtioSerial, vmconfig.ControlVsock)
}

// cmdlineArgs splits a kernel command line as the kernel does: on spaces outside double
// quotes, quotes removed, nothing after "--" (those arguments belong to init's argv).
func cmdlineArgs(cmdline string) []string {
	var args []string
	var cur strings.Builder
	inArg, quoted := false, false
	flush := func() bool {
		if !inArg {
			return true
		}
		arg := cur.String()
		cur.Reset()
		inArg = false
		if arg == "--" {
			return false
		}
		args = append(args, arg)
		return true
	}
	for _, r := range cmdline {
		switch {
		case r == '"':
			quoted, inArg = !quoted, true
		case !quoted && (r == ' ' || r == '\t' || r == '\n'):
			if !flush() {
				return args
			}
		default:
			cur.WriteRune(r)
			inArg = true
		}
	}
	flush()
	return args
}

// Open opens the channel, waiting (bounded by ctx) for its device to appear: the virtio-serial
// port's driver, or the vsock transport and the host's listener. The result is a plain blocking
// file (a character device or a socket), closed on exec.
func (c Control) Open(ctx context.Context, d Devices) (*os.File, error) {
	switch c.Transport {
	case vmconfig.ControlVirtioSerial:
		dev, err := d.PortByName(ctx, c.PortName)
		if err != nil {
			return nil, err
		}
		return os.OpenFile(dev, os.O_RDWR, 0)
	case vmconfig.ControlVsock:
		fd, err := dialRetrying(ctx, d.Poll, fmt.Sprintf("vsock port %d on the host", c.VsockPort), func() (int, error) {
			return connectVsock(unix.VMADDR_CID_HOST, c.VsockPort)
		})
		if err != nil {
			return nil, err
		}
		return os.NewFile(uintptr(fd), c.String()), nil
	}
	return nil, fmt.Errorf("control transport %q unknown", c.Transport)
}

// connectVsock makes one blocking connection attempt.
func connectVsock(cid, port uint32) (int, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("vsock socket: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrVM{CID: cid, Port: port}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// dialRetryable are the connect errors of a host or transport that is not there yet: the
// virtio vsock transport still probing (ENODEV), nobody listening yet (ECONNREFUSED, or
// ECONNRESET: Firecracker answers a connect to a port without listener with a reset), the
// connect timeout (ETIMEDOUT), a signal during the attempt.
var dialRetryable = []error{unix.ENODEV, unix.ECONNREFUSED, unix.ECONNRESET, unix.ETIMEDOUT, unix.EINTR, unix.EAGAIN}

// dialRetrying calls connect until it succeeds, fails for good, or ctx ends.
func dialRetrying(ctx context.Context, poll time.Duration, what string, connect func() (int, error)) (int, error) {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		fd, err := connect()
		if err == nil {
			return fd, nil
		}
		retry := false
		for _, e := range dialRetryable {
			retry = retry || errors.Is(err, e)
		}
		if !retry {
			return -1, fmt.Errorf("connect to %s: %w", what, err)
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("connect to %s: %w (gave up: %w)", what, err, ctx.Err())
		case <-t.C:
		}
	}
}
