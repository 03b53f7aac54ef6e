package supervisor

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
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
