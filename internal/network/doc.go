// Package network gives each VM its own /30 on the host: slot allocation (the seed tool's
// md5 scheme, persisted in bbolt) and the TAP device that carries it. Host firewalling lives
// in network/firewall, DHCP for guests in network/dhcp.
//
// Everything here acts on the network namespace of the calling OS thread: callers that
// work in another namespace lock their goroutine to a thread and enter it first.
//
// Functions that log take the caller's *slog.Logger first (after a context); nil discards.
// Per-VM progress is logged at Debug, real problems at Warn.
//
// One VM's network, in order (each step's undo runs in reverse order on teardown):
//
//	firewall.Prepare(log, firewall.HostConfig{Pool: pool})   // per host, idempotent; undo: firewall.Reset
//	a, _ := network.OpenAllocator(dbPath, pool)
//	slot, _ := a.Allocate(runID, machine, network.HostAddrsInUse(log)) // undo: a.Release
//	network.CreateTAP(log, slot.TAP, slot.HostPrefix(), 0)    // undo: network.DeleteTAP
//	firewall.AddTAP(log, slot.TAP, slot.Guest)                // undo: firewall.RemoveTAP
//	stop, _ := dhcp.ServeDHCP(ctx, log, slot.TAP, dhcp.Lease{Guest: slot.Guest, Host: slot.Host,
//		Hostname: machine, MAC: slot.GuestMAC()})             // undo: stop()
//	qemu ... -netdev tap,id=net0,ifname=TAP,script=no,downscript=no \
//	         -device virtio-net-pci,netdev=net0,mac=GUESTMAC
package network
