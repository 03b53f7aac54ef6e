package firecracker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/firecracker-microvm/firecracker-go-sdk/client/models"
	"github.com/firecracker-microvm/firecracker-go-sdk/client/operations"

	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/vmm/firecracker/fctest"
)

// assertDrained: Firecracker's log and a metrics line reached the files beside the console
// log, and no FIFO is left.
func assertDrained(t *testing.T, spec vmm.Spec, fifoDir string) {
	t.Helper()
	log, err := os.ReadFile(LogPath(spec))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`request on "/actions"`, "Successfully started microvm", "Vmm is stopping."} {
		if !bytes.Contains(log, []byte(want)) {
			t.Errorf("Firecracker's log has no %q:\n%s", want, log)
		}
	}
	if console, _ := os.ReadFile(spec.ConsoleLog); bytes.Contains(console, []byte(`request on "/actions"`)) {
		t.Errorf("after PUT /logger Firecracker's log goes to the console still:\n%s", console)
	}
	metrics, err := os.ReadFile(MetricsPath(spec))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(metrics))
	lines := 0
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil || m["utc_timestamp_ms"] == nil {
			t.Errorf("metrics line %q: %v, want a JSON object with utc_timestamp_ms", sc.Text(), err)
		}
		lines++
	}
	if lines == 0 {
		t.Error("no metrics line: Firecracker writes one when it stops")
	}
	for _, name := range []string{LogFIFOName, MetricsFIFOName} {
		if _, err := os.Lstat(filepath.Join(fifoDir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left (%v)", name, err)
		}
	}
}

func TestLoggerAndMetricsDrained(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		t.Run("unjailed", func(t *testing.T) {
			spec := testSpec(t, fctest.RebootArg)
			inst, err := backend(rel).Start(startCtx(t), spec)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{LogFIFOName, MetricsFIFOName} {
				if fi, err := os.Stat(filepath.Join(spec.Dir, name)); err == nil && fi.Mode()&os.ModeNamedPipe == 0 {
					t.Errorf("%s is %v, want a FIFO", name, fi.Mode())
				}
			}
			if err := inst.Wait(); err != nil {
				t.Fatal(err)
			}
			assertDrained(t, spec, spec.Dir)
		})
		t.Run("jailed", func(t *testing.T) {
			b, jr := jailedBackend(t, rel, "")
			spec := testSpec(t, "")
			inst, err := b.Start(startCtx(t), spec)
			if err != nil {
				t.Fatal(err)
			}
			waitConsole(t, spec, "foreign init is running")
			// FlushMetrics, after boot, writes a line at once.
			api, tr := newAPIClient(filepath.Join(jr.Base, "firecracker", spec.ID, "root", APISocketName))
			defer tr.CloseIdleConnections()
			flush := "FlushMetrics"
			if _, err := api.CreateSyncAction(&operations.CreateSyncActionParams{Context: startCtx(t), Info: &models.InstanceActionInfo{ActionType: &flush}}); err != nil {
				t.Fatalf("FlushMetrics: %v", apiError(err))
			}
			waitFile(t, MetricsPath(spec), `"utc_timestamp_ms"`)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := inst.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			if err := inst.Wait(); err != nil {
				t.Fatal(err)
			}
			assertDrained(t, spec, filepath.Join(jr.Base, "firecracker", spec.ID, "root"))
			if b, _ := os.ReadFile(MetricsPath(spec)); bytes.Count(b, []byte("\n")) < 2 {
				t.Errorf("metrics %q: want the flushed line and the one at exit", b)
			}
		})
	})
}

// TestLoggerFIFOMustExistOnOldReleases: 1.6 opens log_path without O_CREAT, so without the
// FIFO the backend makes, PUT /logger fails; 1.16 creates a file instead.
func TestLoggerFIFOMustExistOnOldReleases(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		spec := testSpec(t, fctest.RebootArg)
		b := backend(rel)
		b.Steps = DefaultSteps().InsertBefore(StepLogger, Step{Name: "remove-fifo", Do: func(context.Context, operations.ClientIface, *Config) error {
			return os.Remove(LogFIFOPath(spec))
		}})
		inst, err := b.Start(startCtx(t), spec)
		if rel.Version == "1.6.0" {
			if err == nil || !strings.Contains(err.Error(), "Cannot initialize the logger") || !strings.Contains(err.Error(), "No such file") {
				t.Fatalf("1.6 without the FIFO: %v", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("1.16 creates the log file: %v", err)
		}
		if err := inst.Wait(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestDrainCapAndEnd(t *testing.T) {
	dir := t.TempDir()
	fifo, dst := filepath.Join(dir, "logs.fifo"), filepath.Join(dir, "console.log.firecracker")
	d, err := startDrain(fifo, dst, 10, "capped for the test", nil)
	if err != nil {
		t.Fatal(err)
	}
	// As Firecracker opens it.
	fd, err := syscall.Open(fifo, syscall.O_RDWR|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Write(fd, []byte("0123456789abcdef\n"))
	syscall.Close(fd)
	start := time.Now()
	d.stop()
	if time.Since(start) >= drainGrace {
		t.Error("stop waited for the grace period though every writer had gone")
	}
	b, _ := os.ReadFile(dst)
	if !strings.HasPrefix(string(b), "0123456789\n[firegopher: capped for the test]") {
		t.Errorf("drained %q", b)
	}
	if _, err := os.Lstat(fifo); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("FIFO left: %v", err)
	}
	// A drain whose FIFO nobody opened ends at once too (a start that failed early).
	d, err = startDrain(fifo, dst, 10, "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	d.stop()
	if time.Since(start) >= drainGrace {
		t.Error("stop of an unopened FIFO waited for the grace period")
	}
}
