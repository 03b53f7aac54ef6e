// Package supervisor owns one VM's lifecycle: it prepares the VM's files, starts its VMM,
// speaks to its init over the control channel, relays the workload's output to the log
// and to attached clients, serves signal/exec/stop requests, records the exit status, and
// tears everything down when the VM ends, whichever way it ends. It is a library: the CLI,
// `up` and the containerd shim all drive VMs through Host.
package supervisor

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/state"
	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/volume"
)

// RootSerial is the root disk's virtio serial where the backend can set one.
const RootSerial = "root"

// Cmdline is the caller's part of an app VM's kernel command line: console on the first
// serial port, a panic reboots at once (which ends the VMM), our init from the initramfs.
// The backend adds reboot=k and the control transport.
const Cmdline = "console=ttyS0 panic=-1 rdinit=/init quiet"

// Files of a VM's directory.
const (
	DiskFile      = "rootfs.ext4"
	OverlayFile   = "rootfs.qcow2" // the root disk as a qcow2 overlay of the cached image
	InitrdFile    = "initrd.cpio"
	APISocket     = "api.sock"
	ConsoleLog    = "console.log"
	OutputLog     = "output.log"
	LockFile      = "lock"
	SupervisorLog = "supervisor.log"
)

// VM is one VM being prepared or running: its machine, and what the start steps made.
type VM struct {
	Machine *spec.Machine
	Dir     string
	Store   *assets.Store
	Backend vmm.Backend
	State   *state.Store
	Log     *slog.Logger
	// NetworkDB is the address allocator's database.
	NetworkDB string
	// VolumesDir holds the named volumes (volume.Store).
	VolumesDir string

	kernel   *assets.Kernel
	root     vmm.Disk // the root disk clone-rootfs made
	net      netState
	lock     *os.File
	api      net.Listener
	instance vmm.Instance
	guest    *agent.Conn
	guestRaw net.Conn
	// template is the snapshot template the VM restores from ("" : it cold-boots), and
	// baseInitrd the initramfs both were started with.
	template   string
	baseInitrd string
	resume     func(context.Context) error // lets a restored guest run

	// volumes are the named volumes held, volumeFiles the host directories' drives built.
	volumes     []*volume.Attachment
	volumeFiles []string
}

// ID is the machine's id.
func (vm *VM) ID() string { return vm.Machine.ID }

func (vm *VM) path(name string) string { return filepath.Join(vm.Dir, name) }

// VMMPid is the VMM's process id once started.
func (vm *VM) VMMPid() int {
	if vm.instance == nil {
		return 0
	}
	return vm.instance.Pid()
}
