package supervisor

import (
	"context"

	"github.com/firegopher/firegopher/internal/network/firewall"
	"github.com/firegopher/firegopher/internal/spec"
)

// publishPorts asks the kernel to forward the machine's published ports to its guest
// address; a port already taken fails the start before the VMM exists.
var publishPorts = withNetwork(func(_ context.Context, vm *VM, _ *spec.Network) error {
	if len(vm.Machine.Ports) == 0 {
		return nil
	}
	ports := make([]firewall.Port, len(vm.Machine.Ports))
	for i, p := range vm.Machine.Ports {
		ports[i] = firewall.Port{HostIP: p.HostIP, HostPort: p.HostPort, GuestPort: p.GuestPort, Proto: p.Proto}
	}
	return firewall.Publish(vm.Log, vm.net.slot.TAP, vm.net.slot.Guest, ports)
})

func unpublishPorts(vm *VM) error {
	if len(vm.Machine.Ports) == 0 || !vm.net.allocated() {
		return nil
	}
	return firewall.Unpublish(vm.Log, vm.net.slot.TAP)
}
