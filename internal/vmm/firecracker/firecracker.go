// Package firecracker runs VMs under Firecracker. The process is started with only an API
// socket; the VM is then described over Firecracker's REST API (through the SDK's generated
// client and models) as a sequence of named steps, ending in InstanceStart.
//
// Control channel: Firecracker has no virtio-serial, so the guest's init connects to the
// host's vsock port ControlVsockPort (1024); Firecracker forwards that connection to the Unix
// socket ControlPath(spec), where the instance listens (guest-initiated, as with QEMU, where
// QEMU connects to the backend's socket). DialVsock is the host-initiated direction.
//
// Disks: drive_id is Disk.Serial, but Firecracker answers virtio-blk GET_ID with an id built
// from the backing file's st_dev/st_rdev/st_ino, not with drive_id, so the guest cannot find a
// disk by its serial. Drives are attached in Spec.Disks order (/dev/vda, /dev/vdb, ...).
//
// Releases: 1.6.0 to 1.16.x (Version, CheckTested); before 1.8 the guest kernel must take
// virtio_mmio.device= on its command line (CheckKernel), Start refuses otherwise.
//
// Jail: with Backend.Jailer set, each VM's Firecracker runs under the jailer (see Jailer and
// package jail): its own uid/gid, a chroot holding links of the VM's files, every API body
// naming in-jail paths, a PID namespace of its own in which it is pid 1 and still our child,
// cgroup v2 limits, the VM's network namespace. All of it is removed when Firecracker exits,
// or by Jailer.Reclaim after a crash. A NIC whose TAP is in a namespace of someone else's
// (vmm.NIC.NetNS: a Kubernetes pod's) has Firecracker join that one instead; that namespace
// and TAP are never removed, the TAP is only lent to the jail's uid. The tests run against
// doubles of both releases built from fctest.
package firecracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/firecracker-microvm/firecracker-go-sdk/client"
	"github.com/firecracker-microvm/firecracker-go-sdk/client/models"
	"github.com/firecracker-microvm/firecracker-go-sdk/client/operations"
	httptransport "github.com/go-openapi/runtime/client"
	"github.com/go-openapi/strfmt"

	"github.com/firegopher/firegopher/internal/logtail"
	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm"
)

const (
	// DefaultBinary is the Firecracker executable New looks for when given "".
	DefaultBinary = "firecracker"
	// APISocketName is the API socket's name in the VM's directory.
	APISocketName = "firecracker.sock"
	// VsockSocketName is the hybrid vsock's Unix socket in the VM's directory.
	VsockSocketName = "v.sock"
	// VsockGuestCID is the guest's vsock context id (0-2 are reserved).
	VsockGuestCID = 3
	// ControlVsockPort is the guest-side vsock port of the control channel.
	ControlVsockPort = vmconfig.DefaultVsockPort
	// DefaultAPITimeout bounds the wait for the API socket to accept connections.
	DefaultAPITimeout = 5 * time.Second
	// requestTimeout bounds each API call; Firecracker answers pre-boot calls in milliseconds.
	requestTimeout = 10 * time.Second
)

// Backend is the Firecracker VMM.
type Backend struct {
	Binary string // firecracker
	// Version is Binary's release; zero means it is read (`--version`) at the first Start.
	Version Version
	// Jailer runs Firecracker jailed; nil runs it as we are (root, unconfined: tests and
	// hosts without the jailer).
	Jailer *Jailer
	// Steps configure the VM over the API; nil means DefaultSteps().
	Steps Steps
	// APITimeout bounds the wait for the API socket; zero means DefaultAPITimeout.
	APITimeout time.Duration
	Logger     *slog.Logger // nil: slog.Default()
	// Templates enables snapshot templates (vmm.Snapshotter). Firecracker resets the guest's
	// vsock connections when it restores a VM: firegopher-init connects its control channel
	// again (guest.AwaitConfig), as the test doubles' guest does. Only a KVM host can show
	// the real restore; backends turns it on.
	Templates bool

	versionMu sync.Mutex // guards Version's detection: VMs may start in parallel
}

