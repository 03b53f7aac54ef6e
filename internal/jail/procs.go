package jail

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Processes lists the processes running as owner's uid, found under procRoot ("/proc").
// A jailed Firecracker has lost its parent-death signal (setuid clears it) and its
// environment (the jailer clears it), so after a supervisor crash gc finds it by its uid,
// which no other process has: the range is the jails' alone and a uid has one live jail.
func Processes(procRoot string, owner Owner) ([]int, error) {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("jail: %w", err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		uid, zombie, err := realUID(filepath.Join(procRoot, e.Name(), "status"))
		if err != nil {
			continue // gone meanwhile
		}
		if uid == owner.UID && !zombie {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// realUID reads a process's real uid, and whether it is a zombie (dead, not yet reaped:
// nothing left to kill).
func realUID(status string) (uid int, zombie bool, err error) {
	f, err := os.Open(status)
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "State:"); ok {
			zombie = strings.HasPrefix(strings.TrimSpace(rest), "Z")
		}
		if rest, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
			fields := strings.Fields(rest)
			if len(fields) > 0 {
				uid, err := strconv.Atoi(fields[0])
				return uid, zombie, err
			}
		}
	}
	return 0, false, errors.New("no Uid line")
}

// Kill sends SIGKILL to every process of owner (see Processes) and returns how many it
// signalled. Killing the jail's pid 1 (Firecracker, started in its own PID namespace)
// takes the rest of its namespace with it.
func Kill(procRoot string, owner Owner) (int, error) {
	pids, err := Processes(procRoot, owner)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
			n++
		} else if !errors.Is(err, syscall.ESRCH) {
			return n, fmt.Errorf("jail: kill %d: %w", pid, err)
		}
	}
	return n, nil
}
