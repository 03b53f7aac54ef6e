package assets

import (
	"context"
	"errors"
)

// buildOnce returns the asset ref names, read with load, making it with build and tagging
// it ref on first use. An asset whose load fails with ErrNotFound (its ref, or a blob it
// names, is gone) is built again; any other failure is reported. Concurrent first uses, in
// this process or others, build it once: the per-ref lock is taken only when the asset is
// missing, and under it the asset is looked up again, as whoever held the lock before may
// just have built it.
func buildOnce[T any](ctx context.Context, s *Store, ref string, load func(Digest) (T, error), build func() (Digest, T, error)) (Digest, T, error) {
	if d, v, err := lookup(s, ref, load); !errors.Is(err, ErrNotFound) {
		return d, v, err
	}
	unlock, err := s.Lock(ctx, ref)
	if err != nil {
		var zero T
		return "", zero, err
	}
	defer unlock()
	if d, v, err := lookup(s, ref, load); !errors.Is(err, ErrNotFound) {
		return d, v, err
	}
	d, v, err := build()
	if err != nil {
		return d, v, err
	}
	return d, v, s.Tag(ref, d)
}

func lookup[T any](s *Store, ref string, load func(Digest) (T, error)) (Digest, T, error) {
	d, err := s.Resolve(ref)
	if err != nil {
		var zero T
		return "", zero, err
	}
	v, err := load(d)
	return d, v, err
}
