//go:build linux

package guest

import (
	"golang.org/x/sys/unix"
)

// PowerOff flushes and remounts the root read-only, then powers the VM off. It does not
// return: PID 1 exiting would panic the kernel.
func PowerOff() {
	unix.Sync()
	_ = unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
	unix.Sync()
	for {
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
		// Only reached if power-off is refused; halting beats exiting.
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_HALT)
		select {}
	}
}
