//go:build linux

package fctest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// JailerConfigFile sits beside a test jailer binary and tells it about the test's host.
const JailerConfigFile = "jailer.json"

// JailerConfig is the test jailer's view of the host, which a test controls.
type JailerConfig struct {
	// ProcMounts is the mounts file the jailer reads its cgroup hierarchies from (a test's
	// fake, with a fake cgroup file system). Empty: the test jailer touches no cgroup at all
	// (it never writes to this machine's hierarchy) and refuses --cgroup.
	ProcMounts string `json:"proc_mounts,omitempty"`
}

// WithConfig returns a jailer of rel that reads cfg: a hard link of the jailer in a
// directory of the test's, beside its JailerConfigFile.
func (r Release) WithConfig(dir string, cfg JailerConfig) (string, error) {
	p := filepath.Join(dir, "jailer")
	if err := os.Link(r.Jailer, p); err != nil {
		return "", err
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	return p, os.WriteFile(filepath.Join(dir, JailerConfigFile), b, 0o644)
}

// jailer is one run's arguments, as src/jailer/src/env.rs reads them.
type jailer struct {
	prof          Profile
	cfg           JailerConfig
	id            string
	execFile      string // canonical
	execName      string
	chroot        string
	uid, gid      int
	netns         string
	daemonize     bool
	newPIDNS      bool
	cgroupVersion int
	parentCgroup  string
	cgroups       [][2]string
	noFile        uint64
	fsize         uint64
	extra         []string
}

// JailerMain is the test jailer of release version: what the real one is documented and
// written to do, for real where this host allows it (chroot, setuid, netns, mknod), with
// cgroups written only into a test's fake hierarchy. It returns the exit code (the real
// jailer prints its error and exits 1).
func JailerMain(version string) int {
	// First of all, as the jailer's sanitize_process: every inherited fd but stdio is
	// closed, the environment cleared: nothing can be handed to Firecracker but stdio. The
	// fds are marked close-on-exec rather than closed now, because this Go process's runtime
	// has descriptors of its own among them (its epoll); what Firecracker gets is the same.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		panic(fmt.Sprintf("Failed to sanitize the Jailer process: %v", err))
	}
	os.Clearenv()
	// The namespace joined and the credentials dropped must be those of the thread that
	// execs Firecracker.
	runtime.LockOSThread()
	if err := runJailer(version); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func runJailer(version string) error {
	prof, err := NewProfile(version)
	if err != nil {
		return err
	}
	args := os.Args[1:]
	own := args
	if i := slices.Index(args, "--"); i >= 0 {
		own = args[:i] // what follows is Firecracker's
	}
	if slices.Contains(own, "--version") {
		fmt.Printf("Jailer v%s\n\n", version)
		return nil
	}
	j, err := parseJailerArgs(prof, args)
	if err != nil {
		return err
	}
	if exe, err := os.Executable(); err == nil {
		if b, err := os.ReadFile(filepath.Join(filepath.Dir(exe), JailerConfigFile)); err == nil {
			if err := json.Unmarshal(b, &j.cfg); err != nil {
				return fmt.Errorf("fctest jailer: %s: %w", JailerConfigFile, err)
			}
		}
	}
	if err := j.moveIntoParentCgroup(); err != nil {
		return err
	}
	if err := os.MkdirAll(j.chroot, 0o755); err != nil {
		return fmt.Errorf("Failed to create directory %s: %w", j.chroot, err)
	}
	return j.run()
}

func parseJailerArgs(p Profile, args []string) (*jailer, error) {
	vals := map[string]string{"chroot-base-dir": "/srv/jailer", "cgroup-version": "1"}
	multi := map[string][]string{}
	flags := map[string]bool{}
	j := &jailer{prof: p}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			j.extra = args[i+1:]
			break
		}
		name, ok := strings.CutPrefix(a, "--")
		if !ok {
			return nil, fmt.Errorf("Arguments parsing error: Found argument '%s' which wasn't expected, or isn't valid in this context.", a)
		}
		switch name {
		case "id", "exec-file", "uid", "gid", "chroot-base-dir", "netns", "cgroup-version", "parent-cgroup":
			if i+1 >= len(args) {
				return nil, fmt.Errorf("Arguments parsing error: The argument '--%s' requires a value, but none was supplied", name)
			}
			i++
			vals[name] = args[i]
		case "cgroup", "resource-limit":
			if i+1 >= len(args) {
				return nil, fmt.Errorf("Arguments parsing error: The argument '--%s' requires a value, but none was supplied", name)
			}
			i++
			multi[name] = append(multi[name], args[i])
		case "daemonize", "new-pid-ns":
			flags[name] = true
		default:
			return nil, fmt.Errorf("Arguments parsing error: Found argument '%s' which wasn't expected, or isn't valid in this context.", a)
		}
	}
	for _, req := range []string{"id", "exec-file", "uid", "gid"} {
		if vals[req] == "" {
			return nil, fmt.Errorf("Arguments parsing error: Argument '%s' required, but not found.", req)
		}
	}
	j.id = vals["id"]
	if err := validateJailID(j.id); err != nil {
		return nil, err
	}
	exe, err := filepath.EvalSymlinks(vals["exec-file"])
	if err == nil {
		exe, err = filepath.Abs(exe)
	}
	if err != nil {
		return nil, fmt.Errorf("Failed to canonicalize path %s: %v", vals["exec-file"], err)
	}
	if fi, err := os.Stat(exe); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a file", exe)
	}
	j.execFile, j.execName = exe, filepath.Base(exe)
	if p.ExecNameRule() && !strings.Contains(j.execName, "firecracker") {
		return nil, fmt.Errorf("Invalid filename. The filename of `--exec-file` option must contain \"firecracker\": %s", j.execName)
	}
	base, err := filepath.EvalSymlinks(vals["chroot-base-dir"])
	if err != nil {
		return nil, fmt.Errorf("Failed to canonicalize path %s: %v", vals["chroot-base-dir"], err)
	}
	if fi, err := os.Stat(base); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", base)
	}
	j.chroot = filepath.Join(base, j.execName, j.id, "root")
	for _, k := range []string{"uid", "gid"} {
		n, err := strconv.ParseUint(vals[k], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("Invalid %s: %s", k, vals[k])
		}
		if k == "uid" {
			j.uid = int(n)
		} else {
			j.gid = int(n)
		}
	}
	j.netns = vals["netns"]
	j.daemonize, j.newPIDNS = flags["daemonize"], flags["new-pid-ns"]
	j.parentCgroup = vals["parent-cgroup"]
	if j.parentCgroup == "" {
		j.parentCgroup = j.execName
	}
	if filepath.IsAbs(j.parentCgroup) || slices.Contains(strings.Split(j.parentCgroup, "/"), "..") || slices.Contains(strings.Split(j.parentCgroup, "/"), ".") {
		return nil, errors.New("Parent cgroup path is invalid. Path should not be absolute or contain '..' or '.'")
	}
	v, err := strconv.ParseUint(vals["cgroup-version"], 10, 8)
	if err != nil || v < 1 || v > 2 {
		return nil, fmt.Errorf("Cgroup version is invalid: %s", vals["cgroup-version"])
	}
	j.cgroupVersion = int(v)
	for _, cg := range multi["cgroup"] {
		kv := strings.Split(cg, "=")
		if len(kv) != 2 || kv[1] == "" {
			return nil, fmt.Errorf("Invalid format for cgroups: %s", cg)
		}
		if filepath.IsAbs(kv[0]) || strings.Contains(kv[0], "/") {
			return nil, fmt.Errorf("Invalid cgroup file: %s", cg)
		}
		j.cgroups = append(j.cgroups, [2]string{kv[0], kv[1]})
	}
	j.noFile = 2048
	for _, rl := range multi["resource-limit"] {
		name, value, ok := strings.Cut(rl, "=")
		if !ok {
			return nil, fmt.Errorf("Invalid format for resource limits: %s", rl)
		}
		n, err := strconv.ParseUint(value, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("Invalid limit value %s: %v", value, err)
		}
		switch name {
		case "no-file":
			j.noFile = n
		case "fsize":
			j.fsize = n
		default:
			return nil, fmt.Errorf("Invalid resource argument: %s", name)
		}
	}
	return j, nil
}

