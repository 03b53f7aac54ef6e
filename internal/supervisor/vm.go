// Package supervisor owns one VM's lifecycle: it prepares the VM's files, starts its VMM,
// speaks to its init over the control channel, relays the workload's output and exit
// status, and tears everything down when the VM ends, whichever way it ends.
package supervisor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/disk"
	"github.com/firegopher/firegopher/internal/initrd"
	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm"
)

// rootSerial is the root disk's virtio serial; init looks the disk up by it.
const rootSerial = "root"

// Cmdline is the kernel command line of app VMs: console on the first serial port, a
// panic ends the VM at once (the VMM runs with -no-reboot), our init from the initramfs.
const Cmdline = "console=ttyS0 panic=-1 rdinit=/init quiet"

// VM is one VM being prepared or running. The exported fields are its inputs; the rest is
// filled in by the start steps.
type VM struct {
	ID         string
	RunDir     string // parent of the VM's own directory
	Store      *assets.Store
	KernelRef  assets.Digest
	Kernel     *assets.Kernel
	Rootfs     string // the cached image; never written
	InitBinary string // firegopher-init
	Backend    vmm.Backend
	CPUs       int
	MemoryMiB  int
	Config     vmconfig.Config
	Log        *slog.Logger

	Dir           string
	Disk          string
	Initrd        string
	ControlSocket string
	ConsoleLog    string

	listener net.Listener
	instance vmm.Instance
	ctl      *agent.Conn
	ctlConn  net.Conn
}

// NewID returns a random VM id: 12 hex digits, like a short container id.
func NewID() string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		panic(err) // the kernel's CSPRNG does not fail
	}
	return hex.EncodeToString(b)
}

// DefaultSteps is the start sequence of an app VM.
func DefaultSteps() Steps {
	return Steps{
		{Name: "create-dir", Do: createDir, Undo: removeDir},
		{Name: "clone-rootfs", Do: cloneRootfs},
		{Name: "write-initrd", Do: writeInitrd},
		{Name: "listen-control", Do: listenControl, Undo: closeControl},
		{Name: "start-vmm", Do: startVMM, Undo: stopVMM},
		{Name: "accept-control", Do: acceptControl},
	}
}

