package vmm

import (
	"fmt"
	"os"
	"sync"
)

// ConsoleCap bounds a VM's console log: what the guest writes to its serial port is its
// own choice and unbounded; past the cap it is dropped (after one line saying so).
const ConsoleCap = 16 << 20

// CappedLog is a console log file that stops growing at its cap. The VMM's serial output is
// copied into it through a pipe (exec.Cmd's copy, which Wait waits for).
type CappedLog struct {
	mu     sync.Mutex
	f      *os.File
	left   int64
	capped bool
	note   string
}

// consoleNote is the console log's line at its cap.
const consoleNote = "console log capped here; the rest of the guest's output is dropped"

// CreateCappedLog truncates or creates path as a console log of at most limit bytes (plus
// a line saying it was capped).
func CreateCappedLog(path string, limit int64) (*CappedLog, error) {
	return CreateCappedFile(path, limit, consoleNote)
}

// CreateCappedFile is CreateCappedLog for any log a VMM writes (its own log, its metrics):
// note is the line written where the cap cuts it.
func CreateCappedFile(path string, limit int64, note string) (*CappedLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	return &CappedLog{f: f, left: limit, note: note}, nil
}

// Write keeps what fits and reports everything written: the VMM must never block on it.
func (c *CappedLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := int64(len(p))
	if n > c.left {
		n = c.left
	}
	if n > 0 {
		if _, err := c.f.Write(p[:n]); err != nil {
			return len(p), nil // a full disk must not stop the VM either
		}
		c.left -= n
	}
	if int64(len(p)) > n && !c.capped {
		c.capped = true
		fmt.Fprintf(c.f, "\n[firegopher: %s]\n", c.note)
	}
	return len(p), nil
}

func (c *CappedLog) Close() error { return c.f.Close() }