// New finds Firecracker (binary "" means DefaultBinary on $PATH), reads its version and
// refuses a release outside the tested range.
func New(ctx context.Context, binary string) (*Backend, error) {
	if binary == "" {
		binary = DefaultBinary
	}
	path, err := exec.LookPath(binary)
	if err != nil {
		return nil, fmt.Errorf("%s not found: run firegopher firecracker install", binary)
	}
	v, err := ReadVersion(ctx, path, "Firecracker")
	if err != nil {
		return nil, err
	}
	if err := CheckTested("firecracker", v); err != nil {
		return nil, err
	}
	return &Backend{Binary: path, Version: v}, nil
}

// version is Binary's release, read once and checked against the tested range.
func (b *Backend) version(ctx context.Context) (Version, error) {
	b.versionMu.Lock()
	defer b.versionMu.Unlock()
	if b.Version.IsZero() {
		v, err := ReadVersion(ctx, b.Binary, "Firecracker")
		if err != nil {
			return Version{}, err
		}
		b.Version = v
	}
	return b.Version, CheckTested("firecracker", b.Version)
}

// checkKernel applies CheckKernel to spec's guest: the virtio_mmio module it would load
// is the one its initrd lists (ours lists every module it loads).
func checkKernel(v Version, spec vmm.Spec) error {
	if !v.Less(ACPIDevices) {
		return nil
	}
	var mod []byte
	if spec.Initrd != "" {
		var err error
		if mod, err = MMIOModuleFromInitrd(spec.Initrd); err != nil {
			return err
		}
	}
	return CheckKernel(v, spec.Kernel, mod)
}

func (b *Backend) Name() string { return "firecracker" }

func (b *Backend) logger() *slog.Logger {
	if b.Logger != nil {
		return b.Logger
	}
	return slog.Default()
}

// APISocketPath is where Start puts Firecracker's API socket for spec.
func APISocketPath(spec vmm.Spec) string { return filepath.Join(spec.Dir, APISocketName) }

// VsockPath is the hybrid-vsock Unix socket Firecracker binds for spec's guest.
func VsockPath(spec vmm.Spec) string { return filepath.Join(spec.Dir, VsockSocketName) }

// ControlPath is where the host listens for the guest's control connection: the guest
// connects to the host's vsock port ControlVsockPort, which Firecracker forwards to
// "<uds_path>_<port>" (guest-initiated, so the host never polls a guest that is booting).
func ControlPath(spec vmm.Spec) string {
	return fmt.Sprintf("%s_%d", VsockPath(spec), ControlVsockPort)
}

// Cmdline is the kernel command line Firecracker boots spec with: the caller's part, then
// reboot=k (a guest reboot is how Firecracker exits: it has no ACPI power-off), pci=off,
// fast i8042 probing (never i8042.nopnp: it breaks SendCtrlAltDel on ACPI guests), and the
// control transport.
func (b *Backend) Cmdline(spec vmm.Spec) string {
	parts := []string{spec.Cmdline, "reboot=k pci=off i8042.noaux i8042.nomux i8042.dumbkbd"}
	if !spec.NoControl {
		parts = append(parts, vmconfig.VsockControlArg(ControlVsockPort))
	}
	return strings.TrimSpace(strings.Join(parts, " "))
}

// Caps: Firecracker answers virtio-blk GET_ID with an id of its own, not drive_id. Jailed
// with a network namespace per VM, its TAPs live in that namespace (or in the one a NIC
// names).
func (b *Backend) Caps() vmm.Caps {
	return vmm.Caps{NetNS: b.Jailer != nil && b.Jailer.NetNS != nil}
}

// maxUnixPath is sun_path's size less the terminating NUL.
const maxUnixPath = 107

