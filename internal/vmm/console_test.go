package vmm

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCappedLogStopsGrowing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	c, err := CreateCappedLog(p, 10)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if n, err := c.Write([]byte("abcdef")); n != 6 || err != nil {
			t.Fatalf("write %d: %d %v: a capped log still takes everything", i, n, err)
		}
	}
	c.Close()
	b, _ := os.ReadFile(p)
	if !bytes.HasPrefix(b, []byte("abcdefabcd")) || strings.Count(string(b), "capped") != 1 || len(b) > 10+100 {
		t.Fatalf("log %q", b)
	}
}
