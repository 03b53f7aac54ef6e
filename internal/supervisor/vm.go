// Package supervisor owns one VM's lifecycle: it prepares the VM's files, starts its VMM,
// speaks to its init over the control channel, relays the workload's output to the log
// and to attached clients, serves signal/exec/stop requests, records the exit status, and
// tears everything down when the VM ends, whichever way it ends.
package supervisor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/disk"
	"github.com/firegopher/firegopher/internal/initrd"
	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm"
)

// RootSerial is the root disk's virtio serial; init looks the disk up by it.
const RootSerial = "root"

// Cmdline is the kernel command line of app VMs: console on the first serial port, a
// panic ends the VM at once (the VMM runs with -no-reboot), our init from the initramfs.
const Cmdline = "console=ttyS0 panic=-1 rdinit=/init quiet"

// Files of a VM's directory.
const (
	DiskFile      = "rootfs.ext4"
	InitrdFile    = "initrd.cpio"
	ControlSocket = "control.sock"
	APISocket     = "api.sock"
	ConsoleLog    = "console.log"
	OutputLog     = "output.log"
	LockFile      = "lock"
)

// VM is one VM being prepared or running. The exported fields are its inputs; the rest is
// filled in by the start steps.
type VM struct {
	ID         string
	Dir        string
	Store      *assets.Store
	KernelRef  assets.Digest
	Kernel     *assets.Kernel
	Rootfs     string // the cached image; never written
	InitBinary string // firegopher-init
	Backend    vmm.Backend
	CPUs       int
	MemoryMiB  int
	Config     vmconfig.Config
	Net        *NetLaunch // nil: no network
	Log        *slog.Logger

	net       netState
	lock      *os.File
	control   net.Listener
	api       net.Listener
	instance  vmm.Instance
	guest     *agent.Conn
	guestConn net.Conn
}

// NewID returns a random VM id: 12 hex digits, like a short container id.
func NewID() string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		panic(err) // the kernel's CSPRNG does not fail
	}
	return hex.EncodeToString(b)
}

func (vm *VM) path(name string) string { return filepath.Join(vm.Dir, name) }

// DefaultSteps is the start sequence of an app VM.
func DefaultSteps() Steps {
	return Steps{
		{Name: "create-dir", Do: createDir, Undo: removeRuntimeFiles},
		{Name: "clone-rootfs", Do: cloneRootfs},
		{Name: "write-initrd", Do: writeInitrd},
		{Name: "listen-control", Do: listenControl, Undo: closeControl},
		{Name: "listen-api", Do: listenAPI, Undo: closeAPI},
		{Name: "start-vmm", Do: startVMM, Undo: stopVMM},
		{Name: "accept-control", Do: acceptControl},
	}
}

func createDir(_ context.Context, vm *VM) error {
	return os.MkdirAll(vm.Dir, 0o700)
}

// removeRuntimeFiles removes what only a running VM needs (the disk clone, the initrd,
// sockets); the logs stay for `firegopher logs` until the VM is removed.
func removeRuntimeFiles(vm *VM) error {
	for _, f := range []string{DiskFile, InitrdFile, ControlSocket, APISocket} {
		if err := os.Remove(vm.path(f)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

// lockDir takes the lock that says "a supervisor owns this VM": gc leaves a VM alone while
// the lock is held, and the kernel drops it when the supervisor dies, however it dies.
// It is held from before the first step until after the outcome is recorded, so that
// whoever waits for the lock finds the final record.
func lockDir(vm *VM) error {
	if vm.lock != nil {
		return nil // claimed by whoever created the VM (ClaimDir)
	}
	if err := os.MkdirAll(vm.Dir, 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(vm.path(LockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("VM %s is owned by another supervisor: %w", vm.ID, err)
	}
	vm.lock = f
	return nil
}

func unlockDir(vm *VM) { vm.lock.Close() }

// ClaimDir creates the VM's directory already locked: it is made under a temporary name,
// locked, then renamed into place, so gc never sees it unowned. The lock lives as long as
// the returned file (and any process it is passed to) keeps it open.
func ClaimDir(vmsDir, id string) (*os.File, error) {
	if err := os.MkdirAll(vmsDir, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(vmsDir, "."+id+"-")
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(tmp, LockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err == nil {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(vmsDir, id))
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		os.RemoveAll(tmp)
		return nil, err
	}
	return f, nil
}

// Owned says whether a live supervisor holds dir's lock.
func Owned(dir string) bool {
	f, err := os.Open(filepath.Join(dir, LockFile))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return true
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}

func cloneRootfs(_ context.Context, vm *VM) error {
	method, err := disk.Clone(vm.Rootfs, vm.path(DiskFile))
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
	return initrd.ForVM(vm.path(InitrdFile), base, &vm.Config)
}

func listenControl(_ context.Context, vm *VM) (err error) {
	vm.control, err = net.Listen("unix", vm.path(ControlSocket))
	return err
}

func closeControl(vm *VM) error {
	if vm.guestConn != nil {
		vm.guestConn.Close()
	}
	return vm.control.Close()
}

func listenAPI(_ context.Context, vm *VM) (err error) {
	vm.api, err = net.Listen("unix", vm.path(APISocket))
	return err
}

func closeAPI(vm *VM) error { return vm.api.Close() }

func startVMM(ctx context.Context, vm *VM) error {
	inst, err := vm.Backend.Start(ctx, vmm.Spec{
		ID:            vm.ID,
		CPUs:          vm.CPUs,
		MemoryMiB:     vm.MemoryMiB,
		Kernel:        vm.Store.Path(vm.Kernel.Vmlinux),
		Initrd:        vm.path(InitrdFile),
		Cmdline:       Cmdline,
		Disks:         []vmm.Disk{{Path: vm.path(DiskFile), Serial: RootSerial}},
		NICs:          vm.nics(),
		ControlSocket: vm.path(ControlSocket),
		ConsoleLog:    vm.path(ConsoleLog),
	})
	if err != nil {
		return err
	}
	vm.instance = inst
	vm.Log.Debug("vmm started", "backend", vm.Backend.Name(), "pid", inst.Pid())
	return nil
}

func (vm *VM) nics() []vmm.NIC {
	if vm.Net == nil {
		return nil
	}
	return []vmm.NIC{{TAP: vm.net.slot.TAP, MAC: vm.net.slot.GuestMAC().String()}}
}

func stopVMM(vm *VM) error {
	if err := vm.instance.Kill(); err != nil {
		return err
	}
	_ = vm.instance.Wait() // killed on purpose: its exit error says nothing new
	return nil
}

// VMMPid is the VMM's process id once started.
func (vm *VM) VMMPid() int {
	if vm.instance == nil {
		return 0
	}
	return vm.instance.Pid()
}

// acceptControl waits for the VMM to connect the guest's control port, or to die trying.
func acceptControl(ctx context.Context, vm *VM) error {
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() { c, err := vm.control.Accept(); ch <- accepted{c, err} }()
	exited := make(chan error, 1)
	go func() { exited <- vm.instance.Wait() }()
	select {
	case a := <-ch:
		if a.err != nil {
			return a.err
		}
		vm.guestConn = a.c
		vm.guest = agent.NewConn(a.c)
		return nil
	case err := <-exited:
		return fmt.Errorf("VMM exited before connecting: %v", err)
	case <-time.After(time.Minute):
		return fmt.Errorf("VMM did not connect the control channel within a minute")
	case <-ctx.Done():
		return ctx.Err()
	}
}