func validateJailID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("Invalid instance ID: invalid len (%d);  the length must be between 1 and 64", len(id))
	}
	for _, r := range id {
		if r != '-' && !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return fmt.Errorf("Invalid instance ID: invalid char (%c) at position 0", r)
		}
	}
	return nil
}

// hierarchies finds the cgroup2 mount and the v1 ones in the configured mounts file, as
// the jailer's regex does.
func (j *jailer) hierarchies() (unified string, v1 map[string]string, err error) {
	f, err := os.Open(j.cfg.ProcMounts)
	if err != nil {
		return "", nil, fmt.Errorf("Failed to open %s: %w", j.cfg.ProcMounts, err)
	}
	defer f.Close()
	v1 = map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 {
			continue
		}
		switch fs[2] {
		case "cgroup2":
			if unified == "" {
				unified = fs[1]
			}
		case "cgroup":
			for _, o := range strings.Split(fs[3], ",") {
				if _, ok := v1[o]; !ok {
					v1[o] = fs[1]
				}
			}
		}
	}
	if j.cgroupVersion == 2 && unified == "" || j.cgroupVersion == 1 && len(v1) == 0 {
		return "", nil, errors.New("Cgroups hierarchy is missing: No hierarchy found for this cgroup version.")
	}
	return unified, v1, nil
}

