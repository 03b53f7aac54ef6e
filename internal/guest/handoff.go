//go:build linux

package guest

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/vmconfig"
)

// Init runs in two stages. Linux gives every thread its own view of the root directory once
// a multi-threaded process chroots (Go's threads kept the initramfs as their root), so
// instead of chrooting in place stage 1 execs init again after the switch to the real root:
// stage 2 starts single-threaded inside it, and every thread it makes inherits that root.
// Handoff is what crosses that exec, as open fds named in the environment.
type Handoff struct {
	// Control is the open control channel: a virtio-serial port or a vsock socket.
	Control *os.File
	Config  *vmconfig.Config
	// Start is the boot clock when init started, i.e. how long the kernel took.
	Start time.Duration
	// Stop says a stop request (SIGINT) arrived before there was a workload to stop.
	Stop bool
}

const (
	stageEnv     = "FIREGOPHER_INIT_STAGE"
	startEnv     = "FIREGOPHER_INIT_START_NS"
	stopEnv      = "FIREGOPHER_INIT_STOP"
	controlFDEnv = "FIREGOPHER_CONTROL_FD"
	configFDEnv  = "FIREGOPHER_CONFIG_FD"
)

// BootClock is the time since the kernel started (CLOCK_BOOTTIME): it survives the re-exec.
func BootClock() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return time.Duration(ts.Nano())
}

// Exec re-executes the program open at self (an O_PATH fd: after the switch of root the
// binary in the initramfs is out of sight) as stage 2. It returns only on failure.
func (h Handoff) Exec(self int) error {
	env, err := h.env()
	if err != nil {
		return err
	}
	err = execveat(self, []string{"/init"}, env)
	runtime.KeepAlive(h.Control) // its finalizer would close the channel's fd
	return err
}

// env makes h's files survive exec and returns the environment naming them.
func (h Handoff) env() ([]string, error) {
	data, err := h.Config.Marshal()
	if err != nil {
		return nil, err
	}
	cfgFD, err := unix.MemfdCreate("firegopher-config", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("config memfd: %w", err)
	}
	// A raw fd, not an *os.File whose finalizer could close it before the exec.
	for rest := data; len(rest) > 0; {
		n, err := unix.Write(cfgFD, rest)
		if err != nil {
			unix.Close(cfgFD)
			return nil, fmt.Errorf("config memfd: %w", err)
		}
		rest = rest[n:]
	}
	ctlFD := int(h.Control.Fd())
	for _, fd := range []int{cfgFD, ctlFD} {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return nil, fmt.Errorf("keep fd %d open across exec: %w", fd, err)
		}
	}
	stop := 0
	if h.Stop {
		stop = 1
	}
	return []string{
		stageEnv + "=2",
		fmt.Sprintf("%s=%d", controlFDEnv, ctlFD),
		fmt.Sprintf("%s=%d", configFDEnv, cfgFD),
		fmt.Sprintf("%s=%d", startEnv, int64(h.Start)),
		fmt.Sprintf("%s=%d", stopEnv, stop),
	}, nil
}

// TakeHandoff returns what stage 1 passed; ok is false in stage 1. On an error Control is
// set whenever it could be taken, so that the error can still be reported.
func TakeHandoff() (h Handoff, ok bool, err error) {
	return takeHandoff(os.Getenv)
}

func takeHandoff(getenv func(string) string) (Handoff, bool, error) {
	if getenv(stageEnv) != "2" {
		return Handoff{}, false, nil
	}
	var h Handoff
	ctlFD, err := strconv.Atoi(getenv(controlFDEnv))
	if err != nil {
		return h, true, fmt.Errorf("%s: %w", controlFDEnv, err)
	}
	unix.CloseOnExec(ctlFD) // not for the workload
	h.Control = os.NewFile(uintptr(ctlFD), "control")
	start, err := strconv.ParseInt(getenv(startEnv), 10, 64)
	if err != nil {
		return h, true, fmt.Errorf("%s: %w", startEnv, err)
	}
	h.Start, h.Stop = time.Duration(start), getenv(stopEnv) == "1"
	cfgFD, err := strconv.Atoi(getenv(configFDEnv))
	if err != nil {
		return h, true, fmt.Errorf("%s: %w", configFDEnv, err)
	}
	cfg := os.NewFile(uintptr(cfgFD), "config")
	defer cfg.Close()
	// Read from the start whatever the offset: the fd's file description is shared.
	if _, err := cfg.Seek(0, io.SeekStart); err != nil {
		return h, true, fmt.Errorf("read config fd: %w", err)
	}
	data, err := io.ReadAll(cfg)
	if err != nil {
		return h, true, fmt.Errorf("read config fd: %w", err)
	}
	h.Config, err = vmconfig.Parse(data)
	return h, true, err
}

// execveat runs the program open at fd (AT_EMPTY_PATH); it returns only on failure.
func execveat(fd int, argv, env []string) error {
	empty, err := unix.BytePtrFromString("")
	if err != nil {
		return err
	}
	argvp, err := cStrings(argv)
	if err != nil {
		return err
	}
	envp, err := cStrings(env)
	if err != nil {
		return err
	}
	_, _, errno := unix.Syscall6(unix.SYS_EXECVEAT, uintptr(fd), uintptr(unsafe.Pointer(empty)),
		uintptr(unsafe.Pointer(&argvp[0])), uintptr(unsafe.Pointer(&envp[0])), unix.AT_EMPTY_PATH, 0)
	return errno
}

// cStrings makes a NULL-terminated array of C strings.
func cStrings(ss []string) ([]*byte, error) {
	out := make([]*byte, len(ss)+1)
	for i, s := range ss {
		p, err := unix.BytePtrFromString(s)
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}
