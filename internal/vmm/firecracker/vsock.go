package firecracker

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"
)

// DialVsock opens a host-initiated connection to guest vsock port over Firecracker's hybrid
// vsock socket udsPath: connect, send "CONNECT <port>\n", expect "OK <host port>\n". After
// that the connection is a plain byte stream to the guest's listener.
func DialVsock(ctx context.Context, udsPath string, port uint32) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", udsPath)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(conn, "CONNECT %d\n", port); err != nil {
		conn.Close()
		return nil, fmt.Errorf("vsock connect %d: %w", port, err)
	}
	// Byte at a time: a buffered reader could swallow the guest's first bytes.
	var line []byte
	b := make([]byte, 1)
	for len(line) < 64 {
		if _, err := conn.Read(b); err != nil {
			conn.Close()
			// Firecracker closes the connection when nothing listens on the port.
			return nil, fmt.Errorf("vsock connect %d: %w", port, err)
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
	}
	if !strings.HasPrefix(string(line), "OK ") {
		conn.Close()
		return nil, fmt.Errorf("vsock connect %d: unexpected reply %q", port, line)
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}
