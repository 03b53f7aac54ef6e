// Package qemu runs VMs under qemu-system-x86_64: -M microvm with KVM where KVM really
// works, -M q35 with virtio-pci under TCG everywhere else (microvm hangs at boot under
// TCG one run in five).
package qemu

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm"
)

// Binary is the QEMU system emulator we drive.
const Binary = "qemu-system-x86_64"

// Accel is how QEMU executes guest code.
type Accel string

const (
	AccelTCG Accel = "tcg"
	AccelKVM Accel = "kvm"
)

// Backend is the QEMU VMM.
type Backend struct {
	Path  string // qemu-system-x86_64
	Accel Accel
}

// New finds QEMU and picks the accelerator: accel "" probes, "kvm"/"tcg" force one.
func New(accel string) (*Backend, error) {
	path, err := exec.LookPath(Binary)
	if err != nil {
		return nil, fmt.Errorf("%s not found: install the Debian package qemu-system-x86", Binary)
	}
	b := &Backend{Path: path}
	switch accel {
	case "":
		b.Accel = ProbeAccel("/proc/cpuinfo", "/dev/kvm")
	case string(AccelKVM), string(AccelTCG):
		b.Accel = Accel(accel)
	default:
		return nil, fmt.Errorf("accel: %q, want kvm, tcg or empty to probe", accel)
	}
	return b, nil
}

// ProbeAccel chooses KVM only when the CPU advertises hardware virtualisation and /dev/kvm
// answers. A PVM-based nested /dev/kvm (no vmx/svm flag) opens fine but dies with emulation
// failures on a stock kernel, so the flag is the deciding test.
func ProbeAccel(cpuinfo, kvmDev string) Accel {
	data, err := os.ReadFile(cpuinfo)
	if err != nil {
		return AccelTCG
	}
	hasVirt := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "flags") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if f == "vmx" || f == "svm" {
				hasVirt = true
			}
		}
		break
	}
	if !hasVirt {
		return AccelTCG
	}
	f, err := os.OpenFile(kvmDev, os.O_RDWR, 0)
	if err != nil {
		return AccelTCG
	}
	defer f.Close()
	// KVM_GET_API_VERSION: 12 on every kernel since 2.6.22.
	const kvmGetAPIVersion = 0xAE00
	v, err := unix.IoctlRetInt(int(f.Fd()), kvmGetAPIVersion)
	if err != nil || v != 12 {
		return AccelTCG
	}
	return AccelKVM
}

func (b *Backend) Name() string { return "qemu-" + string(b.Accel) }

// Args is the QEMU command line for spec; exported for tests and `--dry-run` style output.
func (b *Backend) Args(spec vmm.Spec) []string {
	// microvm has no PCI bus: its devices are virtio-mmio ("-device" suffix).
	machine, bus := "q35,accel=tcg", "pci"
	if b.Accel == AccelKVM {
		machine, bus = "microvm,accel=kvm,acpi=on", "device"
	}
	args := []string{
		"-name", "firegopher-" + spec.ID,
		"-machine", machine,
		"-cpu", "max",
		"-smp", strconv.Itoa(spec.CPUs),
		"-m", strconv.Itoa(spec.MemoryMiB) + "M",
		"-nodefaults", "-no-user-config",
		"-display", "none", "-monitor", "none",
		"-serial", "file:" + spec.ConsoleLog,
		// The guest powering off or panicking ends the process: no reboots, no lingering VMs.
		"-no-reboot",
		"-kernel", spec.Kernel,
		"-append", spec.Cmdline,
		"-device", "virtio-rng-" + bus,
	}
	if b.Accel == AccelTCG && spec.CPUs > 1 {
		args = append(args, "-accel", "tcg,thread=multi")
	}
	if spec.Initrd != "" {
		args = append(args, "-initrd", spec.Initrd)
	}
	for i, d := range spec.Disks {
		id := fmt.Sprintf("disk%d", i)
		drive := fmt.Sprintf("if=none,id=%s,file=%s,format=raw,cache=writeback", id, escapeOpt(d.Path))
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		args = append(args, "-drive", drive, "-device", fmt.Sprintf("virtio-blk-%s,drive=%s,serial=%s", bus, id, d.Serial))
	}
	for i, n := range spec.NICs {
		id := fmt.Sprintf("net%d", i)
		args = append(args,
			"-netdev", fmt.Sprintf("tap,id=%s,ifname=%s,script=no,downscript=no", id, n.TAP),
			"-device", fmt.Sprintf("virtio-net-%s,netdev=%s,mac=%s", bus, id, n.MAC))
	}
	args = append(args,
		"-device", "virtio-serial-"+bus+",id=vser0",
		// QEMU connects to the caller's socket as a client: it is listening before we start.
		"-chardev", "socket,id=ctl,path="+escapeOpt(spec.ControlSocket),
		"-device", "virtserialport,bus=vser0.0,chardev=ctl,name="+vmconfig.ControlPortName,
	)
	return args
}

// escapeOpt doubles commas, QEMU's option-value escape.
func escapeOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// Start launches QEMU. Its stderr goes to the console log's neighbour so that QEMU's own
// complaints are kept with the VM.
func (b *Backend) Start(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	stderr, err := os.OpenFile(spec.ConsoleLog+".qemu", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(b.Path, b.Args(spec)...)
	cmd.Stderr = stderr
	cmd.Stdout = stderr
	// Its own process group: a Ctrl-C on the terminal reaches us, and we stop the VM in order.
	// Pdeathsig: if we die, the VM dies with us instead of running unowned.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		stderr.Close()
		return nil, fmt.Errorf("start %s: %w", b.Path, err)
	}
	inst := &instance{cmd: cmd, done: make(chan struct{}), stderrPath: stderr.Name()}
	go func() {
		inst.err = cmd.Wait()
		stderr.Close()
		close(inst.done)
	}()
	return inst, nil
}

type instance struct {
	cmd        *exec.Cmd
	done       chan struct{}
	err        error
	stderrPath string
}

func (i *instance) Pid() int { return i.cmd.Process.Pid }

func (i *instance) Wait() error {
	<-i.done
	if i.err != nil {
		msg, _ := os.ReadFile(i.stderrPath)
		if s := strings.TrimSpace(string(msg)); s != "" {
			return fmt.Errorf("qemu: %v: %s", i.err, lastLines(s, 3))
		}
		return fmt.Errorf("qemu: %w", i.err)
	}
	return nil
}

func (i *instance) Kill() error {
	select {
	case <-i.done:
		return nil
	default:
	}
	return i.cmd.Process.Kill()
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
