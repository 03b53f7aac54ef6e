//go:build linux

package guest

import (
	"context"
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
