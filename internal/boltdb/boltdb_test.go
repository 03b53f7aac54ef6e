package boltdb

import (
	"encoding/binary"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestConcurrentUpdatesAllLand(t *testing.T) {
	d := &DB{Path: filepath.Join(t.TempDir(), "db"), Buckets: [][]byte{[]byte("n")}, Timeout: 10 * time.Second, What: "test db"}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := d.Update(func(tx *bolt.Tx) error {
				b := tx.Bucket([]byte("n"))
				n := uint64(0)
				if v := b.Get([]byte("k")); v != nil {
					n = binary.BigEndian.Uint64(v)
				}
				return b.Put([]byte("k"), binary.BigEndian.AppendUint64(nil, n+1))
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	var got uint64
	d.View(func(tx *bolt.Tx) error {
		got = binary.BigEndian.Uint64(tx.Bucket([]byte("n")).Get([]byte("k")))
		return nil
	})
	if got != 20 {
		t.Fatalf("%d of 20 updates landed", got)
	}
}
