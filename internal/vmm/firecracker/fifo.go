package firecracker

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/firegopher/firegopher/internal/vmm"
)

// Firecracker's logger and metrics go to FIFOs made before it starts (1.6 opens them
// O_RDWR|O_NONBLOCK without O_CREAT, so they must exist; 1.16 would create files but
// opens an existing FIFO as it is). The host drains each into a capped file beside the
// console log, so Firecracker never blocks on them and the VM's directory cannot fill the
// disk. The drained files are kept with the console log until the VM is removed.
const (
	// LogFIFOName and MetricsFIFOName are the FIFOs in the VM's directory, or in "/" of its
	// jail (owned by the jail's uid, mode 0600).
	LogFIFOName     = "logs.fifo"
	MetricsFIFOName = "metrics.fifo"
	// LogSuffix and MetricsSuffix name the drained files after the console log:
	// console.log.firecracker is Firecracker's own log, console.log.metrics its metrics,
	// one JSON object a line (written every minute, on FlushMetrics and when it exits).
	LogSuffix     = ".firecracker"
	MetricsSuffix = ".metrics"
	// LogCap and MetricsCap bound the drained files; past them lines are dropped.
	LogCap     = 4 << 20
	MetricsCap = 16 << 20
	// drainGrace bounds the wait for what is left in a FIFO once Firecracker has exited
	// (a writer that survived it cannot hold the VM's end up longer).
	drainGrace = 2 * time.Second
)

// LogPath is where Firecracker's log for spec's VM is drained to.
func LogPath(spec vmm.Spec) string { return spec.ConsoleLog + LogSuffix }

// MetricsPath is where Firecracker's metrics for spec's VM are drained to.
func MetricsPath(spec vmm.Spec) string { return spec.ConsoleLog + MetricsSuffix }

// LogFIFOPath and MetricsFIFOPath are the FIFOs of spec (of its view, when jailed: Dir "/").
func LogFIFOPath(spec vmm.Spec) string     { return filepath.Join(spec.Dir, LogFIFOName) }
func MetricsFIFOPath(spec vmm.Spec) string { return filepath.Join(spec.Dir, MetricsFIFOName) }

// drain copies what is written into a FIFO to a capped file until every writer is gone.
type drain struct {
	fifo string
	r, w *os.File // w is ours: the FIFO shows no EOF before Firecracker has opened it
	out  *vmm.CappedLog
	done chan struct{}
}

// startDrain makes the FIFO at fifo (replacing a stale one; own, when set, gives it to the
// jail's owner) and copies it into a new capped file dst.
func startDrain(fifo, dst string, limit int64, note string, own func(string) error) (*drain, error) {
	if err := os.Remove(fifo); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		return nil, fmt.Errorf("mkfifo %s: %w", fifo, err)
	}
	d := &drain{fifo: fifo, done: make(chan struct{})}
	fail := func(err error) (*drain, error) {
		d.close()
		os.Remove(fifo)
		return nil, err
	}
	if own != nil {
		if err := own(fifo); err != nil {
			return fail(err)
		}
	}
	var err error
	// Non-blocking: opening the read end must not wait for a writer; the runtime's poller
	// then makes reads wait instead, and Close interrupts them.
	if d.r, err = os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0); err != nil {
		return fail(err)
	}
	if d.w, err = os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err != nil {
		return fail(err)
	}
	if d.out, err = vmm.CreateCappedFile(dst, limit, note); err != nil {
		return fail(err)
	}
	go func() {
		defer close(d.done)
		io.Copy(d.out, d.r)
	}()
	return d, nil
}

// stop lets the drain end once Firecracker has exited: the last writer gone, what is left
// in the FIFO is copied, then everything is closed and the FIFO removed.
func (d *drain) stop() {
	d.w.Close()
	select {
	case <-d.done:
	case <-time.After(drainGrace):
		d.r.Close() // interrupts the copy
		<-d.done
	}
	d.close()
	os.Remove(d.fifo)
}

// close closes what is open (safe to repeat: os.File.Close of a closed file is an error
// only).
func (d *drain) close() {
	for _, f := range []*os.File{d.r, d.w} {
		if f != nil {
			f.Close()
		}
	}
	if d.out != nil {
		d.out.Close()
	}
}

// drains are the logger's and the metrics' drains of one Firecracker.
type drains []*drain

// startDrains starts the drains of l's FIFOs into the files beside spec's console log.
func startDrains(spec vmm.Spec, l *launch) (drains, error) {
	var ds drains
	for _, f := range []struct {
		fifo, dst string
		limit     int64
		what      string
	}{
		{l.logFIFO, LogPath(spec), LogCap, "Firecracker's log"},
		{l.metricsFIFO, MetricsPath(spec), MetricsCap, "Firecracker's metrics"},
	} {
		d, err := startDrain(f.fifo, f.dst, f.limit, f.what+" capped here; the rest is dropped", l.own)
		if err != nil {
			ds.stop()
			return nil, fmt.Errorf("firecracker: %s: %w", f.what, err)
		}
		ds = append(ds, d)
	}
	return ds, nil
}

func (ds drains) stop() {
	for _, d := range ds {
		d.stop()
	}
}
