package diskprep

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"fmt"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// HostKey is one SSH host key pair for a guest's sshd.
type HostKey struct {
	// Type names the files: /etc/ssh/ssh_host_<Type>_key and .pub ("ed25519", "ecdsa", "rsa").
	Type string
	// Private is the key in OpenSSH's private key format, as ssh-keygen writes it.
	Private []byte
	Public  ssh.PublicKey
}

// HostKeys is one guest's set of host keys.
type HostKeys []HostKey

// rsaBits is ssh-keygen's default RSA size.
const rsaBits = 3072

// GenerateHostKeys makes a fresh ed25519, ECDSA P-256 and RSA-3072 key set, the three types
// sshd's own keygen makes. comment ends up in the .pub lines (ssh-keygen uses root@hostname).
// Debian/Ubuntu images bake their host keys in at build time, so every VM of every user
// would otherwise share them; fresh ones also let the host pin them in known_hosts.
func GenerateHostKeys(comment string) (HostKeys, error) {
	_, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("host keys: ed25519: %w", err)
	}
	ecPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("host keys: ecdsa: %w", err)
	}
	rsaPriv, err := rsa.GenerateKey(rand.Reader, rsaBits)
	if err != nil {
		return nil, fmt.Errorf("host keys: rsa: %w", err)
	}
	var keys HostKeys
	for _, k := range []struct {
		typ  string
		priv any
	}{{"ed25519", edPriv}, {"ecdsa", ecPriv}, {"rsa", rsaPriv}} {
		block, err := ssh.MarshalPrivateKey(k.priv, comment)
		if err != nil {
			return nil, fmt.Errorf("host keys: %s: %w", k.typ, err)
		}
		signer, err := ssh.NewSignerFromKey(k.priv)
		if err != nil {
			return nil, fmt.Errorf("host keys: %s: %w", k.typ, err)
		}
		keys = append(keys, HostKey{Type: k.typ, Private: pem.EncodeToMemory(block), Public: signer.PublicKey()})
	}
	return keys, nil
}

// AuthorizedLine is the key's .pub file content: "<algo> <base64> <comment>\n".
func (k HostKey) AuthorizedLine(comment string) []byte {
	line := bytes.TrimSuffix(ssh.MarshalAuthorizedKey(k.Public), []byte("\n"))
	if comment != "" {
		line = append(append(line, ' '), comment...)
	}
	return append(line, '\n')
}

// Install adds the keys to a batch: /etc/ssh/ssh_host_<type>_key 0600 and .pub 0644, owned
// by root, replacing the image's. Other host key files the image has (ssh_host_dsa_key on
// old images) are removed so sshd offers only keys the host knows. 0600 root:root is what
// every sshd accepts (Fedora's 0640 root:ssh_keys is also accepted there, not required).
func (h HostKeys) Install(e *Edits, comment string) {
	have := map[string]bool{}
	for _, k := range h {
		have[k.Type] = true
		base := "/etc/ssh/ssh_host_" + k.Type + "_key"
		e.WriteFile(base, k.Private, 0o600, 0, 0)
		e.WriteFile(base+".pub", k.AuthorizedLine(comment), 0o644, 0, 0)
	}
	for _, t := range []string{"dsa", "ecdsa", "ed25519", "rsa"} {
		if !have[t] {
			e.Remove("/etc/ssh/ssh_host_" + t + "_key")
			e.Remove("/etc/ssh/ssh_host_" + t + "_key.pub")
		}
	}
}

// KnownHosts returns known_hosts lines for the keys under the given addresses ("10.0.0.2",
// "[10.0.0.2]:2222", or names), one line per key.
func (h HostKeys) KnownHosts(addresses ...string) []byte {
	var b bytes.Buffer
	for _, k := range h {
		b.WriteString(knownhosts.Line(addresses, k.Public))
		b.WriteByte('\n')
	}
	return b.Bytes()
}
