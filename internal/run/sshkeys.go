package run

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
)

// rsaBits is the size of generated keys: community.crypto.openssh_keypair's default.
// Tests lower it; nothing else may.
var rsaBits = 4096

// KeyPair is the run's SSH key pair as EnsureKeyPair left it.
type KeyPair struct {
	Public        ssh.PublicKey
	AuthorizedKey []byte // the public key as one authorized_keys line, newline-terminated
	Generated     bool   // a new pair was created
	WrotePublic   bool   // the public key file was (re)written from the private key
}

// EnsureKeyPair makes sure prv holds an unencrypted OpenSSH private key and pub its public
// half, as kernel-testing's community.crypto.openssh_keypair task does, without its
// destructive side: an existing private key of any type and size is kept (theirs would
// regenerate a non-RSA-4096 one). If prv is missing, an RSA-4096 key is generated in
// OpenSSH format, mode 0600, its directory created 0755 if missing; if two processes race,
// one key wins and both use it. A missing, unreadable or mismatched pub is rewritten from
// the private key (mode 0644); a matching one is left untouched.
func EnsureKeyPair(prv, pub string) (*KeyPair, error) {
	kp := &KeyPair{}
	signer, err := loadPrivateKey(prv)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(prv), 0o755); err != nil {
			return nil, fmt.Errorf("ssh key: %w", err)
		}
		signer, err = createPrivateKey(prv)
		if errors.Is(err, fs.ErrExist) { // another process created it first: use theirs
			signer, err = loadPrivateKey(prv)
		} else {
			kp.Generated = err == nil
		}
	}
	if err != nil {
		return nil, err
	}
	kp.Public = signer.PublicKey()
	kp.AuthorizedKey = ssh.MarshalAuthorizedKey(kp.Public)

	existing, err := os.ReadFile(pub)
	switch {
	case err == nil && !kp.Generated:
		k, _, _, _, perr := ssh.ParseAuthorizedKey(existing)
		if perr == nil && bytes.Equal(k.Marshal(), kp.Public.Marshal()) {
			return kp, nil
		}
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("ssh public key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(pub), 0o755); err != nil {
		return nil, fmt.Errorf("ssh public key: %w", err)
	}
	if err := WriteFileAtomic(pub, kp.AuthorizedKey, 0o644); err != nil {
		return nil, fmt.Errorf("ssh public key: %w", err)
	}
	kp.WrotePublic = true
	return kp, nil
}

// loadPrivateKey reads an existing private key; fs.ErrNotExist when there is none.
func loadPrivateKey(path string) (ssh.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("ssh private key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	var missing *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &missing):
		return nil, fmt.Errorf("ssh private key %s: protected by a passphrase; firegopher (like their playbooks) needs a key without one", path)
	case err != nil:
		return nil, fmt.Errorf("ssh private key %s: %v", path, err)
	}
	// ssh refuses such a key ("UNPROTECTED PRIVATE KEY FILE") when its owner uses it.
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("ssh private key %s: mode %04o lets others read it and ssh will refuse it (chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	return signer, nil
}

// createPrivateKey generates a key and publishes it at path only if path still does not
// exist (a hard link cannot replace a file): fs.ErrExist means another process won.
func createPrivateKey(path string) (ssh.Signer, error) {
	key, err := rsa.GenerateKey(rand.Reader, rsaBits)
	if err != nil {
		return nil, fmt.Errorf("ssh key: generate: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(key, "")
	if err != nil {
		return nil, fmt.Errorf("ssh key: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*") // 0600
	if err != nil {
		return nil, fmt.Errorf("ssh key: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(pem.EncodeToMemory(block))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("ssh key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fs.ErrExist
		}
		return nil, fmt.Errorf("ssh key: %w", err)
	}
	return ssh.NewSignerFromKey(key)
}
