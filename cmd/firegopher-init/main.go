// firegopher-init is the guest's PID 1. main reads top to bottom as the boot it performs:
// early mounts, modules, control channel, config, root disk, switch root, system mounts,
// per-VM files, network, then the workload (app mode) or the image's own init (system
// mode). PID 1 must never exit or panic (the kernel would panic with it): every failure is
// reported to the host and ends in a clean reboot, which ends the VMM.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/guest"
	"github.com/firegopher/firegopher/internal/vmconfig"
)

const (
	newRoot = "/newroot"
	// deviceTimeout bounds the wait for a disk or port to appear after its driver loads.
	deviceTimeout = 30 * time.Second
	// ackTimeout bounds the wait for the host to confirm it has the exit status.
	ackTimeout = 10 * time.Second
	// dhcpTimeout bounds the wait for a lease from the host.
	dhcpTimeout = 30 * time.Second
	// grace is how long leftovers of the workload get between SIGTERM and SIGKILL.
	grace = 5 * time.Second
)

var log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "firegopher-init")

func main() {
	b := &boot{signals: guest.CatchInitSignals()}
	defer b.recoverPanic()
	if h, ok, err := guest.TakeHandoff(); ok {
		stage2(b, h, err)
		return
	}
	// The exec that starts stage 2 must come from the thread that chrooted.
	runtime.LockOSThread()
	initStart := guest.BootClock()
	if err := guest.DisableCtrlAltDel(); err != nil {
		log.Warn("Ctrl-Alt-Del will reset the VM without a report", "error", err)
	}

	b.must("mount early filesystems", guest.MountAll("/", guest.EarlyMounts))
	_ = guest.UseConsole()
	_, err := guest.LoadModules("/", vmconfig.ModulesOrderPath)
	b.must("load kernel modules", err)
	b.must("open control channel", b.openControl())
	cfg, err := readConfig()
	b.must("read config", err)

	ctx, cancel := context.WithTimeout(context.Background(), deviceTimeout)
	rootDev, err := guest.SystemDevices().Disk(ctx, cfg.Root)
	cancel()
	b.must("find root disk", err)
	self, err := unix.Open("/init", unix.O_PATH, 0)
	b.must("open /init", err)
	b.must("create "+newRoot, os.MkdirAll(newRoot, 0o755))
	b.must("mount root disk "+rootDev, unix.Mount(rootDev, newRoot, cfg.Root.FSType, 0, ""))
	b.must("switch root", guest.SwitchRoot(newRoot))
	// Stage 2 runs in the real root: see guest.Handoff.
	b.must("start stage 2", guest.Handoff{Control: b.port, Config: cfg, Start: initStart, Stop: b.signals.StopRequested()}.Exec(self))
}

func stage2(b *boot, h guest.Handoff, err error) {
	if h.Control != nil {
		b.adoptControl(h.Control)
	}
	if h.Stop {
		b.stop() // asked before the workload existed: it gets the TERM once it starts
	}
	b.must("take over from stage 1", err)
	cfg := h.Config
	b.cfg = cfg
	b.must("mount system filesystems", guest.MountAll("/", guest.SystemMounts))
	b.must("link /dev entries", guest.LinkDev("/dev"))
	b.must("write per-VM files", guest.ApplyFiles("/", cfg.Files))

	b.must("bring loopback up", guest.LoopbackUp())
	if cfg.Network != nil && cfg.Network.DHCP && cfg.Mode == vmconfig.ModeApp {
		ctx, cancel := context.WithTimeout(context.Background(), dhcpTimeout)
		leased, err := guest.LeaseByDHCP(ctx, cfg.Network)
		cancel()
		b.must("get an address by DHCP", err)
		cfg.Network = leased
	}
	if cfg.Network != nil && !cfg.Network.DHCP {
		b.must("configure network", guest.ConfigureInterface(cfg.Network))
		b.must("write /etc/resolv.conf", guest.WriteResolvConf("/", cfg.Network.DNS))
	}
	if cfg.Hostname != "" {
		b.must("set hostname", unix.Sethostname([]byte(cfg.Hostname)))
		b.must("write /etc/hostname", os.WriteFile("/etc/hostname", []byte(cfg.Hostname+"\n"), 0o644))
	}
	b.must("write /etc/hosts", guest.WriteHosts("/", cfg.Hostname, cfg.Network))

	if cfg.Mode == vmconfig.ModeSystem {
		// The image's init takes PID 1 over; the control channel closes with our process.
		b.must("exec /sbin/init", unix.Exec("/sbin/init", []string{"/sbin/init"}, []string{}))
	}
	b.must("set rlimits", guest.SetRlimits(cfg.Rlimits))
	w, err := b.workload(cfg, agent.MainStream, cfg.Cmd, cfg.Env, cfg.WorkDir, cfg.User)
	b.must("prepare workload", err)
	w.KillRest, w.WaitAllGone, w.Signals = guest.KillAllButInit, true, b.signalsFor(agent.MainStream)
	// bench/init reads this line from the console log.
	log.Info("starting workload", "kernel_ms", h.Start.Milliseconds(), "init_ms", (guest.BootClock() - h.Start).Milliseconds())
	b.finish(w.Run())
}

