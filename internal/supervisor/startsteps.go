package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/disk"
	"github.com/firegopher/firegopher/internal/initrd"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/vmm"
)

// guestConnectTimeout bounds a boot up to init's first frame (a TCG boot takes seconds).
const guestConnectTimeout = time.Minute

// removeFile is the undo of a step that made one file in the VM's directory.
func removeFile(name string) func(*VM) error {
	return func(vm *VM) error {
		if err := os.Remove(vm.path(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
}

// cloneRootfs gives the VM its own root disk: a reflink (constant time, raw) where the
// state dir's filesystem can; else, on a VMM that reads qcow2 and for a guest whose disk
// the host need not edit, a qcow2 overlay over the cached image (constant time too); else a
// sparse copy (time grows with the image; logged at debug).
func cloneRootfs(ctx context.Context, vm *VM) error {
	src, raw := vm.Machine.Assets.Rootfs, vm.path(DiskFile)
	if vm.Backend.Caps().Overlays && vm.Machine.Mode != spec.ModeForeign {
		err := disk.CloneReflink(src, raw)
		if err == nil {
			vm.root = vmm.Disk{Path: raw, Serial: RootSerial}
			vm.Log.Debug("root disk cloned", "method", disk.Reflink)
			return nil
		}
		if !errors.Is(err, disk.ErrNoReflink) {
			return err
		}
		if err := disk.MakeOverlay(ctx, src, vm.path(OverlayFile)); err != nil {
			return err
		}
		vm.root = vmm.Disk{Path: vm.path(OverlayFile), Serial: RootSerial, Format: "qcow2"}
		vm.Log.Debug("root disk cloned", "method", disk.Overlay)
		return nil
	}
	method, err := disk.Clone(src, raw)
	if err != nil {
		return err
	}
	vm.root = vmm.Disk{Path: raw, Serial: RootSerial}
	vm.Log.Debug("root disk cloned", "method", method)
	return nil
}

// removeRoot removes the root disk clone-rootfs made, whichever kind.
func removeRoot(vm *VM) error {
	if vm.root.Path == "" {
		return nil
	}
	if err := os.Remove(vm.root.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func writeInitrd(_ context.Context, vm *VM) error {
	if vm.Machine.Mode == spec.ModeForeign || vm.template != "" {
		return nil // its kernel image's own initrd; a restored guest gets its config by channel
	}
	base, err := initrd.Base(vm.Store, vm.kernelDigest(), vm.kernel, vm.Machine.Assets.Init)
	if err != nil {
		return err
	}
	cfg := GuestConfig(vm.Machine, vm.Backend.Caps(), vm.guestNetwork())
	return initrd.ForVM(vm.path(InitrdFile), base, &cfg)
}

func listenAPI(_ context.Context, vm *VM) (err error) {
	vm.api, err = net.Listen("unix", vm.path(APISocket))
	return err
}

// closeAPI closes the listener, which removes its socket file.
func closeAPI(vm *VM) error { return vm.api.Close() }

func startVMM(ctx context.Context, vm *VM) error {
	if vm.template != "" {
		err := restoreVMM(ctx, vm)
		if err == nil || ctx.Err() != nil {
			return err
		}
		// A template that does not restore must not stop the VM: boot it cold.
		vm.Log.Warn("restore from snapshot template failed: cold boot (assets gc --templates removes templates)", "template", vm.template, "error", err)
		vm.template = ""
		if err := writeInitrd(ctx, vm); err != nil {
			return err
		}
	}
	inst, err := vm.Backend.Start(ctx, VMMSpec(vm.Machine, vm.Dir, vm.root, vm.VolumesDir, vm.kernel, vm.Store, vm.nics()))
	if err != nil {
		return err
	}
	vm.instance = inst
	vm.Log.Debug("vmm started", "backend", vm.Backend.Name(), "pid", inst.Pid())
	return nil
}

// stopVMM kills the VMM; the backend removes what it made (sockets) once it has exited.
func stopVMM(vm *VM) error {
	if err := vm.instance.Kill(); err != nil {
		return err
	}
	_ = vm.instance.Wait() // killed on purpose: its exit error says nothing new
	return nil
}

// connectGuest waits for init's control connection and its first frame.
func connectGuest(ctx context.Context, vm *VM) error {
	if vm.Machine.Mode == spec.ModeForeign {
		return nil // no firegopher code in the guest: it is reached over the network
	}
	ctx, cancel := context.WithTimeout(ctx, guestConnectTimeout)
	defer cancel()
	c, err := vm.instance.Control(ctx)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("the guest did not connect its control channel within %s", guestConnectTimeout)
		}
		return err
	}
	vm.guestRaw, vm.guest = c, agent.NewConn(c)
	if vm.template != "" {
		return sendConfig(ctx, vm)
	}
	return nil
}

func disconnectGuest(vm *VM) error {
	if vm.guestRaw == nil {
		return nil
	}
	return vm.guestRaw.Close()
}
