// firegopher-init is the guest's PID 1. It reads top to bottom as the boot it performs:
// stage 1 in the initramfs (early mounts, modules, control channel, config from the initrd
// or, in a VM restored from a snapshot template, from the host; root disk, switch root),
// then stage 2 in the real root (system mounts, per-VM files, network, then the workload in
// app mode or the image's own init in system mode). PID 1 must never exit
// or panic (the kernel would panic with it): every failure is reported to the host and the
// VM ends by a clean reboot, which ends the VMM.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/exitcode"
	"github.com/firegopher/firegopher/internal/guest"
	"github.com/firegopher/firegopher/internal/vmconfig"
)

const (
	newRoot = "/newroot"
	// deviceTimeout bounds the wait for a disk or the control channel to appear after its
	// driver loads (and, on vsock, for the host to listen).
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
	// Caught first: Go's default for these signals is to exit, fatal for PID 1.
	b := &boot{signals: guest.CatchInitSignals()}
	defer b.recoverPanic()
	if h, ok, err := guest.TakeHandoff(); ok {
		b.stage2(h, err)
	} else {
		b.stage1()
	}
}

// stage1 runs in the initramfs and ends by re-executing init inside the real root.
func (b *boot) stage1() {
	// The exec that starts stage 2 must come from the thread that chrooted.
	runtime.LockOSThread()
	start := guest.BootClock()
	if err := guest.DisableCtrlAltDel(); err != nil {
		log.Warn("Ctrl-Alt-Del will reset the VM without a report", "error", err)
	}
	b.must("mount early filesystems", guest.MountAll("/", guest.EarlyMounts))
	_ = guest.UseConsole()
	_, err := guest.LoadModules("/", vmconfig.ModulesOrderPath)
	b.must("load kernel modules", err)
	control, err := guest.ReadControl("/proc/cmdline")
	b.must("read the kernel command line", err)
	ctl, err := withDeadline(func(ctx context.Context) (*os.File, error) { return control.Open(ctx, guest.SystemDevices()) })
	b.must("open control channel "+control.String(), err)
	// Stage 1 only reports: it never reads the channel, so that no frame from the host is
	// consumed by a process about to be replaced.
	b.session = guest.NewSession(ctl, nil, log)
	b.must("greet the host", b.session.Hello())
	cfg, err := vmconfig.Load(vmconfig.Path)
	restored := errors.Is(err, os.ErrNotExist)
	if restored {
		// No config in the initrd: this is a snapshot template, parked here until it is
		// saved; each VM restored from it wakes up in this read and is told who it is.
		cfg, ctl, err = guest.AwaitConfig(ctl, func() (*os.File, error) {
			// Firecracker reset the vsock connection at the restore: connect and greet again.
			again, err := withDeadline(func(ctx context.Context) (*os.File, error) { return control.Open(ctx, guest.SystemDevices()) })
			if err == nil {
				b.session = guest.NewSession(again, nil, log)
				err = b.session.Hello()
			}
			return again, err
		})
		if err == nil {
			b.must("become a new machine", guest.Refresh(cfg.Fresh))
			if n := cfg.Network; n != nil {
				// Hot-plugged at the restore: stage 2 configures it by MAC.
				_, err := withDeadline(func(ctx context.Context) (string, error) { return guest.SystemDevices().NICByMAC(ctx, n.MAC) })
				b.must("find network interface", err)
			}
		}
	}
	b.must("read config", err)
	rootDev, err := withDeadline(func(ctx context.Context) (string, error) { return guest.SystemDevices().Disk(ctx, cfg.Root) })
	b.must("find root disk", err)
	if restored {
		b.must("forget the template's root disk", guest.ForgetBlockCache(rootDev))
	}
	self, err := unix.Open("/init", unix.O_PATH, 0)
	b.must("open /init", err)
	b.must("mount root disk", guest.MountRoot(rootDev, cfg.Root.FSType, newRoot))
	b.must("switch root", guest.SwitchRoot(newRoot))
	handoff := guest.Handoff{Control: ctl, Config: cfg, Start: start, Stop: b.signals.StopRequested()}
	b.must("start stage 2", handoff.Exec(self))
}

// stage2 runs in the real root and ends with the VM.
func (b *boot) stage2(h guest.Handoff, err error) {
	if h.Control != nil {
		b.session = guest.NewSession(h.Control, h.Config, log)
		b.session.Init, b.session.Grace, b.session.AckTimeout = true, grace, ackTimeout
		b.session.Serve()
		b.signals.Deliver(b.session.Stop, b.session.Signal)
		if h.Stop {
			b.session.Stop() // asked before the workload existed: it gets the TERM once it starts
		}
	}
	b.must("take over from stage 1", err)
	cfg := h.Config
	b.must("mount system filesystems", guest.MountAll("/", guest.SystemMounts))
	b.must("link /dev entries", guest.LinkDev("/dev"))
	b.must("mount volumes", guest.MountVolumes("/", guest.SystemDevices(), cfg.Mounts, deviceTimeout, log))
	b.must("write per-VM files", guest.ApplyFiles("/", cfg.Files))
	b.must("write machine-id", guest.WriteMachineID("/", cfg.MachineID))
	b.must("set up network", guest.SetUpNetwork("/", cfg, dhcpTimeout))
	if cfg.Mode == vmconfig.ModeSystem {
		// The image's init takes PID 1 over; the control channel closes with our process.
		b.must("exec /sbin/init", unix.Exec("/sbin/init", []string{"/sbin/init"}, []string{}))
	}
	b.must("set rlimits", guest.SetRlimits(cfg.Rlimits))
	// bench/init reads this line from the console log.
	log.Info("starting workload", "kernel_ms", h.Start.Milliseconds(), "init_ms", (guest.BootClock() - h.Start).Milliseconds())
	b.finish(b.session.RunMain("/"))
}

// boot carries what the failure path needs.
type boot struct {
	signals *guest.InitSignals
	session *guest.Session // nil until the control channel is open
}

// withDeadline runs a wait for a device bounded by deviceTimeout.
func withDeadline[T any](wait func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(context.Background(), deviceTimeout)
	defer cancel()
	return wait(ctx)
}

// finish reports the exit status, waits (bounded) until the host has it, and reboots.
func (b *boot) finish(e agent.Exit) {
	if b.session != nil {
		b.session.Report(e)
	} else {
		log.Error("no control channel to report the exit on", "code", e.Code, "error", e.Error)
	}
	guest.Restart()
}

// must ends the boot with a reported error when err is set.
func (b *boot) must(step string, err error) {
	if err == nil {
		return
	}
	log.Error("boot failed", "step", step, "error", err)
	b.finish(agent.Exit{Code: exitcode.FiregopherError, Error: fmt.Sprintf("%s: %v", step, err)})
}

func (b *boot) recoverPanic() {
	if r := recover(); r != nil {
		b.must("firegopher-init", errors.New(fmt.Sprint("panic: ", r)))
	}
	// main returning is as fatal as a panic for PID 1.
	b.must("firegopher-init", errors.New("main returned"))
}
