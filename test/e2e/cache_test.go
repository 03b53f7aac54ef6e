//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func readRef(t *testing.T, cache, ref string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cache, "refs", ref))
	if err != nil {
		t.Fatalf("ref %s: %v", ref, err)
	}
	return strings.TrimSpace(string(b))
}

func blobPath(cache, digest string) string {
	return filepath.Join(cache, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

// Every blob is named by its content: a cache entry is never half-written or altered.
func TestCacheBlobsMatchTheirNames(t *testing.T) {
	cache := filepath.Join(stateDir, "cache")
	for _, ref := range []string{"kernel/default", "image/default"} {
		d := readRef(t, cache, ref)
		if got := fileDigest(t, blobPath(cache, d)); got != d {
			t.Errorf("%s: blob content %s does not match its name %s", ref, got, d)
		}
	}
	tmp, _ := os.ReadDir(filepath.Join(cache, "tmp"))
	if len(tmp) != 0 {
		t.Errorf("scratch files left in the cache: %d entries", len(tmp))
	}
}
