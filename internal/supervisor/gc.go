package supervisor

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/firegopher/firegopher/internal/state"
)

// tmpGrace is how long a VM directory may keep its temporary name (ClaimDir is between
// mkdir and flock); older ones are debris.
const tmpGrace = time.Minute

// GC finds what crashed firegopher processes left behind — VMM processes without a
// supervisor, per-VM directories without an owner, records of VMs that died with their
// supervisor — and removes it. It never touches a VM whose supervisor is alive (holds
// the directory's lock). It returns one line per item it dealt with.
func GC(st *state.Store, vmsDir string) ([]string, error) {
	var report []string
	records, err := st.List()
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	for _, r := range records {
		known[r.ID] = true
		// Whoever creates a record holds the directory's lock first (ClaimDir) and hands it
		// to the supervisor, so an unlocked record that has not exited is lost.
		if r.Status == state.Exited || Owned(r.Dir) {
			continue
		}
		removeRuntimeFiles(&VM{Dir: r.Dir})
		if r.Network != nil {
			for _, item := range cleanNetwork(r.Network) {
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
		if err := os.RemoveAll(dir); err != nil {
			return report, err
		}
		report = append(report, fmt.Sprintf("dir %s: no record, no supervisor; removed", dir))
	}
	for _, p := range vmmProcesses() {
		dir := filepath.Join(vmsDir, p.id)
		if Owned(dir) {
			continue
		}
		if err := syscall.Kill(p.pid, syscall.SIGKILL); err == nil {
			report = append(report, fmt.Sprintf("process %d: VMM of vm %s without a supervisor; killed", p.pid, p.id))
		}
	}
	return report, nil
}

type vmmProcess struct {
	pid int
	id  string
}

// vmmProcesses finds VMM processes we started: their command line names the VM as
// "firegopher-<id>" (qemu's -name).
func vmmProcesses() []vmmProcess {
	var out []vmmProcess
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := bytes.Split(b, []byte{0})
		for i := 0; i+1 < len(args); i++ {
			if string(args[i]) == "-name" && bytes.HasPrefix(args[i+1], []byte("firegopher-")) {
				pid, _ := strconv.Atoi(strings.Split(p, "/")[2])
				out = append(out, vmmProcess{pid: pid, id: strings.TrimPrefix(string(args[i+1]), "firegopher-")})
			}
		}
	}
	return out
}
