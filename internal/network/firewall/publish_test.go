package firewall

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/firegopher/firegopher/internal/testutil/nstest"
)

func TestPublishUnpublish(t *testing.T) {
	ns := nstest.New(t, "pub")
	cfg := HostConfig{Pool: netip.MustParsePrefix("172.16.0.0/16")}
	guest := netip.MustParseAddr("172.16.0.2")
	ns.MustExec(t, "ip", "tuntap", "add", "tapaaaa", "mode", "tap")
	ns.MustExec(t, "ip", "tuntap", "add", "tapbbbb", "mode", "tap")
	ports := []Port{{HostPort: 8080, GuestPort: 8000, Proto: "tcp"}, {HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 5353, GuestPort: 53, Proto: "udp"}}
	ns.Run(t, func() error {
		if err := Prepare(nil, cfg); err != nil {
			return err
		}
		if err := AddTAP(nil, "tapaaaa", guest); err != nil {
			return err
		}
		return Publish(nil, "tapaaaa", guest, ports)
	})
	rules := ns.MustExec(t, "nft", "list", "table", "inet", "firegopher")
	for _, want := range []string{"fib daddr type local", "tcp dport 8080 dnat ip to 172.16.0.2:8000", "ip daddr 127.0.0.1 udp dport 5353 dnat ip to 172.16.0.2:53",
		"firegopher: publish tapaaaa 8080:8000/tcp"} {
		if !strings.Contains(rules, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, rules)
		}
	}
	if got := ns.MustExec(t, "sysctl", "-n", "net.ipv4.conf.tapaaaa.route_localnet"); got != "1\n" {
		t.Errorf("route_localnet on the TAP: %q", got)
	}
	ns.Run(t, func() error {
		missing, err := Check(cfg)
		if err != nil || len(missing) > 0 {
			t.Errorf("published ports are not drift: %v %v", missing, err)
		}
		// The same port for another VM is refused, naming the VM that has it.
		err = Publish(nil, "tapbbbb", netip.MustParseAddr("172.16.0.6"), ports[:1])
		if !errors.Is(err, ErrPortInUse) || !strings.Contains(err.Error(), "tapaaaa") {
			t.Errorf("a port another VM publishes: %v", err)
		}
		return Unpublish(nil, "tapaaaa")
	})
	if rules := ns.MustExec(t, "nft", "list", "table", "inet", "firegopher"); strings.Contains(rules, "dnat ip to") {
		t.Fatalf("unpublish left rules:\n%s", rules)
	}
	ns.Run(t, func() error { return Unpublish(nil, "tapaaaa") }) // twice is fine
}
