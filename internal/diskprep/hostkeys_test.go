package diskprep

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func TestGenerateHostKeys(t *testing.T) {
	keys, err := GenerateHostKeys("root@vm")
	if err != nil {
		t.Fatal(err)
	}
	wantAlgo := map[string]string{"ed25519": ssh.KeyAlgoED25519, "ecdsa": ssh.KeyAlgoECDSA256, "rsa": ssh.KeyAlgoRSA}
	if len(keys) != len(wantAlgo) {
		t.Fatalf("%d keys, want %d", len(keys), len(wantAlgo))
	}
	for _, k := range keys {
		if got := k.Public.Type(); got != wantAlgo[k.Type] {
			t.Errorf("%s key is %s, want %s", k.Type, got, wantAlgo[k.Type])
		}
		if !bytes.HasPrefix(k.Private, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\n")) {
			t.Errorf("%s private key is not in OpenSSH format:\n%s", k.Type, k.Private)
		}
		signer, err := ssh.ParsePrivateKey(k.Private)
		if err != nil {
			t.Fatalf("%s: %v", k.Type, err)
		}
		if !bytes.Equal(signer.PublicKey().Marshal(), k.Public.Marshal()) {
			t.Errorf("%s: private and public keys do not match", k.Type)
		}
		line := k.AuthorizedLine("root@vm")
		pub, comment, _, _, err := ssh.ParseAuthorizedKey(line)
		if err != nil || comment != "root@vm" || !bytes.Equal(pub.Marshal(), k.Public.Marshal()) {
			t.Errorf("%s .pub line %q: %v, comment %q", k.Type, line, err, comment)
		}
		// OpenSSH itself must read the key file as sshd would (same parser).
		if keygen, err := exec.LookPath("ssh-keygen"); err == nil {
			f := filepath.Join(t.TempDir(), "ssh_host_"+k.Type+"_key")
			if err := os.WriteFile(f, k.Private, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(keygen, "-y", "-f", f).CombinedOutput()
			if err != nil || !strings.HasPrefix(string(line), strings.TrimSpace(string(out))) {
				t.Errorf("ssh-keygen -y -f %s: %v: %s (want the start of %q)", k.Type, err, out, line)
			}
		}
	}
	other, err := GenerateHostKeys("")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other[0].Public.Marshal(), keys[0].Public.Marshal()) {
		t.Error("two calls gave the same key")
	}
}

func TestKnownHostsPinsExactlyTheseKeys(t *testing.T) {
	keys, err := GenerateHostKeys("")
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateHostKeys("")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(file, keys.KnownHosts("172.16.22.230", "ubuntu-6.5"), 0o600); err != nil {
		t.Fatal(err)
	}
	check, err := knownhosts.New(file)
	if err != nil {
		t.Fatal(err)
	}
	addr := &net.TCPAddr{IP: net.ParseIP("172.16.22.230"), Port: 22}
	for i, k := range keys {
		if err := check("172.16.22.230:22", addr, k.Public); err != nil {
			t.Errorf("%s key refused: %v", k.Type, err)
		}
		if err := check("ubuntu-6.5:22", addr, k.Public); err != nil {
			t.Errorf("%s key refused under the name: %v", k.Type, err)
		}
		if err := check("172.16.22.230:22", addr, other[i].Public); err == nil {
			t.Errorf("a different %s key was accepted", k.Type)
		}
	}
}

func TestInstallRemovesKeysTheHostDoesNotKnow(t *testing.T) {
	keys := HostKeys{{Type: "ed25519", Private: []byte("k"), Public: mustKeys(t)[0].Public}}
	var e Edits
	keys.Install(&e, "c")
	var writes, removes []string
	for _, o := range e.ops {
		switch o.kind {
		case opWrite:
			writes = append(writes, o.path)
		case opRemove:
			removes = append(removes, o.path)
		}
	}
	if strings.Join(writes, " ") != "/etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub" {
		t.Errorf("writes %v", writes)
	}
	if len(removes) != 6 || !strings.Contains(strings.Join(removes, " "), "/etc/ssh/ssh_host_dsa_key.pub") {
		t.Errorf("removes %v, want dsa, ecdsa and rsa keys and .pub files", removes)
	}
}

func mustKeys(t *testing.T) HostKeys {
	t.Helper()
	k, err := GenerateHostKeys("")
	if err != nil {
		t.Fatal(err)
	}
	return k
}
