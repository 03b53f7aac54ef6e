// Package assets is the content-addressed cache of what VMs boot from: kernels, root
// filesystem images and the manifests that tie their parts together. Every blob is named
// by the SHA-256 of its bytes and becomes visible only by an atomic rename, so a crash
// never leaves a half-written entry; refs ("kernel/default") are small files pointing at
// a digest, also replaced atomically.
package assets

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/firegopher/firegopher/internal/flock"
)

// Digest names content: "sha256:<64 hex>".
type Digest string

// ParseDigest validates a digest string.
func ParseDigest(s string) (Digest, error) {
	hexPart, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(hexPart) != 64 {
		return "", fmt.Errorf("digest %q: want sha256:<64 hex digits>", s)
	}
	if _, err := hex.DecodeString(hexPart); err != nil {
		return "", fmt.Errorf("digest %q: %w", s, err)
	}
	return Digest(s), nil
}

// Hex is the digest without its algorithm.
func (d Digest) Hex() string { return strings.TrimPrefix(string(d), "sha256:") }

// Short is the first 12 hex digits, for messages.
func (d Digest) Short() string { return d.Hex()[:12] }

// ErrNotFound is returned for refs and blobs that are not in the store.
var ErrNotFound = errors.New("not in the cache")

// Store is the cache directory.
type Store struct{ root string }

// refPattern keeps refs to simple relative paths: kind/name, no traversal.
var refPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*(/[a-zA-Z0-9][a-zA-Z0-9._-]*)+$`)

// Open creates the store's directories under root if needed.
func Open(root string) (*Store, error) {
	for _, d := range []string{"blobs/sha256", "refs", "tmp", "locks"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, fmt.Errorf("cache %s: %w", root, err)
		}
	}
	return &Store{root: root}, nil
}

// Root is the store's directory.
func (s *Store) Root() string { return s.root }

// Path is where the blob d lives. The file must be treated as read-only.
func (s *Store) Path(d Digest) string { return filepath.Join(s.root, "blobs", "sha256", d.Hex()) }

// Has says whether blob d is present.
func (s *Store) Has(d Digest) bool {
	_, err := os.Stat(s.Path(d))
	return err == nil
}

// TempDir makes a scratch directory on the store's filesystem, so that results can be
// renamed into place. The caller removes it.
func (s *Store) TempDir(pattern string) (string, error) {
	return os.MkdirTemp(filepath.Join(s.root, "tmp"), pattern)
}

// Put stores the bytes read from r.
func (s *Store) Put(r io.Reader) (Digest, error) {
	f, err := os.CreateTemp(filepath.Join(s.root, "tmp"), "blob-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name()) // no-op after the rename
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), r); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	d := Digest("sha256:" + hex.EncodeToString(h.Sum(nil)))
	return d, s.commit(f.Name(), d)
}

// PutBytes stores b.
func (s *Store) PutBytes(b []byte) (Digest, error) {
	return s.Put(bytes.NewReader(b))
}

// Adopt moves a finished file (made under TempDir) into the store without copying it, so
// that large sparse images stay sparse and cost no second write.
func (s *Store) Adopt(path string) (Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		return "", err
	}
	d := Digest("sha256:" + hex.EncodeToString(h.Sum(nil)))
	if err := os.Chmod(path, 0o444); err != nil {
		return "", err
	}
	return d, s.commit(path, d)
}

func (s *Store) commit(tmp string, d Digest) error {
	if err := os.Chmod(tmp, 0o444); err != nil {
		return err
	}
	if s.Has(d) {
		// Same content already there: keep the existing file, it may be in use.
		return os.Remove(tmp)
	}
	return os.Rename(tmp, s.Path(d))
}

// PutJSON stores v encoded as JSON (manifests).
func (s *Store) PutJSON(v any) (Digest, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "", err
	}
	return s.PutBytes(b)
}

// GetJSON decodes blob d into v.
func (s *Store) GetJSON(d Digest, v any) error {
	b, err := os.ReadFile(s.Path(d))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("blob %s: %w", d.Short(), ErrNotFound)
	}
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// Tag points ref at d, replacing what it pointed at.
func (s *Store) Tag(ref string, d Digest) error {
	p, err := s.refPath(ref)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Join(s.root, "tmp"), "ref-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(string(d) + "\n"); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}

// Resolve returns the digest ref points at, if its blob is present.
func (s *Store) Resolve(ref string) (Digest, error) {
	p, err := s.refPath(ref)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%s: %w", ref, ErrNotFound)
	}
	if err != nil {
		return "", err
	}
	d, err := ParseDigest(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("ref %s: %w", ref, err)
	}
	if !s.Has(d) {
		return "", fmt.Errorf("%s: blob %s missing: %w", ref, d.Short(), ErrNotFound)
	}
	return d, nil
}

func (s *Store) refPath(ref string) (string, error) {
	if !refPattern.MatchString(ref) {
		return "", fmt.Errorf("ref %q: want kind/name of letters, digits, '.', '_', '-'", ref)
	}
	return filepath.Join(s.root, "refs", filepath.FromSlash(ref)), nil
}

// Lock takes an exclusive lock named name, shared by every firegopher process on the host,
// so that concurrent first runs build an asset once while the others wait for it. It
// gives up when ctx ends.
func (s *Store) Lock(ctx context.Context, name string) (unlock func(), err error) {
	f, err := flock.Lock(ctx, filepath.Join(s.root, "locks", strings.ReplaceAll(name, "/", "_")+".lock"))
	if err != nil {
		return nil, err
	}
	return func() { f.Close() }, nil
}
