package firewall

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/firegopher/firegopher/internal/testutil/nstest"
)

func requireNft(t *testing.T) {
	t.Helper()
	nstest.RequireRoot(t)
	if _, err := os.Stat("/usr/sbin/nft"); err != nil {
		t.Fatal("nft not found: install the Debian package nftables (the tests list rulesets with it)")
	}
}

// nftFile loads an nft script into ns.
func nftFile(t *testing.T, ns *nstest.NS, script string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "rules.nft")
	if err := os.WriteFile(p, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	ns.MustExec(t, "nft", "-f", p)
}

var cfg = HostConfig{Pool: netip.MustParsePrefix("172.16.0.0/16")}

func TestPrepareCheckReset(t *testing.T) {
	requireNft(t)
	hostForward, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	ns := nstest.New(t, "fw")
	// Someone else's table, which Prepare and Reset must leave exactly as it is.
	nftFile(t, ns, `table ip theirs {
	chain input {
		type filter hook input priority 0; policy accept;
		tcp dport 22 accept
	}
}
`)
	before := ns.MustExec(t, "nft", "list", "ruleset")

	ns.Run(t, func() error {
		missing, err := Check(cfg)
		if err != nil {
			return err
		}
		joined := strings.Join(missing, "\n")
		for _, want := range []string{"sysctl net.ipv4.ip_forward is 0, want 1", "nftables table inet firegopher"} {
			if !strings.Contains(joined, want) {
				return fmt.Errorf("Check before Prepare = %q, want it to mention %q", missing, want)
			}
		}
		if err := Prepare(nil, cfg); err != nil {
			return err
		}
		if missing, err := Check(cfg); err != nil || len(missing) != 0 {
			return fmt.Errorf("Check after Prepare = %q, %v", missing, err)
		}
		return nil
	})
	after1 := ns.MustExec(t, "nft", "list", "ruleset")
	for _, want := range []string{
		"table inet firegopher", "type ifname . ipv4_addr", "hook prerouting priority raw",
		"iifname . ip saddr != @guests drop", "ip saddr 172.16.0.0/16 oifname != @taps masquerade",
		`comment "firegopher: VM to VM dropped"`, "ct state established,related accept",
	} {
		if !strings.Contains(after1, want) {
			t.Errorf("ruleset after Prepare lacks %q:\n%s", want, after1)
		}
	}
	if !strings.Contains(after1, strings.TrimSpace(before)) {
		t.Errorf("Prepare changed the other table:\nbefore:\n%s\nafter:\n%s", before, after1)
	}
	if got := ns.MustExec(t, "sysctl", "-n", "net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter"); got != "1\n0\n" {
		t.Errorf("sysctls in the namespace: %q", got)
	}

	ns.Run(t, func() error { return Prepare(nil, cfg) })
	if after2 := ns.MustExec(t, "nft", "list", "ruleset"); after2 != after1 {
		t.Errorf("second Prepare changed the ruleset:\n%s\nvs\n%s", after1, after2)
	}

	// Another config is reported as drift and converges; and back again.
	allow := cfg
	allow.AllowVMToVM = true
	ns.Run(t, func() error {
		missing, err := Check(allow)
		if err != nil || !strings.Contains(strings.Join(missing, "\n"), "rule in chain forward: firegopher: VM to VM allowed") {
			return fmt.Errorf("Check(allow) = %q, %v", missing, err)
		}
		if err := Prepare(nil, allow); err != nil {
			return err
		}
		if missing, err := Check(allow); err != nil || len(missing) != 0 {
			return fmt.Errorf("after Prepare(nil, allow): %q, %v", missing, err)
		}
		return Prepare(nil, cfg)
	})
	if again := ns.MustExec(t, "nft", "list", "ruleset"); again != after1 {
		t.Errorf("Prepare(nil, allow) then Prepare(nil, cfg) differs from Prepare(nil, cfg):\n%s\nvs\n%s", after1, again)
	}

	// Drift is reported and repaired: a flushed chain, a stranger's rule in ours, and a
	// table left by something else under our name (wrong set type, wrong hook).
	ns.MustExec(t, "nft", "flush", "chain", "inet", "firegopher", "forward")
	ns.MustExec(t, "nft", "add", "rule", "inet", "firegopher", "input", "tcp", "dport", "22", "accept")
	ns.Run(t, func() error {
		missing, err := Check(cfg)
		joined := strings.Join(missing, "\n")
		for _, want := range []string{"rule in chain forward: firegopher: no new connections into VMs", `rule in chain input: "" not ours`} {
			if err != nil || !strings.Contains(joined, want) {
				return fmt.Errorf("Check after drift = %q, %v; want %q", missing, err, want)
			}
		}
		return Prepare(nil, cfg)
	})
	if got := ns.MustExec(t, "nft", "list", "ruleset"); got != after1 {
		t.Errorf("Prepare did not repair drift:\n%s", got)
	}
	ns.MustExec(t, "nft", "delete", "table", "inet", "firegopher")
	nftFile(t, ns, `table inet firegopher {
	set taps { type ipv4_addr; }
	chain forward { type filter hook input priority 0; policy drop; }
	chain extra { }
}
`)
	ns.Run(t, func() error {
		missing, err := Check(cfg)
		joined := strings.Join(missing, "\n")
		for _, want := range []string{"set inet firegopher taps (type ifname)", "chain inet firegopher forward", "chain inet firegopher extra: not ours"} {
			if err != nil || !strings.Contains(joined, want) {
				return fmt.Errorf("Check of a foreign table = %q, %v; want %q", missing, err, want)
			}
		}
		return Prepare(nil, cfg)
	})
	if got := ns.MustExec(t, "nft", "list", "ruleset"); got != after1 {
		t.Errorf("Prepare did not replace a mismatched table:\n%s\nwant\n%s", got, after1)
	}

	ns.Run(t, func() error {
		if err := Reset(nil); err != nil {
			return err
		}
		return Reset(nil) // nothing left: still fine
	})
	if after := ns.MustExec(t, "nft", "list", "ruleset"); after != before {
		t.Errorf("ruleset after Reset differs from before Prepare:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// The test process's own namespace was never touched.
	if now, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); string(now) != string(hostForward) {
		t.Errorf("host ip_forward changed from %q to %q", hostForward, now)
	}
}

func TestAddRemoveTAP(t *testing.T) {
	requireNft(t)
	ns := nstest.New(t, "fwtap")
	ns.Run(t, func() error {
		if err := AddTAP(nil, "tapaaa", netip.MustParseAddr("172.16.0.2")); err == nil || !strings.Contains(err.Error(), "Prepare") {
			return fmt.Errorf("AddTAP before Prepare: %v", err)
		}
		if err := RemoveTAP(nil, "tapaaa"); err != nil {
			return fmt.Errorf("RemoveTAP before Prepare: %v", err)
		}
		if err := Prepare(nil, cfg); err != nil {
			return err
		}
		if err := AddTAP(nil, "tap-much-too-long", netip.MustParseAddr("172.16.0.2")); err == nil || !strings.Contains(err.Error(), "tap-much-too-long") {
			return fmt.Errorf("long name: %v", err)
		}
		if err := AddTAP(nil, "tapaaa", netip.MustParseAddr("fd00::2")); err == nil || !strings.Contains(err.Error(), "fd00::2") {
			return fmt.Errorf("IPv6 guest: %v", err)
		}
		for _, g := range []string{"172.16.0.2", "172.16.0.6"} {
			if err := AddTAP(nil, "tapaaa", netip.MustParseAddr(g)); err != nil { // second replaces first
				return err
			}
		}
		if err := AddTAP(nil, "tapbbb", netip.MustParseAddr("172.16.0.10")); err != nil {
			return err
		}
		got, err := TAPs()
		if err != nil {
			return err
		}
		if len(got) != 2 || got["tapaaa"].String() != "172.16.0.6" || got["tapbbb"].String() != "172.16.0.10" {
			return fmt.Errorf("TAPs() = %v", got)
		}
		// Registrations survive a Prepare that has to rebuild the rules.
		if err := Prepare(nil, HostConfig{Pool: cfg.Pool, AllowVMToVM: true}); err != nil {
			return err
		}
		if got, _ := TAPs(); len(got) != 2 {
			return fmt.Errorf("after re-Prepare TAPs() = %v", got)
		}
		if err := RemoveTAP(nil, "tapaaa"); err != nil {
			return err
		}
		return RemoveTAP(nil, "tapaaa")
	})
	out := ns.MustExec(t, "nft", "list", "set", "inet", "firegopher", "guests")
	if strings.Contains(out, "tapaaa") || !strings.Contains(out, `"tapbbb" . 172.16.0.10`) {
		t.Errorf("guests set after RemoveTAP(tapaaa):\n%s", out)
	}
	out = ns.MustExec(t, "nft", "list", "set", "inet", "firegopher", "taps")
	if strings.Contains(out, "tapaaa") || !strings.Contains(out, `"tapbbb"`) {
		t.Errorf("taps set after RemoveTAP(tapaaa):\n%s", out)
	}
}

// TestFirewallTraffic sends real packets through a prepared namespace: a "host" with two
// VM TAPs (veths into namespaces g1, g2) and an uplink to an "outside" namespace.
func TestFirewallTraffic(t *testing.T) {
	requireNft(t)
	host, g1, g2, out := nstest.New(t, "fwh"), nstest.New(t, "fwg1"), nstest.New(t, "fwg2"), nstest.New(t, "fwo")
	nstest.Veth(t, host, "tapg1", g1, "eth0")
	nstest.Veth(t, host, "tapg2", g2, "eth0")
	nstest.Veth(t, host, "ext0", out, "eth0")
	addr(t, host, "tapg1", "172.16.0.1/30")
	addr(t, host, "tapg2", "172.16.0.5/30")
	addr(t, host, "ext0", "203.0.113.1/24")
	addr(t, g1, "eth0", "172.16.0.2/30")
	addr(t, g1, "eth0", "172.16.0.99/32") // for spoofing
	addr(t, g2, "eth0", "172.16.0.6/30")
	addr(t, out, "eth0", "203.0.113.2/24")
	g1.MustExec(t, "ip", "route", "add", "default", "via", "172.16.0.1")
	g2.MustExec(t, "ip", "route", "add", "default", "via", "172.16.0.5")
	// Only for the inbound test: the outside knows no route to the pool otherwise, which
	// is what makes the masquerade check meaningful.
	out.MustExec(t, "ip", "route", "add", "172.16.0.0/30", "via", "203.0.113.1")

	host.Run(t, func() error {
		if err := Prepare(nil, cfg); err != nil {
			return err
		}
		if err := AddTAP(nil, "tapg1", netip.MustParseAddr("172.16.0.2")); err != nil {
			return err
		}
		return AddTAP(nil, "tapg2", netip.MustParseAddr("172.16.0.6"))
	})
	// Test-owned counters just before and just after our chains, per probe port.
	nftFile(t, host, `table inet fgtest {
	counter spoof_pre {}
	counter spoof_post {}
	counter fwd_pre {}
	counter fwd_post {}
	chain pre_a { type filter hook prerouting priority -350; udp dport 9003 counter name spoof_pre; }
	chain pre_b { type filter hook prerouting priority -250; udp dport 9003 counter name spoof_post; }
	chain fwd_a { type filter hook forward priority -10; udp dport { 9004, 9005 } counter name fwd_pre; }
	chain fwd_b { type filter hook forward priority 10; udp dport { 9004, 9005 } counter name fwd_post; }
}
`)

	t.Run("masquerade and replies", func(t *testing.T) {
		srv := listenUDP(t, out, "203.0.113.2:9000")
		cli := listenUDP(t, g1, "172.16.0.2:0")
		send(t, cli, "203.0.113.2:9000", "hello")
		msg, from := recv(t, srv)
		if msg != "hello" || from.Addr().String() != "203.0.113.1" {
			t.Fatalf("outside got %q from %s, want hello from the host's 203.0.113.1", msg, from)
		}
		send(t, srv, from.String(), "reply")
		if msg, from := recv(t, cli); msg != "reply" || from.String() != "203.0.113.2:9000" {
			t.Fatalf("VM got %q from %s", msg, from)
		}
	})

	t.Run("spoofed source dropped", func(t *testing.T) {
		spoof := listenUDP(t, g1, "172.16.0.99:0")
		send(t, spoof, "203.0.113.2:9003", "spoofed")
		waitCounter(t, host, "spoof_pre", 1)
		if n := counter(t, host, "spoof_post"); n != 0 {
			t.Fatalf("spoofed packet passed prerouting (%d)", n)
		}
		// The real address goes through.
		honest := listenUDP(t, g1, "172.16.0.2:0")
		send(t, honest, "203.0.113.2:9003", "real")
		waitCounter(t, host, "spoof_post", 1)
	})

	t.Run("VM to VM dropped, then allowed", func(t *testing.T) {
		dst := listenUDP(t, g2, "172.16.0.6:9004")
		src := listenUDP(t, g1, "172.16.0.2:0")
		send(t, src, "172.16.0.6:9004", "blocked")
		waitCounter(t, host, "fwd_pre", 1)
		if n := counter(t, host, "fwd_post"); n != 0 {
			t.Fatalf("VM to VM passed the forward chain (%d)", n)
		}
		host.Run(t, func() error { return Prepare(nil, HostConfig{Pool: cfg.Pool, AllowVMToVM: true}) })
		send(t, src, "172.16.0.6:9004", "allowed")
		if msg, from := recv(t, dst); msg != "allowed" || from.Addr().String() != "172.16.0.2" {
			t.Fatalf("g2 got %q from %s, want allowed from 172.16.0.2 (no NAT between VMs)", msg, from)
		}
		host.Run(t, func() error { return Prepare(nil, cfg) })
	})

	t.Run("no new connections from outside", func(t *testing.T) {
		pre := counter(t, host, "fwd_pre")
		post := counter(t, host, "fwd_post")
		_ = listenUDP(t, g1, "172.16.0.2:9005")
		src := listenUDP(t, out, "203.0.113.2:0")
		send(t, src, "172.16.0.2:9005", "inbound")
		waitCounter(t, host, "fwd_pre", pre+1)
		if n := counter(t, host, "fwd_post"); n != post {
			t.Fatalf("inbound packet passed the forward chain (%d -> %d)", post, n)
		}
	})
}

func addr(t *testing.T, ns *nstest.NS, dev, cidr string) {
	t.Helper()
	ns.Run(t, func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		a, err := netlink.ParseAddr(cidr)
		if err != nil {
			return err
		}
		// nodad: IPv4 has none, but keep the address usable at once either way.
		return netlink.AddrAdd(l, a)
	})
}

