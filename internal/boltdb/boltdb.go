// Package boltdb opens a bbolt database for one operation at a time, so that any number of
// firegopher processes can share it: each operation first queues on a side lock file with a
// blocking flock (bbolt's own lock polls every 50 ms, which lets one busy process starve the
// others; the kernel's flock queue wakes a waiter as soon as the lock is free).
package boltdb

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/firegopher/firegopher/internal/flock"
)

// DB is a database file and the buckets every update makes sure of.
type DB struct {
	Path    string
	Buckets [][]byte
	// Timeout bounds the wait for the lock.
	Timeout time.Duration
	// What names the database in errors ("allocator", "jail allocator").
	What string

	mu sync.Mutex // one operation of this process at a time
}

// Update runs fn in a read-write transaction, the buckets created.
func (d *DB) Update(fn func(*bolt.Tx) error) error {
	return d.with(func(db *bolt.DB) error {
		return db.Update(func(tx *bolt.Tx) error {
			for _, b := range d.Buckets {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
			return fn(tx)
		})
	})
}

// View runs fn in a read-only transaction (buckets may be missing: nil).
func (d *DB) View(fn func(*bolt.Tx) error) error {
	return d.with(func(db *bolt.DB) error { return db.View(fn) })
}

func (d *DB) with(fn func(*bolt.DB) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), d.Timeout)
	defer cancel()
	lock, err := flock.Lock(ctx, d.Path+".lock")
	if err != nil {
		return fmt.Errorf("%s %s: %w", d.What, d.Path, err)
	}
	defer lock.Close()
	// Timeout: a process that opened the file directly (not through the side lock) is a
	// wait, not an error.
	db, err := bolt.Open(d.Path, 0o600, &bolt.Options{Timeout: d.Timeout})
	if err != nil {
		return fmt.Errorf("%s %s: %w", d.What, d.Path, err)
	}
	err = fn(db)
	if cerr := db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("%s %s: close: %w", d.What, d.Path, cerr)
	}
	return err
}

// Get reads key's JSON value from bucket in tx: found is false when the bucket or the key
// is missing. what names the record kind in errors ("jail", "allocation").
func Get[T any](tx *bolt.Tx, bucket []byte, key []byte, what string) (v T, found bool, err error) {
	b := tx.Bucket(bucket)
	if b == nil {
		return v, false, nil
	}
	raw := b.Get(key)
	if raw == nil {
		return v, false, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, true, fmt.Errorf("%s %q: corrupt record: %w", what, key, err)
	}
	return v, true, nil
}

// List reads every JSON value of bucket in tx, in key order (none if the bucket is missing).
func List[T any](tx *bolt.Tx, bucket []byte, what string) ([]T, error) {
	b := tx.Bucket(bucket)
	if b == nil {
		return nil, nil
	}
	var out []T
	err := b.ForEach(func(k, raw []byte) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("%s %q: corrupt record: %w", what, k, err)
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

// Put writes v as key's JSON value in bucket (which must exist: Update creates DB.Buckets).
func Put(tx *bolt.Tx, bucket []byte, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put(key, raw)
}
