package network

import (
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// DefaultPool is the seed tool's address pool.
var DefaultPool = netip.MustParsePrefix("172.16.0.0/16")

// SlotBits is the prefix length of one VM's subnet: host .1, guest .2.
const SlotBits = 30

// seedIndexMask keeps the 14 bits of the seed's index (2^14 /30s fill a /16).
const seedIndexMask = 0x3FFF

// Slot is one VM's /30: the TAP that carries it and the two usable addresses.
type Slot struct {
	Index  int          // position of the /30 in its pool
	TAP    string       // host-side TAP device name, at most 15 bytes
	Subnet netip.Prefix // the /30
	Host   netip.Addr   // the host end of the TAP: gateway, DHCP server
	Guest  netip.Addr   // the VM's address
}

// HostPrefix is the address to put on the TAP (host/30).
func (s Slot) HostPrefix() netip.Prefix { return netip.PrefixFrom(s.Host, SlotBits) }

// GuestPrefix is the VM's address with its mask (guest/30).
func (s Slot) GuestPrefix() netip.Prefix { return netip.PrefixFrom(s.Guest, SlotBits) }

// GuestMAC is a stable, locally administered MAC for the VM's NIC: 06:00 then the guest's
// IPv4 bytes (Firecracker's documented convention), so it never collides across slots.
func (s Slot) GuestMAC() net.HardwareAddr {
	a := s.Guest.As4()
	return net.HardwareAddr{0x06, 0x00, a[0], a[1], a[2], a[3]}
}

// ValidatePool checks pool is an IPv4 network address with room for at least one /30.
func ValidatePool(pool netip.Prefix) error {
	if !pool.IsValid() {
		return fmt.Errorf("pool %q: not a CIDR prefix", pool.String())
	}
	if !pool.Addr().Is4() {
		return fmt.Errorf("pool %s: not IPv4", pool)
	}
	if pool.Bits() > SlotBits {
		return fmt.Errorf("pool %s: smaller than one /%d", pool, SlotBits)
	}
	if pool.Masked() != pool {
		return fmt.Errorf("pool %s: host bits set (did you mean %s?)", pool, pool.Masked())
	}
	return nil
}

// NumSlots is how many /30s pool holds.
func NumSlots(pool netip.Prefix) int { return 1 << (SlotBits - pool.Bits()) }

// seedHash is the seed's md5("<run_id>-<machine>") in hex.
func seedHash(runID, machine string) string {
	sum := md5.Sum([]byte(runID + "-" + machine))
	return hex.EncodeToString(sum[:])
}

// PreferredSlot is the slot the seed tool (compute_tap_dev_map.sh) would pick, generalised
// to any pool: idx = int(h[-4:], 16) & 0x3FFF, taken modulo the pool's /30 count. For
// 172.16.0.0/16 that is exactly the seed's 172.16.(idx/64).((idx%64)*4+1). The allocator
// probes onward from here when the slot is taken. pool must pass ValidatePool; for an
// invalid pool the zero Slot is returned.
func PreferredSlot(pool netip.Prefix, runID, machine string) Slot {
	if ValidatePool(pool) != nil {
		return Slot{}
	}
	h := seedHash(runID, machine)
	idx, _ := strconv.ParseUint(h[len(h)-4:], 16, 16) // always 4 hex digits
	s := slotAt(pool, int(idx&seedIndexMask)%NumSlots(pool))
	s.TAP = "tap" + h[:12]
	return s
}

// slotAt is the index'th /30 of pool (TAP left empty).
func slotAt(pool netip.Prefix, index int) Slot {
	b := pool.Addr().As4()
	base := binary.BigEndian.Uint32(b[:]) + 4*uint32(index)
	host, guest := u32Addr(base+1), u32Addr(base+2)
	return Slot{
		Index:  index,
		Subnet: netip.PrefixFrom(u32Addr(base), SlotBits),
		Host:   host,
		Guest:  guest,
	}
}

func u32Addr(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}
