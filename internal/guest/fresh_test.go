//go:build linux

package guest

import (
	"context"
	"golang.org/x/sys/unix"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/agent"
)

func TestNICByMACFindsTheInterfaceCaseInsensitively(t *testing.T) {
	sys := t.TempDir()
	for name, mac := range map[string]string{"lo": "00:00:00:00:00:00", "eth0": "02:fc:00:00:00:07"} {
		os.MkdirAll(filepath.Join(sys, "class/net", name), 0o755)
		os.WriteFile(filepath.Join(sys, "class/net", name, "address"), []byte(mac+"\n"), 0o644)
	}
	d := Devices{SysDir: sys, DevDir: t.TempDir(), Poll: time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if got, err := d.NICByMAC(ctx, "02:FC:00:00:00:07"); err != nil || got != "eth0" {
		t.Fatalf("got %q %v, want eth0", got, err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if _, err := d.NICByMAC(ctx2, "02:fc:00:00:00:08"); err == nil || !strings.Contains(err.Error(), "02:fc:00:00:00:08") {
		t.Fatalf("missing NIC: %v, want an error naming the MAC", err)
	}
}

func TestWriteMachineIDReplacesASymlink(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.Symlink("/run/machine-id", filepath.Join(root, "etc/machine-id"))
	id := "0123456789abcdef0123456789abcdef"
	if err := WriteMachineID(root, id); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc/machine-id")); err != nil || string(b) != id+"\n" {
		t.Fatalf("machine-id: %q %v", b, err)
	}
	if err := WriteMachineID(t.TempDir(), ""); err != nil {
		t.Fatalf("empty id: %v, want nothing done", err)
	}
}

func TestReceiveConfigWantsAConfigFrame(t *testing.T) {
	send := func(kind agent.Kind, payload string) *os.File {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		agent.NewConn(w).Send(kind, agent.MainStream, []byte(payload))
		w.Close()
		t.Cleanup(func() { r.Close() })
		return r
	}
	cfg, err := ReceiveConfig(send(agent.KindConfig, `{"version":1,"mode":"app","root":{"serial":"root","fstype":"ext4"},"cmd":["true"],"hostname":"a"}`))
	if err != nil || cfg.Hostname != "a" {
		t.Fatalf("config: %+v %v", cfg, err)
	}
	if _, err := ReceiveConfig(send(agent.KindSignal, "x")); err == nil || !strings.Contains(err.Error(), "signal") {
		t.Fatalf("signal frame: %v, want an error naming it", err)
	}
}

func TestAwaitConfigReconnectsAfterTheRestoreResetTheChannel(t *testing.T) {
	config := `{"version":1,"mode":"app","root":{"serial":"root","fstype":"ext4"},"cmd":["true"],"hostname":"restored"}`
	pair := func() (guestEnd, hostEnd *os.File) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		guestEnd, hostEnd = os.NewFile(uintptr(fds[0]), "guest"), os.NewFile(uintptr(fds[1]), "host")
		t.Cleanup(func() { guestEnd.Close(); hostEnd.Close() })
		return guestEnd, hostEnd
	}
	// The template's connection: the restore resets it before any config arrives.
	parked, parkedHost := pair()
	parkedHost.Close()
	fresh, freshHost := pair()
	agent.NewConn(freshHost).Send(agent.KindConfig, agent.MainStream, []byte(config))
	reconnects := 0
	cfg, ctl, err := AwaitConfig(parked, func() (*os.File, error) { reconnects++; return fresh, nil })
	if err != nil || cfg.Hostname != "restored" || ctl != fresh || reconnects != 1 {
		t.Fatalf("after a reset: %+v %v, reconnects %d, kept the new channel %v", cfg, err, reconnects, ctl == fresh)
	}

	// A channel that survives the restore (QEMU's virtio-serial) is read as it is.
	kept, keptHost := pair()
	agent.NewConn(keptHost).Send(agent.KindConfig, agent.MainStream, []byte(config))
	cfg, ctl, err = AwaitConfig(kept, func() (*os.File, error) { t.Fatal("reconnected a live channel"); return nil, nil })
	if err != nil || ctl != kept || cfg.Hostname != "restored" {
		t.Fatalf("live channel: %+v %v", cfg, err)
	}

	// A wrong frame is an error, not a reason to reconnect.
	wrong, wrongHost := pair()
	agent.NewConn(wrongHost).Send(agent.KindSignal, agent.MainStream, []byte("x"))
	if _, _, err := AwaitConfig(wrong, func() (*os.File, error) { t.Fatal("reconnected after a wrong frame"); return nil, nil }); err == nil {
		t.Fatal("a signal frame was taken for the config")
	}
}