// Start launches Firecracker (under its jailer when b.Jailer is set), configures the VM
// through its API and boots it. ctx bounds the start-up only; the VM outlives it. On any
// failure the process is killed and reaped and what was prepared for it is removed.
func (b *Backend) Start(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
	spec.Cmdline = b.Cmdline(spec)
	// Everything the API will be sent is built and validated first, so a bad spec never
	// starts a process.
	if _, err := NewConfig(spec); err != nil {
		return nil, err
	}
	v, err := b.version(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkKernel(v, spec); err != nil {
		return nil, err
	}
	log := b.logger().With("vm", spec.ID)
	l := b.unjailed(spec)
	if b.Jailer != nil {
		if l, err = b.jailed(ctx, spec, v, log, true); err != nil {
			return nil, err
		}
	}
	cfg, err := NewConfig(l.view)
	if err != nil {
		l.cleanup()
		return nil, err
	}
	inst, err := b.launch(ctx, spec, l, log)
	if err != nil {
		return nil, err
	}
	api, tr := newAPIClient(l.apiSock)
	defer tr.CloseIdleConnections()
	steps := b.Steps
	if steps == nil {
		steps = DefaultSteps()
	}
	for _, s := range steps {
		if err == nil {
			err = ctx.Err()
		}
		if err == nil {
			err = s.Do(ctx, api, cfg)
		}
		if err != nil {
			inst.Kill()
			inst.Ended()
			log.Debug("firecracker killed after failed start", "error", err)
			return nil, fmt.Errorf("firecracker: %s: %w", s.Name, err)
		}
		log.Debug("firecracker step done", "step", s.Name)
	}
	return inst, nil
}

// launch starts the process of l and waits for its API. The instance's end (exit, then
// l.cleanup) is set up before anything can fail, so every failure is undone the same way.
func (b *Backend) launch(ctx context.Context, spec vmm.Spec, l *launch, log *slog.Logger) (*instance, error) {
	fail := func(err error) (*instance, error) {
		l.cleanup()
		return nil, err
	}
	for _, p := range []string{l.apiSock, l.vsock, l.control} {
		if len(p) > maxUnixPath {
			return fail(fmt.Errorf("firecracker: socket path %q: longer than %d bytes", p, maxUnixPath))
		}
		// Firecracker refuses to bind over a stale socket from an earlier run.
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fail(fmt.Errorf("firecracker: %w", err))
		}
	}
	inst := &instance{consolePath: spec.ConsoleLog, logPath: LogPath(spec), sock: l.apiSock}
	// removeFiles removes the sockets of this instance (once Firecracker has gone).
	removeFiles := func() { os.Remove(l.apiSock); os.Remove(l.vsock) }
	var control net.Listener
	if !spec.NoControl {
		ln, err := net.Listen("unix", l.control)
		if err != nil {
			return fail(fmt.Errorf("firecracker: control socket: %w", err))
		}
		control = ln
		if l.own != nil {
			if err := l.own(l.control); err != nil {
				ln.Close()
				return fail(err)
			}
		}
	}
	drains, err := startDrains(spec, l)
	if err == nil {
		var console *vmm.CappedLog
		if console, err = vmm.CreateCappedLog(spec.ConsoleLog, vmm.ConsoleCap); err == nil {
			// The serial console is Firecracker's stdout; its own log lines go there too
			// until the logger is configured (PUT /logger, the first step).
			var proc *vmm.Process
			proc, err = vmm.StartProcessWith(spec, l.path, l.args, nil, vmm.ProcessOptions{Console: console, NewPIDNS: l.newPIDNS, Dir: l.dir})
			if err == nil {
				inst.Running = vmm.Run(proc, control, func() { console.Close(); drains.stop(); removeFiles(); l.cleanup() })
			} else {
				console.Close()
			}
		} else {
			err = fmt.Errorf("firecracker: console log: %w", err)
		}
		if err != nil {
			drains.stop()
		}
	}
	if err != nil {
		if control != nil {
			control.Close()
		}
		removeFiles()
		return fail(err)
	}
	log = log.With("pid", inst.Pid())
	log.Debug("firecracker started", "path", l.path, "args", l.args)
	timeout := b.APITimeout
	if timeout <= 0 {
		timeout = DefaultAPITimeout
	}
	if err := waitForAPI(ctx, l.apiSock, timeout, inst.Proc.Done()); err != nil {
		exited := inst.Proc.Exited()
		inst.Kill()
		exitErr := inst.Ended()
		if exited {
			return nil, fmt.Errorf("firecracker: exited before its API came up: %v%s", exitErr, consoleTail(spec.ConsoleLog))
		}
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	return inst, nil
}

// waitForAPI polls until the socket accepts a connection, the process exits, ctx ends or
// timeout passes. Polling is the only signal: Firecracker does not report readiness.
func waitForAPI(ctx context.Context, sock string, timeout time.Duration, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var d net.Dialer
	for {
		if c, err := d.DialContext(ctx, "unix", sock); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("process exited")
		case <-ctx.Done():
			return fmt.Errorf("API socket %s not ready: %w", sock, ctx.Err())
		case <-tick.C:
		}
	}
}

