// Package dhcp gives a VM its address over DHCP: an embedded responder per TAP (ServeDHCP)
// or, as the seed tool does, one dnsmasq per TAP run by the systemd template unit
// dnsmasq-tap@.service (UnitText, DnsmasqArgs).
//
// Either way exactly one lease exists per TAP: the guest address of the TAP's /30, with the
// host end as router.
package dhcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/firegopher/firegopher/internal/network"
)

// DefaultDNS is what guests are told to resolve with when Lease.DNS is nil.
var DefaultDNS = []netip.Addr{netip.MustParseAddr("1.1.1.1")}

// DefaultLeaseTime is used when Lease.Duration is zero.
const DefaultLeaseTime = time.Hour

// Lease is the one lease a TAP's responder hands out.
type Lease struct {
	Guest    netip.Addr       // the address offered
	Host     netip.Addr       // router and server identifier: the TAP's own address
	Bits     int              // prefix length of the subnet; 0 means /30
	DNS      []netip.Addr     // nil: DefaultDNS
	Duration time.Duration    // 0: DefaultLeaseTime
	Hostname string           // option 12, if set
	MTU      int              // option 26 (interface MTU), if > 0
	MAC      net.HardwareAddr // if set, other clients are ignored
	// Acked, if set, is called after each DHCPACK is sent: the guest has its address.
	Acked func()
}

// withDefaults fills in defaults and checks the lease; errors name the bad field.
func (l Lease) withDefaults() (Lease, error) {
	if l.Bits == 0 {
		l.Bits = network.SlotBits
	}
	if l.DNS == nil {
		l.DNS = DefaultDNS
	}
	if l.Duration == 0 {
		l.Duration = DefaultLeaseTime
	}
	switch {
	case !l.Guest.Is4():
		return l, fmt.Errorf("lease: guest %q: not an IPv4 address", l.Guest.String())
	case !l.Host.Is4():
		return l, fmt.Errorf("lease: host %q: not an IPv4 address", l.Host.String())
	case l.Bits < 1 || l.Bits > 30:
		return l, fmt.Errorf("lease: prefix length %d: want 1 to 30", l.Bits)
	case l.Guest == l.Host:
		return l, fmt.Errorf("lease: guest and host are both %s", l.Guest)
	case l.Duration < time.Minute || l.Duration > 365*24*time.Hour:
		return l, fmt.Errorf("lease: duration %s: want 1m to 1 year", l.Duration)
	case l.MTU != 0 && (l.MTU < 68 || l.MTU > 65535):
		return l, fmt.Errorf("lease: mtu %d: want 68 to 65535", l.MTU)
	}
	subnet := netip.PrefixFrom(l.Guest, l.Bits).Masked()
	if !subnet.Contains(l.Host) {
		return l, fmt.Errorf("lease: host %s is not in the guest's subnet %s", l.Host, subnet)
	}
	for _, a := range []netip.Addr{l.Guest, l.Host} {
		if a == subnet.Addr() || a == broadcast(subnet) {
			return l, fmt.Errorf("lease: %s is the network or broadcast address of %s", a, subnet)
		}
	}
	for _, d := range l.DNS {
		if !d.Is4() {
			return l, fmt.Errorf("lease: dns server %q: not an IPv4 address", d.String())
		}
	}
	if l.Hostname != "" && !validHostname(l.Hostname) {
		return l, fmt.Errorf("lease: hostname %q: want letters, digits, '-' and '.', at most 253 bytes", l.Hostname)
	}
	return l, nil
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// ServeDHCP answers DHCP on tap (bound to that interface by name, in the current network
// namespace) with exactly lease. It returns once the socket is listening; the responder runs
// until ctx is done or stop is called. stop waits for it to finish and may be called more
// than once. The TAP must exist; it need not have a VM attached yet. log (nil: discard)
// gets each exchange at Debug and real problems at Warn.
func ServeDHCP(ctx context.Context, log *slog.Logger, tap string, lease Lease) (stop func() error, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := network.ValidateIfName(tap); err != nil {
		return nil, fmt.Errorf("dhcp: %w", err)
	}
	l, err := lease.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("dhcp on %s: %w", tap, err)
	}
	if _, err := net.InterfaceByName(tap); err != nil {
		return nil, fmt.Errorf("dhcp on %s: %w", tap, err)
	}
	// 0.0.0.0:67 plus SO_BINDTODEVICE: one responder per TAP, many TAPs per host.
	conn, err := server4.NewIPv4UDPConn(tap, &net.UDPAddr{Port: dhcpv4.ServerPort})
	if err != nil {
		return nil, fmt.Errorf("dhcp on %s: listen: %w", tap, err)
	}
	r := &responder{tap: tap, lease: l, log: log.With("tap", tap, "guest", l.Guest)}
	srv, err := server4.NewServer(tap, nil, r.handle, server4.WithConn(conn))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("dhcp on %s: %w", tap, err)
	}
	var serveErr error
	done := make(chan struct{})
	go func() { serveErr = srv.Serve(); close(done) }()

	var once sync.Once
	var stopErr error
	stop = func() error {
		once.Do(func() {
			r.mu.Lock()
			r.closed = true // no reply is written after stop returns
			r.mu.Unlock()
			srv.Close()
			<-done
			if serveErr != nil && !errors.Is(serveErr, net.ErrClosed) {
				stopErr = fmt.Errorf("dhcp on %s: %w", tap, serveErr)
			}
			r.log.Debug("dhcp: responder stopped")
		})
		return stopErr
	}
	go func() {
		select {
		case <-ctx.Done():
			stop()
		case <-done:
			r.mu.Lock()
			closed := r.closed
			r.mu.Unlock()
			if !closed { // Serve ended by itself (a socket error); stop reports it too
				r.log.Warn("dhcp: responder failed", "error", serveErr)
			}
		}
	}()
	r.log.Debug("dhcp: responder listening", "host", l.Host, "bits", l.Bits, "dns", l.DNS)
	return stop, nil
}

