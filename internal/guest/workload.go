//go:build linux

package guest

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/exitcode"
)

// DefaultPath is the workload's PATH when neither the image nor the user set one.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Workload is one command and the processes it leaves behind.
type Workload struct {
	Argv []string
	Env  []string
	Dir  string
	Cred *syscall.Credential // nil: run as init's user (root)
	// NoNewPrivs starts the workload with no_new_privs: it cannot regain what it dropped
	// (setuid binaries, file capabilities).
	NoNewPrivs bool
	Stdout     io.Writer
	Stderr     io.Writer
	// Stdin is the process's stdin (the read end of a pipe the session feeds); nil means
	// /dev/null. Run closes it once the process has it.
	Stdin *os.File
	// TTY, if set, is the process's terminal: its stdin, stdout and stderr and its
	// controlling tty in a session of its own; its output is read from TTY.Master into Stdout.
	TTY *PTY
	// Reaper starts the processes and collects their exit when the caller reaps for the
	// whole process (PID 1, a subreaper). Nil: the process is waited for by its pid, which
	// must not share its process with a Reaper (whose wait4(-1) would take that status).
	Reaper *Reaper
	// Signals delivers signals to forward to the workload's main process.
	Signals <-chan unix.Signal
	// Grace is how long leftovers get between SIGTERM and SIGKILL once the main process
	// has exited.
	Grace time.Duration
	// KillRest signals what the workload leaves behind when its main process exits: every
	// process but init for the VM's main workload (kill(-1)), the process group for an exec.
	KillRest func(mainPid int, sig unix.Signal) error
	// WaitAllGone makes Run wait, after KillRest, until init has no children at all: right
	// for the main workload (the VM ends next), wrong for an exec beside it. Needs Reaper.
	WaitAllGone bool
}

// KillAllButInit is KillRest for the VM's main workload.
func KillAllButInit(_ int, sig unix.Signal) error { return unix.Kill(-1, sig) }

// KillGroup is KillRest for an exec: its own process group only.
func KillGroup(pid int, sig unix.Signal) error { return unix.Kill(-pid, sig) }

// Run starts the workload, forwards signals, and once the main process has exited,
// terminates the rest and drains the output. It returns how the main process ended.
func (w *Workload) Run() agent.Exit {
	env := withDefaultPath(w.Env)
	path, notRunnable, ok := lookPath(w.Argv[0], env, w.Dir)
	if !ok {
		fmt.Fprintf(w.Stderr, "firegopher: %s\n", notRunnable.Error)
		return notRunnable
	}
	var drained sync.WaitGroup
	pid, status, err := w.startWithStdio(path, env, &drained)
	if err != nil {
		code := exitcode.CannotExecute
		if os.IsNotExist(err) {
			code = exitcode.NotFound
		}
		e := failed(code, "%s: %v", w.Argv[0], err)
		fmt.Fprintf(w.Stderr, "firegopher: %s\n", e.Error)
		return e
	}

	var exit agent.Exit
	for done := false; !done; {
		select {
		case st := <-status:
			exit, done = exitOf(st), true
		case s := <-w.Signals:
			_ = unix.Kill(pid, s)
		}
	}
	w.terminateRest(pid)
	waitTimeout(&drained, w.Grace)
	return exit
}

// startWithStdio starts the process with its stdio — pipes whose output is copied to Stdout
// and Stderr, or the terminal — and counts the copies in drained.
func (w *Workload) startWithStdio(path string, env []string, drained *sync.WaitGroup) (int, <-chan unix.WaitStatus, error) {
	// A session of its own: its process group is what an exec's cleanup kills.
	sys := &syscall.SysProcAttr{Setsid: true, Credential: w.Cred}
	attr := &os.ProcAttr{Dir: w.Dir, Env: env, Sys: sys}
	if w.TTY != nil {
		attr.Files = []*os.File{w.TTY.Slave, w.TTY.Slave, w.TTY.Slave}
		sys.Setctty, sys.Ctty = true, 0
		if w.Cred != nil {
			// The user's own terminal, as login gives it: it may reopen /dev/tty.
			unix.Fchown(int(w.TTY.Slave.Fd()), int(w.Cred.Uid), int(w.Cred.Gid))
		}
		pid, status, err := w.start(path, attr)
		w.TTY.Slave.Close()
		if err != nil {
			w.TTY.Master.Close()
			return 0, nil, err
		}
		drained.Add(1)
		// EIO ends the copy once every process has closed the terminal.
		go func() { defer drained.Done(); io.Copy(w.Stdout, w.TTY.Master); w.TTY.Master.Close() }()
		return pid, status, nil
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return 0, nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return 0, nil, err
	}
	stdin := w.Stdin
	if stdin == nil {
		if stdin, err = os.Open(os.DevNull); err != nil {
			return 0, nil, err
		}
	}
	attr.Files = []*os.File{stdin, outW, errW}
	pid, status, err := w.start(path, attr)
	stdin.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return 0, nil, err
	}
	drained.Add(2)
	go func() { defer drained.Done(); io.Copy(w.Stdout, outR); outR.Close() }()
	go func() { defer drained.Done(); io.Copy(w.Stderr, errR); errR.Close() }()
	return pid, status, nil
}

