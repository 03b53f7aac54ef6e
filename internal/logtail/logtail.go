// Package logtail gives the last lines of some output (a VMM's stderr, a guest's console
// log), the part worth quoting in an error message.
package logtail

import (
	"io"
	"os"
	"strings"
)

// Lines returns the last n lines of s. Line ends may be "\n" or "\r\n" (a serial console
// writes the latter); blank lines at the end are dropped, so output that ends in a newline
// does not yield an empty last line. Nil when n <= 0 or nothing is left.
func Lines(s string, n int) []string {
	if n <= 0 {
		return nil
	}
	lines := strings.Split(s, "\n")
	for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 0 {
		return nil
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = strings.TrimSuffix(l, "\r")
	}
	return out
}

const (
	blockSize = 8 << 10 // first read; each further one is twice the last
	// MaxRead bounds how much of a file File reads: a line longer than that keeps only its
	// end.
	MaxRead = 1 << 20
)

// File returns the last n lines of the file at path, as Lines does, reading only as much
// of the file's end as they need (console logs can be large). Nil when the file cannot
// be read: a log that was never written has no tail.
func File(path string, n int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	return tail(f, fi.Size(), n)
}

// tail reads r backwards from size, in blocks that double, until it holds more than n
// lines, reaches the start, or has read MaxRead bytes.
func tail(r io.ReaderAt, size int64, n int) []string {
	if n <= 0 {
		return nil
	}
	var buf []byte
	next := int64(blockSize)
	for off := size; off > 0 && len(buf) < MaxRead; next *= 2 {
		step := min(next, off, int64(MaxRead-len(buf)))
		off -= step
		block := make([]byte, step, int(step)+len(buf))
		k, err := r.ReadAt(block, off)
		if err != nil && err != io.EOF {
			break
		}
		buf = append(block[:k], buf...)
		// More than n lines: the first, perhaps cut, is not among the last n.
		if off > 0 && len(Lines(string(buf), n+1)) > n {
			break
		}
	}
	return Lines(string(buf), n)
}
