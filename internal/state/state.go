// Package state records VMs in one bbolt database that several firegopher processes share:
// every change is a transaction, so a crash at any point leaves either the old record or
// the new one, never half of either. The database is opened per operation (bbolt holds an
// exclusive file lock while open), so no process blocks the others for long.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/firegopher/firegopher/internal/spec"
)

// Status is where a VM is in its life.
type Status string

const (
	Created Status = "created"
	Running Status = "running"
	Exited  Status = "exited"
)

// VM is one VM's record: the machine it runs and what became of it.
type VM struct {
	ID string `json:"id"`
	// Name and Run are the machine's, kept here too because lookups and uniqueness use them:
	// a name is unique within its run (lone VMs have no run).
	Name       string        `json:"name"`
	Run        string        `json:"run,omitempty"`
	Machine    *spec.Machine `json:"machine"`
	Backend    string        `json:"backend,omitempty"`
	Status     Status        `json:"status"`
	Detached   bool          `json:"detached"`
	CreatedAt  time.Time     `json:"created_at"`
	StartedAt  time.Time     `json:"started_at,omitempty"`
	FinishedAt time.Time     `json:"finished_at,omitempty"`
	ExitCode   *int          `json:"exit_code,omitempty"`
	Signal     int           `json:"signal,omitempty"`
	Error      string        `json:"error,omitempty"`
	Dir        string        `json:"dir"`
	// SupervisorPID and VMMPID are informational; liveness is the supervisor's lock on Dir.
	SupervisorPID int      `json:"supervisor_pid,omitempty"`
	VMMPID        int      `json:"vmm_pid,omitempty"`
	Network       *Network `json:"network,omitempty"`
	// Draining: the VM is being stopped; a proxy sends it no new requests.
	Draining bool `json:"draining,omitempty"`
	// HostKeys are the public SSH host keys written into a foreign guest's disk before its
	// first boot, in authorized_keys format: what `ssh` to it must see.
	HostKeys []string `json:"host_keys,omitempty"`
}

// Network is a VM's share of the host network: enough to find it and to undo it.
type Network struct {
	TAP     string `json:"tap"`
	Host    string `json:"host"`
	Guest   string `json:"guest"`
	Pool    string `json:"pool"`
	DB      string `json:"db"`
	RunID   string `json:"run_id"`
	Machine string `json:"machine"`
}

var bucketVMs = []byte("vms")

// ErrNotFound and ErrAmbiguous are returned by Lookup.
var (
	ErrNotFound  = errors.New("no such VM")
	ErrAmbiguous = errors.New("ambiguous VM reference")
)

// Store is the state database.
type Store struct{ path string }

// Open checks the database can be opened (creating it) and returns a handle.
func Open(path string) (*Store, error) {
	s := &Store{path: path}
	return s, s.update(func(*bolt.Bucket) error { return nil })
}

func (s *Store) db() (*bolt.DB, error) {
	// Timeout: another process holding the lock is a wait, not an error.
	db, err := bolt.Open(s.path, 0o600, &bolt.Options{Timeout: 10 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", s.path, err)
	}
	return db, nil
}

func (s *Store) update(fn func(*bolt.Bucket) error) error {
	db, err := s.db()
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketVMs)
		if err != nil {
			return err
		}
		return fn(b)
	})
}

func (s *Store) view(fn func(*bolt.Bucket) error) error {
	db, err := s.db()
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVMs)
		if b == nil {
			return fn(nil)
		}
		return fn(b)
	})
}

// Create adds a new record; its id and name must both be unused.
func (s *Store) Create(vm *VM) error {
	return s.update(func(b *bolt.Bucket) error {
		if b.Get([]byte(vm.ID)) != nil {
			return fmt.Errorf("VM id %s already exists", vm.ID)
		}
		if vm.Name != "" {
			var clash error
			b.ForEach(func(_, v []byte) error {
				var other VM
				if json.Unmarshal(v, &other) == nil && other.Name == vm.Name && other.Run == vm.Run {
					clash = fmt.Errorf("--name: %q is already used by VM %s", vm.Name, other.ID)
				}
				return nil
			})
			if clash != nil {
				return clash
			}
		}
		return put(b, vm)
	})
}

