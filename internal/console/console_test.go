package console

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParseDetachKeys(t *testing.T) {
	for in, want := range map[string]string{"ctrl-p,ctrl-q": "\x10\x11", "ctrl-@": "\x00", "q": "q", "ctrl-[,x": "\x1bx", "": ""} {
		got, err := ParseDetachKeys(in)
		if err != nil || string(got) != want {
			t.Errorf("%q: got %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"ctrl-", "ctrl-pp", "alt-x", "ctrl-1"} {
		if _, err := ParseDetachKeys(bad); err == nil || !strings.Contains(err.Error(), "--detach-keys") {
			t.Errorf("%q: err %v", bad, err)
		}
	}
}

func TestDetachReader(t *testing.T) {
	keys := []byte("\x10\x11")
	for _, tc := range []struct {
		in, out  string
		detached bool
	}{
		{"hello", "hello", false},
		{"ab\x10\x11cd", "ab", true},
		{"a\x10b\x10\x11", "a\x10b", true}, // a false start is passed on
		{"x\x10", "x\x10", false},          // unfinished at EOF: data
		{"\x10\x10\x11", "\x10", true},
	} {
		// One byte at a time too: the sequence may straddle reads.
		for _, r := range []io.Reader{strings.NewReader(tc.in), iotest.OneByteReader(strings.NewReader(tc.in))} {
			got, err := io.ReadAll(NewDetachReader(r, keys))
			if string(got) != tc.out || errors.Is(err, ErrDetached) != tc.detached {
				t.Errorf("%q: got %q, %v; want %q, detached %v", tc.in, got, err, tc.out, tc.detached)
			}
		}
	}
}

func TestOpenRefusesANonTerminal(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Open(f); !errors.Is(err, ErrNotATerminal) {
		t.Fatalf("got %v", err)
	}
}
