package run

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/assets/oci"
	"github.com/firegopher/firegopher/internal/assets/resolve"
	"github.com/firegopher/firegopher/internal/image"
	"github.com/firegopher/firegopher/internal/logtail"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/state"
	"github.com/firegopher/firegopher/internal/supervisor"
)

// Upper brings a run's machines up and takes them down, through the supervisor library:
// each machine is a detached VM with a supervisor of its own, so `up` can return while
// they run.
type Upper struct {
	Host *supervisor.Host
	Log  *slog.Logger
	// Out receives progress a person reads: pulls, "N of M ready", per-machine problems.
	Out io.Writer
	// SuperviseArgv is the command line of a detached supervisor for a VM id.
	SuperviseArgv func(id string) []string
	// Init is firegopher-init, for kernels without an initrd of their own (ignite's layout),
	// which boot the image's systemd through our init.
	Init string
	Pool netip.Prefix
	DHCP spec.DHCPMode
	VMM  spec.VMM
	// Inventory is where inventory.ini goes; "" means <playbook_dir>/inventory.ini, where
	// kernel-testing's ansible.cfg looks for it.
	Inventory string
	// Poll is how often a machine that is not ready yet is tried again.
	Poll time.Duration
}

// MachineStatus is how far one machine got.
type MachineStatus struct {
	Machine Machine
	ID      string
	TAP     string
	Guest   netip.Addr
	Ready   bool
	// Stage is the last stage reached: "created", "VMM running", "DHCP lease given",
	// "port 22 open", "key accepted".
	Stage string
	Err   error
	// Console is the last lines of its serial console, for a machine that did not come up.
	Console []string
}

// Record is what `up` remembers of a run beside its VMs: what `inventory` and `down` need.
type Record struct {
	ID         string `json:"id"`
	PrivateKey string `json:"private_key"`
	User       string `json:"user"`
	KnownHosts string `json:"known_hosts"`
	Inventory  string `json:"inventory"`
}

// recordPath is the run's record in the state dir.
func (u *Upper) recordPath(id string) string {
	return filepath.Join(u.Host.StateDir, "runs", id+".json")
}

// LoadRecord reads what `up` remembered of run id.
func (u *Upper) LoadRecord(id string) (*Record, error) {
	b, err := os.ReadFile(u.recordPath(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("run %q: no such run here (firegopher up made none)", id)
	}
	if err != nil {
		return nil, err
	}
	var r Record
	return &r, json.Unmarshal(b, &r)
}

// Up pulls what is missing, starts every machine of r that is not running yet (in
// parallel), waits until each accepts the run's SSH key or r.TimeOut passes, and writes the
// inventory and known_hosts. It is re-entrant: running machines are kept, failed ones made
// anew. The error says which machines did not come up; the statuses say how far each got.
func (u *Upper) Up(ctx context.Context, r *Run) ([]MachineStatus, error) {
	if u.Poll == 0 {
		u.Poll = time.Second
	}
	kp, err := EnsureKeyPair(r.PrivateKey, r.PublicKey)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(r.RuntimeRoot, r.ID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	rec := &Record{ID: r.ID, PrivateKey: r.PrivateKey, User: r.User, KnownHosts: filepath.Join(dir, "known_hosts"), Inventory: u.Inventory}
	if rec.Inventory == "" {
		rec.Inventory = filepath.Join(r.PlaybookDir, "inventory.ini")
	}
	if err := u.saveRecord(rec); err != nil {
		return nil, err
	}
	kernels, rootfs, err := u.pull(ctx, r)
	if err != nil {
		return nil, err
	}
	statuses := make([]MachineStatus, len(r.Machines))
	var wg sync.WaitGroup
	for i, m := range r.Machines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = u.start(ctx, r, m, kernels[m.Kernel], rootfs[m.Rootfs], kp.AuthorizedKey)
		}()
	}
	wg.Wait()
	u.waitReady(ctx, r, statuses)
	var hosts []InventoryHost
	var failed []string
	for _, s := range statuses {
		if s.Ready {
			hosts = append(hosts, InventoryHost{Machine: s.Machine, TAP: s.TAP, GuestIP: s.Guest})
		} else {
			failed = append(failed, s.Machine.Name)
		}
	}
	inv, err := Inventory(hosts, InventoryOptions{PrivateKey: r.PrivateKey, User: r.User})
	if err != nil {
		return statuses, err
	}
	if err := WriteFileAtomic(rec.Inventory, inv, 0o644); err != nil {
		return statuses, err
	}
	if len(failed) > 0 {
		return statuses, fmt.Errorf("%d of %d machines did not come up: %s", len(failed), len(statuses), strings.Join(failed, ", "))
	}
	return statuses, nil
}

