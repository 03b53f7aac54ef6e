package firewall

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Port is one published port: traffic to the host's HostPort (on HostIP, or on any of the
// host's addresses when HostIP is unset) goes to the guest's GuestPort.
type Port struct {
	HostIP    netip.Addr
	HostPort  uint16
	GuestPort uint16
	Proto     string // "tcp" or "udp"
}

func (p Port) String() string {
	host := ""
	if p.HostIP.IsValid() {
		host = p.HostIP.String() + ":"
	}
	return fmt.Sprintf("%s%d:%d/%s", host, p.HostPort, p.GuestPort, p.Proto)
}

// publishPrefix starts the comment of every published-port rule; the TAP follows, so that
// a VM's rules are found (and removed, also by gc) by its TAP alone.
const publishPrefix = "firegopher: publish "

func publishComment(tap string, p Port) string {
	return fmt.Sprintf("%s%s %s", publishPrefix, tap, p)
}

// Chains of the published ports: destination NAT for traffic arriving at the host, and for
// traffic the host itself sends to its own addresses (curl localhost:8080).
const (
	chainPublishIn    = "publish-prerouting"
	chainPublishLocal = "publish-output"
)

// ErrPortInUse means a published port is taken, by another VM or by a host process.
var ErrPortInUse = errors.New("port already in use")

// Publish makes the kernel forward each port to guest: DNAT rules in our table, tagged with
// tap, and route_localnet on tap so that the host's own loopback connections can go there.
// A port another VM publishes, or a host process listens on, is refused before anything
// is changed. Call after Prepare and AddTAP. log: nil discards.
func Publish(log *slog.Logger, tap string, guest netip.Addr, ports []Port) error {
	log = orDiscard(log)
	if len(ports) == 0 {
		return nil
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("firewall: nftables: %w", err)
	}
	st, err := readState(c)
	if err != nil {
		return err
	}
	in, local := st.chains[chainPublishIn], st.chains[chainPublishLocal]
	if in == nil || local == nil {
		return fmt.Errorf("firewall: table inet %s is not prepared (run Prepare first)", TableName)
	}
	for _, p := range ports {
		if other := publishedBy(st, p); other != "" {
			return fmt.Errorf("publish %s: %w by the VM on %s", p, ErrPortInUse, other)
		}
		if err := hostPortFree(p); err != nil {
			return fmt.Errorf("publish %s: %w on the host (%v)", p, ErrPortInUse, err)
		}
	}
	for _, p := range ports {
		for _, ch := range []*nftables.Chain{in, local} {
			c.AddRule(ruleSpec{publishComment(tap, p), dnatExprs(guest, p)}.rule(ch))
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall: publish on %s: %w", tap, err)
	}
	// Packets from 127.0.0.0/8 may leave through this TAP once DNATed (and masqueraded).
	if err := writeSysctl("net.ipv4.conf."+tap+".route_localnet", "1"); err != nil {
		Unpublish(log, tap)
		return fmt.Errorf("firewall: %w", err)
	}
	log.Debug("firewall: ports published", "tap", tap, "guest", guest, "ports", fmt.Sprint(ports))
	return nil
}

// Unpublish removes tap's published ports. None is not an error. log: nil discards.
func Unpublish(log *slog.Logger, tap string) error {
	log = orDiscard(log)
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("firewall: nftables: %w", err)
	}
	st, err := readState(c)
	if err != nil || !st.table {
		return err
	}
	n := 0
	for _, name := range []string{chainPublishIn, chainPublishLocal} {
		for _, r := range st.rules[name] {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			if strings.HasPrefix(comment, publishPrefix+tap+" ") {
				if err := c.DelRule(r); err != nil {
					return fmt.Errorf("firewall: unpublish %s: %w", tap, err)
				}
				n++
			}
		}
	}
	if n == 0 {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall: unpublish %s: %w", tap, err)
	}
	log.Debug("firewall: ports unpublished", "tap", tap)
	return nil
}

// publishedBy names the TAP whose VM publishes p (same port and protocol on an overlapping
// host address), or "".
func publishedBy(st state, p Port) string {
	for _, r := range st.rules[chainPublishIn] {
		comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		rest, ok := strings.CutPrefix(comment, publishPrefix)
		if !ok {
			continue
		}
		tap, spec, _ := strings.Cut(rest, " ")
		host, proto, _ := strings.Cut(spec, "/")
		if proto != p.Proto {
			continue
		}
		parts := strings.Split(host, ":")
		if len(parts) < 2 || parts[len(parts)-2] != fmt.Sprint(p.HostPort) {
			continue
		}
		otherIP := ""
		if len(parts) == 3 {
			otherIP = parts[0]
		}
		if otherIP == "" || !p.HostIP.IsValid() || otherIP == p.HostIP.String() {
			return tap
		}
	}
	return ""
}

// hostPortFree fails when a host process has the port.
func hostPortFree(p Port) error {
	addr := net.JoinHostPort("", fmt.Sprint(p.HostPort))
	if p.HostIP.IsValid() {
		addr = net.JoinHostPort(p.HostIP.String(), fmt.Sprint(p.HostPort))
	}
	if p.Proto == "udp" {
		c, err := net.ListenPacket("udp4", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		return err
	}
	return l.Close()
}

// dnatExprs: [ip daddr HostIP | fib daddr type local] l4proto dport HostPort → guest:GuestPort.
func dnatExprs(guest netip.Addr, p Port) []expr.Any {
	proto := byte(unix.IPPROTO_TCP)
	if p.Proto == "udp" {
		proto = unix.IPPROTO_UDP
	}
	var dst []expr.Any
	if p.HostIP.IsValid() {
		dst = ipField(16, p.HostIP)
	} else {
		dst = []expr.Any{
			&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		}
	}
	return cat(
		nfproto(unix.NFPROTO_IPV4),
		dst,
		l4proto(proto),
		[]expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p.HostPort)},
			&expr.Immediate{Register: 1, Data: guest.AsSlice()},
			&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(p.GuestPort)},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2},
		})
}
