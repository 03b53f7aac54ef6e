package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"sync"
)

// WindowPayload encodes a KindWindow grant of n bytes.
func WindowPayload(n int) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(n))
	return b[:]
}

// WindowGrant decodes a KindWindow payload.
func WindowGrant(p []byte) (int, error) {
	if len(p) != 4 {
		return 0, errors.New("agent: window frame: want 4 bytes")
	}
	return int(binary.BigEndian.Uint32(p)), nil
}

// Window is the stdin credit a host has with the guest for one stream: it starts at
// StdinWindow bytes; sending spends it, the guest's KindWindow frames (Grant) refill it.
// Grant never blocks, so a read loop can hand grants over whatever the pump is doing.
type Window struct {
	mu     sync.Mutex
	credit int
	wake   chan struct{}
}

func NewWindow() *Window { return &Window{credit: StdinWindow, wake: make(chan struct{}, 1)} }

// Grant adds n bytes of credit.
func (w *Window) Grant(n int) {
	w.mu.Lock()
	w.credit += n
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// take waits for credit and reserves up to max bytes of it.
func (w *Window) take(ctx context.Context, max int) (int, error) {
	for {
		w.mu.Lock()
		if w.credit > 0 {
			n := min(w.credit, max)
			w.credit -= n
			w.mu.Unlock()
			return n, nil
		}
		w.mu.Unlock()
		select {
		case <-w.wake:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// giveBack returns reserved credit that was not used.
func (w *Window) giveBack(n int) {
	if n > 0 {
		w.Grant(n)
	}
}

// PumpStdin copies r to a stream's stdin through send, in frames of at most ChunkSize,
// never more than w allows. At EOF of r it sends the empty frame that closes the guest's
// end. It returns when r is done, ctx ends, or send fails.
func PumpStdin(ctx context.Context, r io.Reader, send func([]byte) error, w *Window) error {
	buf := make([]byte, ChunkSize)
	for {
		n, err := w.take(ctx, len(buf))
		if err != nil {
			return err
		}
		read, rerr := r.Read(buf[:n])
		w.giveBack(n - read)
		if read > 0 {
			if err := send(buf[:read]); err != nil {
				return err
			}
		}
		if errors.Is(rerr, io.EOF) {
			return send(nil)
		}
		if rerr != nil {
			return rerr
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}
