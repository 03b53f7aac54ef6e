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
	"slices"
	"strconv"
	"strings"
)

// DefaultFirecrackerVersion is what `firecracker install` fetches without --version: the
// newest tested release. Releases before 1.8 cannot show their devices to the default
// Debian kernel (no CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES), so the default must be 1.8 or newer.
const DefaultFirecrackerVersion = "1.16.1"

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

// firecrackerRefs is where ImportFirecracker tags releases: refs/firecracker/vX.Y.Z.
const firecrackerRefs = "firecracker"

// Firecrackers lists the installed releases, newest first. A tag whose manifest or
// binaries are gone is skipped: it cannot run.
func (s *Store) Firecrackers() ([]*Firecracker, error) {
	ents, err := os.ReadDir(filepath.Join(s.root, "refs", firecrackerRefs))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Firecracker
	for _, e := range ents {
		v, ok := strings.CutPrefix(e.Name(), "v")
		if !ok || !versionPattern.MatchString(v) {
			continue
		}
		fc, err := s.LoadFirecracker(v)
		if err != nil {
			continue
		}
		out = append(out, fc)
	}
	slices.SortFunc(out, func(a, b *Firecracker) int { return compareVersions(b.Version, a.Version) })
	return out, nil
}

// LoadFirecracker returns installed release version ("1.16.1"), or an error wrapping
// ErrNotFound that says how to install it.
func (s *Store) LoadFirecracker(version string) (*Firecracker, error) {
	d, err := s.Resolve(firecrackerRefs + "/v" + version)
	if err != nil {
		return nil, fmt.Errorf("firecracker v%s is not installed (firegopher firecracker install --version %s): %w", version, version, err)
	}
	var fc Firecracker
	if err := s.GetJSON(d, &fc); err != nil {
		return nil, err
	}
	if !s.Has(fc.Firecracker) || !s.Has(fc.Jailer) {
		return nil, fmt.Errorf("firecracker v%s: binaries missing from the cache (firegopher firecracker install --version %s): %w", version, version, ErrNotFound)
	}
	return &fc, nil
}

// compareVersions orders MAJOR.MINOR.PATCH strings numerically.
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, _ := strconv.Atoi(as[i])
		y, _ := strconv.Atoi(bs[i])
		if x != y {
			return x - y
		}
	}
	return len(as) - len(bs)
}