func createDir(_ context.Context, vm *VM) error {
	vm.Dir = filepath.Join(vm.RunDir, vm.ID)
	if err := os.MkdirAll(vm.RunDir, 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(vm.Dir, 0o700); err != nil {
		return err
	}
	vm.Disk = filepath.Join(vm.Dir, "rootfs.ext4")
	vm.Initrd = filepath.Join(vm.Dir, "initrd.cpio")
	vm.ControlSocket = filepath.Join(vm.Dir, "control.sock")
	vm.ConsoleLog = filepath.Join(vm.Dir, "console.log")
	return nil
}

// removeDir takes the clone, initrd, socket and logs with it.
func removeDir(vm *VM) error { return os.RemoveAll(vm.Dir) }

func cloneRootfs(_ context.Context, vm *VM) error {
	method, err := disk.Clone(vm.Rootfs, vm.Disk)
	if err != nil {
		return err
	}
	vm.Log.Debug("root disk cloned", "method", method)
	return nil
}

func writeInitrd(_ context.Context, vm *VM) error {
	base, err := initrd.Base(vm.Store, vm.KernelRef, vm.Kernel, vm.InitBinary)
	if err != nil {
		return err
	}
	return initrd.ForVM(vm.Initrd, base, &vm.Config)
}

func listenControl(_ context.Context, vm *VM) error {
	l, err := net.Listen("unix", vm.ControlSocket)
	if err != nil {
		return err
	}
	vm.listener = l
	return nil
}

func closeControl(vm *VM) error {
	if vm.ctlConn != nil {
		vm.ctlConn.Close()
	}
	return vm.listener.Close()
}

func startVMM(ctx context.Context, vm *VM) error {
	inst, err := vm.Backend.Start(ctx, vmm.Spec{
		ID:            vm.ID,
		CPUs:          vm.CPUs,
		MemoryMiB:     vm.MemoryMiB,
		Kernel:        vm.Store.Path(vm.Kernel.Vmlinux),
		Initrd:        vm.Initrd,
		Cmdline:       Cmdline,
		Disks:         []vmm.Disk{{Path: vm.Disk, Serial: rootSerial}},
		ControlSocket: vm.ControlSocket,
		ConsoleLog:    vm.ConsoleLog,
	})
	if err != nil {
		return err
	}
	vm.instance = inst
	vm.Log.Debug("vmm started", "backend", vm.Backend.Name(), "pid", inst.Pid())
	return nil
}

func stopVMM(vm *VM) error {
	if err := vm.instance.Kill(); err != nil {
		return err
	}
	_ = vm.instance.Wait() // killed on purpose: its exit error says nothing new
	return nil
}

// acceptControl waits for the VMM to connect the guest's control port, or to die trying.
func acceptControl(ctx context.Context, vm *VM) error {
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() { c, err := vm.listener.Accept(); ch <- accepted{c, err} }()
	exited := make(chan error, 1)
	go func() { exited <- vm.instance.Wait() }()
	select {
	case a := <-ch:
		if a.err != nil {
			return a.err
		}
		vm.ctlConn = a.c
		vm.ctl = agent.NewConn(a.c)
		return nil
	case err := <-exited:
		return fmt.Errorf("VMM exited before connecting: %v", err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ErrNoExitStatus means the VM ended without init reporting how the workload ended.
var ErrNoExitStatus = errors.New("the VM stopped without reporting an exit status")

// Attach relays the workload's output to stdout and stderr until init reports the exit
// status, then waits for the VMM to power off. Cancelling ctx kills the VM.
func (vm *VM) Attach(ctx context.Context, stdout, stderr io.Writer) (agent.Exit, error) {
	frames := make(chan agent.Frame)
	readErr := make(chan error, 1)
	go func() {
		for {
			f, err := vm.ctl.Receive()
			if err != nil {
				readErr <- err
				return
			}
			frames <- f
		}
	}()
	vmmExited := make(chan error, 1)
	go func() { vmmExited <- vm.instance.Wait() }()

	for {
		select {
		case f := <-frames:
			switch f.Kind {
			case agent.KindStdout:
				stdout.Write(f.Payload)
			case agent.KindStderr:
				stderr.Write(f.Payload)
			case agent.KindHello:
				vm.Log.Debug("guest init is up")
			case agent.KindExit:
				exit, err := agent.DecodeExit(f.Payload)
				if err != nil {
					return agent.Exit{}, err
				}
				if err := vm.ctl.Send(agent.KindAck, nil); err != nil {
					vm.Log.Warn("acknowledge exit status", "error", err)
				}
				return exit, vm.waitPowerOff(vmmExited)
			}
		case err := <-readErr:
			// The stream closes when the VMM exits; prefer the VMM's story.
			select {
			case vmErr := <-vmmExited:
				return agent.Exit{}, vm.diagnose(vmErr)
			case <-time.After(5 * time.Second):
				return agent.Exit{}, fmt.Errorf("control channel: %w", err)
			}
		case vmErr := <-vmmExited:
			return agent.Exit{}, vm.diagnose(vmErr)
		case <-ctx.Done():
			return agent.Exit{}, ctx.Err()
		}
	}
}

// powerOffTimeout bounds how long a guest may take from reporting its exit to powering off.
const powerOffTimeout = 30 * time.Second

func (vm *VM) waitPowerOff(vmmExited <-chan error) error {
	select {
	case err := <-vmmExited:
		return err
	case <-time.After(powerOffTimeout):
		vm.Log.Warn("guest did not power off; killing the VMM", "after", powerOffTimeout)
		return vm.instance.Kill()
	}
}

// diagnose explains a VM that ended without an exit status, with the console's last lines.
func (vm *VM) diagnose(vmErr error) error {
	tail := consoleTail(vm.ConsoleLog, 15)
	msg := ErrNoExitStatus.Error()
	if vmErr != nil {
		msg += ": " + vmErr.Error()
	}
	if tail != "" {
		msg += "\nlast lines of the console:\n" + tail
	}
	return fmt.Errorf("%w%s", ErrNoExitStatus, strings.TrimPrefix(msg, ErrNoExitStatus.Error()))
}

func consoleTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