// boot carries what the failure path and the control channel need.
type boot struct {
	port    *os.File
	ctl     *agent.Conn
	acked   chan struct{}
	reaper  *guest.Reaper
	cfg     *vmconfig.Config
	mu      sync.Mutex // guards streams: readHost adds streams while execs run
	streams map[uint32]chan unix.Signal
	signals *guest.InitSignals
}

func (b *boot) openControl() error {
	c, err := guest.ReadControl("/proc/cmdline")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), deviceTimeout)
	defer cancel()
	if b.port, err = c.Open(ctx, guest.SystemDevices()); err != nil {
		return fmt.Errorf("%s: %w", c, err)
	}
	// Stage 1 only reports: the reading side starts in stage 2, so that no frame from the
	// host is consumed by a process that is about to be replaced.
	b.ctl = agent.NewConn(b.port)
	return b.ctl.Send(agent.KindHello, agent.MainStream, nil)
}

// adoptControl takes over the control channel stage 1 opened.
func (b *boot) adoptControl(port *os.File) {
	b.port = port
	b.ctl = agent.NewConn(b.port)
	b.acked = make(chan struct{})
	b.reaper = guest.NewReaper()
	b.streams = map[uint32]chan unix.Signal{agent.MainStream: make(chan unix.Signal, 8)}
	b.signals.Deliver(b.stop, b.forward)
	go b.readHost()
}

func (b *boot) signalsFor(stream uint32) chan unix.Signal {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.streams[stream]
}

func (b *boot) newStream(stream uint32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.streams[stream] = make(chan unix.Signal, 8)
}

func (b *boot) endStream(stream uint32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.streams, stream)
}

// stop is what SIGINT to init means: TERM to the main workload, whose end ends the VM.
func (b *boot) stop() { b.forward(unix.SIGTERM) }

// forward passes a signal sent to init (e.g. from the console) to the main workload.
func (b *boot) forward(sig unix.Signal) {
	select {
	case b.signalsFor(agent.MainStream) <- sig:
	default: // its queue is full: it is not reading signals any more
	}
}

// readHost handles what the host sends: signals, execs, and the ack of our exit.
func (b *boot) readHost() {
	for {
		f, err := b.ctl.Receive()
		if err != nil {
			return
		}
		switch f.Kind {
		case agent.KindAck:
			if f.Stream == agent.MainStream {
				close(b.acked)
			}
		case agent.KindSignal:
			if ch := b.signalsFor(f.Stream); ch != nil && len(f.Payload) == 1 {
				select {
				case ch <- unix.Signal(f.Payload[0]):
				default: // the process is not reading signals any more: it is gone
				}
			}
		case agent.KindExec:
			var e agent.Exec
			if err := f.Decode(&e); err != nil || len(e.Argv) == 0 || b.cfg == nil {
				b.ctl.SendJSON(agent.KindExit, f.Stream, agent.Exit{Code: 125, Error: fmt.Sprintf("bad exec request: %v", err)})
				continue
			}
			b.newStream(f.Stream)
			go b.exec(f.Stream, e)
		}
	}
}

