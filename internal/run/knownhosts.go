package run

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"golang.org/x/sys/unix"
)

// KnownHostsLines renders one known_hosts line per key for host (an address or name,
// optionally host:port; port 22 is written bare, as ssh does).
func KnownHostsLines(host string, keys []ssh.PublicKey) []byte {
	var b bytes.Buffer
	for _, k := range keys {
		b.WriteString(knownhosts.Line([]string{host}, k))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// AddKnownHosts records keys as host's keys in the known_hosts file at path: every earlier
// entry for exactly host is dropped first (a re-created guest has new keys), other lines are
// kept byte for byte. The file is replaced atomically, keeping its mode (0644 when new; the
// directory is created 0700 if missing), and concurrent firegopher edits of files in the
// same directory are serialised.
func AddKnownHosts(path, host string, keys []ssh.PublicKey) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("known_hosts: %w", err)
	}
	return editKnownHosts(path, true, func(data []byte) []byte {
		return append(withoutHosts(data, []string{host}), KnownHostsLines(host, keys)...)
	})
}

// RemoveKnownHosts drops the entries of exactly these hosts from the known_hosts file at
// path (plain or hashed, also from lines that list several hosts; wildcard, negated and
// @cert-authority/@revoked lines are never touched). A missing file is fine.
func RemoveKnownHosts(path string, hosts ...string) error {
	return editKnownHosts(path, false, func(data []byte) []byte { return withoutHosts(data, hosts) })
}

// editKnownHosts rewrites path through edit under an flock of its directory (the file itself
// is replaced by rename, so it cannot carry the lock).
func editKnownHosts(path string, create bool, edit func([]byte) []byte) error {
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !create {
			return nil
		}
		return fmt.Errorf("known_hosts: %w", err)
	}
	defer dir.Close()
	if err := unix.Flock(int(dir.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("known_hosts: lock %s: %w", dir.Name(), err)
	}
	defer unix.Flock(int(dir.Fd()), unix.LOCK_UN)

	mode := os.FileMode(0o644)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !create:
		return nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("known_hosts: %w", err)
	case err == nil:
		if fi, err := os.Stat(path); err == nil {
			mode = fi.Mode().Perm()
		}
	}
	out := edit(data)
	if err == nil && bytes.Equal(out, data) {
		return nil
	}
	if err := WriteFileAtomic(path, out, mode); err != nil {
		return fmt.Errorf("known_hosts: %w", err)
	}
	return nil
}

// withoutHosts is data without the entries of hosts; a last line without a newline gets one.
func withoutHosts(data []byte, hosts []string) []byte {
	want := map[string]bool{}
	for _, h := range hosts {
		want[knownhosts.Normalize(h)] = true
	}
	var out bytes.Buffer
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if line == "" {
			continue
		}
		if !strings.HasSuffix(line, "\n") {
			line += "\n"
		}
		trimmed := strings.TrimLeft(line, " \t")
		if trimmed == "\n" || strings.HasPrefix(trimmed, "#") || strings.HasPrefix(trimmed, "@") {
			out.WriteString(line)
			continue
		}
		end := strings.IndexAny(trimmed, " \t")
		if end < 0 {
			out.WriteString(line) // not an entry ssh would read; not ours to judge
			continue
		}
		var kept []string
		patterns := strings.Split(trimmed[:end], ",")
		for _, p := range patterns {
			if !patternIsOneOf(p, want) {
				kept = append(kept, p)
			}
		}
		switch {
		case len(kept) == len(patterns):
			out.WriteString(line)
		case len(kept) > 0:
			out.WriteString(strings.Join(kept, ",") + trimmed[end:])
		}
	}
	return out.Bytes()
}

// patternIsOneOf is whether a known_hosts host pattern names exactly one of hosts
// (normalised): equal text, or a |1|salt|hash entry of it. Wildcards and negations never
// match: they are somebody's policy, not an entry we wrote.
func patternIsOneOf(p string, hosts map[string]bool) bool {
	if !strings.HasPrefix(p, "|1|") {
		return hosts[p]
	}
	parts := strings.Split(p, "|")
	if len(parts) != 4 {
		return false
	}
	salt, err1 := base64.StdEncoding.DecodeString(parts[2])
	sum, err2 := base64.StdEncoding.DecodeString(parts[3])
	if err1 != nil || err2 != nil {
		return false
	}
	for h := range hosts {
		mac := hmac.New(sha1.New, salt)
		mac.Write([]byte(h))
		if hmac.Equal(mac.Sum(nil), sum) {
			return true
		}
	}
	return false
}
