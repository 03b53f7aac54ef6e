package logtail

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLines(t *testing.T) {
	for _, c := range []struct {
		s    string
		n    int
		want []string
	}{
		{"", 3, nil},
		{"\n\n", 3, nil},
		{"one", 3, []string{"one"}},
		{"one\n", 3, []string{"one"}},
		{"a\nb\nc\nd\n", 2, []string{"c", "d"}},
		{"a\nb\nc\nd", 4, []string{"a", "b", "c", "d"}},
		{"a\nb\n", 0, nil},
		{"a\nb\n", -1, nil},
		{"boot\r\npanic: x\r\n", 5, []string{"boot", "panic: x"}},
		{"a\n\nb\n \n\t\n", 3, []string{"a", "", "b"}},
		{"  indented\nlast  \n", 2, []string{"  indented", "last  "}},
	} {
		if got := Lines(c.s, c.n); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Lines(%q, %d) = %q, want %q", c.s, c.n, got, c.want)
		}
	}
}

func writeFile(t *testing.T, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "console.log")
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// File agrees with Lines on the whole content, wherever the reads' block boundaries fall.
func TestFileMatchesLines(t *testing.T) {
	var b strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&b, "line %d %s\r\n", i, strings.Repeat("x", i%300))
		if i%97 == 0 {
			b.WriteString("\n") // blank lines in the middle stay
		}
	}
	b.WriteString("\n\n")
	content := b.String()
	for _, n := range []int{1, 3, 15, 100, 2000, 6000} {
		got := File(writeFile(t, content), n)
		if want := Lines(content, n); !reflect.DeepEqual(got, want) {
			t.Errorf("File(n=%d): %d lines ending %q, want %d ending %q", n, len(got), last(got), len(want), last(want))
		}
	}
	if got := File(writeFile(t, ""), 3); got != nil {
		t.Errorf("File(empty) = %q", got)
	}
	if got := File(filepath.Join(t.TempDir(), "never-written"), 3); got != nil {
		t.Errorf("File(missing) = %q", got)
	}
}

func last(l []string) string {
	if len(l) == 0 {
		return ""
	}
	return l[len(l)-1]
}

// countingReader is a file of size bytes, all 'x' except its last lines, that counts what
// is read from it.
type countingReader struct {
	size int64
	end  []byte
	read int64
}

func (r *countingReader) ReadAt(p []byte, off int64) (int, error) {
	r.read += int64(len(p))
	start := r.size - int64(len(r.end))
	for i := range p {
		if at := off + int64(i); at >= start {
			p[i] = r.end[at-start]
		} else {
			p[i] = 'x'
		}
	}
	return len(p), nil
}

func TestTailReadsOnlyTheEnd(t *testing.T) {
	end := []byte("\nboot ok\nKernel panic - not syncing: VFS\n")
	r := &countingReader{size: 1 << 30, end: end}
	got := tail(r, r.size, 2)
	if want := []string{"boot ok", "Kernel panic - not syncing: VFS"}; !reflect.DeepEqual(got, want) {
		t.Errorf("tail = %q, want %q", got, want)
	}
	if r.read > blockSize {
		t.Errorf("read %d bytes of a 1 GiB file for 2 short lines, want at most %d", r.read, blockSize)
	}

	// One endless line: MaxRead bytes, its end.
	r = &countingReader{size: 1 << 30, end: []byte("the end\n")}
	got = tail(r, r.size, 3)
	if r.read > MaxRead || len(got) != 1 || len(got[0]) != MaxRead-1 || !strings.HasSuffix(got[0], "xthe end") {
		t.Errorf("endless line: read %d bytes, got %d lines of %d bytes; want its last %d bytes", r.read, len(got), len(last(got)), MaxRead-1)
	}
}
