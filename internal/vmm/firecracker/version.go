package firecracker

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/firegopher/firegopher/internal/initrd"
	"github.com/firegopher/firegopher/internal/kernel"
	"github.com/firegopher/firegopher/internal/vmconfig"
)

// Version is a Firecracker (or jailer) release.
type Version struct {
	Major, Minor, Patch int
	// Suffix is what follows MAJOR.MINOR.PATCH in a development build ("-dev"), else "".
	Suffix string
}

func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d%s", v.Major, v.Minor, v.Patch, v.Suffix)
}

// IsZero says the version is unknown.
func (v Version) IsZero() bool { return v == Version{} }

// Less orders releases by number (a suffix does not count).
func (v Version) Less(w Version) bool {
	if v.Major != w.Major {
		return v.Major < w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor < w.Minor
	}
	return v.Patch < w.Patch
}

var versionRE = regexp.MustCompile(`^v?([0-9]+)\.([0-9]+)\.([0-9]+)(-[0-9A-Za-z.-]+)?$`)

// ParseVersion reads "1.6.0", "v1.6.0" or "v1.7.0-dev".
func ParseVersion(s string) (Version, error) {
	m := versionRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return Version{}, fmt.Errorf("version %q: want MAJOR.MINOR.PATCH", s)
	}
	n := func(s string) int { i, _ := strconv.Atoi(s); return i }
	return Version{Major: n(m[1]), Minor: n(m[2]), Patch: n(m[3]), Suffix: m[4]}, nil
}

// The releases this backend was written and tested against: 1.6.0 up to any 1.16 patch.
var (
	MinTested    = Version{Major: 1, Minor: 6}
	MaxTested    = Version{Major: 1, Minor: 16} // any 1.16.x
	RecommendedV = Version{Major: 1, Minor: 16, Patch: 1}
	// ACPIDevices is the first release that also describes virtio-mmio devices in ACPI
	// (DSDT), so that a kernel without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES finds them.
	ACPIDevices = Version{Major: 1, Minor: 8}
)

// Tested says whether v is in the tested range.
func Tested(v Version) bool {
	return !v.Less(MinTested) && (v.Major == MaxTested.Major && v.Minor <= MaxTested.Minor)
}

// CheckTested refuses a release outside the tested range, saying what to install instead.
func CheckTested(product string, v Version) error {
	if Tested(v) {
		return nil
	}
	return fmt.Errorf("%s v%s is outside the tested range %s to %d.%d.x: run firegopher firecracker install --version %s",
		product, v, MinTested, MaxTested.Major, MaxTested.Minor, RecommendedV)
}

// versionTimeout bounds `--version`; it prints and exits at once.
const versionTimeout = 10 * time.Second

// ReadVersion runs `path --version` and parses its first line, "<product> vX.Y.Z"
// (product is "Firecracker" or "Jailer", as the binaries print it).
func ReadVersion(ctx context.Context, path, product string) (Version, error) {
	ctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "--version")
	// A binary that does not know --version might start serving: nothing for it to read.
	cmd.Stdin = nil
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			return Version{}, fmt.Errorf("%s --version: %v: %s", path, err, firstLine(ee.Stderr))
		}
		return Version{}, fmt.Errorf("%s --version: %w", path, err)
	}
	return ParseVersionOutput(out, product)
}

// ParseVersionOutput reads "<product> vX.Y.Z" from the first non-empty line of out.
func ParseVersionOutput(out []byte, product string) (Version, error) {
	line := firstLine(out)
	name, ver, ok := strings.Cut(line, " ")
	if !ok || name != product {
		return Version{}, fmt.Errorf("--version printed %q, want %q", line, product+" vX.Y.Z")
	}
	v, err := ParseVersion(ver)
	if err != nil {
		return Version{}, fmt.Errorf("--version printed %q: %w", line, err)
	}
	return v, nil
}

func firstLine(b []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			return l
		}
	}
	return ""
}

