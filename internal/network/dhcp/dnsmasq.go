package dhcp

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/firegopher/firegopher/internal/network"
)

// The seed tool's alternative to the embedded responder: one dnsmasq per TAP, started as
// the systemd instance dnsmasq-tap@TAP:HOST_IP:GUEST_IP.service.

const (
	// UnitName is the systemd template unit InstallUnits writes.
	UnitName = "dnsmasq-tap@.service"
	// DnsmasqPath is where Debian's dnsmasq-base installs dnsmasq.
	DnsmasqPath = "/usr/sbin/dnsmasq"
	// LeaseDir holds one lease file per TAP; the unit creates it.
	LeaseDir = "/run/firegopher/dnsmasq"
)

// dnsmasqTemplate is the one definition of the dnsmasq command line, shared by
// DnsmasqArgs and the unit's ExecStart. Placeholders: {tap} {host} {guest} {dns} {leases}.
var dnsmasqTemplate = []string{
	"--keep-in-foreground",
	"--conf-file=/dev/null", // ignore /etc/dnsmasq.conf, whoever installed it
	"--bind-interfaces",     // with one --interface, dnsmasq also binds its DHCP socket to it
	"--interface={tap}",
	"--except-interface=lo",
	"--port=0", // DHCP only: no DNS server
	"--no-resolv",
	"--no-hosts",
	"--dhcp-authoritative", // the only server on the link: answer a renewing guest after a restart
	"--no-ping",            // the /30 has one guest address: probing it first only costs 3 s
	"--dhcp-range={guest},{guest},255.255.255.252,1h",
	"--dhcp-option=option:router,{host}",
	"--dhcp-option=option:dns-server,{dns}",
	"--dhcp-leasefile={leases}",
	"--pid-file=",      // none: many instances run side by side
	"--log-facility=-", // stderr, into the journal
}

// DnsmasqInstance is the unit instance name for a TAP: "TAP:HOST_IP:GUEST_IP".
func DnsmasqInstance(tap string, host, guest netip.Addr) string {
	return tap + ":" + host.String() + ":" + guest.String()
}

// DnsmasqUnit is the full unit name for a TAP, for systemctl start/stop.
func DnsmasqUnit(tap string, host, guest netip.Addr) string {
	return strings.Replace(UnitName, "@", "@"+DnsmasqInstance(tap, host, guest), 1)
}

// ParseDnsmasqInstance splits and checks a unit instance name "TAP:HOST_IP:GUEST_IP": host
// and guest must be the two usable addresses of one /30.
func ParseDnsmasqInstance(s string) (tap string, host, guest netip.Addr, err error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return "", host, guest, fmt.Errorf("dnsmasq instance %q: want TAP:HOST_IP:GUEST_IP", s)
	}
	tap = parts[0]
	if err := network.ValidateIfName(tap); err != nil {
		return "", host, guest, fmt.Errorf("dnsmasq instance %q: tap: %w", s, err)
	}
	if host, err = netip.ParseAddr(parts[1]); err != nil || !host.Is4() {
		return "", netip.Addr{}, guest, fmt.Errorf("dnsmasq instance %q: host IP %q: not an IPv4 address", s, parts[1])
	}
	if guest, err = netip.ParseAddr(parts[2]); err != nil || !guest.Is4() {
		return "", host, netip.Addr{}, fmt.Errorf("dnsmasq instance %q: guest IP %q: not an IPv4 address", s, parts[2])
	}
	if _, err := (Lease{Guest: guest, Host: host, Bits: network.SlotBits}).withDefaults(); err != nil {
		return "", host, guest, fmt.Errorf("dnsmasq instance %q: %w", s, err)
	}
	return tap, host, guest, nil
}

// LeaseFile is where the dnsmasq of tap keeps its lease.
func LeaseFile(tap string) string { return filepath.Join(LeaseDir, tap+".leases") }

// DnsmasqArgs is the dnsmasq command line (without the program) serving exactly guest/30
// on tap, with host as router and dns (nil or empty: DefaultDNS) as DNS servers. The lease
// file lives in LeaseDir, which must exist.
func DnsmasqArgs(tap string, host, guest netip.Addr, dns []netip.Addr) []string {
	return dnsmasqArgs(tap, host, guest, dns, LeaseFile(tap))
}

func dnsmasqArgs(tap string, host, guest netip.Addr, dns []netip.Addr, leases string) []string {
	if len(dns) == 0 {
		dns = DefaultDNS
	}
	r := strings.NewReplacer("{tap}", tap, "{host}", host.String(), "{guest}", guest.String(),
		"{dns}", joinAddrs(dns), "{leases}", leases)
	out := make([]string, len(dnsmasqTemplate))
	for i, a := range dnsmasqTemplate {
		out[i] = r.Replace(a)
	}
	return out
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

// UnitText is the systemd template unit dnsmasq-tap@.service. Its instance name is
// "TAP:HOST_IP:GUEST_IP"; DNS servers come from FIREGOPHER_DNS (comma-separated, default
// 1.1.1.1), which /etc/firegopher/dnsmasq-tap.env may set.
func UnitText() string { return unitText(DnsmasqPath, LeaseDir) }

func unitText(dnsmasq, leaseDir string) string {
	// The shell script splits the instance and runs dnsmasq with the template's arguments;
	// bash rather than a firegopher subcommand so the unit works with no firegopher binary
	// at a fixed path.
	r := strings.NewReplacer("{tap}", "$tap", "{host}", "$host", "{guest}", "$guest",
		"{dns}", "${FIREGOPHER_DNS:-"+joinAddrs(DefaultDNS)+"}", "{leases}", leaseDir+"/$tap.leases")
	args := make([]string, len(dnsmasqTemplate))
	for i, a := range dnsmasqTemplate {
		args[i] = `"` + r.Replace(a) + `"`
	}
	script := `IFS=: read -r tap host guest rest <<<"$1"; ` +
		`if [ -z "$guest" ] || [ -n "$rest" ]; then echo "dnsmasq-tap: instance $1: want TAP:HOST_IP:GUEST_IP" >&2; exit 2; fi; ` +
		`mkdir -p ` + leaseDir + ` && exec ` + dnsmasq + ` ` + strings.Join(args, " ")
	// systemd expands $ and % itself: double them so bash sees them.
	script = strings.NewReplacer("$", "$$", "%", "%%").Replace(script)
	return `# firegopher: one dnsmasq per VM TAP, DHCP only (the seed tool's dnsmasq mode).
# Instance: TAP:HOST_IP:GUEST_IP, e.g. dnsmasq-tap@tap3b4c7392c2e9:172.16.225.169:172.16.225.170
# Stop the instance before deleting its TAP.
[Unit]
Description=firegopher DHCP (dnsmasq) for VM TAP %i
After=network.target

[Service]
Type=exec
Environment=FIREGOPHER_DNS=` + joinAddrs(DefaultDNS) + `
EnvironmentFile=-/etc/firegopher/dnsmasq-tap.env
ExecStart=/bin/bash -c '` + script + `' dnsmasq-tap %i
Restart=on-failure
RestartSec=1

[Install]
WantedBy=multi-user.target
`
}

// InstallUnits writes dnsmasq-tap@.service into dir (e.g. /etc/systemd/system), atomically
// and only if it changed. The caller runs `systemctl daemon-reload` afterwards.
func InstallUnits(dir string) error {
	path := filepath.Join(dir, UnitName)
	text := []byte(UnitText())
	if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, text) {
		return nil
	}
	tmp, err := os.CreateTemp(dir, "."+UnitName+".tmp*")
	if err != nil {
		return fmt.Errorf("install %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	if _, err := tmp.Write(text); err != nil {
		tmp.Close()
		return fmt.Errorf("install %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("install %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("install %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("install %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("install %s: %w", path, err)
	}
	return nil
}

// UninstallUnits removes what InstallUnits wrote; a missing file is not an error. The caller
// stops the instances first and runs `systemctl daemon-reload` afterwards.
func UninstallUnits(dir string) error {
	path := filepath.Join(dir, UnitName)
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("uninstall %s: %w", path, err)
	}
	return nil
}