// listenUDP opens a UDP socket inside ns; the socket stays in ns wherever it is used.
func listenUDP(t *testing.T, ns *nstest.NS, at string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	ns.Run(t, func() error {
		var err error
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(at)))
		return err
	})
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, c *net.UDPConn, to, msg string) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort([]byte(msg), netip.MustParseAddrPort(to)); err != nil {
		t.Fatalf("send to %s: %v", to, err)
	}
}

func recv(t *testing.T, c *net.UDPConn) (string, netip.AddrPort) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second)) // a bound on failure, not a wait for success
	b := make([]byte, 100)
	n, from, err := c.ReadFromUDPAddrPort(b)
	if err != nil {
		t.Fatalf("receive on %s: %v", c.LocalAddr(), err)
	}
	return string(b[:n]), netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
}

var packetsRE = regexp.MustCompile(`packets (\d+)`)

func counter(t *testing.T, ns *nstest.NS, name string) int {
	t.Helper()
	m := packetsRE.FindStringSubmatch(ns.MustExec(t, "nft", "list", "counter", "inet", "fgtest", name))
	if m == nil {
		t.Fatalf("counter %s unreadable", name)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// waitCounter polls a counter until it reaches want: the packet has been seen by the
// hook, and our chain's verdict on it is already made.
func waitCounter(t *testing.T, ns *nstest.NS, name string, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := counter(t, ns, name)
		if n >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter %s = %d, want %d: packet never arrived", name, n, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