func (u *Upper) saveRecord(rec *Record) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(u.recordPath(rec.ID)), 0o755); err != nil {
		return err
	}
	return WriteFileAtomic(u.recordPath(rec.ID), b, 0o644)
}

// pulled is one resolved asset: its cache entry and, for kernels, whether it brings its
// own initrd.
type pulled struct {
	digest   assets.Digest
	rootfs   string
	ownInitr bool
}

// pull resolves every kernel and rootfs of the run once, pulling what the cache lacks.
// Rootfs images become ext4 disks of the run's disk size with features every kernel of
// kernel-testing's matrix can mount (image.FeaturesLegacy).
func (u *Upper) pull(ctx context.Context, r *Run) (map[string]pulled, map[string]pulled, error) {
	store, err := u.Host.Store()
	if err != nil {
		return nil, nil, err
	}
	res := &resolve.Resolver{Store: store, Log: u.Log, Progress: u.Out}
	kernels, rootfs := map[string]pulled{}, map[string]pulled{}
	for _, m := range r.Machines {
		if _, ok := kernels[m.Kernel]; !ok {
			d, k, err := res.Kernel(ctx, spec.AssetRef{OCI: m.Kernel})
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %s: kernel: %w", m.Where, m.Name, err)
			}
			kernels[m.Kernel] = pulled{digest: d, ownInitr: k.Initrd != ""}
		}
		if _, ok := rootfs[m.Rootfs]; !ok {
			p, err := u.pullRootfs(ctx, store, m.Rootfs, r.DiskSize)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %s: rootfs: %w", m.Where, m.Name, err)
			}
			rootfs[m.Rootfs] = p
		}
	}
	return kernels, rootfs, nil
}

func (u *Upper) pullRootfs(ctx context.Context, store *assets.Store, ref string, size int64) (pulled, error) {
	base, err := oci.LocalName(ref)
	if err != nil {
		return pulled{}, err
	}
	// Its own cache name: the same image pulled for `run` is sized from its content.
	name := fmt.Sprintf("%s-%dm-%s", base, size>>20, image.FeaturesLegacy)
	d, err := store.Resolve("image/" + name)
	if errors.Is(err, assets.ErrNotFound) {
		fmt.Fprintf(u.Out, "pulling %s\n", ref)
		var res oci.Result
		res, err = oci.Pull(ctx, store, ref, oci.Options{Name: name, Kind: oci.KindImage, DiskSize: size,
			Features: image.FeaturesLegacy, Progress: u.Out, Log: u.Log})
		if err == nil {
			d = res.Digest
		}
	}
	if err != nil {
		return pulled{}, err
	}
	im, err := store.LoadImage(d)
	if err != nil {
		return pulled{}, err
	}
	return pulled{digest: d, rootfs: store.Path(im.Rootfs)}, nil
}

