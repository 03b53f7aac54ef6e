package supervisor

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/vmm/fake"
	"github.com/firegopher/firegopher/internal/vmm/firecracker/fctest"
)

func TestMain(m *testing.M) {
	fake.RunGuestIfRequested()
	runTemplateHelperIfRequested()
	serveFCIfRequested()
	code := m.Run()
	fctest.Cleanup()
	os.Exit(code)
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// testHost is a state directory whose VMs run on the fake backend (no VM, real lifecycle).
func testHost(t *testing.T) *Host {
	t.Helper()
	return &Host{
		StateDir: t.TempDir(), Log: discardLog(), Procs: &fakeProcs{},
		Backend: testHostBackend,
	}
}

func testHostBackend(spec.VMM) (vmm.Backend, error) { return fake.New(), nil }

// serveEnv makes this test binary a detached supervisor for the state directory it names.
const serveEnv = "SUPERVISOR_TEST_SERVE"

func agentExec(argv ...string) agent.Exec { return agent.Exec{Argv: argv} }

// testMachine is an app machine running cmd, with assets in h's cache.
func testMachine(t *testing.T, h *Host, cmd ...string) *spec.Machine {
	t.Helper()
	store, err := h.Store()
	if err != nil {
		t.Fatal(err)
	}
	vmlinux, err := store.PutBytes([]byte("not a kernel: the fake backend never boots it"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := store.PutJSON(assets.Kernel{Source: "test", Vmlinux: vmlinux})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs.ext4")
	initBin := filepath.Join(dir, "firegopher-init")
	os.WriteFile(rootfs, []byte("rootfs"), 0o444)
	os.WriteFile(initBin, []byte("init"), 0o755)
	return &spec.Machine{
		ID: spec.NewID(), Mode: spec.ModeApp, CPUs: 1, Memory: 128 * spec.MiB,
		Kernel: spec.AssetRef{Name: "default"}, Image: spec.AssetRef{Name: "default"},
		Process: spec.Process{Cmd: cmd},
		Assets:  &spec.Assets{Kernel: string(k), Rootfs: rootfs, Init: initBin},
	}
}
