package spec

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Port is a published port: the host's HostPort (on HostIP, or on all of the host's
// addresses) forwarded by the kernel to the guest's GuestPort.
type Port struct {
	HostIP    netip.Addr `json:"host_ip,omitempty"`
	HostPort  uint16     `json:"host_port"`
	GuestPort uint16     `json:"guest_port"`
	Proto     string     `json:"proto"` // tcp or udp
}

// FieldPublish names the flag in errors.
const FieldPublish = "--publish"

// ParsePort reads docker's syntax: [IP:]HOSTPORT:GUESTPORT[/tcp|/udp].
func ParsePort(s string) (Port, error) {
	p := Port{Proto: "tcp"}
	spec, proto, hasProto := strings.Cut(s, "/")
	if hasProto {
		if proto != "tcp" && proto != "udp" {
			return p, fmt.Errorf("%s: %q: invalid proto %q, want tcp or udp", FieldPublish, s, proto)
		}
		p.Proto = proto
	}
	parts := strings.Split(spec, ":")
	switch len(parts) {
	case 2:
	case 3:
		ip, err := netip.ParseAddr(parts[0])
		if err != nil || !ip.Is4() {
			return p, fmt.Errorf("%s: %q: %q is not an IPv4 address", FieldPublish, s, parts[0])
		}
		p.HostIP, parts = ip, parts[1:]
	default:
		return p, fmt.Errorf("%s: %q: want [IP:]HOSTPORT:GUESTPORT[/tcp|/udp]", FieldPublish, s)
	}
	var err error
	if p.HostPort, err = parsePortNumber(parts[0]); err != nil {
		return p, fmt.Errorf("%s: %q: host port: %v", FieldPublish, s, err)
	}
	if p.GuestPort, err = parsePortNumber(parts[1]); err != nil {
		return p, fmt.Errorf("%s: %q: guest port: %v", FieldPublish, s, err)
	}
	return p, nil
}

func parsePortNumber(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port (1-65535)", s)
	}
	return uint16(n), nil
}

// ParsePorts reads every -p; one host port may be published once per protocol and address.
func ParsePorts(in []string) ([]Port, error) {
	var out []Port
	seen := map[string]bool{}
	for _, s := range in {
		p, err := ParsePort(s)
		if err != nil {
			return nil, err
		}
		key := fmt.Sprintf("%s:%d/%s", p.HostIP, p.HostPort, p.Proto)
		if seen[key] {
			return nil, fmt.Errorf("%s: %q: host port %d/%s published twice", FieldPublish, s, p.HostPort, p.Proto)
		}
		seen[key] = true
		out = append(out, p)
	}
	return out, nil
}
