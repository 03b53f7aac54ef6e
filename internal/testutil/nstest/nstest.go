// Package nstest gives tests network namespaces of their own, so nothing a test does to
// interfaces, routes, firewall rules or sysctls can reach the host's namespace.
//
// Code runs inside a namespace on a fresh OS thread that is locked and never unlocked: when
// the goroutine ends, the Go runtime destroys that thread, so no thread of the test binary
// is ever handed back in a foreign namespace.
package nstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// NS is a named network namespace owned by one test.
type NS struct {
	Name string
	h    netns.NsHandle
}

// RequireRoot skips the test when not root: namespaces and netlink changes need it.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
}

// New creates a named namespace ("fgt-<prefix>-<random>", visible to `ip netns exec`),
// with lo up, and deletes it when the test ends.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	RequireRoot(t)
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("fgt-%s-%s", prefix, hex.EncodeToString(rnd[:]))
	var h netns.NsHandle
	err := onThread(func() error {
		// NewNamed unshares the calling thread into the new namespace; that thread dies
		// with this goroutine.
		var err error
		h, err = netns.NewNamed(name)
		if err != nil {
			return err
		}
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		if h.IsOpen() {
			h.Close()
		}
		_ = netns.DeleteNamed(name)
		t.Fatalf("create netns %s: %v", name, err)
	}
	ns := &NS{Name: name, h: h}
	t.Cleanup(func() {
		h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return ns
}

// Path is where the namespace is bound (as the CRI gives a pod's namespace in the OCI spec).
func (ns *NS) Path() string { return "/run/netns/" + ns.Name }

// Do runs fn inside the namespace and returns its error.
func (ns *NS) Do(fn func() error) error {
	return onThread(func() error {
		if err := netns.Set(ns.h); err != nil {
			return fmt.Errorf("enter netns %s: %w", ns.Name, err)
		}
		return fn()
	})
}

// Run is Do that fails the test on error.
func (ns *NS) Run(t testing.TB, fn func() error) {
	t.Helper()
	if err := ns.Do(fn); err != nil {
		t.Fatalf("in netns %s: %v", ns.Name, err)
	}
}

// Exec runs a command inside the namespace (`ip netns exec`) and returns its stdout.
func (ns *NS) Exec(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%v: %w: %s", args, err, errb.String())
	}
	return out.String(), nil
}

// MustExec is Exec that fails the test on error.
func (ns *NS) MustExec(t testing.TB, args ...string) string {
	t.Helper()
	out, err := ns.Exec(args...)
	if err != nil {
		t.Fatalf("netns %s: %v", ns.Name, err)
	}
	return out
}

// Veth links namespace a (interface aName) to namespace b (interface bName); both ends
// are up, without addresses. The pair dies with either namespace.
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	a.Run(t, func() error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: aName}, PeerName: bName, PeerNamespace: netlink.NsFd(b.h)}
		if err := netlink.LinkAdd(v); err != nil {
			return fmt.Errorf("veth %s/%s: %w", aName, bName, err)
		}
		l, err := netlink.LinkByName(aName)
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	b.Run(t, func() error {
		l, err := netlink.LinkByName(bName)
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
}

// onThread runs fn on a locked OS thread that is thrown away afterwards.
func onThread(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		done <- fn()
	}()
	return <-done
}

// DialContextIn returns a dial function whose sockets are made inside the `ip netns`
// namespace named name (a socket stays in the namespace it was made in, whichever thread
// uses it later), for clients of servers that listen only there.
func DialContextIn(name string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := onThread(func() error {
			h, err := netns.GetFromName(name)
			if err != nil {
				return fmt.Errorf("netns %s: %w", name, err)
			}
			defer h.Close()
			if err := netns.Set(h); err != nil {
				return fmt.Errorf("enter netns %s: %w", name, err)
			}
			var d net.Dialer
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
}

// PacketSocket opens a raw socket that receives every frame of ifname, in the calling
// thread's namespace (call it inside Do or Run).
func PacketSocket(ifname string) (int, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return -1, err
	}
	proto := uint16(syscall.ETH_P_ALL)<<8 | uint16(syscall.ETH_P_ALL)>>8 // network order
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(proto))
	if err != nil {
		return -1, err
	}
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

// ReadUDPFrame reads frames from a PacketSocket until an IPv4 UDP one, returning its source
// MAC and destination port (e.g. a guest's DHCP DISCOVER: port 67).
func ReadUDPFrame(fd int, timeout time.Duration) (string, int, error) {
	tv := syscall.NsecToTimeval(timeout.Nanoseconds())
	syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			return "", 0, err
		}
		f := buf[:n]
		if n < 14+20+8 || f[12] != 0x08 || f[13] != 0x00 || f[14+9] != syscall.IPPROTO_UDP {
			continue
		}
		ihl := int(f[14]&0x0f) * 4
		return net.HardwareAddr(f[6:12]).String(), int(f[14+ihl+2])<<8 | int(f[14+ihl+3]), nil
	}
	return "", 0, errors.New("timed out")
}
