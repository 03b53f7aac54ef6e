package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
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

// PumpStdin copies r to a stream's stdin through send, in frames of at most ChunkSize,
// never more than the guest's window allows: it starts with StdinWindow bytes of credit and
// waits on grants (the counts of KindWindow frames for the stream) for more. At EOF of r it
// sends the empty frame that closes the guest's end. It returns when r is done, ctx ends, or
// send fails.
func PumpStdin(ctx context.Context, r io.Reader, send func([]byte) error, grants <-chan int) error {
	credit := StdinWindow
	buf := make([]byte, ChunkSize)
	for {
		for credit == 0 {
			select {
			case n := <-grants:
				credit += n
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		// Take grants that arrived meanwhile without blocking.
		for drained := false; !drained; {
			select {
			case n := <-grants:
				credit += n
			default:
				drained = true
			}
		}
		n, err := r.Read(buf[:min(len(buf), credit)])
		if n > 0 {
			if serr := send(buf[:n]); serr != nil {
				return serr
			}
			credit -= n
		}
		if errors.Is(err, io.EOF) {
			return send(nil)
		}
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}
