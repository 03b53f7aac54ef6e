// Package taskservice is containerd's task API v2 for firegopher: each container is one VM
// that this shim process supervises itself (the supervisor package as a library, no
// `firegopher` child), a pod's sandbox (pause) container is held without a VM, and the
// container's stdio FIFOs are relayed to the guest's channel. The shim bootstrap (start,
// delete, serving ttrpc) is containerd v1.7's runtime/v2/shim, wired in cmd/; everything
// that knows about tasks is here.
package taskservice

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/events"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/protobuf"
	ptypes "github.com/containerd/containerd/protobuf/types"
	"github.com/containerd/containerd/runtime"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/assets/resolve"
	"github.com/firegopher/firegopher/internal/bundle"
	"github.com/firegopher/firegopher/internal/podnet"
	"github.com/firegopher/firegopher/internal/snapdisk"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/supervisor"
)

// RuntimeName is the runtime containerd knows the shim by.
const RuntimeName = "io.containerd.firegopher.v1"

// Files the shim leaves in a task's bundle directory, for the `delete` action containerd
// runs when the shim is gone.
const (
	vmIDFile   = "firegopher-vm"
	diskIDFile = "firegopher-disk" // a private (uncached) root disk to remove
)

// killGrace is how long a SIGKILLed workload has to be reported dead before its VM is
// killed whole (a wedged guest cannot refuse).
const killGrace = 10 * time.Second

// Publisher sends events to containerd and is closed at shutdown.
type Publisher interface {
	Publish(ctx context.Context, topic string, event events.Event) error
	Close() error
}

// Config is what the service needs from its host.
type Config struct {
	Host *supervisor.Host
	// Init is the firegopher-init binary.
	Init string
	// VMM is the backend containers' VMs run on, with or without their pod's network.
	VMM spec.VMM
	// Rootfs builds and caches containers' root disks.
	Rootfs *snapdisk.Cache
	Log    *slog.Logger
}

// Service is the task service of one shim process: the containers of one pod (or one
// lone container).
type Service struct {
	cfg       Config
	publisher Publisher
	shutdown  func()
	ns        string

	mu    sync.Mutex
	tasks map[string]*container
	// nicOwner is the container whose VM has the pod's network (one pod IP: one VM).
	nicOwner string
}

// New is the service of a shim process for namespace ns.
func New(cfg Config, ns string, publisher Publisher, shutdown func()) *Service {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, publisher: publisher, shutdown: shutdown, ns: ns, tasks: map[string]*container{}}
}

var _ taskAPI.TaskService = (*Service)(nil)

var empty = &ptypes.Empty{}

const taskRunning = task.Status_RUNNING

// process is what a container's main process and its execs share: status and exit.
type process struct {
	id       string // "" for the container's main process
	stdin    string
	stdout   string
	stderr   string
	terminal bool
	io       *processIO

	status   task.Status
	pid      uint32
	exitCode uint32
	exitedAt time.Time
	done     chan struct{} // closed once exited and the exit published
}

func (p *process) exited(code uint32) {
	p.status, p.exitCode, p.exitedAt = task.Status_STOPPED, code, time.Now()
}

// container is one task: a VM, or a held sandbox.
type container struct {
	process
	id      string // the container's id (process.id is its main process's: "")
	bundle  string
	sandbox bool
	vmID    string
	vmDir   string
	created *supervisor.Created
	disk    *snapdisk.Disk
	cancel  context.CancelFunc // kills the VM
	execs   map[string]*execProcess
}

// booting says whether Start is bringing c's VM up (the caller holds the service's lock).
func (c *container) booting() bool { return c.status == task.Status_CREATED && c.cancel != nil }

type execProcess struct {
	process
	spec   *specs.Process
	client *supervisor.Client // its connection to the VM's supervisor, once started
}

func (s *Service) publish(topic string, ev events.Event) {
	ctx := namespaces.WithNamespace(context.Background(), s.ns)
	if err := s.publisher.Publish(ctx, topic, ev); err != nil {
		s.cfg.Log.Warn("publish event", "topic", topic, "error", err)
	}
}

func (s *Service) get(id string) (*container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.tasks[id]
	if c == nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "container %s not created", id)
	}
	return c, nil
}