// Update changes a record in one transaction.
func (s *Store) Update(id string, fn func(*VM) error) (*VM, error) {
	var out VM
	err := s.update(func(b *bolt.Bucket) error {
		v := b.Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%s: %w", id, ErrNotFound)
		}
		if err := json.Unmarshal(v, &out); err != nil {
			return err
		}
		if err := fn(&out); err != nil {
			return err
		}
		return put(b, &out)
	})
	return &out, err
}

// Delete removes a record; deleting a missing record is not an error.
func (s *Store) Delete(id string) error {
	return s.update(func(b *bolt.Bucket) error { return b.Delete([]byte(id)) })
}

// Get returns the record with exactly this id.
func (s *Store) Get(id string) (*VM, error) {
	var vm *VM
	err := s.view(func(b *bolt.Bucket) error {
		if b == nil {
			return nil
		}
		if v := b.Get([]byte(id)); v != nil {
			vm = &VM{}
			return json.Unmarshal(v, vm)
		}
		return nil
	})
	if err == nil && vm == nil {
		err = fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	return vm, err
}

// List returns every record, oldest first.
func (s *Store) List() ([]VM, error) {
	var vms []VM
	err := s.view(func(b *bolt.Bucket) error {
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			var vm VM
			if err := json.Unmarshal(v, &vm); err != nil {
				return err
			}
			vms = append(vms, vm)
			return nil
		})
	})
	sort.Slice(vms, func(i, j int) bool { return vms[i].CreatedAt.Before(vms[j].CreatedAt) })
	return vms, err
}

// Lookup resolves what a user typed: an exact id, RUN/NAME, the name of a VM outside any
// run (or of the only VM of that name), or a unique id prefix.
func (s *Store) Lookup(ref string) (*VM, error) {
	if ref == "" {
		return nil, fmt.Errorf("empty VM reference: %w", ErrNotFound)
	}
	vms, err := s.List()
	if err != nil {
		return nil, err
	}
	run, name, inRun := strings.Cut(ref, "/")
	var byPrefix, byName []VM
	for i := range vms {
		v := vms[i]
		switch {
		case v.ID == ref:
			return &vms[i], nil
		case inRun && v.Run == run && v.Name == name:
			return &vms[i], nil
		case !inRun && v.Name == ref && v.Run == "":
			return &vms[i], nil
		case !inRun && v.Name == ref:
			byName = append(byName, v)
		case strings.HasPrefix(v.ID, ref):
			byPrefix = append(byPrefix, v)
		}
	}
	if len(byName) == 1 {
		return &byName[0], nil
	}
	if len(byName) > 1 {
		return nil, fmt.Errorf("%s names a VM in several runs (%s): say RUN/%s: %w", ref, runsOf(byName), ref, ErrAmbiguous)
	}
	switch len(byPrefix) {
	case 0:
		return nil, fmt.Errorf("%s: %w", ref, ErrNotFound)
	case 1:
		return &byPrefix[0], nil
	}
	ids := make([]string, len(byPrefix))
	for i, vm := range byPrefix {
		ids[i] = vm.ID
	}
	return nil, fmt.Errorf("%s matches %s: %w", ref, strings.Join(ids, ", "), ErrAmbiguous)
}

func runsOf(vms []VM) string {
	runs := make([]string, len(vms))
	for i, v := range vms {
		runs[i] = v.Run
	}
	return strings.Join(runs, ", ")
}

func put(b *bolt.Bucket, vm *VM) error {
	v, err := json.Marshal(vm)
	if err != nil {
		return err
	}
	return b.Put([]byte(vm.ID), v)
}
