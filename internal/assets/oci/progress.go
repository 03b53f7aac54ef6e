package oci

import (
	"fmt"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// progress reports layer downloads: an updating line per layer on a terminal, one plain
// line per layer otherwise (logs, CI). A nil *progress is quiet.
type progress struct {
	w   io.Writer
	tty bool
}

func newProgress(w io.Writer) *progress {
	if w == nil {
		return nil
	}
	return &progress{w: w, tty: isTerminal(w)}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

type layerProgress struct {
	p     *progress
	label string
	size  int64
	n     int64
	last  time.Time
}

func (p *progress) layer(d v1.Hash, size int64) *layerProgress {
	if p == nil {
		return nil
	}
	lp := &layerProgress{p: p, label: "pulling layer " + shortHash(d) + "…", size: size}
	if !p.tty {
		fmt.Fprintf(p.w, "%s %s\n", lp.label, humanSize(size))
	}
	return lp
}

// Write counts downloaded bytes (it sits in an io.MultiWriter).
func (lp *layerProgress) Write(b []byte) (int, error) {
	if lp == nil {
		return len(b), nil
	}
	lp.n += int64(len(b))
	if lp.p.tty && time.Since(lp.last) >= 100*time.Millisecond {
		lp.last = time.Now()
		fmt.Fprintf(lp.p.w, "\r\033[K%s %s / %s", lp.label, humanSize(lp.n), humanSize(lp.size))
	}
	return len(b), nil
}

// done ends the layer's line on a terminal.
func (lp *layerProgress) done(err error) {
	if lp == nil || !lp.p.tty {
		return
	}
	status := "done"
	if err != nil {
		status = "failed"
	}
	fmt.Fprintf(lp.p.w, "\r\033[K%s %s %s\n", lp.label, humanSize(lp.n), status)
}

func humanSize(n int64) string {
	switch {
	case n < 0:
		return "? B"
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}