// moveIntoParentCgroup: with v2 and no --cgroup, the jailer joins <unified>/<parent> when
// it exists (v1.16.1 env.rs).
func (j *jailer) moveIntoParentCgroup() error {
	if len(j.cgroups) > 0 || j.cgroupVersion != 2 || j.cfg.ProcMounts == "" {
		return nil
	}
	unified, _, err := j.hierarchies()
	if err != nil {
		return err
	}
	parent := filepath.Join(unified, j.parentCgroup)
	if _, err := os.Stat(parent); err == nil {
		return os.WriteFile(filepath.Join(parent, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	}
	return nil
}

// setUpCgroups writes the --cgroup values into <hierarchy>/<parent>/<id> and moves the
// jailer there, enabling v2 controllers down the tree through cgroup.subtree_control.
func (j *jailer) setUpCgroups() error {
	if len(j.cgroups) == 0 {
		return nil
	}
	if j.cfg.ProcMounts == "" {
		return errors.New("fctest jailer: --cgroup given, but the test configured no cgroup file system (the test jailer never writes to this host's cgroups)")
	}
	unified, v1, err := j.hierarchies()
	if err != nil {
		return err
	}
	procs := map[string]bool{}
	for _, cg := range j.cgroups {
		file, value := cg[0], cg[1]
		controller, _, _ := strings.Cut(file, ".")
		var dir string
		if j.cgroupVersion == 2 {
			avail, err := os.ReadFile(filepath.Join(unified, "cgroup.controllers"))
			if err != nil || !slices.Contains(strings.Fields(string(avail)), controller) {
				return fmt.Errorf("Failed to write to %s: No such file or directory (os error 2)", filepath.Join(unified, "cgroup.subtree_control"))
			}
			dir = filepath.Join(unified, j.parentCgroup, j.id)
			// Enable the controller in every ancestor's subtree_control, root first.
			for p := unified; p != dir; {
				if err := appendLine(filepath.Join(p, "cgroup.subtree_control"), "+"+controller); err != nil {
					return err
				}
				rel, _ := filepath.Rel(p, dir)
				p = filepath.Join(p, strings.Split(rel, "/")[0])
				if err := os.MkdirAll(p, 0o755); err != nil {
					return err
				}
			}
		} else {
			mount, ok := v1[controller]
			if !ok {
				return fmt.Errorf("Controller %s is unavailable", controller)
			}
			dir = filepath.Join(mount, j.parentCgroup, j.id)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("Failed to create directory %s: %w", dir, err)
		}
		if err := os.WriteFile(filepath.Join(dir, file), []byte(value+"\n"), 0o644); err != nil {
			return fmt.Errorf("Failed to write to %s: %w", filepath.Join(dir, file), err)
		}
		procs[dir] = true
	}
	for dir := range procs {
		name := "cgroup.procs"
		if j.cgroupVersion == 1 {
			name = "tasks"
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func appendLine(p, line string) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(f, line)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (j *jailer) run() error {
	startUS := time.Now().UnixMicro()
	if err := j.copyExecFile(); err != nil {
		return err
	}
	if j.netns != "" {
		f, err := os.Open(j.netns)
		if err != nil {
			return fmt.Errorf("Failed to open file %s: %w", j.netns, err)
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			return fmt.Errorf("Failed to join network namespace: netns: %w", err)
		}
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: j.noFile, Max: j.noFile}); err != nil {
		return fmt.Errorf("Failed to set resource limit: %w", err)
	}
	if j.fsize > 0 {
		if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: j.fsize, Max: j.fsize}); err != nil {
			return fmt.Errorf("Failed to set resource limit: %w", err)
		}
	}
	if err := j.setUpCgroups(); err != nil {
		return err
	}
	if j.daemonize {
		return errors.New("fctest jailer: --daemonize is not modelled (a caller that owns Firecracker never asks for it)")
	}
	// The real jailer pivot_roots in a mount namespace of its own; a chroot is the same
	// view for what runs inside.
	if err := unix.Chroot(j.chroot); err != nil {
		return fmt.Errorf("Failed to chroot into %s: %w", j.chroot, err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	for _, d := range []string{"/", "/dev", "/dev/net", "/run"} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("Failed to create directory %s: %w", d, err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return err
		}
		if err := os.Chown(d, j.uid, j.gid); err != nil {
			return fmt.Errorf("Failed to change owner for %s: %w", d, err)
		}
	}
	for _, dev := range []struct {
		path         string
		major, minor uint32
		optional     bool
	}{{"/dev/net/tun", 10, 200, false}, {"/dev/kvm", 10, 232, false}, {"/dev/urandom", 1, 9, true}} {
		err := unix.Mknod(dev.path, unix.S_IFCHR|0o600, int(unix.Mkdev(dev.major, dev.minor)))
		if err == nil {
			err = os.Chown(dev.path, j.uid, j.gid)
		}
		if err != nil && !dev.optional {
			return fmt.Errorf("Failed to create %s via mknod inside the jail: %w", dev.path, err)
		}
	}
	argv := []string{"/" + j.execName, "--id", j.id,
		"--start-time-us", strconv.FormatInt(startUS, 10),
		"--start-time-cpu-us", "0", "--parent-cpu-time-us", "0"}
	argv = append(argv, j.extra...)
	if j.newPIDNS {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Args, cmd.Env = argv, []string{}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Cloneflags: syscall.CLONE_NEWPID,
			Credential: &syscall.Credential{Uid: uint32(j.uid), Gid: uint32(j.gid), Groups: []uint32{}},
		}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("Failed to exec into Firecracker: %w", err)
		}
		// The jailer exits at once: Firecracker is no longer its caller's child.
		return j.writePidFile(cmd.Process.Pid)
	}
	if j.prof.PidFileAlways() {
		if err := j.writePidFile(os.Getpid()); err != nil {
			return err
		}
	}
	if err := unix.Setgroups(nil); err != nil {
		return err
	}
	if err := unix.Setgid(j.gid); err != nil {
		return err
	}
	if err := unix.Setuid(j.uid); err != nil {
		return err
	}
	return fmt.Errorf("Failed to exec into Firecracker: %w", unix.Exec(argv[0], argv, []string{}))
}

// writePidFile creates /<exec>.pid exclusively: a stale chroot fails here.
func (j *jailer) writePidFile(pid int) error {
	p := "/" + j.execName + ".pid"
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("Failed to open file %s: %w", p, err)
	}
	_, err = fmt.Fprint(f, pid)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// copyExecFile copies (never links) the exec file into the chroot: 1.6 with fs::copy,
// 1.15+ opening the destination O_NOFOLLOW, refusing one with more than one link, and
// giving it to the jail's uid.
func (j *jailer) copyExecFile() error {
	dst := filepath.Join(j.chroot, j.execName)
	src, err := os.Open(j.execFile)
	if err != nil {
		return fmt.Errorf("Failed to open %s: %w", j.execFile, err)
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	var out *os.File
	if j.prof.ExecCopyChecked() {
		out, err = os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|unix.O_NOFOLLOW, fi.Mode().Perm())
		if err != nil {
			return fmt.Errorf("Failed to open %s: %w", dst, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(out.Fd()), &st); err != nil {
			out.Close()
			return err
		}
		if st.Nlink > 1 {
			out.Close()
			return fmt.Errorf("Failed to copy %s: %s is a hard link", j.execFile, dst)
		}
		if err := out.Chown(j.uid, j.gid); err != nil {
			out.Close()
			return fmt.Errorf("Failed to change owner for %s: %w", dst, err)
		}
	} else {
		out, err = os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fi.Mode().Perm())
		if err != nil {
			return fmt.Errorf("Failed to copy %s to %s: %w", j.execFile, dst, err)
		}
	}
	_, err = io.Copy(out, src)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("Failed to copy %s to %s: %w", j.execFile, dst, err)
	}
	return os.Chmod(dst, fi.Mode().Perm())
}
