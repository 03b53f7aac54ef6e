//go:build linux

package guest

import (
	"time"

	"golang.org/x/sys/unix"
)

// Restart unmounts the volumes (each unmount writes its filesystem back) and, unless
// discardRoot (a root disk the host deletes when the VM ends), flushes everything and
// remounts the root read-only; then it reboots: a VM ends by reboot, which every VMM turns
// into a prompt exit of its process (the host boots the kernel with reboot=k panic=-1; QEMU
// runs with -no-reboot; Firecracker exits on any guest reboot and has no ACPI power-off).
// It does not return: PID 1 exiting would panic the kernel.
func Restart(discardRoot bool) {
	if discardRoot {
		unmountVolumes("/proc/self/mounts")
	} else {
		unix.Sync()
		unmountVolumes("/proc/self/mounts")
		_ = unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
		unix.Sync()
	}
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	// Only reached if the restart is refused; halting beats exiting.
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_HALT)
	for {
		// Not select{}: with nothing else left to run, the runtime would call that a
		// deadlock and exit.
		time.Sleep(time.Hour)
	}
}

// DisableCtrlAltDel makes Ctrl-Alt-Del (Firecracker's SendCtrlAltDel, a console's key
// press) a SIGINT to PID 1 instead of an immediate reset that syncs and reports nothing.
func DisableCtrlAltDel() error {
	return unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
}
