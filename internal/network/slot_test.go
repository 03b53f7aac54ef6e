package network

import (
	"crypto/md5"
	"fmt"
	"net/netip"
	"strconv"
	"testing"
)

// Vectors produced by the seed's own compute_tap_dev_map.sh arithmetic (bash + md5sum).
var seedVectors = []struct {
	run, machine, tap, host, guest string
	idx                            int
}{
	{"abc", "m1", "tap3b4c7392c2e9", "172.16.225.169", "172.16.225.170", 14442},
	{"abc", "m2", "tap7398d70ceb8d", "172.16.227.189", "172.16.227.190", 14575},
	{"run-42", "builder", "tap36bfd7b5810c", "172.16.193.69", "172.16.193.70", 12369},
	{"20240101-1", "ubuntu-22.04", "tap2a312a12c4e1", "172.16.254.129", "172.16.254.130", 16288},
}

func TestPreferredSlotSeedVectors(t *testing.T) {
	for _, v := range seedVectors {
		s := PreferredSlot(DefaultPool, v.run, v.machine)
		want := Slot{
			Index:  v.idx,
			TAP:    v.tap,
			Subnet: netip.PrefixFrom(netip.MustParseAddr(v.host), 30).Masked(),
			Host:   netip.MustParseAddr(v.host),
			Guest:  netip.MustParseAddr(v.guest),
		}
		if s != want {
			t.Errorf("PreferredSlot(%q, %q) = %+v, want %+v", v.run, v.machine, s, want)
		}
	}
}

// seedFormula is the seed's arithmetic written out independently of the package.
func seedFormula(run, machine string) (tap, host, guest string) {
	h := fmt.Sprintf("%x", md5.Sum([]byte(run+"-"+machine)))
	idx, _ := strconv.ParseInt(h[28:32], 16, 64)
	idx &= 0x3FFF
	third, fourth := idx/64, (idx%64)*4
	return "tap" + h[:12], fmt.Sprintf("172.16.%d.%d", third, fourth+1), fmt.Sprintf("172.16.%d.%d", third, fourth+2)
}

func TestPreferredSlotMatchesSeedFormula(t *testing.T) {
	for i := 0; i < 2000; i++ {
		run, machine := fmt.Sprintf("run%d", i/7), fmt.Sprintf("machine-%d", i)
		tap, host, guest := seedFormula(run, machine)
		s := PreferredSlot(DefaultPool, run, machine)
		if s.TAP != tap || s.Host.String() != host || s.Guest.String() != guest {
			t.Fatalf("(%q, %q): got %s %s %s, seed says %s %s %s", run, machine, s.TAP, s.Host, s.Guest, tap, host, guest)
		}
		if len(s.TAP) > 15 {
			t.Fatalf("TAP %q longer than IFNAMSIZ-1", s.TAP)
		}
	}
}

func TestPreferredSlotOtherPools(t *testing.T) {
	// Same index, other /16: only the first two octets move.
	s := PreferredSlot(netip.MustParsePrefix("172.19.0.0/16"), "abc", "m1")
	if s.Host.String() != "172.19.225.169" || s.Guest.String() != "172.19.225.170" || s.Index != 14442 {
		t.Errorf("172.19.0.0/16: got %+v", s)
	}
	// Smaller pool: index modulo its /30 count (1024 in a /20): 14442 % 1024 = 106.
	s = PreferredSlot(netip.MustParsePrefix("172.19.16.0/20"), "abc", "m1")
	if s.Index != 106 || s.Host.String() != "172.19.17.169" || s.Subnet.String() != "172.19.17.168/30" {
		t.Errorf("172.19.16.0/20: got %+v", s)
	}
	// Larger pool: the seed's 14 bits only reach the first /16's worth of slots.
	s = PreferredSlot(netip.MustParsePrefix("10.0.0.0/8"), "abc", "m1")
	if s.Host.String() != "10.0.225.169" {
		t.Errorf("10.0.0.0/8: got %+v", s)
	}
	if s.TAP != "tap3b4c7392c2e9" {
		t.Errorf("TAP depends on the pool: %q", s.TAP)
	}
	if mac := PreferredSlot(DefaultPool, "abc", "m1").GuestMAC().String(); mac != "06:00:ac:10:e1:aa" {
		t.Errorf("GuestMAC = %s", mac)
	}
}

func TestValidatePool(t *testing.T) {
	for _, bad := range []string{"172.16.1.0/16", "fd00::/64", "172.16.0.0/31"} {
		if err := ValidatePool(netip.MustParsePrefix(bad)); err == nil {
			t.Errorf("ValidatePool(%s) = nil", bad)
		}
	}
	if err := ValidatePool(netip.Prefix{}); err == nil {
		t.Error("ValidatePool(zero) = nil")
	}
	if s := PreferredSlot(netip.MustParsePrefix("172.16.1.0/16"), "a", "b"); s != (Slot{}) {
		t.Errorf("PreferredSlot on an invalid pool = %+v, want zero", s)
	}
}

func FuzzPreferredSlot(f *testing.F) {
	f.Add("abc", "m1", uint8(16))
	f.Add("", "", uint8(30))
	f.Add("run-1", "m-2", uint8(8))
	f.Fuzz(func(t *testing.T, run, machine string, bits uint8) {
		bits = bits%23 + 8 // /8 .. /30
		pool := netip.PrefixFrom(netip.MustParseAddr("10.128.0.0"), int(bits)).Masked()
		s := PreferredSlot(pool, run, machine)
		if s.Index < 0 || s.Index >= NumSlots(pool) {
			t.Fatalf("index %d outside [0,%d)", s.Index, NumSlots(pool))
		}
		if !pool.Contains(s.Host) || !pool.Contains(s.Guest) || s.Subnet.Bits() != 30 {
			t.Fatalf("slot %+v escapes pool %s", s, pool)
		}
		if s.Subnet.Masked() != s.Subnet || !s.Subnet.Contains(s.Host) || !s.Subnet.Contains(s.Guest) {
			t.Fatalf("subnet %s does not hold %s/%s", s.Subnet, s.Host, s.Guest)
		}
		if s.Host != s.Subnet.Addr().Next() || s.Guest != s.Host.Next() {
			t.Fatalf("want host .1 and guest .2 of %s, got %s %s", s.Subnet, s.Host, s.Guest)
		}
		if len(s.TAP) != 15 || ValidateIfName(s.TAP) != nil {
			t.Fatalf("TAP %q not a valid 15-byte name", s.TAP)
		}
		if s != PreferredSlot(pool, run, machine) {
			t.Fatal("not deterministic")
		}
	})
}
