// Package console is the host's side of an interactive VM: the user's terminal (raw mode,
// restored on every exit path; its size and size changes) and the detach key sequence.
package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/term"

	"github.com/firegopher/firegopher/internal/agent"
)

// ErrNotATerminal is docker's complaint when -t is asked with stdin not a terminal.
var ErrNotATerminal = errors.New("-t: the input device is not a TTY (drop -t, or run from a terminal)")

// Terminal is the user's terminal.
type Terminal struct {
	f *os.File
}

// Open takes f (normally os.Stdin) as the user's terminal.
func Open(f *os.File) (*Terminal, error) {
	if !term.IsTerminal(int(f.Fd())) {
		return nil, ErrNotATerminal
	}
	return &Terminal{f: f}, nil
}

// Size is the terminal's size now (80x24 if it cannot say).
func (t *Terminal) Size() agent.Resize {
	cols, rows, err := term.GetSize(int(t.f.Fd()))
	if err != nil || rows <= 0 || cols <= 0 {
		return agent.Resize{Rows: 24, Cols: 80}
	}
	return agent.Resize{Rows: uint16(rows), Cols: uint16(cols)}
}

// Raw puts the terminal in raw mode (keys go to the guest as typed: Ctrl-C reaches the
// guest's foreground process through its terminal). The returned restore must run on
// every exit path; it is safe to call more than once.
func (t *Terminal) Raw() (restore func(), err error) {
	state, err := term.MakeRaw(int(t.f.Fd()))
	if err != nil {
		return nil, fmt.Errorf("terminal: raw mode: %w", err)
	}
	done := false
	return func() {
		if !done {
			done = true
			term.Restore(int(t.f.Fd()), state)
		}
	}, nil
}

// Resizes sends the terminal's new size on every SIGWINCH until ctx ends.
func (t *Terminal) Resizes(ctx context.Context) <-chan agent.Resize {
	out := make(chan agent.Resize, 1)
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	go func() {
		defer signal.Stop(winch)
		for {
			select {
			case <-winch:
				select {
				case out <- t.Size():
				default: // the previous size is still unsent: the next one supersedes it
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// ErrDetached is what a DetachReader returns once the user typed the detach keys.
var ErrDetached = errors.New("detached")

// DefaultDetachKeys are docker's: Ctrl-P Ctrl-Q.
const DefaultDetachKeys = "ctrl-p,ctrl-q"

// ParseDetachKeys reads docker's syntax: comma-separated "ctrl-<letter>", "ctrl-@",
// "ctrl-[" … or single characters; "" disables detaching.
func ParseDetachKeys(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	var keys []byte
	for _, k := range strings.Split(s, ",") {
		switch {
		case len(k) == 1:
			keys = append(keys, k[0])
		case strings.HasPrefix(k, "ctrl-") && len(k) == 6:
			c := k[5]
			switch {
			case c >= 'a' && c <= 'z':
				keys = append(keys, c-'a'+1)
			case c >= '@' && c <= '_':
				keys = append(keys, c-'@')
			default:
				return nil, fmt.Errorf("--detach-keys: %q is not a key", k)
			}
		default:
			return nil, fmt.Errorf("--detach-keys: %q is not a key (like ctrl-p or q)", k)
		}
	}
	return keys, nil
}

// DetachReader passes r through until the detach sequence appears; then it returns what
// came before it and ErrDetached. A partial sequence that does not complete is passed on.
type DetachReader struct {
	r       io.Reader
	keys    []byte
	matched int    // how much of keys the input has matched so far
	pending []byte // bytes to return before reading more
	err     error
}

func NewDetachReader(r io.Reader, keys []byte) *DetachReader {
	return &DetachReader{r: r, keys: keys}
}

func (d *DetachReader) Read(p []byte) (int, error) {
	for {
		if len(d.pending) > 0 {
			n := copy(p, d.pending)
			d.pending = d.pending[n:]
			return n, nil
		}
		if d.err != nil {
			return 0, d.err
		}
		buf := make([]byte, max(len(p), 1))
		n, err := d.r.Read(buf)
		for _, b := range buf[:n] {
			if len(d.keys) > 0 && b == d.keys[d.matched] {
				d.matched++
				if d.matched == len(d.keys) {
					d.err = ErrDetached // what was typed after it is dropped
					break
				}
				continue
			}
			d.pending = append(d.pending, d.keys[:d.matched]...) // a false start is data
			d.matched = 0
			if len(d.keys) > 0 && b == d.keys[0] {
				d.matched = 1
				continue
			}
			d.pending = append(d.pending, b)
		}
		if err != nil && d.err == nil {
			d.pending = append(d.pending, d.keys[:d.matched]...) // unfinished at EOF: data
			d.matched, d.err = 0, err
		}
	}
}
