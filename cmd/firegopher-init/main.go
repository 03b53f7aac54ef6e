// firegopher-init is the guest's PID 1. It reads top to bottom as the boot it performs:
// stage 1 in the initramfs (all the mounts but the root's, loopback, modules, control
// channel, config from the initrd or, in a VM restored from a snapshot template, from the
// host; root disk, switch root), then stage 2, in the same process, in the real root
// (volumes, per-VM files, network, then the workload in app mode or the image's own init in
// system mode). PID 1 must never exit or panic (the kernel would panic with it): every
// failure is reported to the host and the VM ends by a clean reboot, which ends the VMM.
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
	b.stage2(b.stage1())
}

// stage1 runs in the initramfs and ends in the real root. It does not re-exec init there:
// a chroot is the whole process's (Go's threads share one fs_struct, CLONE_FS), so every
// thread, present or to come, is in the real root once SwitchRoot returns.
func (b *boot) stage1() stage2Start {
	start := guest.BootClock()
	if err := guest.DisableCtrlAltDel(); err != nil {
		log.Warn("Ctrl-Alt-Del will reset the VM without a report", "error", err)
	}
	// What needs nothing from the config comes before it: a VM restored from a snapshot
	// template finds it done.
	b.must("mount early filesystems", guest.MountAll("/", guest.EarlyMounts))
	_ = guest.UseConsole()
	b.must("link /dev entries", guest.LinkDev("/dev"))
	b.must("bring loopback up", guest.LoopbackUp())
	_, err := guest.LoadModules("/", vmconfig.ModulesOrderPath)
	b.must("load kernel modules", err)
	control, err := guest.ReadControl("/proc/cmdline")
	b.must("read the kernel command line", err)
	ctl, err := withDeadline(func(ctx context.Context) (*os.File, error) { return control.Open(ctx, guest.SystemDevices()) })
	b.must("open control channel "+control.String(), err)
	// Stage 1 only reports: the channel is read by stage 2's session, which knows the config.
	b.session = guest.NewSession(ctl, nil, log)
	b.must("greet the host", b.session.Hello())
	devs := guest.SystemDevices()
	cfg, err := vmconfig.Load(vmconfig.Path)
	restored := errors.Is(err, os.ErrNotExist)
	if restored {
		// No config in the initrd: this is a snapshot template, parked here until it is
		// saved; each VM restored from it wakes up in this read and is told who it is. Its
		// disks are the template's: their serials are read once, here.
		devs.Known = devs.DiskSerials()
		cfg, ctl, err = guest.AwaitConfig(ctl, func() (*os.File, error) {
			// Firecracker reset the vsock connection at the restore: connect and greet again.
			again, err := withDeadline(func(ctx context.Context) (*os.File, error) { return control.Open(ctx, devs) })
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
	rootDev, err := withDeadline(func(ctx context.Context) (string, error) { return devs.Disk(ctx, cfg.Root) })
	b.must("find root disk", err)
	if restored {
		b.must("forget the template's root disk", guest.ForgetBlockCache(rootDev))
	}
	b.must("mount root disk", guest.MountRoot(rootDev, cfg.Root.FSType, newRoot))
	b.must("switch root", guest.SwitchRoot(newRoot))
	return stage2Start{control: ctl, config: cfg, start: start}
}

// stage2Start is what stage 1 leaves to stage 2.
type stage2Start struct {
	control *os.File
	config  *vmconfig.Config
	start   time.Duration // the boot clock when init started: how long the kernel took
}

// stage2 runs in the real root and ends with the VM.
func (b *boot) stage2(h stage2Start) {
	// What the kernel passed to init (HOME, TERM, unknown boot parameters) is no one's
	// business in the real root; workloads get their config's environment only.
	os.Clearenv()
	cfg := h.config
	b.discardRoot = cfg.DiscardRoot
	b.session = guest.NewSession(h.control, cfg, log)
	b.session.Init, b.session.Grace, b.session.AckTimeout = true, grace, ackTimeout
	b.session.Serve()
	if b.signals.StopRequested() {
		b.session.Stop() // asked before the workload existed: it gets the TERM once it starts
	}
	b.signals.Deliver(b.session.Stop, b.session.Signal)
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
	log.Info("starting workload", "kernel_ms", h.start.Milliseconds(), "init_ms", (guest.BootClock() - h.start).Milliseconds())
	b.finish(b.session.RunMain("/"))
}

// boot carries what the failure path needs.
type boot struct {
	signals *guest.InitSignals
	session *guest.Session // nil until the control channel is open
	// discardRoot is the config's DiscardRoot once the root is in place: until then the
	// reboot flushes everything, as it must for a root disk that outlives the VM.
	discardRoot bool
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
	guest.Restart(b.discardRoot)
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
