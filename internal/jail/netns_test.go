package jail

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/firegopher/firegopher/internal/testutil/nstest"
)

func randomName(t *testing.T, prefix string) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b[:])
}

// TestNetNS builds a VM's namespace from inside a namespace of the test's own (where the
// veth's outer end lands), never in the host's.
func TestNetNS(t *testing.T) {
	host := nstest.New(t, "jail")
	name, hostIf := randomName(t, "fgt-vm-"), randomName(t, "fgt")
	var n *NetNS
	host.Run(t, func() error {
		var err error
		n, err = CreateNetNS(name, hostIf)
		return err
	})
	t.Cleanup(func() { host.Do(n.Remove) })
	if n.Path != NetNSDir+"/"+name {
		t.Errorf("path %s", n.Path)
	}
	host.Run(t, func() error {
		l, err := netlink.LinkByName(hostIf)
		if err != nil {
			return err
		}
		if l.Type() != "veth" || l.Attrs().Flags&1 == 0 {
			t.Errorf("%s: %s, flags %v: want an up veth", hostIf, l.Type(), l.Attrs().Flags)
		}
		return nil
	})
	if _, err := netlink.LinkByName(hostIf); err == nil {
		t.Fatalf("%s landed in the host's namespace", hostIf)
	}
	owner := Owner{UID: 1950000123, GID: 1950000124}
	if err := SetTAPOwner(n.Path, TAP, owner); err != nil {
		t.Fatal(err)
	}
	h, err := netns.GetFromPath(n.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	in, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	tap, err := in.LinkByName(TAP)
	if err != nil {
		t.Fatal(err)
	}
	tt, ok := tap.(*netlink.Tuntap)
	if !ok || tt.Mode != netlink.TUNTAP_MODE_TAP || tt.NonPersist || tt.Owner != uint32(owner.UID) || tt.Group != uint32(owner.GID) {
		t.Errorf("tap0: %+v, want a persistent TAP owned by %d:%d", tap, owner.UID, owner.GID)
	}
	br, err := in.LinkByName(netnsBridge)
	if err != nil {
		t.Fatal(err)
	}
	for _, ifname := range []string{TAP, netnsVeth} {
		l, err := in.LinkByName(ifname)
		if err != nil || l.Attrs().MasterIndex != br.Attrs().Index {
			t.Errorf("%s not in %s: %v", ifname, netnsBridge, err)
		}
	}
	host.Run(t, n.Remove)
	if _, err := os.Stat(n.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace left: %v", err)
	}
	host.Run(t, func() error {
		if _, err := netlink.LinkByName(hostIf); err == nil {
			t.Errorf("%s left", hostIf)
		}
		return nil
	})
	host.Run(t, n.Remove) // again: nothing to do
}
