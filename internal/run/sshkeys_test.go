package run

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

// smallKeys makes generated keys fast for the duration of a test.
func smallKeys(t *testing.T) {
	old := rsaBits
	rsaBits = 1024
	t.Cleanup(func() { rsaBits = old })
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestEnsureKeyPairGenerates is the one test that pays for an RSA-4096 key.
func TestEnsureKeyPairGenerates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ssh")
	prv, pub := filepath.Join(dir, "firecracker_machines"), filepath.Join(dir, "firecracker_machines.pub")
	kp, err := EnsureKeyPair(prv, pub)
	if err != nil {
		t.Fatal(err)
	}
	if !kp.Generated || !kp.WrotePublic {
		t.Errorf("Generated=%v WrotePublic=%v, want both", kp.Generated, kp.WrotePublic)
	}
	if m := mode(t, dir); m != 0o755 {
		t.Errorf("key directory mode %04o, want 0755", m)
	}
	if m := mode(t, prv); m != 0o600 {
		t.Errorf("private key mode %04o, want 0600", m)
	}
	if m := mode(t, pub); m != 0o644 {
		t.Errorf("public key mode %04o, want 0644", m)
	}
	data, err := os.ReadFile(prv)
	if err != nil {
		t.Fatal(err)
	}
	if block, _ := pem.Decode(data); block == nil || block.Type != "OPENSSH PRIVATE KEY" {
		t.Fatalf("private key is not in OpenSSH format: %.40q", data)
	}
	raw, err := ssh.ParseRawPrivateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	key, ok := raw.(*rsa.PrivateKey)
	if !ok || key.N.BitLen() != 4096 {
		t.Fatalf("private key is %T, want RSA-4096", raw)
	}
	pubData, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	filePub, _, _, _, err := ssh.ParseAuthorizedKey(pubData)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(filePub.Marshal(), kp.Public.Marshal()) || !bytes.Equal(pubData, kp.AuthorizedKey) {
		t.Error("public key file does not match the private key")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("key directory holds %d entries, want the two keys only", len(ents))
	}
}

func writeKey(t *testing.T, path string, key any, passphrase string) {
	t.Helper()
	var block *pem.Block
	var err error
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(key, "mine")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(key, "mine", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestEnsureKeyPairKeepsExistingKey(t *testing.T) {
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(edKey)
	if err != nil {
		t.Fatal(err)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	otherSigner, _ := ssh.NewSignerFromKey(other)
	own := ssh.MarshalAuthorizedKey(signer.PublicKey())
	ownWithComment := []byte(strings.TrimSuffix(string(own), "\n") + " me@laptop\n")

	for _, c := range []struct {
		name      string
		pub       []byte // nil: no public key file
		wantWrite bool
	}{
		{"public key missing", nil, true},
		{"public key matches (comment kept)", ownWithComment, false},
		{"public key of another key", ssh.MarshalAuthorizedKey(otherSigner.PublicKey()), true},
		{"public key unreadable as a key", []byte("garbage\n"), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			prv, pub := filepath.Join(dir, "id"), filepath.Join(dir, "id.pub")
			writeKey(t, prv, edKey, "")
			before, _ := os.ReadFile(prv)
			if c.pub != nil {
				if err := os.WriteFile(pub, c.pub, 0o640); err != nil {
					t.Fatal(err)
				}
			}
			kp, err := EnsureKeyPair(prv, pub)
			if err != nil {
				t.Fatal(err)
			}
			if kp.Generated {
				t.Error("an existing ed25519 key was replaced")
			}
			if after, _ := os.ReadFile(prv); !bytes.Equal(before, after) {
				t.Error("private key file changed")
			}
			if !bytes.Equal(kp.Public.Marshal(), signer.PublicKey().Marshal()) {
				t.Error("returned public key is not the existing key's")
			}
			if kp.WrotePublic != c.wantWrite {
				t.Errorf("WrotePublic = %v, want %v", kp.WrotePublic, c.wantWrite)
			}
			got, _ := os.ReadFile(pub)
			want, wantMode := own, os.FileMode(0o644)
			if !c.wantWrite {
				want, wantMode = c.pub, 0o640
			}
			if !bytes.Equal(got, want) {
				t.Errorf("public key file = %q, want %q", got, want)
			}
			if m := mode(t, pub); m != wantMode {
				t.Errorf("public key mode %04o, want %04o", m, wantMode)
			}
		})
	}
}

func TestEnsureKeyPairErrors(t *testing.T) {
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	for _, c := range []struct {
		name  string
		setup func(prv string)
		want  string
	}{
		{"passphrase", func(prv string) { writeKey(t, prv, edKey, "secret") },
			"ssh private key PRV: protected by a passphrase; firegopher (like their playbooks) needs a key without one"},
		{"not a key", func(prv string) { os.WriteFile(prv, []byte("hello\n"), 0o600) },
			"ssh private key PRV: ssh: no key found"},
		{"readable by others", func(prv string) { writeKey(t, prv, edKey, ""); os.Chmod(prv, 0o644) },
			"ssh private key PRV: mode 0644 lets others read it and ssh will refuse it (chmod 600 PRV)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			prv := filepath.Join(dir, "id")
			c.setup(prv)
			_, err := EnsureKeyPair(prv, prv+".pub")
			if want := strings.ReplaceAll(c.want, "PRV", prv); err == nil || err.Error() != want {
				t.Errorf("error = %v, want %s", err, want)
			}
			if _, err := os.Stat(prv + ".pub"); err == nil {
				t.Error("a public key was written for a private key that was refused")
			}
		})
	}
}

func TestEnsureKeyPairRace(t *testing.T) {
	smallKeys(t)
	dir := filepath.Join(t.TempDir(), "a", "b")
	prv, pub := filepath.Join(dir, "k"), filepath.Join(dir, "k.pub")
	const n = 4
	keys := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kp, err := EnsureKeyPair(prv, pub)
			if err == nil {
				keys[i] = kp.Public.Marshal()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !bytes.Equal(keys[i], keys[0]) {
			t.Fatalf("caller %d got a different key than caller 0", i)
		}
	}
	signer, err := loadPrivateKey(prv)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(signer.PublicKey().Marshal(), keys[0]) {
		t.Error("the key on disk is not the one the callers got")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("key directory holds %d entries, want 2 (temporary files left?)", len(ents))
	}
}
