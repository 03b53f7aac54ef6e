package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"testing"
	"time"
)

func TestPumpStdinNeverExceedsTheWindow(t *testing.T) {
	data := make([]byte, 3*StdinWindow+123)
	rand.Read(data)
	window := NewWindow()
	var got bytes.Buffer
	inFlight, maxInFlight, eof := 0, 0, false
	frames := make(chan []byte, 1024)
	done := make(chan error, 1)
	go func() {
		done <- PumpStdin(context.Background(), bytes.NewReader(data), func(p []byte) error {
			frames <- append([]byte(nil), p...)
			return nil
		}, window)
	}()
	// The "guest": consumes frames, grants back what it has passed on, a frame at a time.
	for !eof {
		select {
		case p := <-frames:
			if len(p) == 0 {
				eof = true
				break
			}
			// A slow guest: it grants in batches, so the pump must hold back meanwhile.
			inFlight += len(p)
			maxInFlight = max(maxInFlight, inFlight)
			got.Write(p)
			if inFlight >= StdinWindow/2 {
				window.Grant(inFlight)
				inFlight = 0
			}
		case <-time.After(10 * time.Second):
			t.Fatal("pump stalled")
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if maxInFlight > StdinWindow {
		t.Fatalf("%d bytes in flight, more than the window of %d", maxInFlight, StdinWindow)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatal("stdin did not arrive byte for byte")
	}
}

func TestPumpStdinWaitsForGrants(t *testing.T) {
	r, w := io.Pipe()
	go func() { w.Write(make([]byte, 2*StdinWindow)); w.Close() }()
	sent := 0
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := PumpStdin(ctx, r, func(p []byte) error { sent += len(p); return nil }, NewWindow())
	if err == nil || sent != StdinWindow {
		t.Fatalf("without grants the pump must stop at the window: sent %d, err %v", sent, err)
	}
}
