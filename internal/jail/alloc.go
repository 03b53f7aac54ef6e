package jail

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/firegopher/firegopher/internal/boltdb"
)

// Owner is a jail's uid and gid: Firecracker runs as them, and owns only what its VM
// writes (the rootfs clone, its sockets).
type Owner struct {
	UID int `json:"uid"`
	GID int `json:"gid"`
}

// Range is the ids jails are given: First to First+Count-1, the same number as uid and gid.
type Range struct {
	First, Count int
}

// DefaultRange sits above the ranges distributions give users, system users, systemd's
// dynamic users and systemd-nspawn's containers (up to 0x6FFFFFFF), below 2^31 so that
// tools with signed uids cope.
var DefaultRange = Range{First: 1_900_000_000, Count: 65536}

// Validate refuses a range that includes 0 (root) or leaves 32 bits.
func (r Range) Validate() error {
	switch {
	case r.Count < 1:
		return fmt.Errorf("jail uid range: count %d, want at least 1", r.Count)
	case r.First < 1:
		return fmt.Errorf("jail uid range: first %d, want above 0 (never root)", r.First)
	case r.First+r.Count-1 > 1<<32-2:
		return fmt.Errorf("jail uid range: %d+%d goes past the largest uid", r.First, r.Count)
	}
	return nil
}

func (r Range) contains(id int) bool { return id >= r.First && id < r.First+r.Count }

// LockTimeout is how long an operation waits for another process holding the database.
const LockTimeout = 5 * time.Second

// ErrExhausted is wrapped by Allocate when every id of the range is taken.
var ErrExhausted = errors.New("jail uid range exhausted")

var (
	bucketJails = []byte("jail.owners") // jail id -> Allocation (JSON)
	bucketUIDs  = []byte("jail.uids")   // uid (decimal) -> jail id
)

// Allocation is one jail's owner as persisted.
type Allocation struct {
	ID      string    `json:"id"`
	Owner   Owner     `json:"owner"`
	Created time.Time `json:"created"`
}

// Allocator hands out one Owner per jail id from a Range, persisted in a bbolt file that
// several processes share (opened per operation, as network.Allocator does), so no two live
// jails ever share a uid. Release frees it; gc releases the owners of jails that are gone.
type Allocator struct {
	path string
	r    Range
	db   *boltdb.DB
}

// OpenAllocator checks that path can be opened (creating it) and returns an allocator.
func OpenAllocator(path string, r Range) (*Allocator, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	if path == "" {
		return nil, errors.New("jail allocator: empty database path")
	}
	a := &Allocator{path: path, r: r, db: &boltdb.DB{Path: path, Buckets: [][]byte{bucketJails, bucketUIDs}, Timeout: LockTimeout, What: "jail allocator"}}
	return a, a.update(func(*bolt.Tx) error { return nil })
}

// Range is the range this allocator hands out from.
func (a *Allocator) Range() Range { return a.r }

// Allocate returns id's owner: the one it holds, else the first free id of the range from a
// spread start (so that a freshly released uid is not reused at once).
func (a *Allocator) Allocate(id string) (Owner, error) {
	if id == "" {
		return Owner{}, errors.New("jail allocator: empty jail id")
	}
	var out Owner
	err := a.update(func(tx *bolt.Tx) error {
		uids := tx.Bucket(bucketUIDs)
		if cur, ok, err := boltdb.Get[Allocation](tx, bucketJails, []byte(id), "jail"); err != nil {
			return err
		} else if ok {
			if !a.r.contains(cur.Owner.UID) {
				return fmt.Errorf("jail %q holds uid %d, outside the range %d+%d", id, cur.Owner.UID, a.r.First, a.r.Count)
			}
			out = cur.Owner
			return nil
		}
		// Start after the highest id ever handed out (kept in the bucket's sequence).
		start := int(uids.Sequence() % uint64(a.r.Count))
		for i := 0; i < a.r.Count; i++ {
			n := (start + i) % a.r.Count
			uid := a.r.First + n
			if uids.Get([]byte(strconv.Itoa(uid))) != nil {
				continue
			}
			out = Owner{UID: uid, GID: uid}
			if err := uids.SetSequence(uint64(n + 1)); err != nil {
				return err
			}
			if err := boltdb.Put(tx, bucketJails, []byte(id), Allocation{ID: id, Owner: out, Created: time.Now().UTC()}); err != nil {
				return err
			}
			return uids.Put([]byte(strconv.Itoa(uid)), []byte(id))
		}
		return fmt.Errorf("jail uid range %d+%d: all taken: %w", a.r.First, a.r.Count, ErrExhausted)
	})
	return out, err
}

// Release frees id's owner; releasing what is not allocated is not an error.
func (a *Allocator) Release(id string) error {
	return a.update(func(tx *bolt.Tx) error {
		uids := tx.Bucket(bucketUIDs)
		cur, ok, err := boltdb.Get[Allocation](tx, bucketJails, []byte(id), "jail")
		if err != nil || !ok {
			return err
		}
		key := []byte(strconv.Itoa(cur.Owner.UID))
		if string(uids.Get(key)) == id {
			if err := uids.Delete(key); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketJails).Delete([]byte(id))
	})
}

// Lookup returns id's allocation, if any.
func (a *Allocator) Lookup(id string) (out Allocation, ok bool, err error) {
	err = a.view(func(tx *bolt.Tx) error {
		out, ok, err = boltdb.Get[Allocation](tx, bucketJails, []byte(id), "jail")
		return err
	})
	return out, ok, err
}

// List returns every allocation, ordered by jail id.
func (a *Allocator) List() (out []Allocation, err error) {
	err = a.view(func(tx *bolt.Tx) error {
		out, err = boltdb.List[Allocation](tx, bucketJails, "jail")
		return err
	})
	return out, err
}

func (a *Allocator) update(fn func(*bolt.Tx) error) error { return a.db.Update(fn) }

func (a *Allocator) view(fn func(*bolt.Tx) error) error { return a.db.View(fn) }
