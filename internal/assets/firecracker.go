package assets

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// DefaultFirecrackerVersion is what `firecracker install` fetches without --version.
const DefaultFirecrackerVersion = "1.6.0"

// Firecracker is one release's binaries.
type Firecracker struct {
	Version     string `json:"version"`
	Source      string `json:"source"`
	Firecracker Digest `json:"firecracker"`
	Jailer      Digest `json:"jailer"`
}

var versionPattern = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+$`)

// ValidateFirecrackerVersion accepts "1.6.0" or "v1.6.0" and returns "1.6.0".
func ValidateFirecrackerVersion(v string) (string, error) {
	v = strings.TrimPrefix(v, "v")
	if !versionPattern.MatchString(v) {
		return "", fmt.Errorf("--version: %q, want MAJOR.MINOR.PATCH like %s", v, DefaultFirecrackerVersion)
	}
	return v, nil
}

// FirecrackerReleaseURL is the release tarball of version for this host's architecture.
func FirecrackerReleaseURL(version string) string {
	return fmt.Sprintf("https://github.com/firecracker-microvm/firecracker/releases/download/v%s/firecracker-v%s-x86_64.tgz", version, version)
}

// DownloadFirecracker fetches the release tarball and its published checksum into dir.
func DownloadFirecracker(ctx context.Context, version, dir string) (tgz, sum string, err error) {
	url := FirecrackerReleaseURL(version)
	sumText, err := httpGet(ctx, url+".sha256.txt", 4096)
	if err != nil {
		return "", "", err
	}
	sum, _, _ = strings.Cut(strings.TrimSpace(string(sumText)), " ")
	tgz = filepath.Join(dir, path.Base(url))
	f, err := os.Create(tgz)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", "", fmt.Errorf("download %s: %w (no internet? use --from FILE)", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("download %s: %s", url, resp.Status)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		return "", "", err
	}
	return tgz, sum, f.Close()
}

func httpGet(ctx context.Context, url string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("download %s: %w (no internet? use --from FILE)", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("download %s: %s", url, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, limit))
}

// ImportFirecracker stores firecracker and jailer from a release tarball
// (release-vX/firecracker-vX-x86_64 and jailer-vX-x86_64), after checking the tarball's
// SHA-256 when wantSum is given, and tags them "firecracker/vX".
func (s *Store) ImportFirecracker(tgz, version, wantSum string) (Digest, *Firecracker, error) {
	f, err := os.Open(tgz)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	if wantSum != "" {
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return "", nil, err
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != strings.ToLower(wantSum) {
			return "", nil, fmt.Errorf("%s: sha256 %s does not match the published %s", tgz, got, wantSum)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return "", nil, err
		}
	}
	gz, err := gzip.NewReader(f)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", tgz, err)
	}
	fc := &Firecracker{Version: version, Source: "file:" + filepath.Base(tgz)}
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", nil, fmt.Errorf("%s: %w", tgz, err)
		}
		switch path.Base(hdr.Name) {
		case "firecracker-v" + version + "-x86_64":
			fc.Firecracker, err = s.putExecutable(tr)
		case "jailer-v" + version + "-x86_64":
			fc.Jailer, err = s.putExecutable(tr)
		}
		if err != nil {
			return "", nil, err
		}
	}
	if fc.Firecracker == "" || fc.Jailer == "" {
		return "", nil, fmt.Errorf("%s holds no firecracker-v%[2]s-x86_64 and jailer-v%[2]s-x86_64: wrong version or not a release tarball", tgz, version)
	}
	d, err := s.PutJSON(fc)
	if err != nil {
		return "", nil, err
	}
	return d, fc, s.Tag("firecracker/v"+version, d)
}

// putExecutable stores a binary that the jailer will hard-link and exec: 0555, not 0444.
func (s *Store) putExecutable(r io.Reader) (Digest, error) {
	d, err := s.Put(r)
	if err != nil {
		return "", err
	}
	return d, os.Chmod(s.Path(d), 0o555)
}