// process is the process execID names in container id ("" is the main one).
func (s *Service) process(id, execID string) (*process, error) {
	c, err := s.get(id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, _, err := c.proc(execID)
	return p, err
}

// proc is the process execID names in c ("" is the main one).
func (c *container) proc(execID string) (*process, *execProcess, error) {
	if execID == "" {
		return &c.process, nil, nil
	}
	e := c.execs[execID]
	if e == nil {
		return nil, nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "exec %s of %s not found", execID, c.id)
	}
	return &e.process, e, nil
}

// Create maps the bundle onto a VM, builds its root disk and records it; the VM boots at
// Start. A sandbox container gets no VM.
func (s *Service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	s.mu.Lock()
	if s.tasks[r.ID] != nil {
		s.mu.Unlock()
		return nil, errdefs.ToGRPCf(errdefs.ErrAlreadyExists, "container %s", r.ID)
	}
	s.mu.Unlock()
	oci, err := bundle.Read(r.Bundle)
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "bundle: %v", err)
	}
	c := &container{
		process: process{id: "", stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, terminal: r.Terminal,
			status: task.Status_CREATED, pid: uint32(os.Getpid()), done: make(chan struct{})},
		id: r.ID, bundle: r.Bundle, sandbox: bundle.IsSandbox(oci), execs: map[string]*execProcess{},
	}
	log := s.cfg.Log.With("container", r.ID)
	if !c.sandbox {
		if err := s.createVM(ctx, log, c, oci, r); err != nil {
			s.detachPodNetwork(c)
			return nil, err
		}
		defer func() {
			if retErr != nil {
				c.created.Discard()
				c.disk.Release()
				s.detachPodNetwork(c)
			}
		}()
	}
	if c.io, err = openIO(r.Stdin, r.Stdout, r.Stderr, r.Terminal); err != nil {
		return nil, fmt.Errorf("stdio: %w", err)
	}
	s.mu.Lock()
	s.tasks[r.ID] = c
	s.mu.Unlock()
	s.publish(runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{
		ContainerID: r.ID, Bundle: r.Bundle, Rootfs: r.Rootfs, Pid: c.pid,
		IO: &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
	})
	log.Info("created", "vm", c.vmID, "sandbox", c.sandbox)
	return &taskAPI.CreateTaskResponse{Pid: c.pid}, nil
}

func (s *Service) createVM(ctx context.Context, log *slog.Logger, c *container, oci *specs.Spec, r *taskAPI.CreateTaskRequest) error {
	res, err := bundle.Machine(spec.NewID(), oci)
	if err != nil {
		return errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "%s: %v", bundle.ConfigFile, err)
	}
	for _, why := range res.Ignored {
		log.Warn("not carried into the VM: " + why)
	}
	m := res.Machine
	m.Run = runName(s.ns, r.ID)
	m.Process.Stdin = r.Stdin != ""
	m.VMM = s.cfg.VMM
	var mounts []snapdisk.Mount
	for _, mt := range r.Rootfs {
		mounts = append(mounts, snapdisk.Mount{Type: mt.Type, Source: mt.Source, Options: mt.Options})
	}
	rootPath := ""
	if len(mounts) == 0 && oci.Root != nil {
		rootPath = oci.Root.Path
		if !filepath.IsAbs(rootPath) {
			rootPath = filepath.Join(r.Bundle, rootPath)
		}
	}
	if err := s.attachPodNetwork(log, c, oci, m); err != nil {
		return err
	}
	disk, err := s.cfg.Rootfs.Build(ctx, mounts, rootPath)
	if err != nil {
		s.detachPodNetwork(c)
		return err
	}
	store, err := s.cfg.Host.Store()
	if err != nil {
		disk.Release()
		return err
	}
	resolver := &resolve.Resolver{Store: store, Log: log}
	kernel, _, err := resolver.Kernel(ctx, m.Kernel)
	if err != nil {
		disk.Release()
		return err
	}
	m.Assets = &spec.Assets{Kernel: string(kernel), Rootfs: disk.Path, Init: s.cfg.Init}
	created, err := s.cfg.Host.Create(m, false)
	if err != nil {
		disk.Release()
		return err
	}
	c.created, c.disk, c.vmID, c.vmDir = created, disk, m.ID, created.Record.Dir
	// For the delete action after a crash: which VM, and which disk is the container's own.
	werr := os.WriteFile(filepath.Join(r.Bundle, vmIDFile), []byte(m.ID), 0o600)
	if werr == nil && !disk.Cached {
		werr = os.WriteFile(filepath.Join(r.Bundle, diskIDFile), []byte(disk.Path), 0o600)
	}
	if werr != nil {
		created.Discard()
		disk.Release()
		return werr
	}
	return nil
}

