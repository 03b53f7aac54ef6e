package supervisor

import (
	"context"
	"errors"
	"fmt"
)

// Step is one named stage of bringing a VM up, with the undo that reverses it. Like
// firecracker-go-sdk's handler lists, the start sequence is data: callers can read it,
// insert their own steps, replace or drop ours.
type Step struct {
	Name string
	Do   func(ctx context.Context, vm *VM) error
	// Undo reverses Do; nil when Do leaves nothing behind (or a later undo covers it).
	Undo func(vm *VM) error
}

// Steps run in order.
type Steps []Step

// Names of the start steps, in the order DefaultSteps runs them; callers insert after,
// replace or remove steps by these names.
const (
	StepCloneRootfs     = "clone-rootfs"
	StepAttachVolumes   = "attach-volumes"
	StepPrepareDisk     = "prepare-disk"
	StepRecordNetwork   = "record-network"
	StepPrepareHost     = "prepare-host"
	StepAllocateAddress = "allocate-address"
	StepCreateTAP       = "create-tap"
	StepFirewallTAP     = "firewall-tap"
	StepPublishPorts    = "publish-ports"
	StepServeDHCP       = "serve-dhcp"
	StepPrepareTemplate = "prepare-template"
	StepWriteInitrd     = "write-initrd"
	StepListenAPI       = "listen-api"
	StepStartVMM        = "start-vmm"
	StepConnectGuest    = "connect-guest"
)

// DefaultSteps is the start sequence of a VM. Each undo removes exactly what its step made.
// The network steps do nothing for a machine without a network.
func DefaultSteps() Steps {
	return Steps{
		{Name: StepCloneRootfs, Do: cloneRootfs, Undo: removeRoot},
		// Named volumes stay locked for the VM's life; the kernel drops the locks if the
		// supervisor dies, so gc has nothing to release.
		{Name: StepAttachVolumes, Do: attachVolumes, Undo: detachVolumes},
		// Edits of the never-booted clone for a foreign guest; removing the clone undoes them.
		{Name: StepPrepareDisk, Do: prepareDisk, Undo: unrecordHostKeys},
		// Recorded before anything exists: if the supervisor dies at any later point, gc
		// finds the allocation (and through it the TAP) from the run id and slot.
		{Name: StepRecordNetwork, Do: recordNetwork, Undo: unrecordNetwork},
		{Name: StepPrepareHost, Do: prepareHost}, // host-wide and idempotent: nothing per VM to undo
		{Name: StepAllocateAddress, Do: allocateAddress, Undo: releaseAddress},
		{Name: StepCreateTAP, Do: createTAP, Undo: deleteTAP},
		{Name: StepFirewallTAP, Do: firewallTAP, Undo: unfirewallTAP},
		{Name: StepPublishPorts, Do: publishPorts, Undo: unpublishPorts},
		{Name: StepServeDHCP, Do: serveDHCP, Undo: stopDHCP},
		// Finds or builds the snapshot template the VM restores from, if it restores.
		{Name: StepPrepareTemplate, Do: prepareTemplate},
		{Name: StepWriteInitrd, Do: writeInitrd, Undo: removeFile(InitrdFile)},
		{Name: StepListenAPI, Do: listenAPI, Undo: closeAPI},
		{Name: StepStartVMM, Do: startVMM, Undo: stopVMM},
		{Name: StepConnectGuest, Do: connectGuest, Undo: disconnectGuest},
	}
}

// Names lists the steps in order.
func (s Steps) Names() []string {
	names := make([]string, len(s))
	for i, st := range s {
		names[i] = st.Name
	}
	return names
}

func (s Steps) index(name string) (int, error) {
	for i, st := range s {
		if st.Name == name {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no step named %q (have %v)", name, s.Names())
}

// InsertAfter returns the steps with st placed right after the step named name.
func (s Steps) InsertAfter(name string, st Step) (Steps, error) {
	i, err := s.index(name)
	if err != nil {
		return nil, err
	}
	out := append(append(append(Steps{}, s[:i+1]...), st), s[i+1:]...)
	return out, nil
}

// InsertBefore returns the steps with st placed right before the step named name.
func (s Steps) InsertBefore(name string, st Step) (Steps, error) {
	i, err := s.index(name)
	if err != nil {
		return nil, err
	}
	out := append(append(append(Steps{}, s[:i]...), st), s[i:]...)
	return out, nil
}

// Replace returns the steps with the step named st.Name swapped for st.
func (s Steps) Replace(st Step) (Steps, error) {
	i, err := s.index(st.Name)
	if err != nil {
		return nil, err
	}
	out := append(Steps{}, s...)
	out[i] = st
	return out, nil
}

// Remove returns the steps without the one named name.
func (s Steps) Remove(name string) (Steps, error) {
	i, err := s.index(name)
	if err != nil {
		return nil, err
	}
	return append(append(Steps{}, s[:i]...), s[i+1:]...), nil
}

// Run performs the steps in order. On failure it undoes the steps already done, in
// reverse, and returns the step's error together with any undo errors. On success it
// returns the teardown that undoes them all, for when the VM ends.
func (s Steps) Run(ctx context.Context, vm *VM) (teardown func() error, err error) {
	var done Steps
	undo := func() error {
		var errs []error
		for i := len(done) - 1; i >= 0; i-- {
			if done[i].Undo != nil {
				if err := done[i].Undo(vm); err != nil {
					errs = append(errs, fmt.Errorf("undo %s: %w", done[i].Name, err))
				}
			}
		}
		done = nil
		return errors.Join(errs...)
	}
	for _, st := range s {
		if err := ctx.Err(); err != nil {
			return nil, errors.Join(err, undo())
		}
		if err := st.Do(ctx, vm); err != nil {
			return nil, errors.Join(fmt.Errorf("%s: %w", st.Name, err), undo())
		}
		done = append(done, st)
	}
	return undo, nil
}
