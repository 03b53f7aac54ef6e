package supervisor

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/firegopher/firegopher/internal/jail"
	"github.com/firegopher/firegopher/internal/network"
	"github.com/firegopher/firegopher/internal/network/firewall"
	"github.com/firegopher/firegopher/internal/state"
	"github.com/firegopher/firegopher/internal/vmm"
)

// tmpGrace is how long a VM directory may keep its temporary name (ClaimDir is between
// mkdir and flock); older ones are debris.
const tmpGrace = time.Minute

// Process is a process as gc sees it: its pid and the VM directory it is tagged with.
type Process struct {
	Pid   int
	VMDir string // the value of vmm.ProcessTagEnv in its environment
}

// ProcessTable lists tagged processes and kills them; tests inject their own.
type ProcessTable interface {
	Tagged() ([]Process, error)
	Kill(pid int) error
}

// procTable is this host's /proc.
type procTable struct{}

// Tagged finds every process whose environment carries vmm.ProcessTagEnv.
func (procTable) Tagged() ([]Process, error) {
	envs, err := filepath.Glob("/proc/[0-9]*/environ")
	if err != nil {
		return nil, err
	}
	prefix := []byte(vmm.ProcessTagEnv + "=")
	var out []Process
	for _, p := range envs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // gone, or not ours to read
		}
		for _, kv := range bytes.Split(b, []byte{0}) {
			if v, ok := bytes.CutPrefix(kv, prefix); ok {
				pid, _ := strconv.Atoi(strings.Split(p, "/")[2])
				out = append(out, Process{Pid: pid, VMDir: string(v)})
				break
			}
		}
	}
	return out, nil
}

func (procTable) Kill(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

// GC finds what crashed firegopher processes of this state directory left behind — VMM
// processes without a supervisor, per-VM directories without an owner, records of VMs
// that died with their supervisor, their TAPs, firewall entries and addresses — and removes
// it. It never touches a VM whose supervisor is alive (holds the directory's lock), nor
// anything of another state directory. It returns one line per item it dealt with.
func (h *Host) GC() ([]string, error) {
	st, err := h.State()
	if err != nil {
		return nil, err
	}
	var report []string
	records, err := st.List()
	if err != nil {
		return nil, err
	}
	vmsDir := h.VMsDir()
	// Jails first: a jailed VMM outlives its supervisor and is found by its jail alone.
	jailReport, err := h.reclaimJails(records)
	report = append(report, jailReport...)
	if err != nil {
		return report, err
	}
	known := map[string]bool{}
	for _, r := range records {
		known[r.ID] = true
		// Whoever creates a record holds the directory's lock first (ClaimDir) and hands it
		// to the supervisor, so an unlocked record that has not exited is lost.
		if r.Status == state.Exited || Owned(r.Dir) {
			continue
		}
		report = append(report, h.killVMMs(r.Dir)...)
		removeRuntimeFiles(r.Dir)
		if r.Network != nil {
			for _, item := range cleanNetwork(h.Log, r.Network) {
				report = append(report, fmt.Sprintf("vm %s: removed %s", r.ID, item))
			}
		}
		if r.Detached {
			st.Update(r.ID, func(v *state.VM) error {
				v.Status, v.FinishedAt, v.VMMPID = state.Exited, time.Now(), 0
				v.Error = "lost: its supervisor died (cleaned up by gc)"
				return nil
			})
			report = append(report, fmt.Sprintf("vm %s: supervisor gone; marked exited, disk and sockets removed", r.ID))
		} else {
			os.RemoveAll(r.Dir)
			st.Delete(r.ID)
			report = append(report, fmt.Sprintf("vm %s: supervisor gone; record and directory removed", r.ID))
		}
	}
	entries, err := os.ReadDir(vmsDir)
	if err != nil && !os.IsNotExist(err) {
		return report, err
	}
	for _, e := range entries {
		dir := filepath.Join(vmsDir, e.Name())
		if known[e.Name()] || Owned(dir) {
			continue
		}
		if info, err := e.Info(); err == nil && strings.HasPrefix(e.Name(), ".") && time.Since(info.ModTime()) < tmpGrace {
			continue // ClaimDir between mkdir and flock
		}
		report = append(report, h.killVMMs(dir)...)
		if err := os.RemoveAll(dir); err != nil {
			return report, err
		}
		report = append(report, fmt.Sprintf("dir %s: no record, no supervisor; removed", dir))
	}
	// VMMs of this state directory whose VM directory is gone or unowned.
	procs, err := h.procs().Tagged()
	if err != nil {
		return report, err
	}
	for _, p := range procs {
		if filepath.Dir(p.VMDir) != vmsDir || Owned(p.VMDir) {
			continue
		}
		if err := h.procs().Kill(p.Pid); err == nil {
			report = append(report, fmt.Sprintf("process %d: VMM of vm %s without a supervisor; killed", p.Pid, filepath.Base(p.VMDir)))
		}
	}
	// A lost VM's volume locks died with its supervisor; what is left is debris of a volume
	// create or rm that was killed, and users entries of dead VMs.
	report = append(report, h.Volumes().Clean()...)
	return report, nil
}

// jailReclaimTimeout bounds the wait for a lost jail's processes to die.
const jailReclaimTimeout = 30 * time.Second

// reclaimJails removes, for every VM of this state directory without a live supervisor,
// its jail (processes, cgroup, chroot, owner: Jails.Reclaim) and its network namespace.
// Only ids of this state directory are looked at: its records, its VM directories and
// the jails under its own JailBase.
func (h *Host) reclaimJails(records []state.VM) ([]string, error) {
	ids := map[string]bool{}
	for _, r := range records {
		ids[r.ID] = true
	}
	if entries, err := os.ReadDir(h.VMsDir()); err == nil {
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), ".") {
				ids[e.Name()] = true
			}
		}
	}
	jailed := map[string]bool{}
	if h.Jails != nil {
		list, err := h.Jails.Jails()
		if err != nil {
			return nil, fmt.Errorf("gc: jails: %w", err)
		}
		for _, id := range list {
			jailed[id], ids[id] = true, true
		}
	}
	var report []string
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		if Owned(filepath.Join(h.VMsDir(), id)) {
			continue
		}
		if jailed[id] {
			ctx, cancel := context.WithTimeout(context.Background(), jailReclaimTimeout)
			err := h.Jails.Reclaim(ctx, id)
			cancel()
			if err != nil {
				return report, fmt.Errorf("gc: vm %s: jail: %w", id, err)
			}
			report = append(report, fmt.Sprintf("vm %s: supervisor gone; jail removed (processes, cgroup, chroot, owner)", id))
		}
		if jail.ValidateID(id) != nil {
			continue
		}
		ns := &jail.NetNS{Name: jail.NetNSName(id), Path: jail.NetNSPath(id)}
		if _, err := os.Stat(ns.Path); err != nil {
			continue
		}
		// Deleting the namespace deletes its veth, and with it the host end.
		if err := ns.Remove(); err != nil {
			return report, fmt.Errorf("gc: vm %s: %w", id, err)
		}
		report = append(report, fmt.Sprintf("vm %s: supervisor gone; network namespace %s removed", id, ns.Name))
	}
	return report, nil
}