// Start boots the container's VM (or starts an exec) and returns once it runs.
func (s *Service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	if r.ExecID != "" {
		return s.startExec(c, r.ExecID)
	}
	s.mu.Lock()
	if c.status != task.Status_CREATED {
		s.mu.Unlock()
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "container %s is %s", c.id, c.status)
	}
	if c.sandbox {
		c.status = task.Status_RUNNING
		s.mu.Unlock()
		s.publish(runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: r.ID, Pid: c.pid})
		return &taskAPI.StartResponse{Pid: c.pid}, nil
	}
	runCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	s.mu.Unlock()

	stdout, stderr := c.io.writers()
	stdio := supervisor.Stdio{Stdout: stdout, Stderr: stderr, Stdin: c.io.reader(), Resize: c.io.resize}
	started := make(chan int, 1)
	ended := make(chan error, 1)
	go func() {
		exit, err := c.created.RunStarted(runCtx, stdio, func(pid int) { started <- pid })
		s.mainExited(r.ID, c, exit, err)
		ended <- err
	}()
	select {
	case pid := <-started:
		s.mu.Lock()
		if c.status == task.Status_CREATED {
			c.status, c.pid = task.Status_RUNNING, uint32(pid)
		}
		s.mu.Unlock()
		s.publish(runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: r.ID, Pid: c.pid})
		return &taskAPI.StartResponse{Pid: c.pid}, nil
	case err := <-ended:
		if err == nil {
			err = errors.New("the VM ended before it started")
		}
		return nil, fmt.Errorf("start VM %s: %w", c.vmID, err)
	}
}

// exitCode is the status containerd reports for a workload's end: the guest's code
// (128+signal for a signalled workload), 137 for a VM killed from here, 255 when the VM
// ended without saying.
func exitCode(exit agent.Exit, err error, killed bool) uint32 {
	switch {
	case err != nil && killed:
		return 128 + uint32(syscall.SIGKILL)
	case err != nil:
		return 255
	}
	return uint32(exit.Code)
}

// mainExited records the main process's end, closes its stdio, and publishes the exit.
func (s *Service) mainExited(id string, c *container, exit agent.Exit, err error) {
	log := s.cfg.Log.With("container", id, "vm", c.vmID)
	s.mu.Lock()
	killed := c.status == task.Status_STOPPED || errors.Is(err, context.Canceled)
	code := exitCode(exit, err, killed)
	c.exited(code)
	s.mu.Unlock()
	switch {
	case err != nil:
		log.Warn("VM ended without an exit status", "error", err)
	case exit.Error != "":
		log.Warn("guest init", "error", exit.Error)
	}
	c.io.close()
	s.publish(runtime.TaskExitEventTopic, &eventstypes.TaskExit{
		ContainerID: id, ID: id, Pid: c.pid, ExitStatus: code, ExitedAt: protobuf.ToTimestamp(c.exitedAt),
	})
	close(c.done)
}