// start makes one machine's VM, unless it is running already.
func (u *Upper) start(ctx context.Context, r *Run, m Machine, k, fs pulled, authorized []byte) MachineStatus {
	st := MachineStatus{Machine: m, Stage: "created"}
	ref := r.ID + "/" + m.Name
	if rec, err := u.Host.Lookup(ref); err == nil {
		if supervisor.Running(rec) {
			st.ID = rec.ID
			return st // up again: keep what runs
		}
		if err := u.Host.Remove(rec, true); err != nil {
			st.Err = fmt.Errorf("remove the failed earlier attempt: %w", err)
			return st
		}
	}
	mode := spec.ModeForeign
	if !k.ownInitr {
		mode = spec.ModeSystem // ignite's layout: no initrd, boots through ours
	}
	mach := &spec.Machine{
		ID: spec.NewID(), Name: m.Name, Run: r.ID, Group: m.Group, Mode: mode,
		CPUs: r.CPUs, Memory: spec.Size(r.MemoryMiB) * spec.MiB,
		Kernel: spec.AssetRef{OCI: m.Kernel}, Image: spec.AssetRef{OCI: m.Rootfs},
		Assets: &spec.Assets{Kernel: string(k.digest), Rootfs: fs.rootfs, Init: u.Init},
		Files: []spec.File{
			{Path: "/root/.ssh", Mode: 0o700, Dir: true},
			{Path: "/root/.ssh/authorized_keys", Mode: 0o600, Data: authorized},
		},
		Network:    &spec.Network{Pool: u.Pool, DHCP: u.DHCP, DNS: r.DNS, RunID: r.ID, Slot: m.Name},
		VMM:        u.VMM,
		KernelArgs: r.KernelArgs,
	}
	created, err := u.Host.Create(mach, true)
	if err != nil {
		st.Err = err
		return st
	}
	st.ID = mach.ID
	if err := created.StartDetached(u.SuperviseArgv(mach.ID)); err != nil {
		st.Err = err
	}
	return st
}

// waitReady waits, bounded by r.TimeOut, until every started machine accepts the run's key,
// showing "N of M ready" as machines come up.
func (u *Upper) waitReady(ctx context.Context, r *Run, statuses []MachineStatus) {
	ctx, cancel := context.WithTimeout(ctx, r.TimeOut)
	defer cancel()
	signer, err := loadSigner(r.PrivateKey)
	if err != nil {
		for i := range statuses {
			statuses[i].Err = err
		}
		return
	}
	var mu sync.Mutex
	ready := 0
	report := func() { fmt.Fprintf(u.Out, "%d of %d ready\n", ready, len(statuses)) }
	report()
	var wg sync.WaitGroup
	for i := range statuses {
		if statuses[i].Err != nil {
			continue
		}
		wg.Add(1)
		go func(s *MachineStatus) {
			defer wg.Done()
			u.waitMachine(ctx, r, s, signer)
			mu.Lock()
			defer mu.Unlock()
			if s.Ready {
				ready++
				report()
			} else {
				fmt.Fprintf(u.Out, "%s: not ready (stage reached: %s): %v\n", s.Machine.Name, s.Stage, s.Err)
			}
		}(&statuses[i])
	}
	wg.Wait()
	for i := range statuses {
		s := &statuses[i]
		if !s.Ready && s.ID != "" {
			if rec, err := u.Host.Lookup(s.ID); err == nil {
				s.Console = logtail.File(filepath.Join(rec.Dir, supervisor.ConsoleLog), 15)
			}
		}
	}
}

// waitMachine walks one machine through its stages until its SSH server accepts the key.
func (u *Upper) waitMachine(ctx context.Context, r *Run, s *MachineStatus, signer ssh.Signer) {
	for {
		err := u.probe(ctx, r, s, signer)
		if err == nil {
			s.Ready, s.Err = true, nil
			return
		}
		s.Err = err
		select {
		case <-ctx.Done():
			if s.Err == nil {
				s.Err = ctx.Err()
			}
			return
		case <-time.After(u.Poll): // polling a booting guest's network service
		}
	}
}

// errGone is a VM that ended while `up` waited for it.
var errGone = errors.New("the VM is not running (its supervisor ended)")

func (u *Upper) probe(ctx context.Context, r *Run, s *MachineStatus, signer ssh.Signer) error {
	rec, err := u.Host.Lookup(s.ID)
	if err != nil {
		return err
	}
	if !supervisor.Running(rec) {
		if rec.Error != "" {
			return fmt.Errorf("%w: %s", errGone, rec.Error)
		}
		return errGone
	}
	s.Stage = "VMM running"
	if rec.Network == nil || rec.Network.Guest == "" {
		return errors.New("no address allocated yet")
	}
	s.TAP = rec.Network.TAP
	s.Guest, err = netip.ParseAddr(rec.Network.Guest)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(rec.Dir, supervisor.LeasedFile)); err == nil {
		s.Stage = "DHCP lease given"
	}
	addr := net.JoinHostPort(s.Guest.String(), "22")
	d := net.Dialer{Timeout: 3 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("ssh port: %w", err)
	}
	s.Stage = "port 22 open"
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	cfg := &ssh.ClientConfig{User: r.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: hostKeys(rec)}
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		return fmt.Errorf("ssh: %w", err)
	}
	ssh.NewClient(c, chans, reqs).Close()
	s.Stage = "key accepted"
	return u.knownHost(r, s.Guest, rec)
}

