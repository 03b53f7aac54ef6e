package run

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/firegopher/firegopher/internal/network"
)

var update = flag.Bool("update", false, "rewrite the generated golden files in testdata/inventory")

// seedHosts are kernel-testing's example hosts (§3 of kernel-testing.md), addressed by the
// seed's md5 scheme for run_id here-goes-the-id.
func seedHosts(t *testing.T) []InventoryHost {
	t.Helper()
	var hs []InventoryHost
	for _, m := range []Machine{
		{Name: "ubuntu-6.5", Group: GroupMachines},
		{Name: "fedora-6.2", Group: GroupMachines},
		{Name: "centos-builder", Group: GroupBuilders},
		{Name: "fedora-builder", Group: GroupBuilders},
	} {
		s := network.PreferredSlot(network.DefaultPool, "here-goes-the-id", m.Name)
		hs = append(hs, InventoryHost{Machine: m, TAP: s.TAP, GuestIP: s.Guest})
	}
	return hs
}

func checkGolden(t *testing.T, name string, got []byte, generated bool) {
	t.Helper()
	path := filepath.Join("testdata", "inventory", name)
	if *update && generated {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s:\n got %q\nwant %q", name, got, want)
	}
}

func TestInventoryGolden(t *testing.T) {
	const key = "/root/.ssh/firecracker_machines"
	hosts := seedHosts(t)
	for _, c := range []struct {
		golden    string
		generated bool // theirs.ini is written by hand from their template and example
		hosts     []InventoryHost
		opts      InventoryOptions
		json      bool
	}{
		{"theirs.ini", false, hosts, InventoryOptions{PrivateKey: key}, false},
		{"user.ini", true, hosts, InventoryOptions{PrivateKey: key, User: "root"}, false},
		{"pinned.ini", true, hosts, InventoryOptions{PrivateKey: key, User: "root", KnownHosts: "/var/lib/firegopher/runs/here-goes-the-id/known_hosts"}, false},
		{"no-builders.ini", true, hosts[:2], InventoryOptions{PrivateKey: key}, false},
		{"empty.ini", true, nil, InventoryOptions{PrivateKey: key}, false},
		{"pinned.json", true, hosts, InventoryOptions{PrivateKey: key, User: "root", KnownHosts: "/var/lib/firegopher/runs/here-goes-the-id/known_hosts"}, true},
		{"empty.json", true, nil, InventoryOptions{PrivateKey: key}, true},
	} {
		t.Run(c.golden, func(t *testing.T) {
			render := Inventory
			if c.json {
				render = InventoryJSON
			}
			got, err := render(c.hosts, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, c.golden, got, c.generated)
		})
	}
}

// TestInventoryForms pins the documented difference between the forms, independent of the
// golden files.
func TestInventoryForms(t *testing.T) {
	h := []InventoryHost{{Machine: Machine{Name: "m", Group: GroupMachines}, TAP: "tap0123456789ab", GuestIP: netip.MustParseAddr("172.16.0.2")}}
	for _, c := range []struct {
		opts InventoryOptions
		line string
	}{
		{InventoryOptions{PrivateKey: "/k"},
			"m ansible_host=172.16.0.2 ansible_ssh_common_args='-o BindInterface=tap0123456789ab' ansible_ssh_private_key_file=/k\n"},
		{InventoryOptions{PrivateKey: "/k", User: "root"},
			"m ansible_host=172.16.0.2 ansible_ssh_common_args='-o BindInterface=tap0123456789ab' ansible_ssh_private_key_file=/k ansible_user=root\n"},
		{InventoryOptions{PrivateKey: "/k", KnownHosts: "/run/kh"},
			"m ansible_host=172.16.0.2 ansible_ssh_common_args='-o BindInterface=tap0123456789ab -o UserKnownHostsFile=/run/kh -o StrictHostKeyChecking=yes' ansible_ssh_private_key_file=/k\n"},
	} {
		got, err := Inventory(h, c.opts)
		if err != nil {
			t.Fatal(err)
		}
		want := inventoryHeader + "[machines]\n" + c.line + "\n[builders]\n"
		if string(got) != want {
			t.Errorf("Inventory(%+v)\n got %q\nwant %q", c.opts, got, want)
		}
	}
}