// start starts the main process. no_new_privs is a property of a thread, inherited by what
// it forks, so it is set on a thread of its own that does the fork and then dies with its
// goroutine (locked and never unlocked, the runtime does not reuse it): neither init's
// other threads nor a later workload without it can inherit the flag by chance.
func (w *Workload) start(path string, attr *os.ProcAttr) (int, <-chan unix.WaitStatus, error) {
	if !w.NoNewPrivs {
		return w.startProcess(path, attr)
	}
	type started struct {
		pid    int
		status <-chan unix.WaitStatus
		err    error
	}
	result := make(chan started, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			result <- started{err: fmt.Errorf("no_new_privs: %w", err)}
			return
		}
		pid, status, err := w.startProcess(path, attr)
		result <- started{pid, status, err}
	}()
	r := <-result
	return r.pid, r.status, r.err
}

func (w *Workload) startProcess(path string, attr *os.ProcAttr) (int, <-chan unix.WaitStatus, error) {
	if w.Reaper != nil {
		return w.Reaper.Start(path, w.Argv, attr)
	}
	p, err := os.StartProcess(path, w.Argv, attr)
	if err != nil {
		return 0, nil, err
	}
	status := make(chan unix.WaitStatus, 1)
	go func() {
		ps, err := p.Wait()
		if err != nil {
			// Someone else reaped it: the status is lost. Say so rather than hang.
			status <- unix.WaitStatus(255 << 8)
			return
		}
		status <- unix.WaitStatus(ps.Sys().(syscall.WaitStatus))
	}()
	return p.Pid, status, nil
}

// terminateRest ends whatever the workload left running: SIGTERM, Grace to exit, SIGKILL.
func (w *Workload) terminateRest(mainPid int) {
	if w.KillRest == nil {
		return
	}
	_ = w.KillRest(mainPid, unix.SIGTERM)
	if !w.WaitAllGone || w.Reaper == nil {
		_ = w.KillRest(mainPid, unix.SIGKILL)
		return
	}
	deadline := time.NewTimer(w.Grace)
	defer deadline.Stop()
	select {
	case <-w.Reaper.NoChildren():
	case <-deadline.C:
		_ = w.KillRest(mainPid, unix.SIGKILL)
		<-w.Reaper.NoChildren()
	}
}

func exitOf(st unix.WaitStatus) agent.Exit {
	if st.Signaled() {
		return agent.Exit{Code: exitcode.Signaled(int(st.Signal())), Signal: int(st.Signal())}
	}
	return agent.Exit{Code: st.ExitStatus()}
}

func failed(code int, format string, args ...any) agent.Exit {
	return agent.Exit{Code: code, Error: fmt.Sprintf(format, args...)}
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

func withDefaultPath(env []string) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			return env
		}
	}
	return append(append([]string(nil), env...), "PATH="+DefaultPath)
}

// lookPath resolves argv0 the way a shell would, with the workload's own PATH, and maps
// failures to the shell's exit codes: 127 not found, 126 found but not executable.
func lookPath(argv0 string, env []string, dir string) (string, agent.Exit, bool) {
	pathEnv := DefaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathEnv = v
		}
	}
	var candidates []string
	if strings.Contains(argv0, "/") {
		p := argv0
		if !filepath.IsAbs(p) && dir != "" {
			p = filepath.Join(dir, p)
		}
		candidates = []string{p}
	} else {
		for _, d := range filepath.SplitList(pathEnv) {
			if d == "" {
				d = "."
			}
			candidates = append(candidates, filepath.Join(d, argv0))
		}
	}
	sawNonExec := ""
	for _, c := range candidates {
		fi, err := os.Stat(c)
		if err != nil || fi.IsDir() {
			continue
		}
		if fi.Mode()&0o111 != 0 {
			return c, agent.Exit{}, true
		}
		sawNonExec = c
	}
	if sawNonExec != "" {
		return "", failed(exitcode.CannotExecute, "%s: permission denied", sawNonExec), false
	}
	return "", failed(exitcode.NotFound, "%s: command not found", argv0), false
}
