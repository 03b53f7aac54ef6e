package supervisor

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/vmm/firecracker"
	"github.com/firegopher/firegopher/internal/vmm/firecracker/fctest"
)

// TestFirecrackerRunFromTemplate: on jailed Firecracker (each release's doubles), the
// first run with snapshots builds the template, and both runs restore from it: each takes
// its own config over the control channel and reports its own output and exit code.
func TestFirecrackerRunFromTemplate(t *testing.T) {
	forEachFCRelease(t, func(t *testing.T, rel fctest.Release) {
		var logs lockedBuffer
		log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		h, jr := newFCHost(t, fcHostConfig(t, rel), log)
		b, _ := h.Backend(spec.VMM{})
		b.(*firecracker.Backend).Templates = true
		for i, want := range []struct {
			out  string
			code int
		}{{"one\n", 3}, {"two\n", 5}} {
			m := fcMachine(t, h, fcKernel, "sh", "-c", fmt.Sprintf("echo %s; exit %d", strings.TrimSpace(want.out), want.code))
			m.VMM.Snapshot = true
			c, err := h.Create(m, false)
			if err != nil {
				t.Fatal(err)
			}
			var stdout bytes.Buffer
			exit, err := c.Run(context.Background(), Stdio{Stdout: &stdout})
			if err != nil {
				t.Fatalf("run %d: %v", i, err)
			}
			if exit.Code != want.code || stdout.String() != want.out {
				t.Errorf("run %d: exit %+v stdout %q, want %d %q\n%s", i, exit, stdout.String(), want.code, want.out, logs.String())
			}
			assertNoJail(t, h, jr, m.ID)
		}
		l := logs.String()
		if n := strings.Count(l, "snapshot template built"); n != 1 {
			t.Errorf("template built %d times, want once", n)
		}
		if n := strings.Count(l, "msg=\"vmm restored\""); n != 2 {
			t.Errorf("%d runs restored, want 2:\n%s", n, l)
		}
		if strings.Contains(l, "cold boot") {
			t.Errorf("a run booted cold:\n%s", l)
		}
	})
}

// TestFirecrackerBadTemplateBootsCold: a template Firecracker refuses to load (its memory
// file is not the state's) ends that Firecracker and its jail; the run boots cold and
// still gives its output and exit code.
func TestFirecrackerBadTemplateBootsCold(t *testing.T) {
	forEachFCRelease(t, func(t *testing.T, rel fctest.Release) {
		var logs lockedBuffer
		log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		cfg := fcHostConfig(t, rel)
		h, jr := newFCHost(t, cfg, log)
		b, _ := h.Backend(spec.VMM{})
		b.(*firecracker.Backend).Templates = true
		run := func(cmd string) (string, int) {
			m := fcMachine(t, h, fcKernel, "sh", "-c", cmd)
			m.VMM.Snapshot = true
			c, err := h.Create(m, false)
			if err != nil {
				t.Fatal(err)
			}
			var stdout bytes.Buffer
			exit, err := c.Run(context.Background(), Stdio{Stdout: &stdout})
			if err != nil {
				t.Fatal(err)
			}
			assertNoJail(t, h, jr, m.ID)
			return stdout.String(), exit.Code
		}
		if out, code := run("echo one; exit 3"); out != "one\n" || code != 3 {
			t.Fatalf("first run: %q %d", out, code)
		}
		var mems []string
		filepath.WalkDir(cfg.StateDir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Name() == firecracker.TemplateMemoryFile && strings.Contains(p, "/templates/") {
				mems = append(mems, p)
			}
			return nil
		})
		if len(mems) != 1 {
			t.Fatalf("template memory files %v, want one", mems)
		}
		if err := os.WriteFile(mems[0], []byte("not this state's memory\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, code := run("echo two; exit 5"); out != "two\n" || code != 5 {
			t.Fatalf("second run: %q %d\n%s", out, code, logs.String())
		}
		if l := logs.String(); !strings.Contains(l, "restore from snapshot template failed: cold boot") {
			t.Errorf("no cold boot after the failed restore:\n%s", l)
		}
	})
}
