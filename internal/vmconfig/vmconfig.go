// Package vmconfig is the versioned configuration the host hands to firegopher-init inside
// the guest's initrd. It is the contract between the two sides: the host writes it, the
// guest refuses anything it does not understand rather than guessing.
package vmconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path"
	"strings"
)

// Version is the only config version this build reads and writes.
const Version = 1

// Path is where the config sits in the guest's initramfs.
const Path = "/etc/firegopher/config.json"

// ModulesOrderPath lists the kernel modules to load, dependencies first, one initrd path a line.
const ModulesOrderPath = "/etc/firegopher/modules.order"

// The control channel's transport is chosen on the kernel command line, not in the config,
// so that init can report a bad config over the channel. ControlParam=ControlVirtioSerial:NAME
// opens the virtio-serial port named NAME; ControlParam=ControlVsock:PORT connects (from the
// guest) to the host, CID 2, on vsock port PORT. Without the parameter init opens the
// virtio-serial port ControlPortName.
const (
	ControlParam        = "firegopher.control"
	ControlVirtioSerial = "virtio-serial"
	ControlVsock        = "vsock"
	// ControlPortName is the default virtio-serial port name of the control channel.
	ControlPortName = "org.firegopher.ctl"
	// DefaultVsockPort is the vsock port a host listens on for the guest's control connection.
	DefaultVsockPort = 1024
)

// VsockControlArg is the kernel command-line argument that makes init connect to the host
// over vsock port port.
func VsockControlArg(port uint32) string {
	return fmt.Sprintf("%s=%s:%d", ControlParam, ControlVsock, port)
}

// VirtioSerialControlArg is the kernel command-line argument that makes init open the
// virtio-serial port named name.
func VirtioSerialControlArg(name string) string {
	return fmt.Sprintf("%s=%s:%s", ControlParam, ControlVirtioSerial, name)
}

// Mode says what init does once the root filesystem is up.
type Mode string

const (
	// ModeApp runs one workload under our PID 1 and ends the VM (by reboot) when it ends.
	ModeApp Mode = "app"
	// ModeSystem hands PID 1 over to the image's own init (systemd).
	ModeSystem Mode = "system"
)

// Config is everything firegopher-init needs to know about its VM.
type Config struct {
	Version  int    `json:"version"`
	Mode     Mode   `json:"mode"`
	Hostname string `json:"hostname"`
	// Root names the root disk by its virtio serial where the VMM sets one (QEMU), by its
	// position among the virtio disks where it cannot (Firecracker).
	Root Disk `json:"root"`
	// DiscardRoot says the root disk is a per-VM clone the host deletes when the VM ends:
	// init then does not flush it or remount it read-only before the reboot (the volumes
	// are still unmounted cleanly).
	DiscardRoot bool     `json:"discard_root,omitempty"`
	Cmd         []string `json:"cmd,omitempty"`
	Env         []string `json:"env,omitempty"`
	WorkDir     string   `json:"workdir,omitempty"`
	// User is NAME|UID[:GROUP|GID], resolved from the image's /etc/passwd and /etc/group.
	User    string   `json:"user,omitempty"`
	Rlimits []Rlimit `json:"rlimits,omitempty"`
	// Files are written into the root filesystem by init, inside the guest: the host never
	// mounts a guest disk.
	Files []File `json:"files,omitempty"`
	// Mounts are volumes: disks besides the root, mounted by init in the real root.
	Mounts  []Mount  `json:"mounts,omitempty"`
	Network *Network `json:"network,omitempty"`
	// Stdin gives the workload a stdin fed by the host (else /dev/null); TTY gives it a
	// pseudo-terminal of that size, resized by the host's KindResize frames.
	Stdin bool      `json:"stdin,omitempty"`
	TTY   *Terminal `json:"tty,omitempty"`
	// MachineID is written to the root's /etc/machine-id (32 lowercase hex digits) in app
	// mode: VMs cloned from one image, or restored from one template, must not share it.
	MachineID string `json:"machine_id,omitempty"`
	// Fresh is what a guest restored from a snapshot template must not share with its
	// siblings; it travels over the control channel only, never in an initrd.
	Fresh *Fresh `json:"fresh,omitempty"`
}

