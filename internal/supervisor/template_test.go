package supervisor

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/firegopher/firegopher/internal/flock"
)

func testKey() TemplateKey {
	return TemplateKey{Backend: "qemu-tcg QEMU 7.2 layout", Kernel: "sha256:k", Initrd: "i", Cmdline: "c", CPUs: 1, MemoryMiB: 512, RootSize: 1 << 30}
}

func TestTemplateKeyEveryFieldCounts(t *testing.T) {
	base := testKey()
	v := reflect.ValueOf(&base).Elem()
	for i := 0; i < v.NumField(); i++ {
		k := base
		f := reflect.ValueOf(&k).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(f.String() + "x")
		case reflect.Int, reflect.Int64:
			f.SetInt(f.Int() + 1)
		default:
			t.Fatalf("field %s: kind %s not covered", v.Type().Field(i).Name, f.Kind())
		}
		if k.Name() == base.Name() {
			t.Errorf("changing %s keeps the template name", v.Type().Field(i).Name)
		}
		if d := base.Diff(k); len(d) != 1 {
			t.Errorf("changing %s: diff %v, want that one field", v.Type().Field(i).Name, d)
		}
	}
	if d := base.Diff(base); d != nil {
		t.Errorf("diff of equal keys: %v", d)
	}
}

// fillTemplate is a create that writes a state file and counts its calls.
func fillTemplate(calls *atomic.Int32) func(context.Context, string) error {
	return func(_ context.Context, dir string) error {
		calls.Add(1)
		return os.WriteFile(filepath.Join(dir, "state.mig"), []byte("state"), 0o644)
	}
}

func TestEnsureBuildsOnceAmongRacingGoroutines(t *testing.T) {
	tpl := &Templates{Dir: t.TempDir(), Log: discardLog()}
	var calls atomic.Int32
	var wg sync.WaitGroup
	dirs := make([]string, 8)
	errs := make([]error, 8)
	start := make(chan struct{})
	for i := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			dirs[i], _, errs[i] = tpl.Ensure(context.Background(), testKey(), fillTemplate(&calls))
		}()
	}
	close(start)
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d builds, want 1", n)
	}
	for i := range dirs {
		if errs[i] != nil || dirs[i] != tpl.Path(testKey()) {
			t.Fatalf("caller %d: %q %v", i, dirs[i], errs[i])
		}
	}
	if b, err := os.ReadFile(filepath.Join(dirs[0], "state.mig")); err != nil || string(b) != "state" {
		t.Fatalf("state: %q %v", b, err)
	}
}

const templateHelperEnv = "FIREGOPHER_TEST_TEMPLATE_DIR"

// runTemplateHelperIfRequested is one of the racing processes: it ensures testKey's template
// in the directory named by the environment, and records a build by appending to builds.
func runTemplateHelperIfRequested() {
	dir := os.Getenv(templateHelperEnv)
	if dir == "" {
		return
	}
	tpl := &Templates{Dir: dir, Log: discardLog()}
	_, _, err := tpl.Ensure(context.Background(), testKey(), func(_ context.Context, tmp string) error {
		f, err := os.OpenFile(filepath.Join(dir, "builds"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		f.WriteString("built\n")
		f.Close()
		return os.WriteFile(filepath.Join(tmp, "state.mig"), []byte("state"), 0o644)
	})
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	os.Exit(0)
}

func TestEnsureBuildsOnceAmongRacingProcesses(t *testing.T) {
	dir := t.TempDir()
	var cmds []*exec.Cmd
	for i := 0; i < 8; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), templateHelperEnv+"="+dir)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("helper: %v", err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "builds")); string(b) != "built\n" {
		t.Fatalf("builds: %q, want exactly one", b)
	}
	if (&Templates{Dir: dir}).Lookup(testKey()) == "" {
		t.Fatal("no template after the race")
	}
}

func TestEnsureLeavesNoHalfTemplate(t *testing.T) {
	tpl := &Templates{Dir: t.TempDir(), Log: discardLog()}
	k := testKey()
	// A creator killed midway: its scratch, with part of a state, and no key.
	crashed := filepath.Join(tpl.Dir, templateTmp+k.Name()+"-123")
	os.MkdirAll(crashed, 0o755)
	os.WriteFile(filepath.Join(crashed, "state.mig"), []byte("sta"), 0o644)
	if tpl.Lookup(k) != "" {
		t.Fatal("scratch taken for a template")
	}
	if l, _ := tpl.List(); len(l) != 0 {
		t.Fatalf("list shows scratch: %v", l)
	}
	boom := errors.New("boom")
	if _, _, err := tpl.Ensure(context.Background(), k, func(context.Context, string) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("failed build: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(tpl.Dir, "*"+k.Name()+"*")); !slices.Equal(left, []string{filepath.Join(tpl.Dir, k.Name()+templateLock)}) {
		t.Fatalf("a failed build left %v", left)
	}
	var calls atomic.Int32
	dir, created, err := tpl.Ensure(context.Background(), k, fillTemplate(&calls))
	if err != nil || !created || tpl.Lookup(k) != dir {
		t.Fatalf("build after failures: %q %v %v", dir, created, err)
	}
	if _, created, _ := tpl.Ensure(context.Background(), k, fillTemplate(&calls)); created || calls.Load() != 1 {
		t.Fatalf("second ensure built again")
	}
}

func TestTemplatesGC(t *testing.T) {
	tpl := &Templates{Dir: t.TempDir(), Log: discardLog()}
	var calls atomic.Int32
	keep, drop := testKey(), testKey()
	drop.CPUs = 2
	for _, k := range []TemplateKey{keep, drop} {
		if _, _, err := tpl.Ensure(context.Background(), k, fillTemplate(&calls)); err != nil {
			t.Fatal(err)
		}
	}
	scratch := filepath.Join(tpl.Dir, templateTmp+"0123456789abcdef-1")
	os.MkdirAll(scratch, 0o755)
	// A build in progress: its scratch is locked, and stays.
	busy := testKey()
	busy.MemoryMiB = 1024
	building := filepath.Join(tpl.Dir, templateTmp+busy.Name()+"-2")
	os.MkdirAll(building, 0o755)
	lock, err := os.Create(filepath.Join(tpl.Dir, busy.Name()+templateLock))
	if err != nil {
		t.Fatal(err)
	}
	lock.Close()
	held, err := lockFile(filepath.Join(tpl.Dir, busy.Name()+templateLock))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	removed, err := tpl.GC(func(t Template) bool { return t.Key == keep })
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	want := []string{scratch, tpl.Path(drop)}
	slices.Sort(want)
	if !slices.Equal(removed, want) {
		t.Fatalf("removed %v, want %v", removed, want)
	}
	if tpl.Lookup(keep) == "" {
		t.Fatal("kept template gone")
	}
	if _, err := os.Stat(building); err != nil {
		t.Fatalf("a build in progress lost its scratch: %v", err)
	}
	list, _ := tpl.List()
	if len(list) != 1 || list[0].Key != keep || list[0].Size == 0 {
		t.Fatalf("list: %+v", list)
	}
}

func lockFile(path string) (*os.File, error) { return flock.TryLock(path) }

func TestMachineIDPerVM(t *testing.T) {
	a, b := MachineID("vm-a"), MachineID("vm-b")
	if a == b || len(a) != 32 || a != MachineID("vm-a") {
		t.Fatalf("machine ids %q %q", a, b)
	}
}
