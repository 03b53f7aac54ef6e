package dhcp

import (
	"bytes"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/testutil/nstest"
)

func TestParseDnsmasqInstance(t *testing.T) {
	tap, host, guest, err := ParseDnsmasqInstance("tap3b4c7392c2e9:172.16.225.169:172.16.225.170")
	if err != nil || tap != "tap3b4c7392c2e9" || host.String() != "172.16.225.169" || guest.String() != "172.16.225.170" {
		t.Fatalf("got %q %s %s %v", tap, host, guest, err)
	}
	if s := DnsmasqInstance(tap, host, guest); s != "tap3b4c7392c2e9:172.16.225.169:172.16.225.170" {
		t.Fatalf("DnsmasqInstance = %q", s)
	}
	for in, want := range map[string]string{
		"tap0:172.16.0.1":                         "want TAP:HOST_IP:GUEST_IP",
		"tap0:172.16.0.1:172.16.0.2:x":            "want TAP:HOST_IP:GUEST_IP",
		"tap0123456789abcd:172.16.0.1:172.16.0.2": `"tap0123456789abcd"`,
		":172.16.0.1:172.16.0.2":                  "tap",
		"tap0:172.16.0.300:172.16.0.2":            `host IP "172.16.0.300"`,
		"tap0:172.16.0.1:fd00::2":                 "want TAP:HOST_IP:GUEST_IP", // colons split it
		"tap0:172.16.0.1:banana":                  `guest IP "banana"`,
		"tap0:172.16.0.1:172.16.0.6":              "host 172.16.0.1 is not in the guest's subnet 172.16.0.4/30",
		"tap0:172.16.0.1:172.16.0.3":              "172.16.0.3 is the network or broadcast",
		"tap0:172.16.0.2:172.16.0.2":              "guest and host are both 172.16.0.2",
	} {
		if _, _, _, err := ParseDnsmasqInstance(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseDnsmasqInstance(%q) = %v; want an error containing %s", in, err, want)
		}
	}
}

func TestDnsmasqArgs(t *testing.T) {
	host, guest := netip.MustParseAddr("172.16.0.1"), netip.MustParseAddr("172.16.0.2")
	args := DnsmasqArgs("tapx", host, guest, []netip.Addr{netip.MustParseAddr("172.16.0.1"), netip.MustParseAddr("10.53.0.53")})
	for _, want := range []string{
		"--keep-in-foreground", "--bind-interfaces", "--interface=tapx", "--except-interface=lo",
		"--dhcp-range=172.16.0.2,172.16.0.2,255.255.255.252,1h", "--dhcp-option=option:router,172.16.0.1",
		"--dhcp-option=option:dns-server,172.16.0.1,10.53.0.53", "--no-resolv", "--port=0",
		"--dhcp-leasefile=/run/firegopher/dnsmasq/tapx.leases", "--conf-file=/dev/null",
	} {
		if !slices.Contains(args, want) {
			t.Errorf("args lack %q: %q", want, args)
		}
	}
	if def := DnsmasqArgs("tapx", host, guest, nil); !slices.Contains(def, "--dhcp-option=option:dns-server,1.1.1.1") {
		t.Errorf("default DNS: %q", def)
	}
}

