// Package agent is the host<->guest control protocol spoken over one byte stream
// (virtio-serial on QEMU, vsock on Firecracker). The stream is cut into frames so that
// the workload's stdout, stderr and its exit status travel on one channel without any
// parsing of console text.
//
// A frame is: kind (1 byte) | stream (4 bytes) | payload length (4 bytes) | payload,
// integers big endian. Stream 0 is the VM's main workload; each `exec` gets its own stream
// so that several commands' output and exit statuses can share the channel.
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
	// KindSignal (host → guest) asks init to deliver a signal (payload: one byte, the
	// number) to the stream's process.
	KindSignal Kind = 6
	// KindExec (host → guest) starts a command on a new stream (payload: an Exec as JSON).
	KindExec Kind = 7
	// KindAttach (client → supervisor) subscribes to the main stream's output and exit;
	// the supervisor answers with KindAttached (payload: Attached as JSON).
	KindAttach   Kind = 8
	KindAttached Kind = 9
	// KindStop (client → supervisor) asks for a graceful stop (payload: Stop as JSON).
	KindStop Kind = 10
	// KindStdin (host → guest) carries bytes for the stream's stdin; an empty payload
	// closes it (EOF). The host sends no more than the guest's window allows.
	KindStdin Kind = 11
	// KindWindow (guest → host) grants more stdin: payload is a 4-byte big-endian count of
	// bytes the guest has passed on to the process. Each stdin stream starts with
	// StdinWindow bytes of credit, so neither side buffers more than that.
	KindWindow Kind = 12
	// KindResize (host → guest) sets the stream's terminal size (payload: Resize as JSON).
	KindResize Kind = 13
	// KindConfig (host → guest) is the VM's vmconfig.Config as JSON, for an init whose
	// initrd holds none: a VM restored from a snapshot template learns who it is this way.
	KindConfig Kind = 14
)

// StdinWindow is how many stdin bytes of a stream may be in flight, unacknowledged.
const StdinWindow = 256 << 10

// Resize is a terminal's size in characters.
type Resize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// Attached tells an attaching client how much of the output log predates its
// subscription, so that `logs -f` prints every byte exactly once.
type Attached struct {
	LogOffset int64 `json:"log_offset"`
}

// Stop is a graceful stop: SIGTERM to the workload, then the VM is killed after Timeout.
type Stop struct {
	TimeoutSeconds int `json:"timeout_seconds"`
}

// MainStream carries the VM's main workload.
const MainStream uint32 = 0

// Exec asks init to run an extra command in the running VM.
type Exec struct {
	Argv    []string `json:"argv"`
	Env     []string `json:"env,omitempty"`
	WorkDir string   `json:"workdir,omitempty"`
	User    string   `json:"user,omitempty"`
	// Stdin gives the command a stdin fed by KindStdin frames (else /dev/null); TTY gives
	// it a pseudo-terminal of that size (its own session, controlling tty), resized by
	// KindResize frames.
	Stdin bool    `json:"stdin,omitempty"`
	TTY   *Resize `json:"tty,omitempty"`
	// Copy, if set, makes this a copy done by init itself (no tool of the image is used):
	// Argv is ignored.
	Copy *Copy `json:"copy,omitempty"`
}

// Copy is `firegopher cp` in the guest. Out: Path (a file or a tree) goes to the stream's
// stdout as a tar stream. In: the stream's stdin, a tar stream, is extracted into the
// directory Path. Modes, owners and symlinks are kept.
type Copy struct {
	Out  bool   `json:"out,omitempty"`
	Path string `json:"path"`
}

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
	case KindExec:
		return "exec"
	case KindAttach:
		return "attach"
	case KindAttached:
		return "attached"
	case KindStop:
		return "stop"
	case KindStdin:
		return "stdin"
	case KindWindow:
		return "window"
	case KindResize:
		return "resize"
	case KindConfig:
		return "config"
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
	Stream  uint32
	Payload []byte
}

const headerSize = 9

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

// Send writes one frame on stream.
func (c *Conn) Send(kind Kind, stream uint32, payload []byte) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("agent: %s frame of %d bytes exceeds %d", kind, len(payload), MaxPayload)
	}
	buf := make([]byte, headerSize+len(payload))
	buf[0] = byte(kind)
	binary.BigEndian.PutUint32(buf[1:5], stream)
	binary.BigEndian.PutUint32(buf[5:9], uint32(len(payload)))
	copy(buf[headerSize:], payload)
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.w.Write(buf)
	return err
}

// SendJSON writes a frame whose payload is v as JSON.
func (c *Conn) SendJSON(kind Kind, stream uint32, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.Send(kind, stream, b)
}

// Receive reads the next frame. io.EOF means the peer closed the stream between frames.
func (c *Conn) Receive() (Frame, error) { return readFrame(c.r) }

// readFrame asks r for the header and then the payload, never more.
func readFrame(r io.Reader) (Frame, error) {
	var hdr [headerSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Frame{}, fmt.Errorf("agent: stream ended inside a frame header")
		}
		return Frame{}, err
	}
	n := binary.BigEndian.Uint32(hdr[5:])
	if n > MaxPayload {
		return Frame{}, fmt.Errorf("agent: frame length %d exceeds %d: stream corrupt", n, MaxPayload)
	}
	f := Frame{Kind: Kind(hdr[0]), Stream: binary.BigEndian.Uint32(hdr[1:5]), Payload: make([]byte, n)}
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		return Frame{}, fmt.Errorf("agent: stream ended inside a %s frame: %w", f.Kind, err)
	}
	return f, nil
}

// ReadFrame reads exactly one frame from r without reading ahead: what follows the frame
// stays in r for whoever reads it next (init's stage 1 takes its config this way and hands
// the channel to stage 2 untouched).
func ReadFrame(r io.Reader) (Frame, error) { return readFrame(r) }

// Decode reads a JSON payload (exit, exec) into v.
func (f Frame) Decode(v any) error {
	if err := json.Unmarshal(f.Payload, v); err != nil {
		return fmt.Errorf("agent: %s frame: %w", f.Kind, err)
	}
	return nil
}

// StreamWriter turns writes into frames of one kind on one stream, so an io.Copy can
// feed the channel.
type StreamWriter struct {
	Conn   *Conn
	Kind   Kind
	Stream uint32
}

func (s StreamWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), ChunkSize)
		if err := s.Conn.Send(s.Kind, s.Stream, p[:n]); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}
