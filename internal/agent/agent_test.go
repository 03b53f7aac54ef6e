package agent

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
)

func TestFramesRoundTripInOrder(t *testing.T) {
	a, b := net.Pipe()
	sender, receiver := NewConn(a), NewConn(b)
	big := bytes.Repeat([]byte("0123456789abcdef"), 10000) // 160 000 bytes: several chunks
	go func() {
		sender.Send(KindHello, MainStream, nil)
		StreamWriter{sender, KindStdout, MainStream}.Write(big)
		StreamWriter{sender, KindStderr, 3}.Write([]byte("oops\n"))
		sender.SendJSON(KindExit, MainStream, Exit{Code: 7})
		a.Close()
	}()
	var out, errOut bytes.Buffer
	var kinds []Kind
	var exit Exit
	for {
		f, err := receiver.Receive()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, f.Kind)
		switch f.Kind {
		case KindStdout:
			out.Write(f.Payload)
		case KindStderr:
			if f.Stream != 3 {
				t.Fatalf("stderr on stream %d, sent on 3", f.Stream)
			}
			errOut.Write(f.Payload)
		case KindExit:
			if err = f.Decode(&exit); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !bytes.Equal(out.Bytes(), big) {
		t.Fatalf("stdout: got %d bytes, want %d identical bytes", out.Len(), len(big))
	}
	if errOut.String() != "oops\n" || exit.Code != 7 {
		t.Fatalf("stderr %q exit %+v", errOut.String(), exit)
	}
	if kinds[0] != KindHello || kinds[len(kinds)-1] != KindExit {
		t.Fatalf("frame order %v", kinds)
	}
}

func TestReceiveRejectsCorruptLength(t *testing.T) {
	c := NewConn(struct {
		io.Reader
		io.Writer
	}{bytes.NewReader([]byte{2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}), io.Discard})
	_, err := c.Receive()
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("got %v, want a corrupt-stream error", err)
	}
}

func TestReceiveReportsTruncatedFrame(t *testing.T) {
	c := NewConn(struct {
		io.Reader
		io.Writer
	}{bytes.NewReader([]byte{2, 0, 0, 0, 0, 0, 0, 0, 9, 'a'}), io.Discard})
	_, err := c.Receive()
	if err == nil || !strings.Contains(err.Error(), "inside a stdout frame") {
		t.Fatalf("got %v", err)
	}
}

func TestSendRefusesOversizedPayload(t *testing.T) {
	c := NewConn(struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(nil), io.Discard})
	if err := c.Send(KindStdout, MainStream, make([]byte, MaxPayload+1)); err == nil {
		t.Fatal("oversized frame accepted")
	}
}

// ReadFrame leaves the next frame in the stream for the next reader (init's stage 2).
func TestReadFrameDoesNotReadAhead(t *testing.T) {
	var buf bytes.Buffer
	w := NewConn(&buf)
	w.SendJSON(KindConfig, MainStream, map[string]int{"version": 1})
	w.Send(KindSignal, MainStream, []byte{15})
	f, err := ReadFrame(&buf)
	if err != nil || f.Kind != KindConfig || string(f.Payload) != `{"version":1}` {
		t.Fatalf("first frame: %v %q %v", f.Kind, f.Payload, err)
	}
	g, err := NewConn(&buf).Receive()
	if err != nil || g.Kind != KindSignal || !bytes.Equal(g.Payload, []byte{15}) {
		t.Fatalf("the next reader got %v %v %v, want the signal frame", g.Kind, g.Payload, err)
	}
}