// Delete removes a stopped (or never started) container or exec; the container's VM
// record and files went when it ended.
func (s *Service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	p, _, err := c.proc(r.ExecID)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if p.status == task.Status_RUNNING || (r.ExecID == "" && c.booting()) {
		s.mu.Unlock()
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "%s is running: kill it first", describe(r.ID, r.ExecID))
	}
	neverStarted := p.status == task.Status_CREATED
	if r.ExecID != "" {
		delete(c.execs, r.ExecID)
		s.mu.Unlock()
		if neverStarted {
			p.io.close()
		}
		return &taskAPI.DeleteResponse{Pid: p.pid, ExitStatus: p.exitCode, ExitedAt: protobuf.ToTimestamp(p.exitedAt)}, nil
	}
	delete(s.tasks, r.ID)
	s.mu.Unlock()
	if neverStarted {
		if c.created != nil {
			c.created.Discard()
		}
		c.io.close()
		c.exitedAt = time.Now()
	}
	if c.disk != nil {
		c.disk.Release()
	}
	s.detachPodNetwork(c)
	os.Remove(filepath.Join(c.bundle, vmIDFile))
	os.Remove(filepath.Join(c.bundle, diskIDFile))
	s.publish(runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{
		ContainerID: r.ID, ID: r.ID, Pid: c.pid, ExitStatus: c.exitCode, ExitedAt: protobuf.ToTimestamp(c.exitedAt),
	})
	s.cfg.Log.Info("deleted", "container", r.ID, "vm", c.vmID)
	return &taskAPI.DeleteResponse{Pid: c.pid, ExitStatus: c.exitCode, ExitedAt: protobuf.ToTimestamp(c.exitedAt)}, nil
}

func describe(id, execID string) string {
	if execID != "" {
		return fmt.Sprintf("exec %s of %s", execID, id)
	}
	return "container " + id
}

// Kill signals the workload through the guest's init; a SIGKILL that does not end it in
// killGrace kills the VM. A sandbox ends at any signal, as pause does.
func (s *Service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	sig := syscall.Signal(r.Signal)
	s.mu.Lock()
	p, e, err := c.proc(r.ExecID)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	status, booting := p.status, e == nil && c.booting()
	s.mu.Unlock()
	if status == task.Status_STOPPED {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "%s: process already finished", describe(r.ID, r.ExecID))
	}
	if booting {
		// No guest to pass a signal to yet: the VM goes whole, and Start reports it.
		c.cancel()
		return empty, nil
	}
	if e != nil {
		s.mu.Lock()
		client := e.client
		s.mu.Unlock()
		if client == nil { // added, not started
			return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "%s is not started", describe(r.ID, r.ExecID))
		}
		if err := client.Signal(int(sig)); err != nil {
			return nil, fmt.Errorf("signal %d: %w", sig, err)
		}
		return empty, nil
	}
	if c.sandbox || status == task.Status_CREATED {
		s.mu.Lock()
		if c.status == task.Status_STOPPED {
			s.mu.Unlock()
			return empty, nil
		}
		c.exited(128 + uint32(sig))
		s.mu.Unlock()
		if c.created != nil {
			c.created.Discard()
			c.created = nil
		}
		c.io.close()
		s.publish(runtime.TaskExitEventTopic, &eventstypes.TaskExit{
			ContainerID: r.ID, ID: r.ID, Pid: c.pid, ExitStatus: c.exitCode, ExitedAt: protobuf.ToTimestamp(c.exitedAt),
		})
		close(c.done)
		return empty, nil
	}
	client, err := supervisor.Dial(c.vmDir)
	if err == nil {
		err = client.Signal(int(sig))
		client.Close()
	}
	if sig == syscall.SIGKILL {
		go func() {
			select {
			case <-c.done:
			case <-time.After(killGrace):
				s.cfg.Log.Warn("workload not dead after SIGKILL; killing its VM", "container", r.ID)
				c.cancel()
			}
		}()
		if err != nil {
			c.cancel()
			err = nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("signal %d: %w", sig, err)
	}
	return empty, nil
}

// Wait blocks until the process has exited.
func (s *Service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &taskAPI.WaitResponse{ExitStatus: p.exitCode, ExitedAt: protobuf.ToTimestamp(p.exitedAt)}, nil
}

// State reports a process's status.
func (s *Service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, _, err := c.proc(r.ExecID)
	if err != nil {
		return nil, err
	}
	return &taskAPI.StateResponse{
		ID: r.ID, ExecID: r.ExecID, Bundle: c.bundle, Pid: p.pid, Status: p.status,
		Stdin: p.stdin, Stdout: p.stdout, Stderr: p.stderr, Terminal: p.terminal,
		ExitStatus: p.exitCode, ExitedAt: protobuf.ToTimestamp(p.exitedAt),
	}, nil
}

// Pids lists the container's one process as the host sees it: the VMM.
func (s *Service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &taskAPI.PidsResponse{Processes: []*task.ProcessInfo{{Pid: c.pid}}}, nil
}