func TestInventoryJSONIsAnsibleShaped(t *testing.T) {
	data, err := InventoryJSON(seedHosts(t), InventoryOptions{PrivateKey: "/k", User: "root"})
	if err != nil {
		t.Fatal(err)
	}
	var inv map[string]struct {
		Hosts    []string                     `json:"hosts"`
		Hostvars map[string]map[string]string `json:"hostvars"`
	}
	if err := json.Unmarshal(data, &inv); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(inv["machines"].Hosts, ","); got != "ubuntu-6.5,fedora-6.2" {
		t.Errorf("machines hosts = %s", got)
	}
	if got := strings.Join(inv["builders"].Hosts, ","); got != "centos-builder,fedora-builder" {
		t.Errorf("builders hosts = %s", got)
	}
	want := map[string]string{
		"ansible_host":                 "172.16.0.138",
		"ansible_ssh_common_args":      "-o BindInterface=tap1a7effcf3f50",
		"ansible_ssh_private_key_file": "/k",
		"ansible_user":                 "root",
	}
	got := inv["_meta"].Hostvars["fedora-builder"]
	if len(got) != len(want) {
		t.Errorf("hostvars = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("hostvars[%s] = %q, want %q", k, got[k], v)
		}
	}
}

func TestInventoryErrors(t *testing.T) {
	ok := InventoryHost{Machine: Machine{Name: "m", Group: GroupMachines}, TAP: "tap0", GuestIP: netip.MustParseAddr("172.16.0.2")}
	with := func(f func(*InventoryHost)) []InventoryHost { h := ok; f(&h); return []InventoryHost{h} }
	for _, c := range []struct {
		hosts []InventoryHost
		opts  InventoryOptions
		want  string
	}{
		{[]InventoryHost{ok}, InventoryOptions{}, "inventory: no private key path"},
		{[]InventoryHost{ok}, InventoryOptions{PrivateKey: "/my key"}, `inventory: private key path "/my key" contains whitespace or quotes`},
		{[]InventoryHost{ok}, InventoryOptions{PrivateKey: "/k", KnownHosts: "/a'b"}, `inventory: known hosts path "/a'b" contains whitespace or quotes`},
		{[]InventoryHost{ok, ok}, InventoryOptions{PrivateKey: "/k"}, `inventory: host "m" listed twice`},
		{with(func(h *InventoryHost) { h.Machine.Group = "others" }), InventoryOptions{PrivateKey: "/k"}, `inventory: host "m": group "others" is neither machines nor builders`},
		{with(func(h *InventoryHost) { h.Machine.Name = "a b" }), InventoryOptions{PrivateKey: "/k"}, `inventory: host name "a b" cannot be an inventory host`},
		{with(func(h *InventoryHost) { h.TAP = "" }), InventoryOptions{PrivateKey: "/k"}, `inventory: host "m": bad TAP name ""`},
		{with(func(h *InventoryHost) { h.GuestIP = netip.Addr{} }), InventoryOptions{PrivateKey: "/k"}, `inventory: host "m": guest address invalid IP is not IPv4`},
	} {
		for _, render := range []func([]InventoryHost, InventoryOptions) ([]byte, error){Inventory, InventoryJSON} {
			if _, err := render(c.hosts, c.opts); err == nil || err.Error() != c.want {
				t.Errorf("error = %v, want %s", err, c.want)
			}
		}
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "inventory.ini")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "new\n" {
		t.Fatalf("content = %q, %v", got, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v, %v; want 0644", fi.Mode(), err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the file", len(ents))
	}
	// A failed rename (the target is a non-empty directory) leaves no temporary file.
	if err := os.MkdirAll(filepath.Join(dir, "d", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "d"), []byte("x"), 0o644); err == nil {
		t.Error("writing over a directory succeeded")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("after a failed write the directory holds %d entries, want 2", len(ents))
	}
}
