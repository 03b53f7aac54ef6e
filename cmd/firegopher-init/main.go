// firegopher-init is the guest's PID 1. main reads top to bottom as the boot it performs:
// early mounts, modules, control channel, config, root disk, switch root, system mounts,
// workload, report, power off. PID 1 must never exit or panic (the kernel would panic with
// it): every failure is reported to the host and ends in a clean power-off.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
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
	// grace is how long leftovers of the workload get between SIGTERM and SIGKILL.
	grace = 5 * time.Second
)

var log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "firegopher-init")

func main() {
	b := &boot{}
	defer b.recoverPanic()

	b.must("mount early filesystems", guest.MountAll("/", guest.EarlyMounts))
	_ = guest.UseConsole()
	n, err := guest.LoadModules("/", vmconfig.ModulesOrderPath)
	b.must("load kernel modules", err)
	log.Debug("modules loaded", "count", n)

	b.must("open control channel", b.openControl())
	cfg, err := readConfig()
	b.must("read config", err)

	ctx, cancel := context.WithTimeout(context.Background(), deviceTimeout)
	rootDev, err := guest.SystemDevices().DiskBySerial(ctx, cfg.Root.Serial)
	cancel()
	b.must("find root disk", err)
	b.must("create "+newRoot, os.MkdirAll(newRoot, 0o755))
	b.must("mount root disk "+rootDev, unix.Mount(rootDev, newRoot, cfg.Root.FSType, 0, ""))
	b.must("switch root", guest.SwitchRoot(newRoot))
	b.must("mount system filesystems", guest.MountAll("/", guest.SystemMounts))
	b.must("link /dev entries", guest.LinkDev("/dev"))
	if cfg.Hostname != "" {
		b.must("set hostname", unix.Sethostname([]byte(cfg.Hostname)))
	}

	switch cfg.Mode {
	case vmconfig.ModeSystem:
		b.must("exec /sbin/init", unix.Exec("/sbin/init", []string{"/sbin/init"}, os.Environ()))
	case vmconfig.ModeApp:
		b.finish(b.runWorkload(cfg))
	}
}

// boot carries what the failure path needs: the control channel once it is open.
type boot struct {
	ctl     *agent.Conn
	acked   chan struct{}
	signals chan unix.Signal
}

func (b *boot) openControl() error {
	ctx, cancel := context.WithTimeout(context.Background(), deviceTimeout)
	defer cancel()
	dev, err := guest.SystemDevices().PortByName(ctx, vmconfig.ControlPortName)
	if err != nil {
		return err
	}
	port, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	b.ctl = agent.NewConn(port)
	b.acked = make(chan struct{})
	b.signals = make(chan unix.Signal, 8)
	go b.readHost()
	return b.ctl.Send(agent.KindHello, nil)
}

// readHost handles what the host sends: signals for the workload, and the ack of our exit.
func (b *boot) readHost() {
	for {
		f, err := b.ctl.Receive()
		if err != nil {
			return
		}
		switch f.Kind {
		case agent.KindAck:
			close(b.acked)
			return
		case agent.KindSignal:
			if len(f.Payload) == 1 {
				b.signals <- unix.Signal(f.Payload[0])
			}
		}
	}
}

func readConfig() (*vmconfig.Config, error) {
	data, err := os.ReadFile(vmconfig.Path)
	if err != nil {
		return nil, err
	}
	return vmconfig.Parse(data)
}

func (b *boot) runWorkload(cfg *vmconfig.Config) agent.Exit {
	w := &guest.Workload{
		Argv:     cfg.Cmd,
		Env:      cfg.Env,
		Dir:      cfg.WorkDir,
		Stdout:   agent.StreamWriter{Conn: b.ctl, Kind: agent.KindStdout},
		Stderr:   agent.StreamWriter{Conn: b.ctl, Kind: agent.KindStderr},
		Signals:  b.signals,
		Grace:    grace,
		KillRest: guest.KillAllButInit,
	}
	if w.Dir == "" {
		w.Dir = "/"
	}
	return w.Run()
}

// finish reports the exit status, waits (bounded) until the host has it, and powers off.
func (b *boot) finish(e agent.Exit) {
	if e.Error != "" {
		log.Error("workload failed", "code", e.Code, "error", e.Error)
	}
	if b.ctl != nil {
		if err := b.ctl.SendExit(e); err != nil {
			log.Error("report exit status", "error", err)
		} else {
			select {
			case <-b.acked:
			case <-time.After(ackTimeout):
				log.Error("host did not acknowledge the exit status")
			}
		}
	}
	guest.PowerOff()
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
