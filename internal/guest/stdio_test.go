//go:build linux

package guest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/firegopher/firegopher/internal/agent"
)

// TestExecStdinArrivesWhole pipes 8 MiB of random bytes into `sha256sum` through KindStdin
// frames, paced by the guest's windows, EOF included.
func TestExecStdinArrivesWhole(t *testing.T) {
	s, h := newSession(t, appConfig("sleep", "100"))
	s.Serve()
	const stream = 5
	h.send(agent.KindExec, stream, mustJSON(t, agent.Exec{Argv: []string{"sha256sum"}, Stdin: true}))
	data := make([]byte, 8<<20)
	rand.Read(data)
	window := agent.NewWindow()
	pumped := make(chan error, 1)
	go func() {
		pumped <- agent.PumpStdin(context.Background(), bytes.NewReader(data), func(p []byte) error {
			return h.conn.Send(agent.KindStdin, stream, p)
		}, window)
	}()
	var out strings.Builder
	for {
		f := h.next()
		if f.Stream != stream {
			continue
		}
		if f.Kind == agent.KindWindow {
			n, err := agent.WindowGrant(f.Payload)
			if err != nil {
				t.Fatal(err)
			}
			window.Grant(n)
			continue
		}
		if f.Kind == agent.KindStdout {
			out.Write(f.Payload)
		}
		if f.Kind == agent.KindExit {
			break
		}
	}
	if err := <-pumped; err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if got := strings.Fields(out.String()); len(got) == 0 || got[0] != hex.EncodeToString(sum[:]) {
		t.Fatalf("sha256sum in the guest %q, want %x", out.String(), sum)
	}
}

// TestExecTerminalHasItsSizeAndIsControlling runs a command on a terminal of the size the
// exec asked for (checked first: 33x101 printed before "tty"), then resizes it and types.
func TestExecTerminalHasItsSizeAndIsControlling(t *testing.T) {
	s, h := newSession(t, appConfig("sleep", "100"))
	s.Serve()
	const stream = 6
	h.send(agent.KindExec, stream, mustJSON(t, agent.Exec{Argv: []string{"sh", "-c", "stty size; test -t 0 && echo tty; read line; stty size; echo got $line"}, TTY: &agent.Resize{Rows: 33, Cols: 101}}))
	// Resized and typed at, once it runs: a line ends the read.
	var first strings.Builder
	for !strings.Contains(first.String(), "tty") {
		if f := h.next(); f.Stream == stream && f.Kind == agent.KindStdout {
			first.Write(f.Payload)
		}
	}
	if !strings.HasPrefix(first.String(), "33 101\r\n") {
		t.Fatalf("first output %q: want the size the exec asked for, 33 101", first.String())
	}
	h.send(agent.KindResize, stream, mustJSON(t, agent.Resize{Rows: 40, Cols: 120}))
	h.send(agent.KindStdin, stream, []byte("hello\r"))
	var out strings.Builder
	for {
		f := h.next()
		if f.Stream != stream {
			continue
		}
		if f.Kind == agent.KindStdout {
			out.Write(f.Payload)
		}
		if f.Kind == agent.KindExit {
			break
		}
	}
	got := strings.ReplaceAll(out.String(), "\r\n", "\n")
	if !strings.Contains(got, "40 120\n") || !strings.Contains(got, "got hello\n") {
		t.Fatalf("output %q: want the new size 40 120 and the typed line", got)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
