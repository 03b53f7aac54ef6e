package run

import (
	"errors"
	"net/netip"
	"os"
	"reflect"
	"testing"

	"github.com/firegopher/firegopher/internal/network"
)

// seedAlloc is the allocator's first choice: kernel-testing's md5 scheme.
func seedAlloc(runID, name string) (string, netip.Addr, netip.Addr, error) {
	s := network.PreferredSlot(network.DefaultPool, runID, name)
	return s.TAP, s.Host, s.Guest, nil
}

const seedVars = `run_id: "here-goes-the-id"
repo: ghcr.io/falcosecurity/kernel-testing
tag: main
machines:
  - {name: "ubuntu-6.5", kernel: "{{ repo }}/ubuntu-kernel:6.5-x86_64-{{ tag }}", rootfs: "{{ repo }}/ubuntu-image:6.5-x86_64-{{ tag }}", arch: "x86_64"}
  - {name: "fedora-6.2", kernel: "{{ repo }}/fedora-kernel:6.2-x86_64-{{ tag }}", rootfs: "{{ repo }}/fedora-image:6.2-x86_64-{{ tag }}", arch: "x86_64"}
builders:
  - {name: "centos-builder", kernel: "{{ repo }}/ubuntu-kernel:6.5-x86_64-{{ tag }}", rootfs: "{{ repo }}/builder:x86_64-{{ tag }}", arch: "x86_64"}
  - {name: "fedora-builder", kernel: "{{ repo }}/fedora-kernel:6.2-x86_64-{{ tag }}", rootfs: "{{ repo }}/modernprobe-builder:x86_64-{{ tag }}", arch: "x86_64"}
`

