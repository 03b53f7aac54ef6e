package run

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// testHostKey is a deterministic ed25519 host key for seed i.
func testHostKey(t *testing.T, i byte) ssh.PublicKey {
	t.Helper()
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = i
	pk, err := ssh.NewPublicKey(ed25519.NewKeyFromSeed(seed).Public())
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

func authorized(k ssh.PublicKey) string {
	return strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(k)), "\n")
}

func TestKnownHostsLines(t *testing.T) {
	k1, k2 := testHostKey(t, 1), testHostKey(t, 2)
	for _, c := range []struct{ host, want string }{
		{"172.16.0.138", "172.16.0.138 " + authorized(k1) + "\n172.16.0.138 " + authorized(k2) + "\n"},
		{"172.16.0.138:22", "172.16.0.138 " + authorized(k1) + "\n172.16.0.138 " + authorized(k2) + "\n"},
		{"127.0.0.1:2222", "[127.0.0.1]:2222 " + authorized(k1) + "\n[127.0.0.1]:2222 " + authorized(k2) + "\n"},
	} {
		if got := string(KnownHostsLines(c.host, []ssh.PublicKey{k1, k2})); got != c.want {
			t.Errorf("KnownHostsLines(%q)\n got %q\nwant %q", c.host, got, c.want)
		}
	}
	if got := KnownHostsLines("h", nil); len(got) != 0 {
		t.Errorf("no keys gave %q", got)
	}
}

func TestAddAndRemoveKnownHosts(t *testing.T) {
	k1, k2, k3, ca := testHostKey(t, 1), testHostKey(t, 2), testHostKey(t, 3), testHostKey(t, 9)
	hashed := knownhosts.HashHostname("172.16.0.138")
	hashedOther := knownhosts.HashHostname("172.16.0.13")
	existing := strings.Join([]string{
		"# my hosts",
		"github.com " + authorized(k3),
		"172.16.0.138 " + authorized(k3),                 // stale entry of the guest
		"other,172.16.0.138 " + authorized(k3),           // shared line: only our name goes
		hashed + " " + authorized(k3),                    // hashed entry of the guest
		hashedOther + " " + authorized(k3),               // hashed entry of a prefix of it
		"172.16.0.13 " + authorized(k3),                  // a prefix of the address
		"172.16.0.1380 " + authorized(k3),                // an extension of it
		"[172.16.0.138]:2222 " + authorized(k3),          // another port
		"172.16.0.* " + authorized(k3),                   // wildcard: someone's policy
		"@cert-authority 172.16.0.138 " + authorized(ca), // markers are never touched
		"",
		"10.0.0.1 " + authorized(k3) + " no newline at the end",
	}, "\n")
	dir := filepath.Join(t.TempDir(), "run")
	path := filepath.Join(dir, "known_hosts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(existing), 0o600); err != nil {
		t.Fatal(err)
	}

	if err := AddKnownHosts(path, "172.16.0.138", []ssh.PublicKey{k1, k2}); err != nil {
		t.Fatal(err)
	}
	kept := strings.Join([]string{
		"# my hosts",
		"github.com " + authorized(k3),
		"other " + authorized(k3),
		hashedOther + " " + authorized(k3),
		"172.16.0.13 " + authorized(k3),
		"172.16.0.1380 " + authorized(k3),
		"[172.16.0.138]:2222 " + authorized(k3),
		"172.16.0.* " + authorized(k3),
		"@cert-authority 172.16.0.138 " + authorized(ca),
		"",
		"10.0.0.1 " + authorized(k3) + " no newline at the end",
	}, "\n") + "\n"
	want := kept + "172.16.0.138 " + authorized(k1) + "\n172.16.0.138 " + authorized(k2) + "\n"
	checkFile(t, path, want, 0o600)

	// The file works for ssh's own matching: the guest's new key is accepted.
	cb, err := knownhosts.New(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := cb("172.16.0.138:22", fakeAddr("172.16.0.138:22"), k1); err != nil {
		t.Errorf("new host key rejected: %v", err)
	}

	// Adding the same keys again changes nothing; adding another host appends.
	if err := AddKnownHosts(path, "172.16.0.138", []ssh.PublicKey{k1, k2}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path, want, 0o600)
	if err := AddKnownHosts(path, "172.16.0.2", []ssh.PublicKey{k3}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path, want+"172.16.0.2 "+authorized(k3)+"\n", 0o600)

	if err := RemoveKnownHosts(path, "172.16.0.138", "172.16.0.2"); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path, kept, 0o600)
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only known_hosts", len(ents))
	}
}

func TestKnownHostsMissingFile(t *testing.T) {
	dir := t.TempDir()
	if err := RemoveKnownHosts(filepath.Join(dir, "nope", "known_hosts"), "h"); err != nil {
		t.Errorf("remove from a missing directory: %v", err)
	}
	path := filepath.Join(dir, "known_hosts")
	if err := RemoveKnownHosts(path, "h"); err != nil {
		t.Errorf("remove from a missing file: %v", err)
	}
	if _, err := os.Stat(path); err == nil {
		t.Error("removing created the file")
	}
	k := testHostKey(t, 1)
	path = filepath.Join(dir, "new", "known_hosts")
	if err := AddKnownHosts(path, "172.16.0.2", []ssh.PublicKey{k}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path, "172.16.0.2 "+authorized(k)+"\n", 0o644)
	if m := mode(t, filepath.Dir(path)); m != 0o700 {
		t.Errorf("created directory mode %04o, want 0700", m)
	}
}

func checkFile(t *testing.T, path, want string, perm os.FileMode) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s:\n got %q\nwant %q", filepath.Base(path), got, want)
	}
	if m := mode(t, path); m != perm {
		t.Errorf("%s mode %04o, want %04o", filepath.Base(path), m, perm)
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }
