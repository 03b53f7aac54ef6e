package spec

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Machine is the one description of a VM. It is built and validated at the edge (flags,
// a vars file, a containerd bundle), stored in the VM's record, and every later stage —
// the supervisor, the guest config, the VMM spec — takes it or is derived from it. Its
// fields are typed; errors name the field as the user spelled it at the edge.
type Machine struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	// Run is the run (`firegopher up`) the machine belongs to; names are unique per run.
	Run string `json:"run,omitempty"`
	// Group is the machine's inventory group in its run ("machines", "builders").
	Group string `json:"group,omitempty"`
	Mode  Mode   `json:"mode"`
	// CPUs and Memory size the VM.
	CPUs   int  `json:"cpus"`
	Memory Size `json:"memory"`
	// Kernel and Image are what the user asked for; Assets is what they resolved to.
	Kernel  AssetRef `json:"kernel"`
	Image   AssetRef `json:"image"`
	Assets  *Assets  `json:"assets,omitempty"`
	Process Process  `json:"process"`
	Files   []File   `json:"files,omitempty"`
	// Volumes are disks attached after the root disk, mounted by init in the guest.
	Volumes []Volume `json:"volumes,omitempty"`
	Network *Network `json:"network,omitempty"`
	// AttachedNIC is an interface made for the VM by its caller (the containerd shim: a TAP
	// in a pod's network namespace); the guest configures it statically. Not with Network.
	AttachedNIC *AttachedNIC `json:"attached_nic,omitempty"`
	VMM         VMM          `json:"vmm"`
	// KernelArgs are added to a foreign guest's kernel command line.
	KernelArgs string `json:"kernel_args,omitempty"`
	// Ports are published on the host (the kernel forwards them; needs a network).
	Ports []Port `json:"ports,omitempty"`
	// Service is the proxy service the VM serves, on HTTPPort (the proxy routes
	// NAME.DOMAIN and SERVICE.DOMAIN to it).
	Service  string `json:"service,omitempty"`
	HTTPPort uint16 `json:"http_port,omitempty"`
	// AutoStart lets the proxy start the VM again, once it has exited, when a request
	// comes for its name or service and nothing else serves it (Fly's autostart).
	AutoStart bool `json:"autostart,omitempty"`
	// AutoStop, if set, is how long the VM may go without a proxied request before the
	// proxy stops it (Fly's autostop).
	AutoStop time.Duration `json:"autostop,omitempty"`
}

// Mode says what runs in the VM once it is up.
type Mode string

const (
	// ModeApp runs Process under our init and ends the VM when it exits.
	ModeApp Mode = "app"
	// ModeSystem hands PID 1 to the image's own init (systemd) after our setup.
	ModeSystem Mode = "system"
	// ModeForeign boots through the kernel image's own initrd and the image's own init,
	// with no firegopher code in the guest (falcosecurity/kernel-testing's machines): Files
	// are written into the never-booted disk clone, and the guest is reached over the
	// network only.
	ModeForeign Mode = "foreign"
)

// Assets are a machine's resolved inputs: cache digests and files on the host.
type Assets struct {
	Kernel string `json:"kernel"` // the kernel manifest's digest in the cache
	Rootfs string `json:"rootfs"` // the ext4 image each VM gets a clone of (never written)
	Init   string `json:"init"`   // the firegopher-init binary
}

// VMM picks the backend.
type VMM struct {
	Backend string `json:"backend,omitempty"` // "" = the default backend
	Accel   string `json:"accel,omitempty"`   // QEMU: kvm, tcg, "" = probe
	// Snapshot restores the VM from a snapshot template (built on first use) where the
	// backend and the machine allow it (QEMU q35, app mode); otherwise it cold-boots.
	Snapshot bool `json:"snapshot,omitempty"`
}

