//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Every networked VM of these tests lives in namespaces the test creates: "host" (where
// firegopher runs, with its TAPs, nft table and DHCP) and "internet" (a web server), joined
// by a veth pair. Nothing is sent anywhere else, and the real host's network is untouched.
const (
	hostSideIP = "10.231.0.1"
	inetIP     = "10.231.0.2"
)

type testNet struct {
	host, inet string
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	n := &testNet{host: fmt.Sprintf("fg-host-%d", os.Getpid()), inet: fmt.Sprintf("fg-inet-%d", os.Getpid())}
	ip(t, "netns", "add", n.host)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.host).Run() })
	ip(t, "netns", "add", n.inet)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.inet).Run() })
	ip(t, "-n", n.host, "link", "add", "veth-out", "type", "veth", "peer", "name", "veth-in", "netns", n.inet)
	ip(t, "-n", n.host, "addr", "add", hostSideIP+"/24", "dev", "veth-out")
	ip(t, "-n", n.inet, "addr", "add", inetIP+"/24", "dev", "veth-in")
	for _, ns := range []string{n.host, n.inet} {
		ip(t, "-n", ns, "link", "set", "lo", "up")
	}
	ip(t, "-n", n.host, "link", "set", "veth-out", "up")
	ip(t, "-n", n.inet, "link", "set", "veth-in", "up")
	ip(t, "-n", n.host, "route", "add", "default", "via", inetIP)

	// "The internet": one web server.
	www := t.TempDir()
	os.WriteFile(filepath.Join(www, "hello.txt"), []byte("hello from the internet\n"), 0o644)
	srv := exec.Command("ip", "netns", "exec", n.inet, "python3", "-m", "http.server", "8080", "--bind", inetIP, "--directory", www)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	n.waitHTTP(t, n.host, "http://"+inetIP+":8080/hello.txt")
	return n
}

// waitHTTP polls url from namespace ns until it answers (a server starting up), bounded.
func (n *testNet) waitHTTP(t *testing.T, ns, url string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := exec.Command("ip", "netns", "exec", ns, "curl", "-sf", "-m", "2", url).Output()
		if err == nil {
			return string(out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer from %s: %v", url, ns, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fg runs firegopher inside the test's host namespace.
func (n *testNet) fg(t *testing.T, args ...string) result {
	t.Helper()
	return runFiregopher(t, []string{"ip", "netns", "exec", n.host}, args...)
}

func (n *testNet) nftRuleset(t *testing.T) string {
	out, err := exec.Command("ip", "netns", "exec", n.host, "nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset: %v %s", err, out)
	}
	return string(out)
}

func TestNetworkDHCPAndNAT(t *testing.T) {
	n := newTestNet(t)
	before := n.nftRuleset(t)
	for _, mode := range []string{"embedded", "dnsmasq", "static"} {
		t.Run(mode, func(t *testing.T) {
			r := n.fg(t, "run", "--net", "--dhcp", mode, "--dns", inetIP, "--", "sh", "-c",
				"hostname -I; grep nameserver /etc/resolv.conf; curl -sf -m 10 http://"+inetIP+":8080/hello.txt")
			lines := strings.Split(strings.TrimSpace(string(r.stdout)), "\n")
			if r.code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "172.16.") ||
				lines[1] != "nameserver "+inetIP || lines[2] != "hello from the internet" {
				t.Fatalf("want a 172.16 lease, our DNS, and the page through NAT:\n%s", r)
			}
		})
	}
	if out, _ := exec.Command("ip", "-n", n.host, "-o", "link", "show", "type", "tun").Output(); len(bytes.TrimSpace(out)) != 0 {
		t.Fatalf("TAPs left after the VMs ended:\n%s", out)
	}
	if r := n.fg(t, "host", "reset"); r.code != 0 {
		t.Fatalf("host reset: %s", r)
	}
	if after := n.nftRuleset(t); after != before {
		t.Fatalf("host reset did not restore the ruleset:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestNetworkIsolation(t *testing.T) {
	n := newTestNet(t)
	r := n.fg(t, "run", "-d", "--net", "--dns", inetIP, "--", "sh", "-c", "cd /etc && exec python3 -m http.server 8000")
	server := strings.TrimSpace(string(r.stdout))
	if r.code != 0 {
		t.Fatalf("run -d: %s", r)
	}
	t.Cleanup(func() { n.fg(t, "rm", "-f", server) })
	var rec struct {
		Network struct{ Guest, TAP string }
	}
	if err := json.Unmarshal(n.fg(t, "inspect", server).stdout, &rec); err != nil || rec.Network.Guest == "" {
		t.Fatalf("inspect: no guest address: %v", err)
	}
	// The host reaches the guest.
	if page := n.waitHTTP(t, n.host, "http://"+rec.Network.Guest+":8000/hostname"); strings.TrimSpace(page) != server {
		t.Fatalf("host got %q from the guest, want its hostname %s", page, server)
	}
	// Another VM can't reach it, and can't send with a forged source address; its own
	// address works.
	probe := fmt.Sprintf(`import socket
def connect(dst, port, src=None):
    s = socket.socket(); s.settimeout(3)
    if src:
        s.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND: bind an address we do not own
        s.bind((src, 0))
    try:
        s.connect((dst, port)); return "open"
    except OSError:
        return "blocked"
print("vm-to-vm", connect(%q, 8000))
print("spoofed", connect(%q, 8080, "172.16.250.250"))
print("own", connect(%q, 8080))
`, rec.Network.Guest, inetIP, inetIP)
	r = n.fg(t, "run", "--net", "--dns", inetIP, "--", "python3", "-c", probe)
	if want := "vm-to-vm blocked\nspoofed blocked\nown open\n"; r.code != 0 || string(r.stdout) != want {
		t.Fatalf("want %q:\n%s", want, r)
	}
}

func TestNetPlanMatchesTheSeed(t *testing.T) {
	// Values from falcosecurity/kernel-testing's compute_tap_dev_map.sh scheme.
	r := firegopher(t, "net", "plan", "abc", "m1")
	fields := strings.Fields(strings.Split(strings.TrimSpace(string(r.stdout)), "\n")[1])
	if r.code != 0 || len(fields) != 5 || !strings.HasPrefix(fields[1], "tap") || len(fields[1]) != 15 || !strings.HasPrefix(fields[2], "172.16.") {
		t.Fatalf("%s", r)
	}
}
