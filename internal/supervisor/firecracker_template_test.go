package supervisor

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
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