// AttachedNIC is a TAP someone else made and wired (a Kubernetes pod's interface, reached
// through tc redirects), and the static configuration the guest gives its NIC on it.
type AttachedNIC struct {
	TAP     string       `json:"tap"`
	MAC     string       `json:"mac"`
	Address netip.Prefix `json:"address"`
	Gateway netip.Addr   `json:"gateway,omitzero"`
	MTU     int          `json:"mtu,omitempty"`
	DNS     []netip.Addr `json:"dns,omitempty"`
	// NetNS is the network namespace TAP is in, bound at a path (the pod's, as the OCI
	// spec names it): a VMM that runs in a namespace of its own (jailed Firecracker) joins
	// this one to open TAP. "" is the supervisor's own namespace.
	NetNS string `json:"netns,omitempty"`
}

// Validate checks an attached NIC.
func (n *AttachedNIC) Validate() error {
	if n.TAP == "" || len(n.TAP) > 15 || strings.ContainsAny(n.TAP, "/ \t\n:") {
		return fmt.Errorf("attached_nic.tap: %q is not an interface name", n.TAP)
	}
	if _, err := net.ParseMAC(n.MAC); err != nil {
		return fmt.Errorf("attached_nic.mac: %q: %v", n.MAC, err)
	}
	if !n.Address.IsValid() || !n.Address.Addr().Is4() {
		return fmt.Errorf("attached_nic.address: %q is not an IPv4 prefix", n.Address.String())
	}
	if n.Gateway.IsValid() && !n.Gateway.Is4() {
		return fmt.Errorf("attached_nic.gateway: %s is not IPv4", n.Gateway)
	}
	if n.MTU != 0 && (n.MTU < 576 || n.MTU > 65535) {
		return fmt.Errorf("attached_nic.mtu: %d, want 576 to 65535", n.MTU)
	}
	if n.NetNS != "" && !filepath.IsAbs(n.NetNS) {
		return fmt.Errorf("attached_nic.netns: %q is not an absolute path", n.NetNS)
	}
	return nil
}

// DHCPMode is how a guest learns its address.
type DHCPMode string

const (
	DHCPEmbedded DHCPMode = "embedded" // our DHCP responder on the TAP (default)
	DHCPDnsmasq  DHCPMode = "dnsmasq"  // the seed's dnsmasq, with its dnsmasq-tap@ unit's arguments
	DHCPStatic   DHCPMode = "static"   // no DHCP: init configures the address from its config
)

// Network is a machine's share of the host network: a TAP and a /30 from Pool, the slot
// chosen from RunID and Slot (the seed tool's scheme).
type Network struct {
	Pool        netip.Prefix `json:"pool"`
	DHCP        DHCPMode     `json:"dhcp"`
	DNS         []netip.Addr `json:"dns,omitempty"`
	MTU         int          `json:"mtu,omitempty"`
	AllowVMToVM bool         `json:"allow_vm_to_vm,omitempty"`
	// RunID and Slot key the address: a run's id and the machine's name in it. For a lone
	// VM they are its id and hostname.
	RunID string `json:"run_id"`
	Slot  string `json:"slot"`
}

var runPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,63}$`)

// Hostname is the VM's hostname: its name, else its id.
func (m *Machine) Hostname() string {
	if m.Name != "" {
		return m.Name
	}
	return m.ID
}

// Field names of a machine as `firegopher run` spells them; other edges (a vars file, a
// bundle) map their errors onto their own names.
const (
	FieldCPUs    = "--cpus"
	FieldMemory  = "--memory"
	FieldName    = "--name"
	FieldCmd     = "command"
	FieldUser    = "--user"
	FieldEnv     = "--env"
	FieldWorkDir = "--workdir"
	FieldPool    = "--pool"
	FieldDHCP    = "--dhcp"
	FieldMTU     = "--mtu"
	FieldDNS     = "--dns"
)

// Validate checks the whole machine and reports the first problem, naming the field. The
// edge calls it once; a stored machine is validated again when a supervisor reads it, so
// a record edited by hand cannot start a broken VM.
func (m *Machine) Validate() error {
	if !idPattern.MatchString(m.ID) {
		return fmt.Errorf("id: %q, want 12 lowercase hex digits", m.ID)
	}
	if m.Name != "" && !namePattern.MatchString(m.Name) {
		return fmt.Errorf("%s: %q, want lowercase letters, digits, '.', '_', '-' (at most 63)", FieldName, m.Name)
	}
	if m.CPUs < 1 || m.CPUs > MaxCPUs {
		return fmt.Errorf("%s: %d, want 1 to %d", FieldCPUs, m.CPUs, MaxCPUs)
	}
	if m.Memory < MinMemory || m.Memory > MaxMemory {
		return fmt.Errorf("%s: %s, want %s to %s", FieldMemory, m.Memory, MinMemory, MaxMemory)
	}
	switch m.Mode {
	case ModeApp:
	case ModeSystem:
		if len(m.Process.Cmd) > 0 {
			return errors.New("--system: a system VM runs the image's own init, not a command")
		}
	case ModeForeign:
		if len(m.Process.Cmd) > 0 {
			return errors.New("command: a machine that boots through its own initrd runs its own init, not a command")
		}
		if m.Network == nil {
			return errors.New("network: a machine that boots through its own initrd is reached over the network: it needs one")
		}
	default:
		return fmt.Errorf("mode: %q, want %q, %q or %q", m.Mode, ModeApp, ModeSystem, ModeForeign)
	}
	if (len(m.Ports) > 0 || m.HTTPPort > 0) && m.Network == nil {
		return fmt.Errorf("%s: published ports need a network (--net)", FieldPublish)
	}
	if m.Service != "" && !namePattern.MatchString(m.Service) {
		return fmt.Errorf("--service: %q, want lowercase letters, digits, '.', '_', '-'", m.Service)
	}
	if m.Service != "" && m.HTTPPort == 0 {
		return fmt.Errorf("--service: %q needs --http-port, the port the proxy sends its requests to", m.Service)
	}
	if m.AutoStart && m.HTTPPort == 0 {
		return errors.New("--autostart: needs --http-port: the proxy starts the VM for requests to that port")
	}
	if m.AutoStop < 0 || (m.AutoStop > 0 && m.AutoStop < time.Second) {
		return fmt.Errorf("--autostop: %s, want at least 1s", m.AutoStop)
	}
	if m.AutoStop > 0 && m.HTTPPort == 0 {
		return errors.New("--autostop: needs --http-port: idle means no request through the proxy to that port")
	}
	if m.Run != "" && !runPattern.MatchString(m.Run) {
		return fmt.Errorf("run_id: %q, want letters, digits and '-' (at most 64)", m.Run)
	}
	if err := m.Process.Validate(); err != nil {
		return err
	}
	for _, f := range m.Files {
		if !filepath.IsAbs(f.Path) || filepath.Clean(f.Path) != f.Path || f.Path == "/" {
			return fmt.Errorf("--copy: guest path %q must be absolute and clean", f.Path)
		}
	}
	if err := validateVolumes(m.Volumes); err != nil {
		return err
	}
	if len(m.Volumes) > 0 && m.Mode == ModeForeign {
		return errors.New(FieldVolume + ": a machine that boots through its own initrd has no firegopher init to mount volumes")
	}
	if m.AttachedNIC != nil {
		if m.Network != nil {
			return errors.New("attached_nic: a machine has either a network of ours or an attached NIC, not both")
		}
		if m.Mode != ModeApp {
			return errors.New("attached_nic: only app VMs configure an attached NIC")
		}
		if err := m.AttachedNIC.Validate(); err != nil {
			return err
		}
	}
	if m.Network != nil {
		if err := m.Network.Validate(); err != nil {
			return err
		}
	}
	if a := m.Assets; a != nil {
		if a.Kernel == "" || a.Rootfs == "" || (a.Init == "" && m.Mode != ModeForeign) {
			return fmt.Errorf("assets: kernel %q, rootfs %q and init %q must all be set", a.Kernel, a.Rootfs, a.Init)
		}
	}
	return nil
}

// Validate checks a process; an empty command is allowed until image defaults are merged.
func (p *Process) Validate() error {
	if len(p.Cmd) > 0 && p.Cmd[0] == "" {
		return fmt.Errorf("%s: empty program name", FieldCmd)
	}
	if p.User != "" && !userPattern.MatchString(p.User) {
		return fmt.Errorf("%s: %q, want NAME|UID[:GROUP|GID]", FieldUser, p.User)
	}
	for _, kv := range p.Env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || !envKey.MatchString(k) {
			return fmt.Errorf("%s: %q, want KEY=VALUE with KEY of letters, digits and '_'", FieldEnv, kv)
		}
	}
	if p.WorkDir != "" && !strings.HasPrefix(p.WorkDir, "/") {
		return fmt.Errorf("%s: %q is not an absolute path", FieldWorkDir, p.WorkDir)
	}
	return nil
}

// Validate checks a network, its slot key included.
func (n *Network) Validate() error {
	if err := n.validateSettings(); err != nil {
		return err
	}
	if n.RunID == "" || n.Slot == "" {
		return fmt.Errorf("network: run id %q and slot %q must be set", n.RunID, n.Slot)
	}
	return nil
}

// validateSettings checks what the user chose (the flags), not the slot key.
func (n *Network) validateSettings() error {
	if err := ValidatePool(n.Pool); err != nil {
		return fmt.Errorf("%s: %w", FieldPool, err)
	}
	switch n.DHCP {
	case DHCPEmbedded, DHCPDnsmasq, DHCPStatic:
	default:
		return fmt.Errorf("%s: %q, want %s, %s or %s", FieldDHCP, n.DHCP, DHCPEmbedded, DHCPDnsmasq, DHCPStatic)
	}
	for _, d := range n.DNS {
		if !d.Is4() {
			return fmt.Errorf("%s: %s is not an IPv4 address", FieldDNS, d)
		}
	}
	if n.MTU != 0 && (n.MTU < 576 || n.MTU > 65535) {
		return fmt.Errorf("%s: %d, want 576 to 65535", FieldMTU, n.MTU)
	}
	return nil
}

// SlotBits is the size of one VM's subnet: a /30 (host .1, guest .2).
const SlotBits = 30

// ValidatePool checks an address pool: an IPv4 prefix, no host bits, room for a /30.
func ValidatePool(pool netip.Prefix) error {
	switch {
	case !pool.IsValid():
		return fmt.Errorf("pool %q: not a CIDR prefix", pool.String())
	case !pool.Addr().Is4():
		return fmt.Errorf("pool %s: not IPv4", pool)
	case pool.Bits() > SlotBits:
		return fmt.Errorf("pool %s: smaller than one /%d", pool, SlotBits)
	case pool.Masked() != pool:
		return fmt.Errorf("pool %s: host bits set (did you mean %s?)", pool, pool.Masked())
	}
	return nil
}

// NetFlags is the raw input of the network flags.
type NetFlags struct {
	Enabled     bool
	Pool        string
	DHCP        string
	DNS         []string
	MTU         int
	AllowVMToVM bool
}

// ParseNet validates the network flags; the slot key is filled in by the caller.
func ParseNet(f NetFlags) (*Network, error) {
	if !f.Enabled {
		return nil, nil
	}
	pool, err := netip.ParsePrefix(f.Pool)
	if err != nil {
		return nil, fmt.Errorf("%s: %q: %v", FieldPool, f.Pool, err)
	}
	n := &Network{Pool: pool, DHCP: DHCPMode(f.DHCP), MTU: f.MTU, AllowVMToVM: f.AllowVMToVM}
	for _, d := range f.DNS {
		a, err := netip.ParseAddr(d)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not an IPv4 address", FieldDNS, d)
		}
		n.DNS = append(n.DNS, a)
	}
	if err := n.validateSettings(); err != nil {
		return nil, err
	}
	return n, nil
}
