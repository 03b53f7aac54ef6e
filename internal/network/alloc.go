package network

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/firegopher/firegopher/internal/boltdb"
)

// LockTimeout is how long an allocator operation waits for another process holding the
// database before it gives up.
const LockTimeout = 5 * time.Second

// ErrPoolExhausted is wrapped by Allocate when no /30 of the pool is free.
var ErrPoolExhausted = errors.New("address pool exhausted")

var (
	bucketAllocs  = []byte("net.allocations") // owner key -> Allocation (JSON)
	bucketSubnets = []byte("net.subnets")     // subnet ("172.16.0.4/30") -> owner key
	bucketTAPs    = []byte("net.taps")        // TAP name -> owner key
)

// Allocation is one (run, machine)'s slot as persisted.
type Allocation struct {
	RunID   string       `json:"run_id"`
	Machine string       `json:"machine"`
	Pool    netip.Prefix `json:"pool"`
	Slot    Slot         `json:"slot"`
	Created time.Time    `json:"created"`
}

// Allocator hands out /30 slots of one pool, persisted in a bbolt file that several
// processes may share. The file is opened per operation: bbolt holds an exclusive lock
// while open, so keeping it open would stall every other firegopher process.
type Allocator struct {
	path string
	pool netip.Prefix
	db   *boltdb.DB
}

// OpenAllocator checks that path can be opened (creating it) and returns an allocator for
// pool.
func OpenAllocator(path string, pool netip.Prefix) (*Allocator, error) {
	if err := ValidatePool(pool); err != nil {
		return nil, err
	}
	if path == "" {
		return nil, errors.New("allocator: empty database path")
	}
	a := &Allocator{path: path, pool: pool, db: &boltdb.DB{Path: path, Buckets: [][]byte{bucketAllocs, bucketSubnets, bucketTAPs}, Timeout: LockTimeout, What: "allocator"}}
	return a, a.update(func(*bolt.Tx) error { return nil })
}

// Pool is the pool this allocator hands out from.
func (a *Allocator) Pool() netip.Prefix { return a.pool }

// Allocate returns the slot of (runID, machine): the existing one if it has one, else the
// first free slot from its preferred one on (wrapping), skipping slots allocated to others
// and subnets that inUse reports (nil: none). The choice is persisted in the same
// transaction that checks it, under the file lock, so no slot is handed out twice.
func (a *Allocator) Allocate(runID, machine string, inUse func(netip.Prefix) bool) (Slot, error) {
	if err := validateOwner(runID, machine); err != nil {
		return Slot{}, err
	}
	key := ownerKey(runID, machine)
	var out Slot
	err := a.update(func(tx *bolt.Tx) error {
		subnets, taps := tx.Bucket(bucketSubnets), tx.Bucket(bucketTAPs)
		if cur, ok, err := boltdb.Get[Allocation](tx, bucketAllocs, key, "allocation"); err != nil {
			return err
		} else if ok {
			if !a.pool.Contains(cur.Slot.Subnet.Addr()) {
				return fmt.Errorf("run %q machine %q already holds %s, outside pool %s", runID, machine, cur.Slot.Subnet, a.pool)
			}
			out = cur.Slot
			return nil
		}
		pref := PreferredSlot(a.pool, runID, machine)
		n := NumSlots(a.pool)
		found := false
		for i := 0; i < n; i++ {
			s := slotAt(a.pool, (pref.Index+i)%n)
			if subnets.Get([]byte(s.Subnet.String())) != nil {
				continue
			}
			if inUse != nil && inUse(s.Subnet) {
				continue
			}
			out, found = s, true
			break
		}
		if !found {
			return fmt.Errorf("pool %s: all %d /%d slots are allocated or overlap host addresses: %w", a.pool, n, SlotBits, ErrPoolExhausted)
		}
		out.TAP = pref.TAP
		// Two owners whose hashes share 12 hex digits would share a TAP: rare enough that a
		// derived name, no longer the seed's, is acceptable.
		for i := 1; taps.Get([]byte(out.TAP)) != nil; i++ {
			out.TAP = "tap" + seedHash(runID, machine+"-"+strconv.Itoa(i))[:12]
		}
		rec := Allocation{RunID: runID, Machine: machine, Pool: a.pool, Slot: out, Created: time.Now().UTC()}
		if err := boltdb.Put(tx, bucketAllocs, key, rec); err != nil {
			return err
		}
		if err := subnets.Put([]byte(out.Subnet.String()), key); err != nil {
			return err
		}
		return taps.Put([]byte(out.TAP), key)
	})
	if err != nil {
		return Slot{}, err
	}
	return out, nil
}

// Release frees the slot of (runID, machine); releasing what is not allocated is not an
// error, so cleanup can be repeated.
func (a *Allocator) Release(runID, machine string) error {
	if err := validateOwner(runID, machine); err != nil {
		return err
	}
	key := ownerKey(runID, machine)
	return a.update(func(tx *bolt.Tx) error {
		cur, ok, err := boltdb.Get[Allocation](tx, bucketAllocs, key, "allocation")
		if err != nil || !ok {
			return err
		}
		// Only drop index entries that still point at this owner.
		if k := tx.Bucket(bucketSubnets).Get([]byte(cur.Slot.Subnet.String())); string(k) == string(key) {
			if err := tx.Bucket(bucketSubnets).Delete([]byte(cur.Slot.Subnet.String())); err != nil {
				return err
			}
		}
		if k := tx.Bucket(bucketTAPs).Get([]byte(cur.Slot.TAP)); string(k) == string(key) {
			if err := tx.Bucket(bucketTAPs).Delete([]byte(cur.Slot.TAP)); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketAllocs).Delete(key)
	})
}

// Lookup returns the allocation of (runID, machine), if any.
func (a *Allocator) Lookup(runID, machine string) (out Allocation, ok bool, err error) {
	err = a.view(func(tx *bolt.Tx) error {
		out, ok, err = boltdb.Get[Allocation](tx, bucketAllocs, ownerKey(runID, machine), "allocation")
		return err
	})
	return out, ok, err
}

// List returns every allocation in the database (of any pool), ordered by run then machine.
func (a *Allocator) List() (out []Allocation, err error) {
	err = a.view(func(tx *bolt.Tx) error {
		out, err = boltdb.List[Allocation](tx, bucketAllocs, "allocation")
		return err
	})
	return out, err
}

func validateOwner(runID, machine string) error {
	if runID == "" || strings.ContainsRune(runID, 0) {
		return fmt.Errorf("run id %q: must be non-empty and contain no NUL", runID)
	}
	if machine == "" || strings.ContainsRune(machine, 0) {
		return fmt.Errorf("machine %q: must be non-empty and contain no NUL", machine)
	}
	return nil
}

// ownerKey keeps run and machine apart: the seed's "run-machine" is ambiguous when either
// contains a dash.
func ownerKey(runID, machine string) []byte { return []byte(runID + "\x00" + machine) }

func (a *Allocator) update(fn func(*bolt.Tx) error) error { return a.db.Update(fn) }

func (a *Allocator) view(fn func(*bolt.Tx) error) error { return a.db.View(fn) }
