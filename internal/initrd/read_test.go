package initrd

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/firegopher/firegopher/internal/vmconfig"
)

func TestReadConfigFindsTheLastLayer(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.cpio")
	err := writeFile(base, Layer{
		{Path: "/init", Mode: 0o755, Data: []byte("#!/bin/sh\n")},
		{Path: vmconfig.Path, Mode: 0o600, Data: []byte(`{"stale": true}`)},
	}.Write)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &vmconfig.Config{Version: vmconfig.Version, Mode: vmconfig.ModeApp, Hostname: "h",
		Root: vmconfig.Disk{Serial: "root", FSType: "ext4"}, Cmd: []string{"true"}}
	vmInitrd := filepath.Join(dir, "vm.cpio")
	if err := ForVM(vmInitrd, base, cfg); err != nil {
		t.Fatal(err)
	}
	got, err := ReadConfig(vmInitrd)
	if err != nil {
		t.Fatal(err)
	}
	if got.Hostname != "h" || got.Cmd[0] != "true" {
		t.Fatalf("got %+v", got)
	}
	if data, err := ReadFile(vmInitrd, "/init"); err != nil || string(data) != "#!/bin/sh\n" {
		t.Fatalf("init: %q %v", data, err)
	}
	if _, err := ReadFile(vmInitrd, "/nope"); err == nil {
		t.Fatal("a missing file must be an error")
	}
	os.Remove(vmInitrd)
}
