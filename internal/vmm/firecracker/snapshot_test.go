package firecracker

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/vmm/firecracker/fctest"
	"github.com/firegopher/firegopher/internal/vmm/vmmtest"
)

// templateSpec is a template guest: our init (the control argument) with a base initrd
// that holds no config, and a root disk written by fill.
func templateSpec(t *testing.T, id string, fill func(t *testing.T, path string)) vmm.Spec {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "rootfs.ext4")
	fill(t, root)
	return vmm.Spec{
		ID: id, Dir: dir, CPUs: 1, MemoryMiB: 128,
		Kernel:     vmmtest.WriteFile(t, dir, "vmlinux", []byte(testKernel)),
		Initrd:     vmmtest.WriteFile(t, dir, "base.cpio", nil),
		Cmdline:    "console=ttyS0 panic=-1",
		Disks:      []vmm.Disk{{Path: root}},
		ConsoleLog: filepath.Join(dir, "console.log"),
	}
}

func plainRoot(t *testing.T, path string) {
	if err := os.WriteFile(path, []byte("root disk"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// awaitHello is the supervisor's parked callback: the template guest's first frame.
func awaitHello(ctx context.Context, c net.Conn) error {
	if dl, ok := ctx.Deadline(); ok {
		c.SetReadDeadline(dl)
	}
	f, err := agent.NewConn(c).Receive()
	if err != nil {
		return err
	}
	if f.Kind != agent.KindHello {
		return fmt.Errorf("first frame %s, want hello", f.Kind)
	}
	c.SetReadDeadline(time.Time{})
	return nil
}

// vmFrom is spec as another VM: its own directory, id and copy of the root disk.
func vmFrom(t *testing.T, spec vmm.Spec, id string) vmm.Spec {
	t.Helper()
	dir := t.TempDir()
	data, err := os.ReadFile(spec.Disks[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	spec.ID, spec.Dir, spec.ConsoleLog = id, dir, filepath.Join(dir, "console.log")
	spec.Disks = []vmm.Disk{{Path: vmmtest.WriteFile(t, dir, "rootfs.ext4", data)}}
	return spec
}

// runRestored drives a restored VM as the supervisor does: control connection, config
// with fresh entropy and clock, resume; then it collects the workload's output and exit.
func runRestored(t *testing.T, ctx context.Context, r vmm.Restored, spec vmm.Spec, cmd ...string) (string, int) {
	t.Helper()
	conn, err := r.Control(ctx)
	if err != nil {
		t.Fatalf("%s: control: %v%s", spec.ID, err, consoleTail(spec.ConsoleLog, LogPath(spec)))
	}
	defer conn.Close()
	ctl := agent.NewConn(conn)
	cfg := vmconfig.Config{
		Version: vmconfig.Version, Mode: vmconfig.ModeApp, Hostname: spec.ID,
		Root: vmconfig.Disk{FSType: "ext4"}, Cmd: cmd,
		Fresh: &vmconfig.Fresh{Entropy: make([]byte, 64), UnixNano: time.Now().UnixNano()},
	}
	data, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := ctl.Send(agent.KindConfig, agent.MainStream, data); err != nil {
		t.Fatal(err)
	}
	if err := r.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetReadDeadline(dl)
	}
	var out strings.Builder
	for {
		f, err := ctl.Receive()
		if err != nil {
			t.Fatalf("%s: control channel: %v%s", spec.ID, err, consoleTail(spec.ConsoleLog, LogPath(spec)))
		}
		switch f.Kind {
		case agent.KindStdout:
			out.Write(f.Payload)
		case agent.KindExit:
			var exit agent.Exit
			if err := f.Decode(&exit); err != nil {
				t.Fatal(err)
			}
			if exit.Error != "" {
				t.Errorf("%s: %s", spec.ID, exit.Error)
			}
			ctl.Send(agent.KindAck, agent.MainStream, nil)
			if err := r.Wait(); err != nil {
				t.Errorf("%s: %v", spec.ID, err)
			}
			return out.String(), exit.Code
		}
	}
}

// testTemplateContract: a template is built once, then two VMs restored from it at the
// same time each take their own config and report their own output and exit code.
func testTemplateContract(t *testing.T, b *Backend, fill func(*testing.T, string)) {
	b.Templates = true
	ctx := startCtx(t)
	spec := templateSpec(t, "template-t1", fill)
	if err := b.CanTemplate(spec); err != nil {
		t.Fatal(err)
	}
	tdir := t.TempDir()
	if err := b.CreateTemplate(ctx, spec, tdir, awaitHello); err != nil {
		t.Fatalf("create template: %v", err)
	}
	for _, name := range []string{TemplateStateFile, TemplateMemoryFile} {
		fi, err := os.Stat(filepath.Join(tdir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v, want 0644 (ours, readable by the jails)", name, fi.Mode().Perm())
		}
	}
	if left, _ := filepath.Glob(filepath.Join(tdir, ".placeholder-*")); len(left) > 0 {
		t.Errorf("placeholders left: %v", left)
	}
	// Nothing of the template VM's run but its logs: no sockets, links or FIFOs.
	ents, _ := os.ReadDir(tdir)
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasPrefix(e.Name(), "console.log") && e.Name() != TemplateStateFile && e.Name() != TemplateMemoryFile {
			t.Errorf("template directory: %s (%v) left", e.Name(), e.Type())
		}
	}
	var wg sync.WaitGroup
	for i, code := range []int{3, 5} {
		vm := vmFrom(t, spec, fmt.Sprintf("restored-%d", i))
		r, err := b.Restore(ctx, vm, tdir)
		if err != nil {
			t.Fatalf("restore %d: %v", i, err)
		}
		t.Cleanup(func() { r.Kill(); r.Wait() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, got := runRestored(t, ctx, r, vm, "sh", "-c", fmt.Sprintf("echo vm %d; exit %d", i, code))
			if !strings.Contains(out, fmt.Sprintf(" %d\n", i)) || got != code {
				t.Errorf("VM %d: output %q exit %d, want its own line and %d", i, out, got, code)
			}
			if c, _ := os.ReadFile(vm.ConsoleLog); !strings.Contains(string(c), "restored from a snapshot") {
				t.Errorf("VM %d booted instead of resuming:\n%s", i, c)
			}
		}()
	}
	wg.Wait()
}

func TestTemplateContract(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		testTemplateContract(t, backend(rel), plainRoot)
	})
}

func TestTemplateContractJailed(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		b, _ := jailedBackend(t, rel, "")
		testTemplateContract(t, b, rootfsTar)
	})
}

// TestTemplateOfAnotherRelease: a template loads only on the release that saved it; the
// failed load ends that Firecracker, and Restore says why.
func TestTemplateOfAnotherRelease(t *testing.T) {
	old, err := fctest.Build(fctest.Versions[0])
	if err != nil {
		t.Fatal(err)
	}
	cur, err := fctest.Build(fctest.Versions[1])
	if err != nil {
		t.Fatal(err)
	}
	ctx := startCtx(t)
	spec := templateSpec(t, "template-t2", plainRoot)
	tdir := t.TempDir()
	bOld, bCur := backend(old), backend(cur)
	bOld.Templates, bCur.Templates = true, true
	if err := bOld.CreateTemplate(ctx, spec, tdir, awaitHello); err != nil {
		t.Fatal(err)
	}
	vm := vmFrom(t, spec, "r1")
	_, err = bCur.Restore(ctx, vm, tdir)
	if err == nil || !strings.Contains(err.Error(), "snapshot version") {
		t.Fatalf("restore: %v, want a snapshot version error", err)
	}
	if ps := processesIn(t, vm.Dir); len(ps) > 0 {
		t.Errorf("processes left: %v", ps)
	}
}

func TestCanTemplate(t *testing.T) {
	spec := vmm.Spec{Disks: []vmm.Disk{{Path: "/r"}}}
	if err := (&Backend{}).CanTemplate(spec); err == nil {
		t.Errorf("templates are used without being enabled")
	}
	b := &Backend{Templates: true}
	if err := b.CanTemplate(spec); err != nil {
		t.Errorf("root disk only: %v", err)
	}
	for name, s := range map[string]vmm.Spec{
		"no control": {NoControl: true, Disks: spec.Disks},
		"no disk":    {},
		"a NIC":      {Disks: spec.Disks, NICs: []vmm.NIC{{TAP: "tap0"}}},
		"qcow2":      {Disks: []vmm.Disk{{Path: "/r", Format: "qcow2"}}},
	} {
		if err := b.CanTemplate(s); err == nil {
			t.Errorf("%s: can template", name)
		}
	}
}

func TestTemplateDevices(t *testing.T) {
	dir := t.TempDir()
	a := vmmtest.WriteFile(t, dir, "a", make([]byte, 10))
	c := vmmtest.WriteFile(t, dir, "c", make([]byte, 20))
	b := &Backend{}
	key := func(disks ...vmm.Disk) string { return b.TemplateDevices(vmm.Spec{Disks: disks}) }
	base := key(vmm.Disk{Path: a})
	for name, other := range map[string]string{
		"another size":  key(vmm.Disk{Path: c}),
		"read-only":     key(vmm.Disk{Path: a, ReadOnly: true}),
		"a second disk": key(vmm.Disk{Path: a}, vmm.Disk{Path: a}),
	} {
		if other == base {
			t.Errorf("%s: same device set %q", name, base)
		}
	}
	if again := key(vmm.Disk{Path: vmmtest.WriteFile(t, dir, "b", make([]byte, 10))}); again != base {
		t.Errorf("another disk of the same size: %q, want %q", again, base)
	}
}