// Fresh makes a restored guest a new machine before it does anything else.
type Fresh struct {
	// Entropy is host randomness credited to the kernel's RNG, which is then reseeded.
	Entropy []byte `json:"entropy"`
	// UnixNano is the host's wall clock when it sent the config.
	UnixNano int64 `json:"unix_nano"`
}

// MinEntropy is the least randomness a Fresh carries: a full reseed of the kernel's CRNG.
const MinEntropy = 32

// Terminal is a terminal's size in characters.
type Terminal struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// Mount is a disk init mounts at Target (created if missing) once the root is in place,
// read-only when ReadOnly.
type Mount struct {
	Disk     Disk   `json:"disk"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// Rlimit is a resource limit of the workload ("nofile", "nproc", "core", "memlock", "stack").
type Rlimit struct {
	Resource string `json:"resource"`
	Soft     uint64 `json:"soft"`
	Hard     uint64 `json:"hard"`
}

// RlimitResources are the limits init knows how to set.
var RlimitResources = map[string]int{"nofile": 7, "nproc": 6, "core": 4, "memlock": 8, "stack": 3}

// File is one file or directory to create in the guest's root filesystem.
type File struct {
	Path string `json:"path"`
	Mode uint32 `json:"mode"`
	UID  int    `json:"uid"`
	GID  int    `json:"gid"`
	Dir  bool   `json:"dir,omitempty"`
	Data []byte `json:"data,omitempty"`
}

// Network is the static configuration of the guest's one interface (app VMs; system
// VMs use DHCP from the host).
type Network struct {
	MAC string `json:"mac"`
	// DHCP makes init ask the host's DHCP server for the address, router and DNS instead
	// of using Address/Gateway/DNS.
	DHCP    bool     `json:"dhcp,omitempty"`
	Address string   `json:"address,omitempty"` // CIDR, e.g. 172.16.0.2/30
	Gateway string   `json:"gateway,omitempty"`
	MTU     int      `json:"mtu,omitempty"`
	DNS     []string `json:"dns,omitempty"`
}

// Disk identifies a virtio block device and how to mount it.
type Disk struct {
	// Serial is the disk's virtio serial (at most 20 bytes); when set, Index is ignored.
	Serial string `json:"serial,omitempty"`
	// Index is the disk's 0-based position among the guest's virtio block disks, in the
	// order the VMM attaches them (vda, vdb, ...); used when Serial is empty.
	Index  int    `json:"index"`
	FSType string `json:"fstype"`
}

// MaxSerial is the longest virtio-blk serial (VIRTIO_BLK_ID_BYTES).
const MaxSerial = 20

// Validate reports the first field that is wrong, by its JSON name.
func (c *Config) Validate() error {
	if c.Version != Version {
		return fmt.Errorf("config: version %d not supported (this init reads version %d)", c.Version, Version)
	}
	switch c.Mode {
	case ModeApp:
		if len(c.Cmd) == 0 || c.Cmd[0] == "" {
			return errors.New("config: cmd: empty in app mode")
		}
	case ModeSystem:
	default:
		return fmt.Errorf("config: mode: %q is neither %q nor %q", c.Mode, ModeApp, ModeSystem)
	}
	if len(c.Root.Serial) > MaxSerial {
		return fmt.Errorf("config: root.serial: %q is longer than %d bytes", c.Root.Serial, MaxSerial)
	}
	if c.Root.Serial == "" && c.Root.Index < 0 {
		return fmt.Errorf("config: root.index: %d is negative", c.Root.Index)
	}
	if c.Root.FSType == "" {
		return errors.New("config: root.fstype: empty")
	}
	if err := c.validateMounts(); err != nil {
		return err
	}
	if c.MachineID != "" && !isMachineID(c.MachineID) {
		return fmt.Errorf("config: machine_id: %q is not 32 lowercase hex digits", c.MachineID)
	}
	if f := c.Fresh; f != nil {
		if len(f.Entropy) < MinEntropy {
			return fmt.Errorf("config: fresh.entropy: %d bytes, want at least %d", len(f.Entropy), MinEntropy)
		}
		if f.UnixNano <= 0 {
			return fmt.Errorf("config: fresh.unix_nano: %d is not a time", f.UnixNano)
		}
	}
	for _, kv := range c.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("config: env: %q is not KEY=VALUE", kv)
		}
	}
	if c.WorkDir != "" && !strings.HasPrefix(c.WorkDir, "/") {
		return fmt.Errorf("config: workdir: %q is not absolute", c.WorkDir)
	}
	for _, r := range c.Rlimits {
		if _, ok := RlimitResources[r.Resource]; !ok {
			return fmt.Errorf("config: rlimits: unknown resource %q", r.Resource)
		}
		if r.Soft > r.Hard {
			return fmt.Errorf("config: rlimits: %s soft %d above hard %d", r.Resource, r.Soft, r.Hard)
		}
	}
	for _, f := range c.Files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return fmt.Errorf("config: files: path %q must be absolute and clean", f.Path)
		}
		if f.Mode > 0o7777 || f.UID < 0 || f.GID < 0 {
			return fmt.Errorf("config: files: %s: bad mode or owner", f.Path)
		}
	}
	if n := c.Network; n != nil {
		if _, err := net.ParseMAC(n.MAC); err != nil {
			return fmt.Errorf("config: network.mac: %q: %v", n.MAC, err)
		}
		if _, err := netip.ParsePrefix(n.Address); err != nil && !(n.DHCP && n.Address == "") {
			return fmt.Errorf("config: network.address: %q: %v", n.Address, err)
		}
		if n.Gateway != "" {
			if _, err := netip.ParseAddr(n.Gateway); err != nil {
				return fmt.Errorf("config: network.gateway: %q: %v", n.Gateway, err)
			}
		}
		if n.MTU != 0 && (n.MTU < 576 || n.MTU > 65535) {
			return fmt.Errorf("config: network.mtu: %d, want 576 to 65535", n.MTU)
		}
		for _, d := range n.DNS {
			if _, err := netip.ParseAddr(d); err != nil {
				return fmt.Errorf("config: network.dns: %q: %v", d, err)
			}
		}
	}
	return nil
}

func (c *Config) validateMounts() error {
	disks := map[Disk]bool{c.Root.key(): true}
	targets := map[string]bool{}
	for _, m := range c.Mounts {
		d := m.Disk
		switch {
		case len(d.Serial) > MaxSerial:
			return fmt.Errorf("config: mounts: %s: serial %q is longer than %d bytes", m.Target, d.Serial, MaxSerial)
		case d.Serial == "" && d.Index < 0:
			return fmt.Errorf("config: mounts: %s: index %d is negative", m.Target, d.Index)
		case d.FSType == "":
			return fmt.Errorf("config: mounts: %s: fstype: empty", m.Target)
		case !path.IsAbs(m.Target) || path.Clean(m.Target) != m.Target || m.Target == "/":
			return fmt.Errorf("config: mounts: target %q must be absolute, clean and not /", m.Target)
		case targets[m.Target]:
			return fmt.Errorf("config: mounts: two mounts on %s", m.Target)
		case disks[d.key()]:
			return fmt.Errorf("config: mounts: %s: its disk (serial %q, index %d) is the root's or another mount's", m.Target, d.Serial, d.Index)
		}
		targets[m.Target], disks[d.key()] = true, true
	}
	return nil
}

func isMachineID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return false
		}
	}
	return true
}

// key identifies the device a Disk names: its serial, else its index.
func (d Disk) key() Disk {
	if d.Serial != "" {
		return Disk{Serial: d.Serial}
	}
	return Disk{Index: d.Index}
}

// Parse decodes and validates a config; unknown fields are errors so that a newer host
// talking to an older init fails loudly instead of silently dropping settings.
func Parse(data []byte) (*Config, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if dec.More() {
		return nil, errors.New("config: trailing data after the JSON object")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Load reads and parses the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data)
}

// Marshal validates and encodes a config.
func (c *Config) Marshal() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return json.MarshalIndent(c, "", "  ")
}
