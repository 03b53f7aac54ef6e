package taskservice

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	cg2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/protobuf"
	"github.com/containerd/typeurl/v2"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every Linux ABI.
const clockTicks = 100

// Stats reports what the host pays for the container: its VMM process's CPU time and
// resident memory (the guest's memory as far as the guest has touched it), in the cgroup v2
// metrics form the CRI reads (kubectl top). A sandbox costs nothing of its own.
func (s *Service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	pid, vm := c.pid, !c.sandbox && c.status == taskRunning
	s.mu.Unlock()
	m := &cg2.Metrics{Pids: &cg2.PidsStat{}, CPU: &cg2.CPUStat{}, Memory: &cg2.MemoryStat{}}
	if vm {
		if m, err = processMetrics("/proc", int(pid)); err != nil {
			return nil, err
		}
	}
	a, err := typeurl.MarshalAny(m)
	if err != nil {
		return nil, err
	}
	return &taskAPI.StatsResponse{Stats: protobuf.FromAny(a)}, nil
}

// processMetrics reads pid's CPU times, resident set and thread count under procRoot.
func processMetrics(procRoot string, pid int) (*cg2.Metrics, error) {
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return nil, err
	}
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return nil, fmt.Errorf("%s/stat: no command name", dir)
	}
	f := strings.Fields(string(stat)[i+1:])
	// f[0] is field 3 (state): utime is field 14, stime 15, num_threads 20.
	if len(f) < 18 {
		return nil, fmt.Errorf("%s/stat: %d fields", dir, len(f)+2)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	threads, err3 := strconv.ParseUint(f[17], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, fmt.Errorf("%s/stat: bad times or threads", dir)
	}
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return nil, err
	}
	var rssKiB uint64
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			rssKiB, _ = strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	const usecPerTick = 1_000_000 / clockTicks
	return &cg2.Metrics{
		Pids: &cg2.PidsStat{Current: threads},
		CPU: &cg2.CPUStat{UsageUsec: (utime + stime) * usecPerTick, UserUsec: utime * usecPerTick,
			SystemUsec: stime * usecPerTick},
		Memory: &cg2.MemoryStat{Usage: rssKiB << 10, Anon: rssKiB << 10},
	}, nil
}
