package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// qmp is a QMP session: commands in order, events kept until someone waits for them.
type qmp struct {
	c      net.Conn
	r      *bufio.Reader
	events []qmpMessage
}

type qmpMessage struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

// dialQMP connects to sock, which QEMU creates a moment after it starts: it looks again
// every few milliseconds until ctx ends or exited closes (the VMM died first).
func dialQMP(ctx context.Context, sock string, exited <-chan struct{}) (*qmp, error) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			q := &qmp{c: c, r: bufio.NewReader(c)}
			if dl, ok := ctx.Deadline(); ok {
				c.SetDeadline(dl)
			}
			if _, err := q.r.ReadBytes('\n'); err != nil { // {"QMP": {...}}
				c.Close()
				return nil, fmt.Errorf("QMP greeting: %w", err)
			}
			if _, err := q.execute("qmp_capabilities", nil); err != nil {
				c.Close()
				return nil, err
			}
			return q, nil
		}
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("QMP: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("QMP: %s did not appear: %w", sock, ctx.Err())
		case <-exited:
			return nil, errors.New("QMP: QEMU exited before its monitor was up")
		case <-t.C:
		}
	}
}

func (q *qmp) Close() error { return q.c.Close() }

func (q *qmp) read() (qmpMessage, error) {
	line, err := q.r.ReadBytes('\n')
	if err != nil {
		return qmpMessage{}, fmt.Errorf("QMP: %w", err)
	}
	var m qmpMessage
	if err := json.Unmarshal(line, &m); err != nil {
		return qmpMessage{}, fmt.Errorf("QMP: %q: %w", line, err)
	}
	return m, nil
}

// execute runs one command and returns its result; events that arrive first are kept.
func (q *qmp) execute(cmd string, args any) (json.RawMessage, error) {
	return q.executeWithFile(cmd, args, nil)
}

// passFile hands f to QEMU under name (QMP getfd, the descriptor passed alongside the
// command): "fd:name" migration URIs then read or write it directly.
func (q *qmp) passFile(name string, f *os.File) error {
	_, err := q.executeWithFile("getfd", map[string]any{"fdname": name}, f)
	return err
}

func (q *qmp) executeWithFile(cmd string, args any, f *os.File) (json.RawMessage, error) {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	b = append(b, '\n')
	if f != nil {
		uc, ok := q.c.(*net.UnixConn)
		if !ok {
			return nil, fmt.Errorf("QMP %s: not a unix socket", cmd)
		}
		_, _, err = uc.WriteMsgUnix(b, unix.UnixRights(int(f.Fd())), nil)
		runtime.KeepAlive(f)
	} else {
		_, err = q.c.Write(b)
	}
	if err != nil {
		return nil, fmt.Errorf("QMP %s: %w", cmd, err)
	}
	for {
		m, err := q.read()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cmd, err)
		}
		switch {
		case m.Event != "":
			q.events = append(q.events, m)
		case m.Error != nil:
			return nil, fmt.Errorf("QMP %s: %s: %s", cmd, m.Error.Class, m.Error.Desc)
		default:
			return m.Return, nil
		}
	}
}

// migrated waits for the MIGRATION event that ends a migration (the "events" capability
// must be on): nil when it completed.
func (q *qmp) migrated() error {
	for {
		var m qmpMessage
		if len(q.events) > 0 {
			m, q.events = q.events[0], q.events[1:]
		} else {
			var err error
			if m, err = q.read(); err != nil {
				return err
			}
		}
		if m.Event != "MIGRATION" {
			continue
		}
		var d struct {
			Status string `json:"status"`
		}
		json.Unmarshal(m.Data, &d)
		switch d.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s", d.Status)
		}
	}
}