func (h *Host) procs() ProcessTable {
	if h.Procs != nil {
		return h.Procs
	}
	return procTable{}
}

// killVMMs kills the processes tagged with dir (a lost VM's VMM) before its files go.
func (h *Host) killVMMs(dir string) []string {
	procs, err := h.procs().Tagged()
	if err != nil {
		return nil
	}
	var report []string
	for _, p := range procs {
		if p.VMDir == dir && h.procs().Kill(p.Pid) == nil {
			report = append(report, fmt.Sprintf("process %d: VMM of vm %s without a supervisor; killed", p.Pid, filepath.Base(dir)))
		}
	}
	return report
}

// cleanNetwork undoes a lost VM's network from its record: firewall entries, TAP, slot.
// The record may predate the allocation (the supervisor died while allocating): the
// allocator, asked by run id and slot, knows the TAP if there is one.
func cleanNetwork(log *slog.Logger, n *state.Network) []string {
	var done []string
	pool, err := netip.ParsePrefix(n.Pool)
	if err != nil {
		return nil
	}
	a, err := network.OpenAllocator(n.DB, pool)
	if err != nil {
		return nil
	}
	alloc, found, err := a.Lookup(n.RunID, n.Machine)
	if err != nil || !found {
		return nil
	}
	tap := alloc.Slot.TAP
	if err := firewall.Unpublish(log, tap); err != nil {
		log.Warn("gc: unpublish ports", "tap", tap, "error", err)
	}
	if err := firewall.RemoveTAP(log, tap); err == nil {
		done = append(done, "firewall entries of "+tap)
	}
	if err := network.DeleteTAP(log, tap); err == nil {
		done = append(done, "tap "+tap)
	}
	if a.Release(n.RunID, n.Machine) == nil {
		done = append(done, "address "+alloc.Slot.Guest.String())
	}
	return done
}

// kept are the files of a VM's directory that outlive it: its lock and its logs, for
// `logs` and `inspect` until `rm`.
var kept = []string{LockFile, OutputLog, ConsoleLog, SupervisorLog}

// removeRuntimeFiles removes what a lost VM's steps and backend made in dir (disk clone,
// initrd, sockets of any backend), keeping its lock and logs.
func removeRuntimeFiles(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		name := e.Name()
		keep := false
		for _, k := range kept {
			// A backend's own log sits beside the console log (console.log.qemu).
			keep = keep || name == k || strings.HasPrefix(name, ConsoleLog+".")
		}
		if !keep {
			os.RemoveAll(filepath.Join(dir, name))
		}
	}
}
