package jail

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
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
	// Given back: root's again. A TAP or namespace that is gone is nothing to give back,
	// and is never made (TUNSETIFF as root would make the TAP).
	if err := ReturnTAP(n.Path, TAP); err != nil {
		t.Fatal(err)
	}
	if tap, err = in.LinkByName(TAP); err != nil || tap.(*netlink.Tuntap).Owner != 0 || tap.(*netlink.Tuntap).Group != 0 {
		t.Errorf("tap0 after ReturnTAP: %+v %v, want owned by root", tap, err)
	}
	if err := SetTAPOwner(n.Path, "nope0", owner); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("SetTAPOwner of a missing TAP: %v", err)
	}
	if err := ReturnTAP(n.Path, "nope0"); err != nil {
		t.Errorf("ReturnTAP of a missing TAP: %v", err)
	}
	if _, err := in.LinkByName("nope0"); err == nil {
		t.Error("nope0 was made")
	}
	if err := ReturnTAP(n.Path+"-gone", TAP); err != nil {
		t.Errorf("ReturnTAP in a missing namespace: %v", err)
	}
	if err := SetTAPOwner(n.Path, netnsVeth, owner); err == nil || !strings.Contains(err.Error(), "not a TAP") {
		t.Errorf("SetTAPOwner of a veth: %v", err)
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
