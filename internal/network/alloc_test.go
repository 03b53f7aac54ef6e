package network

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/firegopher/firegopher/internal/flock"
)

func openTestAllocator(t *testing.T, pool string) *Allocator {
	t.Helper()
	a, err := OpenAllocator(filepath.Join(t.TempDir(), "net.db"), netip.MustParsePrefix(pool))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAllocatorIdempotentAndPersistent(t *testing.T) {
	a := openTestAllocator(t, "172.16.0.0/16")
	s1, err := a.Allocate("abc", "m1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := PreferredSlot(DefaultPool, "abc", "m1"); s1 != want {
		t.Fatalf("first allocation %+v, want the seed's %+v", s1, want)
	}
	s2, err := a.Allocate("abc", "m1", func(netip.Prefix) bool { return true })
	if err != nil || s2 != s1 {
		t.Fatalf("second Allocate = %+v, %v; want %+v (idempotent, inUse not consulted)", s2, err, s1)
	}
	b, err := OpenAllocator(a.path, a.pool) // as another process would
	if err != nil {
		t.Fatal(err)
	}
	if s3, err := b.Allocate("abc", "m1", nil); err != nil || s3 != s1 {
		t.Fatalf("after reopen: %+v, %v", s3, err)
	}
	list, err := b.List()
	if err != nil || len(list) != 1 || list[0].Slot != s1 || list[0].RunID != "abc" || list[0].Machine != "m1" {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if _, err := OpenAllocator(a.path, netip.MustParsePrefix("172.16.0.0/24")); err != nil {
		t.Fatal(err)
	}
	c, _ := OpenAllocator(a.path, netip.MustParsePrefix("172.17.0.0/16"))
	if _, err := c.Allocate("abc", "m1", nil); err == nil || !strings.Contains(err.Error(), "outside pool 172.17.0.0/16") {
		t.Fatalf("Allocate of an owner holding a slot of another pool: %v", err)
	}
}

func TestAllocatorRejectsBadInput(t *testing.T) {
	if _, err := OpenAllocator(filepath.Join(t.TempDir(), "x.db"), netip.MustParsePrefix("172.16.0.1/16")); err == nil || !strings.Contains(err.Error(), "172.16.0.1/16") {
		t.Errorf("unmasked pool: %v", err)
	}
	a := openTestAllocator(t, "172.16.0.0/28")
	if _, err := a.Allocate("", "m", nil); err == nil || !strings.Contains(err.Error(), "run id") {
		t.Errorf("empty run: %v", err)
	}
	if _, err := a.Allocate("r", "a\x00b", nil); err == nil || !strings.Contains(err.Error(), "machine") {
		t.Errorf("NUL in machine: %v", err)
	}
}

func TestAllocatorExhaustionAndReuseAfterRelease(t *testing.T) {
	a := openTestAllocator(t, "172.16.7.0/28") // 4 slots
	held := map[netip.Prefix]string{}
	for i := 0; i < 4; i++ {
		m := fmt.Sprintf("m%d", i)
		s, err := a.Allocate("run", m, nil)
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if other, dup := held[s.Subnet]; dup {
			t.Fatalf("%s handed to %s and %s", s.Subnet, other, m)
		}
		held[s.Subnet] = m
	}
	_, err := a.Allocate("run", "m4", nil)
	if !errors.Is(err, ErrPoolExhausted) || !strings.Contains(err.Error(), "172.16.7.0/28") {
		t.Fatalf("fifth allocation: %v; want ErrPoolExhausted naming the pool", err)
	}
	victim, _, _ := a.Lookup("run", "m2")
	if err := a.Release("run", "m2"); err != nil {
		t.Fatal(err)
	}
	if err := a.Release("run", "m2"); err != nil {
		t.Fatalf("second release: %v", err)
	}
	s, err := a.Allocate("run", "m4", nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Subnet != victim.Slot.Subnet {
		t.Fatalf("after release got %s, want the freed %s", s.Subnet, victim.Slot.Subnet)
	}
	if _, err := a.Allocate("run", "m2", nil); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("released owner came back into a full pool: %v", err)
	}
}

func TestAllocatorProbesPastTakenAndInUse(t *testing.T) {
	pool := netip.MustParsePrefix("172.16.9.0/28")
	// Two owners with the same preferred slot.
	first := PreferredSlot(pool, "r", "x0")
	var clash string
	for i := 1; clash == ""; i++ {
		if m := fmt.Sprintf("x%d", i); PreferredSlot(pool, "r", m).Index == first.Index {
			clash = m
		}
	}
	a := openTestAllocator(t, pool.String())
	if s, err := a.Allocate("r", "x0", nil); err != nil || s.Index != first.Index {
		t.Fatalf("x0: %+v %v", s, err)
	}
	s, err := a.Allocate("r", clash, nil)
	if err != nil || s.Index != (first.Index+1)%4 {
		t.Fatalf("%s: got index %d (%v), want the next slot %d", clash, s.Index, err, (first.Index+1)%4)
	}
	// A subnet the host already uses is skipped, wrapping round the pool: pick a machine
	// whose preferred slot is free, mark that slot in use, expect the next free one.
	taken := map[int]bool{first.Index: true, (first.Index + 1) % 4: true}
	var y string
	for i := 0; y == ""; i++ {
		if m := fmt.Sprintf("y%d", i); !taken[PreferredSlot(pool, "r", m).Index] {
			y = m
		}
	}
	busy := PreferredSlot(pool, "r", y).Index
	want := -1
	for i := 1; i < 4 && want < 0; i++ {
		if j := (busy + i) % 4; !taken[j] {
			want = j
		}
	}
	inUse := func(p netip.Prefix) bool { return slotAt(pool, busy).Subnet.Overlaps(p) }
	s, err = a.Allocate("r", y, inUse)
	if err != nil || s.Index != want {
		t.Fatalf("%s: got index %d (%v), want %d (preferred %d in use, %v taken)", y, s.Index, err, want, busy, taken)
	}
}

func TestAllocatorTAPNameCollision(t *testing.T) {
	a := openTestAllocator(t, "172.16.0.0/16")
	pref := PreferredSlot(a.pool, "r", "m")
	// Another owner already holds this TAP name (a 48-bit hash prefix collision).
	db, err := bolt.Open(a.path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketTAPs).Put([]byte(pref.TAP), []byte("other\x00owner")) })
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err := a.Allocate("r", "m", nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.TAP == pref.TAP || len(s.TAP) != 15 || !strings.HasPrefix(s.TAP, "tap") {
		t.Fatalf("TAP %q: want a different valid 15-byte name than %q", s.TAP, pref.TAP)
	}
	if s.Subnet != pref.Subnet {
		t.Fatalf("subnet %s, want the preferred %s", s.Subnet, pref.Subnet)
	}
}

// TestAllocatorWaitsForLock: another holder of the database is a wait, not an error.
func TestAllocatorWaitsForLock(t *testing.T) {
	a := openTestAllocator(t, "172.16.0.0/24")
	for _, holder := range []string{"bbolt", "side lock"} {
		var release func()
		if holder == "bbolt" {
			db, err := bolt.Open(a.path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			release = func() { db.Close() }
		} else {
			lock, err := flock.Lock(context.Background(), a.path+".lock")
			if err != nil {
				t.Fatal(err)
			}
			release = func() { lock.Close() }
		}
		done := make(chan time.Time, 1)
		errc := make(chan error, 1)
		go func() {
			_, err := a.Allocate("r", holder, nil)
			done <- time.Now()
			errc <- err
		}()
		time.Sleep(200 * time.Millisecond) // hold the lock a while, as a slow process would
		released := time.Now()
		release()
		finished := <-done
		if err := <-errc; err != nil {
			t.Fatalf("%s held: %v", holder, err)
		}
		if finished.Before(released) {
			t.Fatalf("%s held: Allocate finished before the lock was released", holder)
		}
	}
}

// TestAllocatorProperty drives random Allocate/Release sequences against a model.
func TestAllocatorProperty(t *testing.T) {
	pool := netip.MustParsePrefix("172.16.3.0/28")
	a := openTestAllocator(t, pool.String())
	rng := rand.New(rand.NewSource(1))
	model := map[string]netip.Prefix{} // owner -> subnet
	inUseIdx := 3                      // one slot the "host" uses
	inUse := func(p netip.Prefix) bool { return slotAt(pool, inUseIdx).Subnet == p }
	free := NumSlots(pool) - 1
	for step := 0; step < 400; step++ {
		run, m := fmt.Sprintf("r%d", rng.Intn(3)), fmt.Sprintf("m%d", rng.Intn(4))
		owner := run + "/" + m
		if rng.Intn(3) == 0 {
			if err := a.Release(run, m); err != nil {
				t.Fatal(err)
			}
			delete(model, owner)
			continue
		}
		s, err := a.Allocate(run, m, inUse)
		cur, has := model[owner]
		switch {
		case has:
			if err != nil || s.Subnet != cur {
				t.Fatalf("step %d: %s holds %s but Allocate = %+v, %v", step, owner, cur, s, err)
			}
		case len(model) == free:
			if !errors.Is(err, ErrPoolExhausted) {
				t.Fatalf("step %d: pool full, Allocate(%s) = %+v, %v", step, owner, s, err)
			}
		default:
			if err != nil {
				t.Fatalf("step %d: Allocate(%s): %v", step, owner, err)
			}
			if inUse(s.Subnet) {
				t.Fatalf("step %d: %s got the in-use %s", step, owner, s.Subnet)
			}
			for o, p := range model {
				if p == s.Subnet {
					t.Fatalf("step %d: %s got %s, still held by %s", step, owner, p, o)
				}
			}
			model[owner] = s.Subnet
		}
	}
	list, err := a.List()
	if err != nil || len(list) != len(model) {
		t.Fatalf("List: %d entries (%v), model has %d", len(list), err, len(model))
	}
	for _, al := range list {
		if model[al.RunID+"/"+al.Machine] != al.Slot.Subnet {
			t.Fatalf("List has %+v, model disagrees", al)
		}
	}
}

const helperEnv = "FIREGOPHER_TEST_ALLOC_HELPER"

// Stress parameters: 8 processes x 1250 own machines = 10,000 allocations, plus a few
// machines every process allocates (all must get the same slot).
const (
	stressProcs  = 8
	stressEach   = 1250
	stressShared = 16
)

// stressInUse marks every 97th /30 as used by the host.
func stressInUse(pool netip.Prefix) func(netip.Prefix) bool {
	base := pool.Addr().As4()
	b := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	return func(p netip.Prefix) bool {
		a := p.Addr().As4()
		v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
		return ((v-b)/4)%97 == 0
	}
}

// TestAllocatorHelperProcess is one worker of TestAllocatorConcurrentProcesses, run in a
// child process; it does nothing in a normal test run.
func TestAllocatorHelperProcess(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		return
	}
	parts := strings.Split(spec, "|") // path|pool|worker
	worker, _ := strconv.Atoi(parts[2])
	pool := netip.MustParsePrefix(parts[1])
	a, err := OpenAllocator(parts[0], pool)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var names [][2]string
	for i := 0; i < stressEach; i++ {
		names = append(names, [2]string{fmt.Sprintf("run%d", worker), fmt.Sprintf("vm-%d", i)})
	}
	for i := 0; i < stressShared; i++ {
		names = append(names, [2]string{"shared", fmt.Sprintf("vm-%d", i)})
	}
	rng := rand.New(rand.NewSource(int64(worker)))
	rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	inUse := stressInUse(pool)
	w := bufio.NewWriter(os.Stdout)
	for _, n := range names {
		s, err := a.Allocate(n[0], n[1], inUse)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		fmt.Fprintf(w, "ALLOC %s %s %d %s %s\n", n[0], n[1], s.Index, s.Subnet, s.TAP)
	}
	w.Flush()
	os.Exit(0)
}

func TestAllocatorConcurrentProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 10,000 allocations across processes")
	}
	pool := netip.MustParsePrefix("172.16.0.0/16")
	path := filepath.Join(t.TempDir(), "net.db")
	if _, err := OpenAllocator(path, pool); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cmds := make([]*exec.Cmd, stressProcs)
	outs := make([]*bytes.Buffer, stressProcs)
	for i := range cmds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestAllocatorHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%s|%d", helperEnv, path, pool, i))
		outs[i] = &bytes.Buffer{}
		cmd.Stdout = outs[i]
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[i] = cmd
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("worker %d: %v", i, err)
		}
	}
	t.Logf("%d processes, %d Allocate calls: %s", stressProcs, stressProcs*(stressEach+stressShared), time.Since(start))

	type rec struct{ index, subnet, tap string }
	owners := map[string]rec{}
	bySubnet, byTAP, byIndex := map[string]string{}, map[string]string{}, map[string]string{}
	inUse := stressInUse(pool)
	calls := 0
	for w, out := range outs {
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			f := strings.Fields(line)
			if len(f) != 6 || f[0] != "ALLOC" {
				continue
			}
			calls++
			owner, r := f[1]+"/"+f[2], rec{f[3], f[4], f[5]}
			if prev, ok := owners[owner]; ok {
				if prev != r {
					t.Fatalf("worker %d: %s got %+v, another process got %+v", w, owner, r, prev)
				}
				continue
			}
			owners[owner] = r
			for _, idx := range []struct {
				m   map[string]string
				key string
			}{{bySubnet, r.subnet}, {byTAP, r.tap}, {byIndex, r.index}} {
				if other, dup := idx.m[idx.key]; dup {
					t.Fatalf("%s handed to both %s and %s", idx.key, other, owner)
				}
				idx.m[idx.key] = owner
			}
			p := netip.MustParsePrefix(r.subnet)
			seedTAP := PreferredSlot(pool, f[1], f[2]).TAP
			if !pool.Contains(p.Addr()) || inUse(p) || len(r.tap) > 15 || r.tap != seedTAP {
				t.Fatalf("%s: bad slot %+v", owner, r)
			}
		}
	}
	if want := stressProcs * (stressEach + stressShared); calls != want {
		t.Fatalf("%d allocations reported, want %d", calls, want)
	}
	if want := stressProcs*stressEach + stressShared; len(owners) != want {
		t.Fatalf("%d distinct owners, want %d", len(owners), want)
	}
	a, _ := OpenAllocator(path, pool)
	list, err := a.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(owners) {
		t.Fatalf("database holds %d allocations, processes reported %d", len(list), len(owners))
	}
	for _, al := range list {
		if r := owners[al.RunID+"/"+al.Machine]; r.subnet != al.Slot.Subnet.String() || r.tap != al.Slot.TAP {
			t.Fatalf("database %+v disagrees with %+v", al, r)
		}
	}
}
