// Package firecracker runs VMs under Firecracker. The process is started with only an API
// socket; the VM is then described over Firecracker's REST API (through the SDK's generated
// client and models) as a sequence of named steps, ending in InstanceStart.
//
// Control channel: Firecracker has no virtio-serial, so the guest's control port is vsock
// port ControlVsockPort (1024) on a device with guest CID VsockGuestCID (3). The host side is
// Firecracker's hybrid vsock: Firecracker listens on VsockPath(spec) (= spec.ControlSocket +
// ".vsock"); the host connects there and sends "CONNECT 1024\n" (see DialVsock). Note the
// direction is the reverse of QEMU's, where QEMU dials the caller's ControlSocket.
//
// Disks: drive_id is Disk.Serial, but Firecracker answers virtio-blk GET_ID with an id built
// from the backing file's st_dev/st_rdev/st_ino, not with drive_id, so the guest cannot find a
// disk by its serial. Drives are attached in Spec.Disks order (/dev/vda, /dev/vdb, ...).
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
	"syscall"
	"time"

	"github.com/firecracker-microvm/firecracker-go-sdk/client"
	"github.com/firecracker-microvm/firecracker-go-sdk/client/models"
	"github.com/firecracker-microvm/firecracker-go-sdk/client/operations"
	httptransport "github.com/go-openapi/runtime/client"
	"github.com/go-openapi/strfmt"

	"github.com/firegopher/firegopher/internal/vmm"
)

const (
	// DefaultBinary is the Firecracker executable New looks for when given "".
	DefaultBinary = "firecracker"
	// APISocketName is the API socket's name, created beside spec.ConsoleLog.
	APISocketName = "firecracker.sock"
	// VsockGuestCID is the guest's vsock context id (0-2 are reserved).
	VsockGuestCID = 3
	// ControlVsockPort is the guest-side vsock port of the control channel.
	ControlVsockPort = 1024
	// DefaultAPITimeout bounds the wait for the API socket to accept connections.
	DefaultAPITimeout = 5 * time.Second
	// requestTimeout bounds each API call; Firecracker answers pre-boot calls in milliseconds.
	requestTimeout = 10 * time.Second
)

// Backend is the Firecracker VMM.
type Backend struct {
	Binary string        // firecracker
	Jailer *JailerConfig // nil: no jailer
	// Steps configure the VM over the API; nil means DefaultSteps().
	Steps Steps
	// APITimeout bounds the wait for the API socket; zero means DefaultAPITimeout.
	APITimeout time.Duration
	Logger     *slog.Logger // nil: slog.Default()
}

// New finds Firecracker; binary "" means DefaultBinary on $PATH.
func New(binary string) (*Backend, error) {
	if binary == "" {
		binary = DefaultBinary
	}
	path, err := exec.LookPath(binary)
	if err != nil {
		return nil, fmt.Errorf("%s not found: run firegopher firecracker install", binary)
	}
	return &Backend{Binary: path}, nil
}

func (b *Backend) Name() string { return "firecracker" }

func (b *Backend) logger() *slog.Logger {
	if b.Logger != nil {
		return b.Logger
	}
	return slog.Default()
}

// APISocketPath is where Start puts Firecracker's API socket for spec.
func APISocketPath(spec vmm.Spec) string {
	return filepath.Join(filepath.Dir(spec.ConsoleLog), APISocketName)
}

// VsockPath is the hybrid-vsock Unix socket Firecracker listens on for spec.
func VsockPath(spec vmm.Spec) string { return spec.ControlSocket + ".vsock" }

// maxUnixPath is sun_path's size less the terminating NUL.
const maxUnixPath = 107

// Start launches Firecracker, configures the VM through its API and boots it. ctx bounds the
// start-up only; the VM outlives it. On any failure the process is killed and reaped.
func (b *Backend) Start(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
	if b.Jailer != nil {
		// JailerArgs/ChrootFiles describe the jail; running it needs root and path
		// rewriting that Start does not do yet.
		return nil, errors.New("firecracker: starting under the jailer is not supported yet")
	}
	// Everything the API will be sent is built and validated first, so a bad spec never
	// starts a process.
	cfg, err := NewConfig(spec)
	if err != nil {
		return nil, err
	}
	sock := APISocketPath(spec)
	for _, p := range []string{sock, VsockPath(spec)} {
		if len(p) > maxUnixPath {
			return nil, fmt.Errorf("firecracker: socket path %q: longer than %d bytes", p, maxUnixPath)
		}
		// Firecracker refuses to bind over a stale socket from an earlier run.
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("firecracker: %w", err)
		}
	}
	console, err := os.OpenFile(spec.ConsoleLog, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("firecracker: console log: %w", err)
	}
	cmd := exec.Command(b.Binary, "--api-sock", sock)
	// The serial console is Firecracker's stdout; its own log lines go to stderr. Both are
	// the VM's story, so they share the console log.
	cmd.Stdout = console
	cmd.Stderr = console
	// Own process group: a terminal Ctrl-C reaches us and we stop the VM in order.
	// Pdeathsig: if we die, the VM dies with us instead of running unowned.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		console.Close()
		return nil, fmt.Errorf("start %s: %w", b.Binary, err)
	}
	inst := &instance{cmd: cmd, done: make(chan struct{}), consolePath: spec.ConsoleLog, sock: sock}
	go func() {
		inst.err = cmd.Wait()
		console.Close()
		os.Remove(sock)
		close(inst.done)
	}()
	log := b.logger().With("vm", spec.ID, "pid", cmd.Process.Pid)
	log.Debug("firecracker started", "binary", b.Binary, "api_sock", sock)

	fail := func(err error) (vmm.Instance, error) {
		inst.Kill()
		<-inst.done
		log.Debug("firecracker killed after failed start", "err", err)
		return nil, err
	}
	timeout := b.APITimeout
	if timeout <= 0 {
		timeout = DefaultAPITimeout
	}
	if err := waitForAPI(ctx, sock, timeout, inst.done); err != nil {
		if inst.exited() {
			return fail(fmt.Errorf("firecracker: exited before its API came up: %v%s", inst.err, consoleTail(spec.ConsoleLog)))
		}
		return fail(fmt.Errorf("firecracker: %w", err))
	}
	api, tr := newAPIClient(sock)
	defer tr.CloseIdleConnections()
	steps := b.Steps
	if steps == nil {
		steps = DefaultSteps()
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return fail(fmt.Errorf("firecracker: %s: %w", s.Name, err))
		}
		if err := s.Do(ctx, api, cfg); err != nil {
			return fail(fmt.Errorf("firecracker: %s: %w", s.Name, err))
		}
		log.Debug("firecracker step done", "step", s.Name)
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

type instance struct {
	cmd         *exec.Cmd
	done        chan struct{}
	err         error // set before done closes
	consolePath string
	sock        string
}

func (i *instance) Pid() int { return i.cmd.Process.Pid }

func (i *instance) exited() bool {
	select {
	case <-i.done:
		return true
	default:
		return false
	}
}

// Wait reports the process's exit: Firecracker exits 0 when the guest shuts down (reboot
// with reboot=k is how a guest "powers off" on Firecracker).
func (i *instance) Wait() error {
	<-i.done
	if i.err != nil {
		return fmt.Errorf("firecracker: %v%s", i.err, consoleTail(i.consolePath))
	}
	return nil
}

func (i *instance) Kill() error {
	if i.exited() {
		return nil
	}
	if err := i.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// consoleTail is the console log's last lines, for errors: Firecracker explains failures there.
func consoleTail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s := strings.TrimSpace(string(data))
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
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
