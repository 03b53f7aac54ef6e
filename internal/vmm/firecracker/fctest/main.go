//go:build linux

package fctest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Firecracker's command-line options: those taking a value, and flags.
var (
	valueOpts = map[string]bool{
		"api-sock": true, "id": true, "start-time-us": true, "start-time-cpu-us": true,
		"parent-cpu-time-us": true, "config-file": true, "level": true, "log-path": true,
		"metrics-path": true, "seccomp-filter": true, "http-api-max-payload-size": true,
		"mmds-size-limit": true, "metadata": true, "module": true, "describe-snapshot": true,
	}
	flagOpts = map[string]bool{
		"version": true, "help": true, "no-api": true, "boot-timer": true, "no-seccomp": true,
		"show-level": true, "show-log-origin": true,
	}
	// notModelled are options the fake refuses rather than ignores.
	notModelled = map[string]bool{"config-file": true, "no-api": true, "describe-snapshot": true, "log-path": true, "metrics-path": true}
)

// Main is the fake firecracker of release version; it returns the exit code.
func Main(version string) int {
	if p := os.Getenv(guestEnv); p != "" {
		var params guestParams
		if err := json.Unmarshal([]byte(p), &params); err != nil {
			fmt.Fprintln(os.Stderr, "fctest guest:", err)
			return 1
		}
		return guestMain(params)
	}
	prof, err := NewProfile(version)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	opts, err := parseArgs(prof, os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "Arguments parsing error: %v\n", err)
		return 153 // FcExitCode::ArgParsing
	}
	if _, ok := opts["version"]; ok {
		fmt.Printf("Firecracker v%s\n\n", version)
		return 0
	}
	for o := range opts {
		if notModelled[o] {
			fmt.Fprintf(os.Stderr, "fctest: --%s is not modelled by the fake\n", o)
			return 1
		}
	}
	api, err := LoadAPI(version)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	id := opts["id"]
	if id == "" {
		id = "anonymous-instance"
	}
	sock := opts["api-sock"]
	if sock == "" {
		sock = "/run/firecracker.socket"
	}
	srv := NewServer(prof, api, id, os.Stdout)
	_, srv.EnablePCI = opts["enable-pci"]
	srv.Logf("main", "Running Firecracker v%s", version)
	// What a jailer handed over, for tests to check: nothing but stdio and no environment.
	srv.Logf("main", "fctest: uid %d gid %d, %d environment variables, open fds %v", os.Getuid(), os.Getgid(), len(os.Environ()), openFDs())
	ln, err := net.Listen("unix", sock)
	if err != nil {
		srv.Logf("main", "Failed to open the API socket at %s: %v", sock, err)
		return 1
	}
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln)
	defer func() {
		// In-flight responses (InstanceStart's) are written before the process ends.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		hs.Shutdown(ctx)
		os.Remove(sock)
	}()
	select {
	case <-srv.Started:
	case <-srv.loadFailed:
		return 1 // the deferred shutdown still answers the load
	}
	code := runGuest(srv)
	srv.Logf("main", "Vmm is stopping.")
	srv.WriteMetrics()
	return code
}

// parseArgs reads --name value / --name=value pairs and flags; unknown options are an
// error, as for Firecracker's own parser.
func parseArgs(p Profile, args []string) (map[string]string, error) {
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") {
			return nil, fmt.Errorf("found argument '%s' which wasn't expected, or isn't valid in this context", a)
		}
		name, value, hasValue := strings.Cut(a[2:], "=")
		switch {
		case valueOpts[name]:
			if !hasValue {
				if i+1 >= len(args) {
					return nil, fmt.Errorf("the argument '--%s' requires a value but none was supplied", name)
				}
				i++
				value = args[i]
			}
		case flagOpts[name], name == "enable-pci" && p.PCIFlag():
			if hasValue {
				return nil, fmt.Errorf("the argument '--%s' takes no value", name)
			}
		default:
			return nil, fmt.Errorf("found argument '--%s' which wasn't expected, or isn't valid in this context", name)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("the argument '--%s' was provided more than once", name)
		}
		out[name] = value
	}
	return out, nil
}

// runGuest boots the guest as a child process and returns once it has rebooted: the VMM
// then exits 0, as Firecracker does on a guest reset.
func runGuest(srv *Server) int {
	// A loaded snapshot's guest runs once the microVM is resumed.
	<-srv.resumed
	srv.mu.Lock()
	p := *srv.guest
	if srv.restored != nil {
		p = *srv.restored
	}
	for _, n := range srv.nics {
		// The guest's first frames on each interface: its DHCP discovery, retransmitted
		// as a client does (a bridge drops what a just-attached TAP sends until the link
		// change has reached it, up to a second later).
		if n.GuestMac != "" {
			go func(tap *os.File, iface, mac string) {
				for i := 0; i < 10; i++ {
					if err := sendDiscover(tap, mac); err != nil {
						srv.Logf("fc_vcpu 0", "fctest: %s: DHCPDISCOVER: %v", iface, err)
						return
					}
					if i == 0 {
						srv.Logf("fc_vcpu 0", "fctest: %s: the guest sends DHCPDISCOVERs from %s", iface, mac)
					}
					time.Sleep(500 * time.Millisecond)
				}
			}(n.tap, n.IfaceID, n.GuestMac)
		}
	}
	srv.mu.Unlock()

	self := os.Args[0]
	if !strings.Contains(self, "/") {
		if exe, err := os.Executable(); err == nil {
			self = exe
		}
	}
	cmd := exec.Command(self)
	cmd.Env = []string{guestEnv + "=" + encodeParams(p)}
	// The console is the guest's: no /dev/null to open in a jail.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stdout
	// The guest dies with the VMM. As root (no jail) it also gets a PID namespace of its
	// own, so that its workload's processes die with it too, as a VM's would.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() == 0 {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWPID
	}
	if err := cmd.Start(); err != nil {
		srv.Logf("fc_vcpu 0", "fctest: cannot start the guest %s: %v", filepath.Base(self), err)
		return 1
	}
	srv.mu.Lock()
	srv.OnPause = func(paused bool) {
		if paused {
			cmd.Process.Signal(syscall.SIGSTOP)
		} else {
			cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	srv.mu.Unlock()
	go func() {
		for range srv.CtrlAltDel {
			cmd.Process.Signal(syscall.SIGINT)
		}
	}()
	cmd.Wait()
	return 0
}

// openFDs lists the open descriptors below 256 (a jail has no /proc to list them from),
// leaving out the Go runtime's own (its epoll and wakeup fds are anonymous inodes).
func openFDs() []int {
	var fds []int
	for fd := 0; fd < 256; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			continue
		}
		var st unix.Statfs_t
		if fd > 2 && unix.Fstatfs(fd, &st) == nil && st.Type == unix.ANON_INODE_FS_MAGIC {
			continue
		}
		fds = append(fds, fd)
	}
	return fds
}
