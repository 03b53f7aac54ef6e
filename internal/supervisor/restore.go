package supervisor

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/initrd"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm"
)

// freshEntropy is how much host randomness a restored guest's RNG gets.
const freshEntropy = 64

// maxChannelConfig leaves room in one frame for the fresh entropy and clock.
const maxChannelConfig = agent.MaxPayload - 4096

// prepareTemplate decides whether the VM restores from a snapshot template and finds or
// builds it. A machine that did not ask, a backend without snapshots or a VM the templates
// cannot hold (say why at debug) cold-boots; so does one whose template could not be built
// (a warning: the VM still runs).
func prepareTemplate(ctx context.Context, vm *VM) error {
	m := vm.Machine
	if !m.VMM.Snapshot || m.Mode != spec.ModeApp {
		return nil
	}
	snap, ok := vm.Backend.(vmm.Snapshotter)
	if !ok {
		vm.Log.Debug("cold boot", "reason", vm.Backend.Name()+" has no snapshot templates")
		return nil
	}
	// The config travels in one frame; one bigger than that (--copy of large files) goes
	// in the initrd of a cold boot.
	cfg := GuestConfig(m, vm.Backend.Caps(), vm.guestNetwork())
	if data, err := cfg.Marshal(); err == nil && len(data) > maxChannelConfig {
		vm.Log.Debug("cold boot", "reason", fmt.Sprintf("the config (%d bytes) is too big for one control frame", len(data)))
		return nil
	}
	base, err := initrd.Base(vm.Store, vm.kernelDigest(), vm.kernel, m.Assets.Init)
	if err != nil {
		return err
	}
	s := vm.restoreSpec(base)
	if err := snap.CanTemplate(s); err != nil {
		vm.Log.Debug("cold boot", "reason", err)
		return nil
	}
	id, err := snap.TemplateID()
	if err != nil {
		vm.Log.Warn("snapshot templates unavailable: cold boot", "error", err)
		return nil
	}
	root, err := os.Stat(m.Assets.Rootfs)
	if err != nil {
		return err
	}
	k := TemplateKey{
		Backend: id, Kernel: string(vm.kernelDigest()), Initrd: filepath.Base(base),
		Cmdline: s.Cmdline, CPUs: s.CPUs, MemoryMiB: s.MemoryMiB, RootSize: root.Size(),
	}
	if d, ok := snap.(vmm.TemplateDeviceSet); ok {
		k.Devices = d.TemplateDevices(s)
	}
	templates := &Templates{Dir: filepath.Join(vm.Store.Root(), "templates"), Log: vm.Log}
	start := time.Now()
	dir, created, err := templates.Ensure(ctx, k, func(ctx context.Context, dir string) error {
		ts := s
		ts.ID = "template-" + k.Name()
		return snap.CreateTemplate(ctx, ts, dir, awaitParked)
	})
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		vm.Log.Warn("snapshot template could not be built: cold boot", "error", err)
		return nil
	}
	if created {
		vm.Log.Debug("snapshot template built", "template", k.Name(), "ms", time.Since(start).Milliseconds())
	}
	vm.template, vm.baseInitrd = dir, base
	vm.Log.Debug("restoring from snapshot template", "template", k.Name())
	return nil
}

// restoreSpec is the VM's VMM spec with the base initramfs its template booted.
func (vm *VM) restoreSpec(base string) vmm.Spec {
	s := VMMSpec(vm.Machine, vm.Dir, vm.root, vm.VolumesDir, vm.kernel, vm.Store, vm.nics())
	s.Initrd = base
	return s
}

// awaitParked waits for a template guest's init to greet: it then waits for its config.
func awaitParked(ctx context.Context, c net.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, guestConnectTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
	defer stop()
	f, err := agent.NewConn(c).Receive()
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("init did not greet within %s", guestConnectTimeout)
	case err != nil:
		return fmt.Errorf("control channel: %w", err)
	case f.Kind == agent.KindExit:
		var exit agent.Exit
		f.Decode(&exit)
		return fmt.Errorf("init failed: %s", exit.Error)
	case f.Kind != agent.KindHello:
		return fmt.Errorf("init sent a %s frame first, want hello", f.Kind)
	}
	return nil
}

func restoreVMM(ctx context.Context, vm *VM) error {
	snap, ok := vm.Backend.(vmm.Snapshotter)
	if !ok {
		return errors.New("restore: the backend has no snapshot templates")
	}
	inst, err := snap.Restore(ctx, vm.restoreSpec(vm.baseInitrd), vm.template)
	if err != nil {
		return err
	}
	vm.instance, vm.resume = inst, inst.Resume
	vm.Log.Debug("vmm restored", "backend", vm.Backend.Name(), "pid", inst.Pid(), "template", filepath.Base(vm.template))
	return nil
}

// sendConfig tells a restored guest who it is, with randomness and the time of its own,
// and lets it run: the config is queued on the channel before the guest's first instruction.
func sendConfig(ctx context.Context, vm *VM) error {
	cfg := GuestConfig(vm.Machine, vm.Backend.Caps(), vm.guestNetwork())
	cfg.Fresh = &vmconfig.Fresh{Entropy: make([]byte, freshEntropy)}
	if _, err := rand.Read(cfg.Fresh.Entropy); err != nil {
		return err
	}
	cfg.Fresh.UnixNano = time.Now().UnixNano()
	data, err := cfg.Marshal()
	if err != nil {
		return err
	}
	if err := vm.guest.Send(agent.KindConfig, agent.MainStream, data); err != nil {
		return fmt.Errorf("send the guest its config: %w", err)
	}
	return vm.resume(ctx)
}

// MachineID is the machine-id of VM id: distinct per VM, stable for its life.
func MachineID(id string) string {
	sum := sha256.Sum256([]byte("firegopher machine-id " + id))
	return hex.EncodeToString(sum[:16])
}