// exec runs an extra command beside the workload on its own stream.
func (b *boot) exec(stream uint32, e agent.Exec) {
	env := append(append([]string(nil), b.cfg.Env...), e.Env...)
	user := e.User
	if user == "" {
		user = b.cfg.User
	}
	w, err := b.workload(b.cfg, stream, e.Argv, env, e.WorkDir, user)
	var exit agent.Exit
	if err != nil {
		exit = agent.Exit{Code: 125, Error: err.Error()}
	} else {
		w.KillRest, w.Signals = guest.KillGroup, b.signalsFor(stream)
		exit = w.Run()
	}
	b.endStream(stream)
	b.ctl.SendJSON(agent.KindExit, stream, exit)
}

func readConfig() (*vmconfig.Config, error) {
	data, err := os.ReadFile(vmconfig.Path)
	if err != nil {
		return nil, err
	}
	return vmconfig.Parse(data)
}

// workload prepares a command with its user, environment and working directory.
func (b *boot) workload(cfg *vmconfig.Config, stream uint32, argv, env []string, dir, user string) (*guest.Workload, error) {
	w := &guest.Workload{
		Argv:   argv,
		Env:    env,
		Dir:    dir,
		Stdout: agent.StreamWriter{Conn: b.ctl, Kind: agent.KindStdout, Stream: stream},
		Stderr: agent.StreamWriter{Conn: b.ctl, Kind: agent.KindStderr, Stream: stream},
		Reaper: b.reaper,
		Grace:  grace,
	}
	home := "/root"
	if user != "" {
		u, err := guest.LookupUser("/", user)
		if err != nil {
			return nil, err
		}
		w.Cred, home = &u.Cred, u.Home
		// The workload must not regain what it dropped (setuid binaries, file caps).
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return nil, fmt.Errorf("no_new_privs: %w", err)
		}
		if u.Name != "" {
			w.Env = withDefault(w.Env, "USER", u.Name)
		}
	}
	w.Env = withDefault(w.Env, "HOME", home)
	w.Env = withDefault(w.Env, "HOSTNAME", cfg.Hostname)
	if w.Dir == "" {
		w.Dir = "/"
	}
	return w, nil
}

func withDefault(env []string, key, value string) []string {
	for _, kv := range env {
		if len(kv) > len(key) && kv[:len(key)+1] == key+"=" {
			return env
		}
	}
	return append(env, key+"="+value)
}

// finish reports the exit status, waits (bounded) until the host has it, and reboots.
func (b *boot) finish(e agent.Exit) {
	if e.Error != "" {
		log.Error("workload failed", "code", e.Code, "error", e.Error)
	}
	if b.ctl != nil {
		if err := b.ctl.SendJSON(agent.KindExit, agent.MainStream, e); err != nil {
			log.Error("report exit status", "error", err)
		} else {
			if b.acked == nil {
				// Stage 1 failed before anything read the channel: read it now for the ack.
				b.acked = make(chan struct{})
				go b.readHost()
			}
			select {
			case <-b.acked:
			case <-time.After(ackTimeout):
				log.Error("host did not acknowledge the exit status")
			}
		}
	}
	guest.Restart()
}

// must ends the boot with a reported error when err is set.
func (b *boot) must(step string, err error) {
	if err == nil {
		return
	}
	msg := fmt.Sprintf("%s: %v", step, err)
	log.Error("boot failed", "step", step, "error", err)
	b.finish(agent.Exit{Code: 125, Error: msg})
}

func (b *boot) recoverPanic() {
	if r := recover(); r != nil {
		b.must("firegopher-init", errors.New(fmt.Sprint("panic: ", r)))
	}
	// main returning is as fatal as a panic for PID 1.
	b.must("firegopher-init", errors.New("main returned"))
}
