package supervisor

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/agent"
)

func TestForegroundStdinReachesTheWorkload(t *testing.T) {
	h := testHost(t)
	m := testMachine(t, h, "cat")
	m.Process.Stdin = true
	c, err := h.Create(m, false)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	exit, err := c.Run(context.Background(), Stdio{Stdout: &out, Stderr: &out, Stdin: strings.NewReader("hi")})
	if err != nil || exit.Code != 0 || out.String() != "hi" {
		t.Fatalf("printf hi | run -i -- cat: %q %+v %v", out.String(), exit, err)
	}
}

func TestExecStdinThroughTheSupervisor(t *testing.T) {
	h := testHost(t)
	t.Setenv(serveEnv, h.StateDir)
	m := testMachine(t, h, "sh", "-c", "echo hello; exec sleep 100")
	c, err := h.Create(m, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StartDetached([]string{os.Args[0], "-test.run=^$"}); err != nil {
		t.Fatal(err)
	}
	rec, _ := h.Lookup(m.ID)
	t.Cleanup(func() { h.Stop(rec, time.Second) })
	cl, err := Dial(rec.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Exec(agent.Exec{Argv: []string{"sha256sum"}, Stdin: true}); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 4*agent.StdinWindow+77)
	rand.Read(data)
	var out bytes.Buffer
	exit, err := cl.Stream(context.Background(), Stdio{Stdout: &out, Stderr: &out, Stdin: bytes.NewReader(data)})
	sum := sha256.Sum256(data)
	if err != nil || exit.Code != 0 || !strings.HasPrefix(out.String(), hex.EncodeToString(sum[:])) {
		t.Fatalf("exec -i sha256sum: %q %+v %v", out.String(), exit, err)
	}
}

func TestCopyOutAndInThroughTheGuest(t *testing.T) {
	h := testHost(t)
	t.Setenv(serveEnv, h.StateDir)
	m := testMachine(t, h, "sh", "-c", "exec sleep 100")
	c, err := h.Create(m, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StartDetached([]string{os.Args[0], "-test.run=^$"}); err != nil {
		t.Fatal(err)
	}
	rec, _ := h.Lookup(m.ID)
	t.Cleanup(func() { h.Stop(rec, time.Second) })
	// The fake guest runs on this host: its "/" is ours, so a temp dir stands for the guest's.
	src := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(filepath.Join(src, "d"), 0o750)
	os.WriteFile(filepath.Join(src, "d", "f"), []byte("data"), 0o640)
	os.Symlink("d/f", filepath.Join(src, "l"))

	cl, err := Dial(rec.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Exec(agent.Exec{Copy: &agent.Copy{Out: true, Path: src}}); err != nil {
		t.Fatal(err)
	}
	var tarball bytes.Buffer
	exit, err := cl.Stream(context.Background(), Stdio{Stdout: &tarball, Stderr: &tarball})
	if err != nil || exit.Code != 0 {
		t.Fatalf("copy out: %+v %v", exit, err)
	}
	back := t.TempDir()
	cl2, _ := Dial(rec.Dir)
	defer cl2.Close()
	if err := cl2.Exec(agent.Exec{Stdin: true, Copy: &agent.Copy{Path: back}}); err != nil {
		t.Fatal(err)
	}
	if exit, err := cl2.Stream(context.Background(), Stdio{Stdin: &tarball, Stdout: &bytes.Buffer{}}); err != nil || exit.Code != 0 {
		t.Fatalf("copy in: %+v %v", exit, err)
	}
	if b, _ := os.ReadFile(filepath.Join(back, "tree", "d", "f")); string(b) != "data" {
		t.Fatalf("round trip lost the file: %q", b)
	}
	if l, _ := os.Readlink(filepath.Join(back, "tree", "l")); l != "d/f" {
		t.Fatalf("round trip lost the symlink: %q", l)
	}
	if fi, _ := os.Stat(filepath.Join(back, "tree", "d")); fi == nil || fi.Mode().Perm() != 0o750 {
		t.Fatalf("round trip lost the mode: %v", fi)
	}
}
