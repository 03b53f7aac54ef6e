// Package agent is the host<->guest control protocol spoken over one byte stream
// (virtio-serial on QEMU, vsock on Firecracker). The stream is cut into frames so that
// the workload's stdout, stderr and its exit status travel on one channel without any
// parsing of console text.
//
// A frame is: kind (1 byte) | payload length (4 bytes, big endian) | payload.
package agent

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Kind says what a frame carries.
type Kind uint8

const (
	// KindHello is the guest's first frame: init is up and the channel works.
	KindHello Kind = 1
	// KindStdout and KindStderr carry the workload's output bytes.
	KindStdout Kind = 2
	KindStderr Kind = 3
	// KindExit carries an Exit as JSON; it is the guest's last frame.
	KindExit Kind = 4
	// KindAck is the host's answer to KindExit: the guest may power off, nothing is lost.
	KindAck Kind = 5
	// KindSignal (host → guest) asks init to deliver a signal (payload: one byte, the number).
	KindSignal Kind = 6
)

func (k Kind) String() string {
	switch k {
	case KindHello:
		return "hello"
	case KindStdout:
		return "stdout"
	case KindStderr:
		return "stderr"
	case KindExit:
		return "exit"
	case KindAck:
		return "ack"
	case KindSignal:
		return "signal"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// MaxPayload bounds a frame so that a corrupt length can't make the reader allocate gigabytes.
const MaxPayload = 1 << 20

// ChunkSize is how much output one frame carries; big writes are split.
const ChunkSize = 32 << 10

// Exit is how the workload ended. Code follows the shell's convention: 128+N when killed by
// signal N, 127 when the command was not found, 126 when it could not be executed.
type Exit struct {
	Code   int    `json:"code"`
	Signal int    `json:"signal,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Frame is one decoded message.
type Frame struct {
	Kind    Kind
	Payload []byte
}

// Conn frames a byte stream. Writes are safe from several goroutines; reads are not.
type Conn struct {
	r  *bufio.Reader
	mu sync.Mutex
	w  io.Writer
}

// NewConn wraps rw (a virtio-serial port, a socket).
func NewConn(rw io.ReadWriter) *Conn {
	return &Conn{r: bufio.NewReaderSize(rw, 64<<10), w: rw}
}

// Send writes one frame.
func (c *Conn) Send(kind Kind, payload []byte) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("agent: %s frame of %d bytes exceeds %d", kind, len(payload), MaxPayload)
	}
	buf := make([]byte, 5+len(payload))
	buf[0] = byte(kind)
	binary.BigEndian.PutUint32(buf[1:5], uint32(len(payload)))
	copy(buf[5:], payload)
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.w.Write(buf)
	return err
}

// SendExit writes the exit frame.
func (c *Conn) SendExit(e Exit) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return c.Send(KindExit, b)
}

// Receive reads the next frame. io.EOF means the peer closed the stream between frames.
func (c *Conn) Receive() (Frame, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Frame{}, fmt.Errorf("agent: stream ended inside a frame header")
		}
		return Frame{}, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxPayload {
		return Frame{}, fmt.Errorf("agent: frame length %d exceeds %d: stream corrupt", n, MaxPayload)
	}
	f := Frame{Kind: Kind(hdr[0]), Payload: make([]byte, n)}
	if _, err := io.ReadFull(c.r, f.Payload); err != nil {
		return Frame{}, fmt.Errorf("agent: stream ended inside a %s frame: %w", f.Kind, err)
	}
	return f, nil
}

// DecodeExit reads an exit frame's payload.
func DecodeExit(payload []byte) (Exit, error) {
	var e Exit
	if err := json.Unmarshal(payload, &e); err != nil {
		return Exit{}, fmt.Errorf("agent: exit frame: %w", err)
	}
	return e, nil
}

// StreamWriter turns writes into frames of one kind, so an io.Copy can feed the channel.
type StreamWriter struct {
	Conn *Conn
	Kind Kind
}

func (s StreamWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), ChunkSize)
		if err := s.Conn.Send(s.Kind, p[:n]); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}