// TestPlanSeedRun goes from their vars to their inventory: vars file → Run → Plan (seed
// addresses) → inventory.ini, byte for byte as their bootstrap role writes it.
func TestPlanSeedRun(t *testing.T) {
	run, err := load(t, seedVars)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Plan(run, seedAlloc)
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateForUp(p); err != nil {
		t.Fatal(err)
	}
	if p.Dir != "/pb/runtime/here-goes-the-id" || p.KnownHosts != "/pb/runtime/here-goes-the-id/known_hosts" {
		t.Errorf("Dir = %q, KnownHosts = %q", p.Dir, p.KnownHosts)
	}
	want := MachinePlan{
		Machine:    run.Machines[0],
		TAP:        "tap5766e234edc4",
		HostIP:     netip.MustParseAddr("172.16.22.229"),
		GuestIP:    netip.MustParseAddr("172.16.22.230"),
		VMID:       "ubuntu-6-5-here-goes-the-id",
		APISocket:  "/tmp/here-goes-the-id-ubuntu-6.5.sock",
		Disk:       "/pb/runtime/here-goes-the-id/ubuntu-6.5.ext4",
		ConsoleLog: "/pb/runtime/here-goes-the-id/ubuntu-6.5.log",
	}
	if !reflect.DeepEqual(p.Machines[0], want) {
		t.Errorf("plan of ubuntu-6.5:\n got %+v\nwant %+v", p.Machines[0], want)
	}
	got, err := Inventory(p.InventoryHosts(), InventoryOptions{PrivateKey: run.PrivateKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(pkgDir) // load changed into a temporary directory; the golden is in the package
	checkGolden(t, "theirs.ini", got, false)
}

// pkgDir is the package directory, where the test binary starts.
var pkgDir, _ = os.Getwd()

func TestPlanAllocError(t *testing.T) {
	run, err := load(t, seedVars)
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	_, err = Plan(run, func(runID, name string) (string, netip.Addr, netip.Addr, error) {
		if calls++; name == "fedora-6.2" {
			return "", netip.Addr{}, netip.Addr{}, errors.New("address pool exhausted")
		}
		return seedAlloc(runID, name)
	})
	if want := "plan: machines fedora-6.2: addresses: address pool exhausted"; err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
	if calls != 2 {
		t.Errorf("alloc called %d times, want 2 (stop at the first failure)", calls)
	}
}

func TestValidateForUp(t *testing.T) {
	run, err := load(t, seedVars)
	if err != nil {
		t.Fatal(err)
	}
	base, err := Plan(run, seedAlloc)
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	for _, c := range []struct {
		name   string
		change func(ms []MachinePlan)
		want   string
	}{
		{"same TAP", func(ms []MachinePlan) { ms[3].TAP = ms[0].TAP },
			"run here-goes-the-id: ubuntu-6.5 and fedora-builder both use TAP tap5766e234edc4"},
		{"same /30 (hash collision)", func(ms []MachinePlan) { ms[2].HostIP, ms[2].GuestIP = ms[1].HostIP, ms[1].GuestIP },
			"run here-goes-the-id: fedora-6.2 and centos-builder both use subnet 172.16.203.244/30"},
		{"guest of one is in another's /30", func(ms []MachinePlan) { ms[1].HostIP, ms[1].GuestIP = a("172.16.22.230"), a("172.16.22.229") },
			"run here-goes-the-id: ubuntu-6.5 and fedora-6.2 both use subnet 172.16.22.228/30"},
		{"same disk", func(ms []MachinePlan) { ms[1].Disk = ms[0].Disk },
			"run here-goes-the-id: ubuntu-6.5 and fedora-6.2 both use disk /pb/runtime/here-goes-the-id/ubuntu-6.5.ext4"},
		{"same VM id", func(ms []MachinePlan) { ms[1].VMID = ms[0].VMID },
			"run here-goes-the-id: ubuntu-6.5 and fedora-6.2 both use VM id ubuntu-6-5-here-goes-the-id"},
		{"guest outside the host's /30", func(ms []MachinePlan) { ms[0].GuestIP = a("172.16.22.234") },
			"run here-goes-the-id: ubuntu-6.5: host 172.16.22.229 and guest 172.16.22.234 are not the two usable addresses of one /30"},
		{"network address", func(ms []MachinePlan) { ms[0].HostIP = a("172.16.22.228") },
			"run here-goes-the-id: ubuntu-6.5: host 172.16.22.228 and guest 172.16.22.230 are not the two usable addresses of one /30"},
		{"host is guest", func(ms []MachinePlan) { ms[0].HostIP = ms[0].GuestIP },
			"run here-goes-the-id: ubuntu-6.5: host 172.16.22.230 and guest 172.16.22.230 are not the two usable addresses of one /30"},
		{"IPv6", func(ms []MachinePlan) { ms[0].GuestIP = a("fd00::2") },
			"run here-goes-the-id: ubuntu-6.5: addresses 172.16.22.229 and fd00::2: not both IPv4"},
		{"no address", func(ms []MachinePlan) { ms[0].HostIP = netip.Addr{} },
			"run here-goes-the-id: ubuntu-6.5: addresses invalid IP and 172.16.22.230: not both IPv4"},
		{"TAP too long", func(ms []MachinePlan) { ms[0].TAP = "tap5766e234edc4x" },
			`run here-goes-the-id: ubuntu-6.5: TAP "tap5766e234edc4x": 16 bytes, interface names have at most 15`},
		{"TAP with a slash", func(ms []MachinePlan) { ms[0].TAP = "tap/1" },
			`run here-goes-the-id: ubuntu-6.5: TAP "tap/1": interface names cannot hold '/', ':', spaces or control characters`},
		{"no TAP", func(ms []MachinePlan) { ms[0].TAP = "" },
			`run here-goes-the-id: ubuntu-6.5: TAP "": not an interface name`},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := *base
			p.Machines = append([]MachinePlan(nil), base.Machines...)
			c.change(p.Machines)
			if err := ValidateForUp(&p); err == nil || err.Error() != c.want {
				t.Errorf("error = %v, want %s", err, c.want)
			}
		})
	}
	if err := ValidateForUp(&RunPlan{Run: run}); err == nil || err.Error() != "run here-goes-the-id: no machines" {
		t.Errorf("empty plan: %v", err)
	}
}
