package run

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
)

// AllocFunc gives machine name of run runID its TAP device and the two ends of its /30
// (host end: gateway and DHCP server; guest end: the VM's address). In `up` it is the
// network allocator, whose preferred slot is kernel-testing's md5 scheme.
type AllocFunc func(runID, name string) (tap string, host, guest netip.Addr, err error)

// MachinePlan is what `up` creates for one machine.
type MachinePlan struct {
	Machine    Machine
	TAP        string     // host-side TAP device
	HostIP     netip.Addr // the TAP's address (/30): gateway, DHCP server
	GuestIP    netip.Addr // the VM's address, handed out by DHCP; the inventory's ansible_host
	VMID       string     // kernel-testing's Firecracker --id: <name, . as -> "-" <run_id>
	APISocket  string     // kernel-testing's API socket: /tmp/<run_id>-<name>.sock
	Disk       string     // <run dir>/<name>.ext4: the machine's own writable root disk
	ConsoleLog string     // <run dir>/<name>.log: serial console, where their users look
}

// RunPlan is the whole run as `up` will create it.
type RunPlan struct {
	Run        *Run
	Dir        string // <runtime_root>/<run_id>, as kernel-testing's per-run directory
	KnownHosts string // <Dir>/known_hosts: the guests' host keys, for ssh and the inventory
	Machines   []MachinePlan
}

// Plan lays out run: per machine, in run order, its addresses from alloc and its files.
// Unlike kernel-testing, disks are per machine, not per rootfs image (two machines with the
// same rootfs must not share a writable disk). Plan does not check alloc's answers against
// each other; ValidateForUp does.
func Plan(run *Run, alloc AllocFunc) (*RunPlan, error) {
	if run == nil || alloc == nil {
		return nil, errors.New("plan: no run or no allocator")
	}
	dir := filepath.Join(run.RuntimeRoot, run.ID)
	p := &RunPlan{Run: run, Dir: dir, KnownHosts: filepath.Join(dir, "known_hosts")}
	for _, m := range run.Machines {
		tap, host, guest, err := alloc(run.ID, m.Name)
		if err != nil {
			return nil, fmt.Errorf("plan: %s %s: addresses: %w", m.Group, m.Name, err)
		}
		p.Machines = append(p.Machines, MachinePlan{
			Machine:    m,
			TAP:        tap,
			HostIP:     host,
			GuestIP:    guest,
			VMID:       VMID(run.ID, m.Name),
			APISocket:  APISocketPath(run.ID, m.Name),
			Disk:       filepath.Join(dir, m.Name+".ext4"),
			ConsoleLog: filepath.Join(dir, m.Name+".log"),
		})
	}
	return p, nil
}

// ValidateForUp checks that every machine of the plan can be started next to the others:
// valid TAP names and /30 addresses, and no TAP, subnet, VM id, socket or file used twice
// within the run (kernel-testing's check_net_conflicts.sh means to do this but its host-IP
// test is a no-op). Conflicts with other runs are the allocator's business.
func ValidateForUp(p *RunPlan) error {
	if p == nil || p.Run == nil {
		return errors.New("run plan: empty")
	}
	if len(p.Machines) == 0 {
		return fmt.Errorf("run %s: no machines", p.Run.ID)
	}
	used := map[string]string{} // "what value" -> machine name
	claim := func(m *MachinePlan, what, v string) error {
		key := what + " " + v
		if other, dup := used[key]; dup {
			return fmt.Errorf("run %s: %s and %s both use %s %s", p.Run.ID, other, m.Machine.Name, what, v)
		}
		used[key] = m.Machine.Name
		return nil
	}
	for i := range p.Machines {
		m := &p.Machines[i]
		if err := checkTAPName(m.TAP); err != nil {
			return fmt.Errorf("run %s: %s: TAP %q: %v", p.Run.ID, m.Machine.Name, m.TAP, err)
		}
		subnet, err := slotSubnet(m.HostIP, m.GuestIP)
		if err != nil {
			return fmt.Errorf("run %s: %s: %v", p.Run.ID, m.Machine.Name, err)
		}
		for _, c := range [][2]string{
			{"name", m.Machine.Name},
			{"TAP", m.TAP},
			{"subnet", subnet.String()},
			{"VM id", m.VMID},
			{"API socket", m.APISocket},
			{"disk", m.Disk},
			{"console log", m.ConsoleLog},
		} {
			if err := claim(m, c[0], c[1]); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkTAPName applies the kernel's rules for interface names (dev_valid_name).
func checkTAPName(s string) error {
	switch {
	case s == "" || s == "." || s == "..":
		return errors.New("not an interface name")
	case len(s) > 15:
		return fmt.Errorf("%d bytes, interface names have at most 15", len(s))
	case strings.ContainsAny(s, "/:") || strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
		return errors.New("interface names cannot hold '/', ':', spaces or control characters")
	}
	return nil
}

// slotSubnet is the /30 that host and guest share, checking both are its usable addresses.
func slotSubnet(host, guest netip.Addr) (netip.Prefix, error) {
	if !host.Is4() || !guest.Is4() {
		return netip.Prefix{}, fmt.Errorf("addresses %v and %v: not both IPv4", host, guest)
	}
	subnet := netip.PrefixFrom(host, 30).Masked()
	first := subnet.Addr().Next()
	if host == guest || !subnet.Contains(guest) || (host != first && host != first.Next()) || (guest != first && guest != first.Next()) {
		return netip.Prefix{}, fmt.Errorf("host %v and guest %v are not the two usable addresses of one /30", host, guest)
	}
	return subnet, nil
}

// InventoryHosts lists the plan's machines for Inventory and InventoryJSON.
func (p *RunPlan) InventoryHosts() []InventoryHost {
	var hs []InventoryHost
	for _, m := range p.Machines {
		hs = append(hs, InventoryHost{Machine: m.Machine, TAP: m.TAP, GuestIP: m.GuestIP})
	}
	return hs
}
