//go:build linux

package guest

import (
	"time"

	"golang.org/x/sys/unix"
)

// BootClock is the time since the kernel started (CLOCK_BOOTTIME).
func BootClock() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return time.Duration(ts.Nano())
}
