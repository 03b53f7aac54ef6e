//go:build linux

package guest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/vmconfig"
)

// A guest restored from a snapshot template wakes up as a copy of the template: same RNG
// state, same clock, no identity. These make it a machine of its own before anything else
// runs.

// ReceiveConfig reads the config the host sends to an init whose initrd holds none (a VM
// restored from a template): one KindConfig frame, read without reading ahead so that the
// channel reaches stage 2 untouched.
func ReceiveConfig(ctl *os.File) (*vmconfig.Config, error) {
	f, err := agent.ReadFrame(ctl)
	if err != nil {
		return nil, fmt.Errorf("control channel: %w", err)
	}
	if f.Kind != agent.KindConfig {
		return nil, fmt.Errorf("control channel: got a %s frame, want the config", f.Kind)
	}
	return vmconfig.Parse(f.Payload)
}

// AwaitConfig waits on ctl for the config of a VM restored from a template. A VMM that
// resets the control connection when it loads the snapshot (Firecracker does so to every
// vsock connection) leaves the parked guest reading EOF or a reset: then reconnect opens
// the channel again (and greets the host on it), and the config is read there. It returns
// the config and the channel to keep.
func AwaitConfig(ctl *os.File, reconnect func() (*os.File, error)) (*vmconfig.Config, *os.File, error) {
	cfg, err := ReceiveConfig(ctl)
	if err == nil || reconnect == nil || !connectionLost(err) {
		return cfg, ctl, err
	}
	ctl.Close()
	if ctl, err = reconnect(); err != nil {
		return nil, nil, fmt.Errorf("control channel after the restore: %w", err)
	}
	cfg, err = ReceiveConfig(ctl)
	if err != nil {
		ctl.Close()
		return nil, nil, err
	}
	return cfg, ctl, nil
}

// connectionLost: the host side of the connection went away under a reader.
func connectionLost(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.EPIPE)
}

// Refresh applies f: the host's randomness goes into the kernel's pool, credited, and the
// CRNG is reseeded from it at once (so no output after this depends on the template's
// state alone), then the wall clock is set to the host's.
func Refresh(f *vmconfig.Fresh) error {
	if f == nil {
		return nil
	}
	if err := AddEntropy("/dev/urandom", f.Entropy); err != nil {
		return err
	}
	ts := unix.NsecToTimespec(f.UnixNano)
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("set the clock: %w", err)
	}
	return nil
}

// AddEntropy credits data to the kernel's input pool through dev (RNDADDENTROPY) and forces
// a reseed of the CRNG (RNDRESEEDCRNG).
func AddEntropy(dev string, data []byte) error {
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("add entropy: %w", err)
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+len(data))
	binary.NativeEndian.PutUint32(info[0:], uint32(8*len(data)))
	binary.NativeEndian.PutUint32(info[4:], uint32(len(data)))
	copy(info[8:], data)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&info[0]))); errno != 0 {
		return fmt.Errorf("add entropy: RNDADDENTROPY: %w", errno)
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); errno != 0 {
		return fmt.Errorf("add entropy: RNDRESEEDCRNG: %w", errno)
	}
	return nil
}

// blkFlsBuf is BLKFLSBUF, _IO(0x12, 97): write back and drop a block device's buffers.
const blkFlsBuf = 0x1261

// ForgetBlockCache drops what the kernel cached of block device dev. A template's guest
// probed its root disk device while a placeholder was behind it; the restored guest has its
// own disk there and must read it afresh.
func ForgetBlockCache(dev string) error {
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), blkFlsBuf, 0); errno != 0 {
		return fmt.Errorf("BLKFLSBUF %s: %w", dev, errno)
	}
	return nil
}

// WriteMachineID writes id as root's /etc/machine-id (nothing when id is empty).
func WriteMachineID(root, id string) error {
	if id == "" {
		return nil
	}
	p := filepath.Join(root, "etc/machine-id")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("write /etc/machine-id: %w", err)
	}
	// A symlink in the image (to /run/machine-id, say) is replaced, not followed.
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("write /etc/machine-id: %w", err)
	}
	if err := os.WriteFile(p, []byte(id+"\n"), 0o444); err != nil {
		return fmt.Errorf("write /etc/machine-id: %w", err)
	}
	return nil
}
