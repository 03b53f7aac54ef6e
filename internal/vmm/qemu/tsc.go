package qemu

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Why this exists: QEMU's -M microvm gives Linux no PIT tick, HPET or ACPI PM timer, so under
// TCG the guest learns the TSC frequency only from an early PIT calibration that fails
// silently when the host jitters; the kernel then distrusts the TSC and can spin forever in
// calibrate_delay(). Under TCG the guest's RDTSC reads the host's counter, so telling the guest
// the host's rate (tsc_early_khz, Linux >= 5.8) and that the TSC is reliable removes the
// hang. A slightly wrong rate does not hang, it skews the guest clock. Guest kernels older
// than 5.8 ignore tsc_early_khz: for them run QEMU with -icount shift=auto instead (also no
// hangs, but boots about twice as slowly). Not needed under KVM.

// TSC measurement: several short windows, each bracketing a monotonic clock read between
// two TSC reads at both ends, and the median of their rates. A window during which this
// thread was preempted at an end is discarded, one preempted in the middle is harmless.
const (
	tscWindows  = 7
	tscWindow   = 12 * time.Millisecond
	tscMaxSkew  = 50 * time.Microsecond // an end whose bracket is wider was interrupted
	minTSCkHz   = 100_000               // 100 MHz
	maxTSCkHz   = 10_000_000            // 10 GHz
	tscAttempts = 4 * tscWindows
)

// ErrNoTSC says the host has no x86 time-stamp counter to measure.
var ErrNoTSC = errors.New("tsc: not an x86-64 host")

var hostTSC struct {
	once sync.Once
	khz  int64
	err  error
}

// HostTSCkHz returns the host's TSC rate in kHz, measured once per process (about 100 ms).
// /proc/cpuinfo's "cpu MHz" is not it on hosts with frequency scaling.
func HostTSCkHz() (int64, error) {
	hostTSC.once.Do(func() { hostTSC.khz, hostTSC.err = MeasureTSCkHz() })
	return hostTSC.khz, hostTSC.err
}

// MicrovmTCGCmdline is what a TCG microvm guest's kernel command line needs so it never hangs
// calibrating its clock: "tsc_early_khz=<host kHz> tsc=reliable" (Linux >= 5.8).
func MicrovmTCGCmdline() (string, error) {
	khz, err := HostTSCkHz()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("tsc_early_khz=%d tsc=reliable", khz), nil
}

// MeasureTSCkHz measures the TSC rate now, without the cache: the median over several
// short windows of RDTSC against CLOCK_MONOTONIC.
func MeasureTSCkHz() (int64, error) {
	if !haveTSC {
		return 0, ErrNoTSC
	}
	// One OS thread throughout: the TSC reads of a window must come from one CPU's view
	// (constant_tsc hosts keep them in step, but a migration mid-read is still a preemption).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	var rates []int64
	for try := 0; try < tscAttempts && len(rates) < tscWindows; try++ {
		c0, t0, ok0 := tscStamp()
		deadline := c0 + tscWindow.Nanoseconds()
		for monoNanos() < deadline {
		}
		c1, t1, ok1 := tscStamp()
		if !ok0 || !ok1 || c1 <= c0 || t1 <= t0 {
			continue
		}
		rates = append(rates, int64(float64(t1-t0)*1e6/float64(c1-c0)+0.5))
	}
	if len(rates) < tscWindows/2+1 {
		return 0, fmt.Errorf("tsc: only %d of %d measurement windows were undisturbed", len(rates), tscWindows)
	}
	slices.Sort(rates)
	khz := rates[len(rates)/2]
	if khz < minTSCkHz || khz > maxTSCkHz {
		return 0, fmt.Errorf("tsc: measured %d kHz, outside %d..%d: not a usable counter", khz, minTSCkHz, maxTSCkHz)
	}
	return khz, nil
}

// tscStamp pairs a monotonic clock reading (ns) with the TSC value at the same instant:
// the midpoint of the TSC reads around it. ok is false if the bracket took too long.
func tscStamp() (clock int64, tsc uint64, ok bool) {
	best := uint64(1<<64 - 1)
	// The narrowest of three brackets: the first may pay for a cold cache or a page fault.
	for i := 0; i < 3; i++ {
		a := rdtsc()
		c := monoNanos()
		b := rdtsc()
		if b-a < best {
			best, clock, tsc = b-a, c, a+(b-a)/2
		}
	}
	// Unknown rate yet: judge the bracket by an upper bound of 10 GHz.
	return clock, tsc, best <= uint64(tscMaxSkew.Nanoseconds())*maxTSCkHz/1e6
}

func monoNanos() int64 {
	var ts unix.Timespec
	// vDSO would be faster, but x/sys calls the syscall; its cost is inside the bracket.
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}
