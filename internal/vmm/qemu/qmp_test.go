package qemu

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeQMP answers one client on sock: the greeting, then for each command line the
// lines answer returns (events first, then the reply). A descriptor passed with a command
// is reported on files.
func fakeQMP(t *testing.T, sock string, answer func(cmd string) []string, files chan<- *os.File) {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		uc := c.(*net.UnixConn)
		c.Write([]byte(`{"QMP": {"version": {}}}` + "\n"))
		buf, oob := make([]byte, 4096), make([]byte, 128)
		for {
			n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			if msgs, _ := unix.ParseSocketControlMessage(oob[:oobn]); len(msgs) > 0 {
				if fds, _ := unix.ParseUnixRights(&msgs[0]); len(fds) > 0 {
					files <- os.NewFile(uintptr(fds[0]), "passed")
				}
			}
			for _, line := range strings.Split(strings.TrimSpace(string(buf[:n])), "\n") {
				var req struct {
					Execute string `json:"execute"`
				}
				json.Unmarshal([]byte(line), &req)
				for _, out := range answer(req.Execute) {
					c.Write([]byte(out + "\n"))
				}
			}
		}
	}()
}

func TestQMPKeepsEventsAndNamesErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	files := make(chan *os.File, 1)
	fakeQMP(t, sock, func(cmd string) []string {
		switch cmd {
		case "migrate-incoming":
			// The migration's end arrives before the command's reply.
			return []string{`{"event": "MIGRATION", "data": {"status": "active"}}`, `{"event": "MIGRATION", "data": {"status": "completed"}}`, `{"return": {}}`}
		case "device_add":
			return []string{`{"error": {"class": "GenericError", "desc": "Bus 'rp9' not found"}}`}
		}
		return []string{`{"return": {}}`}
	}, files)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q, err := dialQMP(ctx, sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	state, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer state.Close()
	if err := q.passFile("template", state); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-files:
		f.Close()
	case <-ctx.Done():
		t.Fatal("no descriptor reached QEMU's side")
	}
	if _, err := q.execute("migrate-incoming", map[string]any{"uri": "fd:template"}); err != nil {
		t.Fatal(err)
	}
	if err := q.migrated(); err != nil {
		t.Fatalf("migrated: %v (the completion came before the reply and must not be lost)", err)
	}
	if _, err := q.execute("device_add", nil); err == nil || !strings.Contains(err.Error(), "rp9") {
		t.Fatalf("device_add: %v, want QEMU's reason", err)
	}
}

func TestQMPMigrationFailureIsAnError(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	fakeQMP(t, sock, func(cmd string) []string {
		if cmd == "migrate" {
			return []string{`{"return": {}}`, `{"event": "MIGRATION", "data": {"status": "failed"}}`}
		}
		return []string{`{"return": {}}`}
	}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q, err := dialQMP(ctx, sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := q.execute("migrate", nil); err != nil {
		t.Fatal(err)
	}
	if err := q.migrated(); err == nil || !strings.Contains(err.Error(), "failed") {
		t.Fatalf("migrated: %v, want the failure", err)
	}
}

func TestDialQMPWaitsForTheSocketAndGivesUpWhenQEMUExits(t *testing.T) {
	exited := make(chan struct{})
	close(exited)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := dialQMP(ctx, filepath.Join(t.TempDir(), "never.sock"), exited); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("dial: %v, want QEMU's exit named", err)
	}
}