type responder struct {
	tap    string
	lease  Lease
	log    *slog.Logger
	mu     sync.Mutex
	closed bool
}

func (r *responder) handle(conn net.PacketConn, peer net.Addr, req *dhcpv4.DHCPv4) {
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return
	}
	l := r.lease
	log := r.log.With("mac", req.ClientHWAddr.String(), "type", req.MessageType().String())
	if l.MAC != nil && !bytes.Equal(req.ClientHWAddr, l.MAC) {
		log.Debug("dhcp: ignoring other client", "want_mac", l.MAC.String())
		return
	}
	host, guest := net.IP(l.Host.AsSlice()), net.IP(l.Guest.AsSlice())
	var mods []dhcpv4.Modifier
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		mods = append(mods, dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer), dhcpv4.WithYourIP(guest))
	case dhcpv4.MessageTypeRequest:
		if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(host) {
			return // the client chose another server
		}
		want := req.RequestedIPAddress()
		if want == nil || want.IsUnspecified() {
			want = req.ClientIPAddr // renewing or rebinding
		}
		if !want.Equal(guest) {
			log.Warn("dhcp: NAK for an address that is not this TAP's", "requested", want)
			r.reply(conn, &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}, req, log,
				dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(host)))
			return
		}
		mods = append(mods, dhcpv4.WithMessageType(dhcpv4.MessageTypeAck), dhcpv4.WithYourIP(guest))
	case dhcpv4.MessageTypeInform:
		// The client has its address already: options only (RFC 2131 4.3.5).
		mods = append(mods, dhcpv4.WithMessageType(dhcpv4.MessageTypeAck))
	default:
		log.Debug("dhcp: ignored")
		return
	}
	mods = append(mods,
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(host)),
		dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(l.Bits, 32))),
		dhcpv4.WithOption(dhcpv4.OptRouter(host)),
		dhcpv4.WithOption(dhcpv4.OptBroadcastAddress(net.IP(broadcast(netip.PrefixFrom(l.Guest, l.Bits)).AsSlice()))),
	)
	if req.MessageType() != dhcpv4.MessageTypeInform {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(l.Duration)))
	}
	if len(l.DNS) > 0 {
		dns := make([]net.IP, len(l.DNS))
		for i, d := range l.DNS {
			dns[i] = d.AsSlice()
		}
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(dns...)))
	}
	if l.Hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(l.Hostname)))
	}
	if l.MTU > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, []byte{byte(l.MTU >> 8), byte(l.MTU)})))
	}
	// server4 already turned a peer without an address into the broadcast address, which
	// reaches a client that cannot receive unicast yet.
	r.reply(conn, peer, req, log, mods...)
}

func (r *responder) reply(conn net.PacketConn, to net.Addr, req *dhcpv4.DHCPv4, log *slog.Logger, mods ...dhcpv4.Modifier) {
	resp, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		log.Warn("dhcp: build reply", "error", err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	if _, err := conn.WriteTo(resp.ToBytes(), to); err != nil {
		log.Warn("dhcp: send reply", "to", to, "error", err)
		return
	}
	log.Debug("dhcp: replied", "reply", resp.MessageType(), "to", to, "yiaddr", resp.YourIPAddr)
	if resp.MessageType() == dhcpv4.MessageTypeAck && r.lease.Acked != nil {
		r.lease.Acked()
	}
}
