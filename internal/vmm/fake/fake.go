// Package fake is a VMM backend without a VM: its "guest" is a helper process on the host
// that speaks the guest side of the control protocol with the same code init uses, running
// the config's command as an ordinary process. Supervisor and CLI tests use it to exercise
// the whole lifecycle in seconds; it passes the same conformance suite as the real backends.
//
// The helper process is the current executable (a test binary) started with GuestEnv set:
// such a binary must call RunGuestIfRequested first thing in its TestMain.
package fake

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"github.com/firegopher/firegopher/internal/vmm"
)

// Environment of the helper process.
const (
	GuestEnv   = "FIREGOPHER_FAKE_GUEST" // "1": run as the fake guest
	controlEnv = "FIREGOPHER_FAKE_CONTROL"
	initrdEnv  = "FIREGOPHER_FAKE_INITRD"
)

// ControlSocket is where the fake guest connects, in the VM's directory.
const ControlSocket = "control.sock"

// Backend starts fake guests.
type Backend struct {
	// Program is the helper's executable; "" means this process's own.
	Program string
}

func New() *Backend { return &Backend{} }

func (b *Backend) Name() string { return "fake" }

// Caps: disk serials are whatever the config says; the fake never looks.
func (b *Backend) Caps() vmm.Caps { return vmm.Caps{DiskSerials: true} }

func (b *Backend) Start(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(spec.Kernel); err != nil {
		return nil, fmt.Errorf("fake: kernel: %w", err)
	}
	prog := b.Program
	if prog == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		prog = exe
	}
	var control net.Listener
	sock := filepath.Join(spec.Dir, ControlSocket)
	if !spec.NoControl {
		var err error
		if control, err = net.Listen("unix", sock); err != nil {
			return nil, fmt.Errorf("fake: control socket: %w", err)
		}
	}
	console, err := os.OpenFile(spec.ConsoleLog, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err == nil {
		var proc *vmm.Process
		proc, err = vmm.StartProcess(spec, prog, []string{"-test.run=^$"}, console,
			GuestEnv+"=1", controlEnv+"="+sock, initrdEnv+"="+spec.Initrd)
		if err == nil {
			return &instance{vmm.Run(proc, control, nil)}, nil
		}
	}
	if control != nil {
		control.Close()
	}
	return nil, err
}

type instance struct{ *vmm.Running }

// Wait: the helper exits 0 where a guest would reboot; anything else is a crash.
func (i *instance) Wait() error {
	if err := i.Ended(); err != nil {
		return fmt.Errorf("fake: %w", err)
	}
	return nil
}

// Shutdown is Ctrl-Alt-Del, which init turns into SIGINT to itself: the helper gets SIGINT.
func (i *instance) Shutdown(ctx context.Context) error {
	if err := i.Proc.Signal(syscall.SIGINT); err != nil {
		return err
	}
	if err := i.Proc.WaitOrKill(ctx); err != nil {
		return errors.Join(errors.New("fake: the guest did not stop; killed"), err)
	}
	return nil
}