// ResizePty passes a terminal size to the process.
func (s *Service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*ptypes.Empty, error) {
	p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	p.io.setSize(agent.Resize{Rows: uint16(r.Height), Cols: uint16(r.Width)})
	return empty, nil
}

// CloseIO closes the process's stdin: the guest process reads EOF.
func (s *Service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*ptypes.Empty, error) {
	p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.Stdin {
		p.io.closeStdin()
	}
	return empty, nil
}

// Connect reports the shim's and the task's pids.
func (s *Service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	var pid uint32
	if c, err := s.get(r.ID); err == nil {
		s.mu.Lock()
		pid = c.pid
		s.mu.Unlock()
	}
	return &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: pid}, nil
}

// Shutdown ends the shim once it holds no container: it closes the event publisher (the
// bootstrap waits for that) and stops serving.
func (s *Service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	n := len(s.tasks)
	s.mu.Unlock()
	if n > 0 {
		return empty, nil
	}
	if err := s.publisher.Close(); err != nil {
		s.cfg.Log.Warn("close event publisher", "error", err)
	}
	s.shutdown()
	return empty, nil
}

// Pause, Resume, Checkpoint and Update are not offered by firegopher VMs (yet).
func (s *Service) Pause(context.Context, *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "pause")
}
func (s *Service) Resume(context.Context, *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "resume")
}
func (s *Service) Checkpoint(context.Context, *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "checkpoint")
}
func (s *Service) Update(context.Context, *taskAPI.UpdateTaskRequest) (*ptypes.Empty, error) {
	return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "update: a VM's size is fixed at boot")
}

// decodeProcess reads an exec's process spec (JSON, as containerd marshals it).
func decodeProcess(b []byte) (*specs.Process, error) {
	var p specs.Process
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "exec spec: %v", err)
	}
	if len(p.Args) == 0 {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "exec spec: process.args: empty")
	}
	return &p, nil
}

// attachPodNetwork gives m the pod's network when the container is in a pod's network
// namespace — the one this shim runs in — and no other container of the pod has it yet.
func (s *Service) attachPodNetwork(log *slog.Logger, c *container, oci *specs.Spec, m *spec.Machine) error {
	path := bundle.NetNSPath(oci)
	if path == "" {
		return nil
	}
	in, err := podnet.InNetNS(path)
	if err != nil || !in {
		log.Warn("the container's network namespace is not this shim's: the VM gets no network", "netns", path, "error", err)
		return nil
	}
	s.mu.Lock()
	owner := s.nicOwner
	if owner == "" {
		s.nicOwner = c.id
	}
	s.mu.Unlock()
	if owner != "" {
		log.Warn("the pod's network is the VM of container " + owner + "'s (one VM per container, one pod IP): this VM gets none")
		return nil
	}
	nic, err := podnet.Attach(log, podnet.PodInterface, podnet.TAP, podnet.Nameservers(bundle.ResolvConf(oci)))
	if err != nil {
		s.mu.Lock()
		s.nicOwner = ""
		s.mu.Unlock()
		return fmt.Errorf("pod network: %w", err)
	}
	// The VMM opens the TAP in this namespace: QEMU as our child, jailed Firecracker by
	// joining it (by the path the OCI spec gives, which outlives any process).
	nic.NetNS = path
	m.AttachedNIC = nic
	return nil
}

// detachPodNetwork undoes attachPodNetwork for c's VM, if it had the pod's network.
func (s *Service) detachPodNetwork(c *container) {
	s.mu.Lock()
	owns := s.nicOwner == c.id && c.id != ""
	if owns {
		s.nicOwner = ""
	}
	s.mu.Unlock()
	if owns {
		if err := podnet.Detach(s.cfg.Log, podnet.PodInterface, podnet.TAP); err != nil {
			s.cfg.Log.Warn("pod network", "container", c.id, "error", err)
		}
	}
}

// runName is the run a container's VM is recorded in: its own, so that its name (the
// container's hostname, which every container of a pod — and every host-network pod —
// shares) never clashes with another VM's.
func runName(ns, id string) string {
	h := sha256.Sum256([]byte(ns + "/" + id))
	return "containerd-" + hex.EncodeToString(h[:6])
}
