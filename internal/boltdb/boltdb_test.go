package boltdb

import (
	"encoding/binary"
	"path/filepath"
	"strings"
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

func TestJSONRecords(t *testing.T) {
	type rec struct{ N int }
	bucket := []byte("recs")
	db := &DB{Path: filepath.Join(t.TempDir(), "db"), Buckets: [][]byte{bucket}, Timeout: time.Second, What: "test"}
	err := db.View(func(tx *bolt.Tx) error {
		if _, ok, err := Get[rec](tx, bucket, []byte("a"), "rec"); ok || err != nil {
			t.Errorf("Get before the bucket exists: %v %v", ok, err)
		}
		if l, err := List[rec](tx, bucket, "rec"); len(l) != 0 || err != nil {
			t.Errorf("List before the bucket exists: %v %v", l, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for i, k := range []string{"b", "a"} {
			if err := Put(tx, bucket, []byte(k), rec{N: i}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error {
		if r, ok, err := Get[rec](tx, bucket, []byte("b"), "rec"); !ok || err != nil || r.N != 0 {
			t.Errorf("Get b: %v %v %v", r, ok, err)
		}
		if l, err := List[rec](tx, bucket, "rec"); err != nil || len(l) != 2 || l[0].N != 1 || l[1].N != 0 {
			t.Errorf("List (key order a, b): %v %v", l, err)
		}
		return nil
	})
	db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte("bad"), []byte("{")) })
	db.View(func(tx *bolt.Tx) error {
		if _, _, err := Get[rec](tx, bucket, []byte("bad"), "rec"); err == nil || !strings.Contains(err.Error(), `rec "bad": corrupt record`) {
			t.Errorf("Get of a corrupt record: %v", err)
		}
		if _, err := List[rec](tx, bucket, "rec"); err == nil || !strings.Contains(err.Error(), `rec "bad": corrupt record`) {
			t.Errorf("List with a corrupt record: %v", err)
		}
		return nil
	})
}