// hostKeys checks the guest's host key against those written into its disk before boot
// (foreign guests); a guest that booted through our init keeps the image's own, and is
// taken on first use.
func hostKeys(rec *state.VM) ssh.HostKeyCallback {
	if len(rec.HostKeys) == 0 {
		return ssh.InsecureIgnoreHostKey()
	}
	var keys []ssh.PublicKey
	for _, line := range rec.HostKeys {
		if k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err == nil {
			keys = append(keys, k)
		}
	}
	return func(_ string, _ net.Addr, key ssh.PublicKey) error {
		for _, k := range keys {
			if string(k.Marshal()) == string(key.Marshal()) {
				return nil
			}
		}
		return errors.New("the guest offers a host key that was not written into its disk")
	}
}

// knownHost records the guest's host keys in the run's known_hosts.
func (u *Upper) knownHost(r *Run, guest netip.Addr, rec *state.VM) error {
	var keys []ssh.PublicKey
	for _, line := range rec.HostKeys {
		if k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err == nil {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	return AddKnownHosts(filepath.Join(r.RuntimeRoot, r.ID, "known_hosts"), guest.String(), keys)
}

func loadSigner(path string) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ssh.ParsePrivateKey(b)
}

// Machines lists the VMs of run id.
func (u *Upper) Machines(id string) ([]state.VM, error) {
	st, err := u.Host.State()
	if err != nil {
		return nil, err
	}
	all, err := st.List()
	if err != nil {
		return nil, err
	}
	var out []state.VM
	for _, v := range all {
		if v.Run == id {
			out = append(out, v)
		}
	}
	return out, nil
}

// InventoryOf is the inventory of run id's machines as they are now.
func (u *Upper) InventoryOf(id string, asJSON bool) ([]byte, error) {
	rec, err := u.LoadRecord(id)
	if err != nil {
		return nil, err
	}
	vms, err := u.Machines(id)
	if err != nil {
		return nil, err
	}
	var hosts []InventoryHost
	for _, v := range vms {
		if v.Machine == nil || v.Network == nil || v.Network.Guest == "" || !supervisor.Running(&v) {
			continue
		}
		guest, err := netip.ParseAddr(v.Network.Guest)
		if err != nil {
			continue
		}
		hosts = append(hosts, InventoryHost{Machine: Machine{Name: v.Name, Group: v.Machine.Group}, TAP: v.Network.TAP, GuestIP: guest})
	}
	opts := InventoryOptions{PrivateKey: rec.PrivateKey, User: rec.User}
	if asJSON {
		return InventoryJSON(hosts, opts)
	}
	return Inventory(hosts, opts)
}

// Down stops every machine of run id (gracefully, killed after timeout) and removes it:
// VMs, TAPs, addresses, clones, records and their known_hosts entries. It matches the run
// exactly (kernel-testing's substring pkill would also stop run "id-12" for "id-1").
func (u *Upper) Down(id string, timeout time.Duration) ([]string, error) {
	vms, err := u.Machines(id)
	if err != nil {
		return nil, err
	}
	var removed, guests []string
	var errs []error
	for i := range vms {
		v := &vms[i]
		if v.Network != nil && v.Network.Guest != "" {
			guests = append(guests, v.Network.Guest)
		}
		if err := u.Host.Stop(v, timeout); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", v.Name, err))
			continue
		}
		if err := u.Host.Remove(v, true); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", v.Name, err))
			continue
		}
		removed = append(removed, v.Name)
	}
	if rec, err := u.LoadRecord(id); err == nil {
		if len(guests) > 0 {
			if err := RemoveKnownHosts(rec.KnownHosts, guests...); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		if len(errs) == 0 {
			os.Remove(u.recordPath(id))
		}
	}
	return removed, errors.Join(errs...)
}
