package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/volume"
)

// VolumesDir is where the named volumes of this state directory live.
func (h *Host) VolumesDir() string { return filepath.Join(h.StateDir, "volumes") }

// Volumes opens the named volumes of this state directory.
func (h *Host) Volumes() *volume.Store { return &volume.Store{Dir: h.VolumesDir()} }

// VolumeFile is the per-VM disk built from the host directory of the machine's volume i.
func VolumeFile(i int) string { return fmt.Sprintf("volume%d.ext4", i) }

// VolumeSerial is the virtio serial of the machine's volume i, where the backend sets one.
func VolumeSerial(i int) string { return fmt.Sprintf("vol%d", i) }

// attachVolumes takes each named volume for the VM (held until detachVolumes or the
// supervisor's death) and builds the drives of host directories in the VM's directory.
// On failure it gives back what it took: a failing step is not undone by Steps.Run.
func attachVolumes(ctx context.Context, vm *VM) error {
	store := &volume.Store{Dir: vm.VolumesDir}
	for i, v := range vm.Machine.Volumes {
		var err error
		if v.IsDir() {
			out := vm.path(VolumeFile(i))
			if err = volume.BuildReadOnly(ctx, v.Source, out); err == nil {
				vm.volumeFiles = append(vm.volumeFiles, out)
			}
		} else {
			var a *volume.Attachment
			if a, err = store.Attach(v.Source, vm.ID(), v.ReadOnly); err == nil {
				vm.volumes = append(vm.volumes, a)
			}
		}
		if err != nil {
			return errors.Join(fmt.Errorf("%s: %w", spec.FieldVolume, err), detachVolumes(vm))
		}
	}
	if len(vm.Machine.Volumes) > 0 {
		vm.Log.Debug("volumes attached", "named", len(vm.volumes), "directories", len(vm.volumeFiles))
	}
	return nil
}

// detachVolumes gives the named volumes back and removes the directory drives.
func detachVolumes(vm *VM) error {
	var errs []error
	for i := len(vm.volumes) - 1; i >= 0; i-- {
		errs = append(errs, vm.volumes[i].Release())
	}
	for _, f := range vm.volumeFiles {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	vm.volumes, vm.volumeFiles = nil, nil
	return errors.Join(errs...)
}