// newAPIClient is the SDK client speaking HTTP over the Unix socket.
func newAPIClient(sock string) (operations.ClientIface, *http.Transport) {
	unixTr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}
	tr := httptransport.New(client.DefaultHost, client.DefaultBasePath, client.DefaultSchemes)
	tr.Transport = unixTr
	return client.New(tr, strfmt.Default).Operations, unixTr
}

// instance is a running Firecracker (jailed or not) and its API socket.
type instance struct {
	*vmm.Running
	consolePath, logPath string
	sock                 string
}

// Wait reports the process's exit: Firecracker exits 0 when the guest reboots (reboot=k),
// which is how a guest ends its VM on Firecracker.
func (i *instance) Wait() error {
	if err := i.Ended(); err != nil {
		return fmt.Errorf("firecracker: %v%s", err, consoleTail(i.consolePath, i.logPath))
	}
	return nil
}

// Shutdown sends Ctrl-Alt-Del through the API (x86, after boot): our init stops its
// workload and reboots, systemd reboots; either way Firecracker exits.
func (i *instance) Shutdown(ctx context.Context) error {
	if i.Proc.Exited() {
		return nil
	}
	api, tr := newAPIClient(i.sock)
	defer tr.CloseIdleConnections()
	action := models.InstanceActionInfoActionTypeSendCtrlAltDel
	_, err := api.CreateSyncAction(&operations.CreateSyncActionParams{
		Context: ctx, Info: &models.InstanceActionInfo{ActionType: &action},
	})
	if err != nil && !i.Proc.Exited() {
		i.Proc.Kill()
		<-i.Proc.Done()
		return fmt.Errorf("firecracker: SendCtrlAltDel: %w; killed", apiError(err))
	}
	return i.Proc.WaitOrKill(ctx)
}

// consoleTail is the last lines of the console log and of Firecracker's own log, for
// errors: Firecracker explains failures there (on stdout until its logger is configured).
func consoleTail(paths ...string) string {
	var lines []string
	for _, p := range paths {
		lines = append(lines, logtail.File(p, 3)...)
	}
	if len(lines) == 0 {
		return ""
	}
	return ": " + strings.Join(lines, " | ")
}

// apiError turns the SDK's typed error responses into Firecracker's own fault_message.
func apiError(err error) error {
	var p interface{ GetPayload() *models.Error }
	if errors.As(err, &p) && p.GetPayload() != nil && p.GetPayload().FaultMessage != "" {
		return fmt.Errorf("API error: %s", p.GetPayload().FaultMessage)
	}
	return err
}
