package assets

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func releaseTarball(t *testing.T, version string) (string, string) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	dir := "release-v" + version + "-x86_64/"
	for name, body := range map[string]string{
		dir + "firecracker-v" + version + "-x86_64": "\x7fELF firecracker " + version,
		dir + "jailer-v" + version + "-x86_64":      "\x7fELF jailer " + version,
		dir + "SHA256SUMS":                          "whatever",
	} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(body))
	}
	tw.Close()
	gz.Close()
	p := filepath.Join(t.TempDir(), "firecracker-v"+version+"-x86_64.tgz")
	os.WriteFile(p, buf.Bytes(), 0o644)
	sum := sha256.Sum256(buf.Bytes())
	return p, hex.EncodeToString(sum[:])
}

func TestImportFirecracker(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tgz, sum := releaseTarball(t, "1.6.0")
	d, fc, err := s.ImportFirecracker(tgz, "1.6.0", sum)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Resolve("firecracker/v1.6.0"); got != d {
		t.Fatal("not tagged")
	}
	fi, _ := os.Stat(s.Path(fc.Jailer))
	if b, _ := os.ReadFile(s.Path(fc.Firecracker)); string(b) != "\x7fELF firecracker 1.6.0" || fi.Mode().Perm() != 0o555 {
		t.Fatalf("firecracker %q, jailer mode %v", b, fi.Mode())
	}
	if _, _, err := s.ImportFirecracker(tgz, "1.6.0", strings.Repeat("0", 64)); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("bad checksum: %v", err)
	}
	if _, _, err := s.ImportFirecracker(tgz, "1.7.0", ""); err == nil || !strings.Contains(err.Error(), "wrong version") {
		t.Fatalf("wrong version: %v", err)
	}
	if v, err := ValidateFirecrackerVersion("v1.16.1"); err != nil || v != "1.16.1" {
		t.Fatal(v, err)
	}
	if _, err := ValidateFirecrackerVersion("latest"); err == nil {
		t.Fatal("latest accepted")
	}
}

func TestFirecrackersNewestFirst(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Firecrackers(); err != nil || len(got) != 0 {
		t.Fatalf("empty cache: %v, %v", got, err)
	}
	for _, v := range []string{"1.6.0", "1.16.1", "1.9.2"} {
		tgz, sum := releaseTarball(t, v)
		if _, _, err := s.ImportFirecracker(tgz, v, sum); err != nil {
			t.Fatal(err)
		}
	}
	// A release whose binary went missing cannot run: it is not listed.
	broken, err := s.LoadFirecracker("1.9.2")
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(s.Path(broken.Firecracker))
	got, err := s.Firecrackers()
	if err != nil {
		t.Fatal(err)
	}
	var versions []string
	for _, fc := range got {
		versions = append(versions, fc.Version)
	}
	if strings.Join(versions, " ") != "1.16.1 1.6.0" {
		t.Fatalf("versions %v, want 1.16.1 1.6.0", versions)
	}
	if _, err := s.LoadFirecracker("1.7.0"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "firecracker install --version 1.7.0") {
		t.Fatalf("missing release: %v", err)
	}
}