// TestUnitRunsDnsmasqArgs runs the unit's ExecStart line, unescaped as systemd would, with
// a stand-in dnsmasq that records its arguments: they must be DnsmasqArgs'.
func TestUnitRunsDnsmasqArgs(t *testing.T) {
	dir := t.TempDir()
	record := filepath.Join(dir, "args")
	fake := filepath.Join(dir, "dnsmasq")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > "+record+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	leaseDir := filepath.Join(dir, "leases")
	unit := unitText(fake, leaseDir)
	var exec_ string
	for _, line := range strings.Split(unit, "\n") {
		if strings.HasPrefix(line, "ExecStart=") {
			exec_ = strings.TrimPrefix(line, "ExecStart=")
		}
	}
	if exec_ == "" {
		t.Fatalf("no ExecStart in\n%s", unit)
	}
	instance := "tap3b4c7392c2e9:172.16.225.169:172.16.225.170"
	// systemd: %i is the instance, %% a percent, $$ a dollar.
	cmdline := strings.NewReplacer("%i", instance, "%%", "%", "$$", "$").Replace(exec_)
	for _, env := range [][]string{nil, {"FIREGOPHER_DNS=172.16.225.169,10.53.0.53"}} {
		cmd := exec.Command("/bin/bash", "-c", cmdline)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ExecStart failed: %v\n%s", err, out)
		}
		got, _ := os.ReadFile(record)
		dns := DefaultDNS
		if env != nil {
			dns = []netip.Addr{netip.MustParseAddr("172.16.225.169"), netip.MustParseAddr("10.53.0.53")}
		}
		want := dnsmasqArgs("tap3b4c7392c2e9", netip.MustParseAddr("172.16.225.169"), netip.MustParseAddr("172.16.225.170"),
			dns, filepath.Join(leaseDir, "tap3b4c7392c2e9.leases"))
		if g := strings.Split(strings.TrimSuffix(string(got), "\n"), "\n"); !slices.Equal(g, want) {
			t.Errorf("unit ran dnsmasq with\n%q\nwant\n%q", g, want)
		}
	}
	if st, err := os.Stat(leaseDir); err != nil || !st.IsDir() {
		t.Errorf("unit did not create the lease directory: %v", err)
	}
	// A malformed instance fails before dnsmasq runs.
	bad := strings.NewReplacer("%i", "tap0:1.2.3.4", "%%", "%", "$$", "$").Replace(exec_)
	if out, err := exec.Command("/bin/bash", "-c", bad).CombinedOutput(); err == nil || !strings.Contains(string(out), "want TAP:HOST_IP:GUEST_IP") {
		t.Errorf("malformed instance: %v %s", err, out)
	}
	if !strings.Contains(UnitText(), "exec /usr/sbin/dnsmasq ") || strings.Contains(UnitText(), dir) {
		t.Errorf("UnitText does not run /usr/sbin/dnsmasq:\n%s", UnitText())
	}
}

func TestInstallUnits(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 2; i++ {
		if err := InstallUnits(dir); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(filepath.Join(dir, UnitName))
	if err != nil || string(got) != UnitText() {
		t.Fatalf("installed unit: %v\n%s", err, got)
	}
	if st, _ := os.Stat(filepath.Join(dir, UnitName)); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", st.Mode())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}
	if err := InstallUnits(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing dir: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := UninstallUnits(dir); err != nil {
			t.Fatal(err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("after UninstallUnits: %v", ents)
	}
	u := DnsmasqUnit("tapx", netip.MustParseAddr("172.16.0.1"), netip.MustParseAddr("172.16.0.2"))
	if u != "dnsmasq-tap@tapx:172.16.0.1:172.16.0.2.service" {
		t.Errorf("DnsmasqUnit = %q", u)
	}
}

// TestDnsmasqLease runs the real dnsmasq with DnsmasqArgs' command line on a TAP stand-in in
// a test namespace; a real DHCP client on the other end gets the lease.
func TestDnsmasqLease(t *testing.T) {
	nstest.RequireRoot(t)
	if _, err := os.Stat(DnsmasqPath); err != nil {
		t.Fatalf("%s not found: install the Debian package dnsmasq-base", DnsmasqPath)
	}
	host := nstest.New(t, "dnsmasq")
	l := newLink(t, host, "tapdnsmasq0", "172.16.0.1/30")
	leases := filepath.Join(t.TempDir(), "tapdnsmasq0.leases")
	args := dnsmasqArgs(l.tap, netip.MustParseAddr("172.16.0.1"), netip.MustParseAddr("172.16.0.2"),
		[]netip.Addr{netip.MustParseAddr("172.16.0.1")}, leases)
	cmd := exec.Command("ip", append([]string{"netns", "exec", host.Name, DnsmasqPath}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
		if t.Failed() {
			t.Logf("dnsmasq stderr:\n%s", stderr.String())
		}
	})
	waitListening(t, cmd.Process.Pid, exited, &stderr)

	lease, err := request(l.guest)
	if err != nil {
		t.Fatalf("DHCP from dnsmasq: %v", err)
	}
	checkAck(t, lease.ACK, "172.16.0.2", "172.16.0.1", []string{"172.16.0.1"}, time.Hour)
	// dnsmasq records the lease after it acks: wait for the file to say so.
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(leases)
		if strings.Contains(string(b), " 172.16.0.2 ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease file %s: %q", leases, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitListening waits until dnsmasq (pid, already exec'd by `ip netns exec`) has its DHCP
// socket bound on port 67 in its namespace.
func waitListening(t *testing.T, pid int, exited chan error, stderr *bytes.Buffer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("dnsmasq exited: %v\n%s", err, stderr.String())
		default:
		}
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		udp, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/net/udp")
		if strings.TrimSpace(string(comm)) == "dnsmasq" && strings.Contains(string(udp), ":0043 ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("dnsmasq not listening on port 67 after 10s\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
