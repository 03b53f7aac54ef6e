package assets

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

func testStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "cache"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// note is a stand-in asset: a JSON string.
func loadNote(s *Store) func(Digest) (string, error) {
	return func(d Digest) (string, error) {
		var v string
		return v, s.GetJSON(d, &v)
	}
}

func buildNote(s *Store, text string, builds *atomic.Int32) func() (Digest, string, error) {
	return func() (Digest, string, error) {
		builds.Add(1)
		d, err := s.PutJSON(text)
		return d, text, err
	}
}

func TestBuildOnce(t *testing.T) {
	ctx := context.Background()
	s := testStore(t)
	var builds atomic.Int32

	d, v, err := buildOnce(ctx, s, "note/a", loadNote(s), buildNote(s, "first", &builds))
	if err != nil || v != "first" || builds.Load() != 1 {
		t.Fatalf("first use = %s %q %v after %d builds", d, v, err, builds.Load())
	}
	if got, err := s.Resolve("note/a"); err != nil || got != d {
		t.Fatalf("note/a = %s %v, want it tagged %s", got, err, d)
	}
	d2, v2, err := buildOnce(ctx, s, "note/a", loadNote(s), buildNote(s, "second", &builds))
	if err != nil || d2 != d || v2 != "first" || builds.Load() != 1 {
		t.Errorf("second use = %s %q %v after %d builds; want the first, not rebuilt", d2, v2, err, builds.Load())
	}

	// Its blob gone: built again.
	if err := os.Remove(s.Path(d)); err != nil {
		t.Fatal(err)
	}
	if _, v, err := buildOnce(ctx, s, "note/a", loadNote(s), buildNote(s, "again", &builds)); err != nil || v != "again" || builds.Load() != 2 {
		t.Errorf("after losing the blob = %q %v after %d builds; want it rebuilt", v, err, builds.Load())
	}

	// Unreadable is not missing: reported, not papered over by a rebuild.
	bad, err := s.PutBytes([]byte("{not json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Tag("note/bad", bad); err != nil {
		t.Fatal(err)
	}
	if _, _, err := buildOnce(ctx, s, "note/bad", loadNote(s), buildNote(s, "x", &builds)); err == nil || builds.Load() != 2 {
		t.Errorf("corrupt manifest: %v after %d builds; want an error and no build", err, builds.Load())
	}

	// A failed build tags nothing.
	boom := errors.New("boom")
	_, _, err = buildOnce(ctx, s, "note/failed", loadNote(s), func() (Digest, string, error) { return "", "", boom })
	if !errors.Is(err, boom) {
		t.Errorf("failed build: %v, want boom", err)
	}
	if _, err := s.Resolve("note/failed"); !errors.Is(err, ErrNotFound) {
		t.Errorf("note/failed after a failed build: %v, want ErrNotFound", err)
	}
}

// Concurrent first uses build once; every caller gets that one build.
func TestBuildOnceConcurrent(t *testing.T) {
	s := testStore(t)
	var builds atomic.Int32
	const n = 8
	digests := make([]Digest, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			digests[i], _, errs[i] = buildOnce(context.Background(), s, "note/shared", loadNote(s), buildNote(s, "shared", &builds))
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || digests[i] != digests[0] {
			t.Errorf("caller %d: %s %v, want %s", i, digests[i], errs[i], digests[0])
		}
	}
	if b := builds.Load(); b != 1 {
		t.Errorf("%d builds, want 1", b)
	}
}