// mmioParam is the kernel parameter Firecracker < 1.8 describes its devices with; a
// built-in driver compiled with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES carries its name as a
// NUL-terminated string (the kernel_param's name).
const mmioParam = "virtio_mmio.device"

// ErrNoMMIOCmdline is wrapped by CheckKernel when Firecracker < 1.8 could not give the
// guest its devices.
var ErrNoMMIOCmdline = errors.New("the guest kernel cannot take virtio-mmio devices on its command line")

// CheckKernel refuses a Firecracker that cannot show its devices to the guest kernel:
// releases before 1.8 describe virtio-mmio devices only as virtio_mmio.device= on the
// kernel command line, which needs CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES. mmioModule is the
// guest's virtio_mmio.ko (uncompressed), nil when the driver is built into vmlinux.
func CheckKernel(v Version, vmlinux string, mmioModule []byte) error {
	if !v.Less(ACPIDevices) {
		return nil
	}
	ok, err := MMIOCmdlineSupported(vmlinux, mmioModule)
	if err != nil {
		return fmt.Errorf("firecracker v%s: %w", v, err)
	}
	if !ok {
		return fmt.Errorf("firecracker v%s: %w (no CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES), so it would see no disk, network or vsock: use Firecracker %s or newer (firegopher firecracker install --version %s), or a kernel built with Firecracker's guest config",
			v, ErrNoMMIOCmdline, ACPIDevices, RecommendedV)
	}
	return nil
}

// MMIOCmdlineSupported says whether the guest kernel accepts virtio_mmio.device=: the
// module's .modinfo declares the parameter "device", or (no module) vmlinux holds the
// built-in parameter's name.
func MMIOCmdlineSupported(vmlinux string, mmioModule []byte) (bool, error) {
	if mmioModule != nil {
		info, err := modinfo(mmioModule)
		if err != nil {
			return false, fmt.Errorf("virtio_mmio module: %w", err)
		}
		for _, kv := range info {
			if strings.HasPrefix(kv, "parm=device:") || strings.HasPrefix(kv, "parmtype=device:") {
				return true, nil
			}
		}
		return false, nil
	}
	f, err := os.Open(vmlinux)
	if err != nil {
		return false, fmt.Errorf("kernel: %w", err)
	}
	defer f.Close()
	found, err := containsString(f, []byte(mmioParam+"\x00"))
	if err != nil {
		return false, fmt.Errorf("kernel %s: %w", vmlinux, err)
	}
	return found, nil
}

// containsString scans r for needle in chunks (a vmlinux is tens of MiB).
func containsString(r io.Reader, needle []byte) (bool, error) {
	buf := make([]byte, 1<<20+len(needle))
	keep := 0
	for {
		n, err := io.ReadFull(r, buf[keep:])
		if bytes.Contains(buf[:keep+n], needle) {
			return true, nil
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		keep = len(needle) - 1
		copy(buf, buf[len(buf)-keep:])
	}
}

// modinfo is a module's .modinfo strings ("key=value").
func modinfo(module []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(module))
	if err != nil {
		return nil, err
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	raw, err := sec.Data()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, kv := range bytes.Split(raw, []byte{0}) {
		if len(kv) > 0 {
			out = append(out, string(kv))
		}
	}
	return out, nil
}

// MMIOModuleFromInitrd returns the virtio_mmio module our initrd would load (listed in its
// modules.order), or nil when it loads none: then the driver is built in, or absent.
func MMIOModuleFromInitrd(initrdPath string) ([]byte, error) {
	order, err := initrd.ReadFile(initrdPath, vmconfig.ModulesOrderPath)
	if err != nil {
		return nil, nil // no modules at all
	}
	for _, line := range strings.Split(string(order), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && kernel.Name(path.Base(line)) == "virtio_mmio" {
			data, err := initrd.ReadFile(initrdPath, line)
			if err != nil {
				return nil, fmt.Errorf("initrd %s: %s listed in %s: %w", initrdPath, line, vmconfig.ModulesOrderPath, err)
			}
			return data, nil
		}
	}
	return nil, nil
}
