// Package firewall prepares a host for VM networking: IPv4 forwarding on, rp_filter off,
// and every nftables rule firegopher needs in one table of its own, `table inet firegopher`,
// so the whole setup can be listed (`nft list table inet firegopher`) and removed (Reset)
// without touching anyone else's rules.
//
// The rules key on two sets that AddTAP/RemoveTAP maintain: `taps` (our TAP devices) and
// `guests` (TAP . the only source address allowed from it). Matching our own TAPs by set
// rather than by a "tap*" pattern leaves other tools' tap devices alone.
//
// Everything acts on the network namespace of the calling OS thread.
package firewall

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"

	"github.com/google/nftables"

	"github.com/firegopher/firegopher/internal/network"
)

// TableName is our table, in the inet family.
const TableName = "firegopher"

// Set names.
const (
	SetTAPs   = "taps"   // type ifname: TAPs that carry VMs
	SetGuests = "guests" // type ifname . ipv4_addr: the source each TAP may send from
)

var table = &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}

// HostConfig is what Prepare sets up.
type HostConfig struct {
	// Pool is the VMs' address pool (zero: network.DefaultPool): masqueraded on the way out.
	Pool netip.Prefix
	// AllowVMToVM lets VMs reach each other; by default traffic between TAPs is dropped.
	AllowVMToVM bool
}

func (c HostConfig) withDefaults() (HostConfig, error) {
	if !c.Pool.IsValid() {
		c.Pool = network.DefaultPool
	}
	if err := network.ValidatePool(c.Pool); err != nil {
		return c, fmt.Errorf("firewall: %w", err)
	}
	return c, nil
}

// sysctl is one kernel setting Prepare makes. net.ipv4.* is per network namespace.
type sysctl struct{ name, want string }

var sysctls = []sysctl{
	{"net.ipv4.ip_forward", "1"},
	// Off so that replies on asymmetric paths (e.g. a VM's traffic leaving via another
	// interface) are not dropped; the per-TAP anti-spoofing rule does the real checking.
	{"net.ipv4.conf.all.rp_filter", "0"},
	{"net.ipv4.conf.default.rp_filter", "0"},
}

func sysctlPath(name string) string { return "/proc/sys/" + strings.ReplaceAll(name, ".", "/") }

func writeSysctl(name, value string) error {
	if err := os.WriteFile(sysctlPath(name), []byte(value), 0o644); err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", name, value, err)
	}
	return nil
}

func readSysctl(name string) (string, error) {
	b, err := os.ReadFile(sysctlPath(name))
	if err != nil {
		return "", fmt.Errorf("sysctl %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Prepare makes the current namespace ready for VMs: sysctls, then our table with its
// sets, chains and rules. It is idempotent: with everything already in place it changes
// nothing; otherwise it rebuilds the chains' rules in one atomic nftables transaction that
// keeps the TAPs already registered with AddTAP. It logs the host changes it makes: sysctls
// at Info, the table at Debug (log: nil discards).
func Prepare(log *slog.Logger, cfg HostConfig) error {
	log = orDiscard(log)
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	for _, s := range sysctls {
		cur, err := readSysctl(s.name)
		if err != nil {
			return fmt.Errorf("firewall: %w", err)
		}
		if cur == s.want {
			continue
		}
		if err := os.WriteFile(sysctlPath(s.name), []byte(s.want), 0o644); err != nil {
			return fmt.Errorf("firewall: set sysctl %s=%s: %w", s.name, s.want, err)
		}
		log.Info("firewall: sysctl set", "name", s.name, "from", cur, "to", s.want)
	}

	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("firewall: nftables: %w", err)
	}
	st, err := readState(c)
	if err != nil {
		return err
	}
	if len(st.missing(cfg)) == 0 {
		return nil
	}

	want := build(cfg)
	c.AddTable(table)
	if st.table {
		// Empty every chain of ours first: rules hold references to sets and chains, and
		// leaving none lets mismatched ones (from another firegopher version) be replaced.
		for name, ch := range st.chains {
			c.FlushChain(ch)
			if spec, ok := want.chain(name); !ok || !sameChain(ch, spec) {
				c.DelChain(ch)
			}
		}
		for name, s := range st.sets {
			if spec, ok := want.set(name); !ok || !sameSet(s, spec) {
				c.DelSet(s)
			}
		}
	}
	for _, s := range want.sets {
		// Without NLM_F_EXCL an existing set is kept as it is, elements included.
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("firewall: set %s: %w", s.Name, err)
		}
	}
	for _, ch := range want.chains {
		c.AddChain(ch.chain)
		for _, r := range ch.rules {
			c.AddRule(r.rule(ch.chain))
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall: install table inet %s: %w", TableName, err)
	}
	log.Debug("firewall: table installed", "table", "inet "+TableName, "pool", cfg.Pool, "allow_vm_to_vm", cfg.AllowVMToVM)
	return nil
}

// Reset deletes our table, with everything in it, and nothing else. Sysctls stay as they
// are: other software on the host may rely on forwarding too. log: nil discards.
func Reset(log *slog.Logger) error {
	log = orDiscard(log)
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("firewall: nftables: %w", err)
	}
	ok, err := tableExists(c)
	if err != nil || !ok {
		return err
	}
	c.DelTable(table)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall: delete table inet %s: %w", TableName, err)
	}
	log.Info("firewall: table deleted", "table", "inet "+TableName)
	return nil
}

// Check lists what Prepare(cfg) would still have to do, in words; empty when the host is
// ready.
func Check(cfg HostConfig) ([]string, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, s := range sysctls {
		cur, err := readSysctl(s.name)
		if err != nil {
			return nil, fmt.Errorf("firewall: %w", err)
		}
		if cur != s.want {
			missing = append(missing, fmt.Sprintf("sysctl %s is %s, want %s", s.name, cur, s.want))
		}
	}
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("firewall: nftables: %w", err)
	}
	st, err := readState(c)
	if err != nil {
		return nil, err
	}
	return append(missing, st.missing(cfg)...), nil
}

// AddTAP registers tap as a VM's TAP whose only allowed source address is guest. Call it
// after Prepare and before the VM starts; until then everything the TAP sends is dropped.
// Registering a TAP again replaces its guest address. log: nil discards.
func AddTAP(log *slog.Logger, tap string, guest netip.Addr) error {
	log = orDiscard(log)
	if !guest.Is4() {
		return fmt.Errorf("firewall: tap %s: guest address %q: not IPv4", tap, guest.String())
	}
	c, taps, guests, err := connect(tap)
	if err != nil {
		return err
	}
	if taps == nil || guests == nil {
		return fmt.Errorf("firewall: tap %s: table inet %s is not prepared (run Prepare first)", tap, TableName)
	}
	stale, err := guestElems(c, guests, tap)
	if err != nil {
		return err
	}
	var drop []nftables.SetElement
	for _, e := range stale {
		if string(e.Key) != string(guestKey(tap, guest)) {
			drop = append(drop, e)
		}
	}
	if len(drop) > 0 {
		if err := c.SetDeleteElements(guests, drop); err != nil {
			return fmt.Errorf("firewall: tap %s: %w", tap, err)
		}
	}
	if err := c.SetAddElements(taps, []nftables.SetElement{{Key: ifname(tap)}}); err != nil {
		return fmt.Errorf("firewall: tap %s: %w", tap, err)
	}
	if err := c.SetAddElements(guests, []nftables.SetElement{{Key: guestKey(tap, guest)}}); err != nil {
		return fmt.Errorf("firewall: tap %s: %w", tap, err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall: register tap %s guest %s: %w", tap, guest, err)
	}
	log.Debug("firewall: tap registered", "tap", tap, "guest", guest)
	return nil
}

// RemoveTAP forgets tap. A TAP that is not registered, or a host that is not prepared, is
// not an error: cleanup may run twice. log: nil discards.
func RemoveTAP(log *slog.Logger, tap string) error {
	log = orDiscard(log)
	c, taps, guests, err := connect(tap)
	if err != nil {
		return err
	}
	n := 0
	if guests != nil {
		elems, err := guestElems(c, guests, tap)
		if err != nil {
			return err
		}
		if len(elems) > 0 {
			if err := c.SetDeleteElements(guests, elems); err != nil {
				return fmt.Errorf("firewall: tap %s: %w", tap, err)
			}
			n += len(elems)
		}
	}
	if taps != nil {
		elems, err := c.GetSetElements(taps)
		if err != nil {
			return fmt.Errorf("firewall: list set %s: %w", SetTAPs, err)
		}
		for _, e := range elems {
			if string(e.Key) == string(ifname(tap)) {
				if err := c.SetDeleteElements(taps, []nftables.SetElement{e}); err != nil {
					return fmt.Errorf("firewall: tap %s: %w", tap, err)
				}
				n++
			}
		}
	}
	if n == 0 {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall: unregister tap %s: %w", tap, err)
	}
	log.Debug("firewall: tap unregistered", "tap", tap)
	return nil
}

// TAPs lists the registered TAPs and their guest addresses (for gc and inspection).
func TAPs() (map[string]netip.Addr, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("firewall: nftables: %w", err)
	}
	_, guests, err := ourSets(c)
	if err != nil || guests == nil {
		return nil, err
	}
	elems, err := c.GetSetElements(guests)
	if err != nil {
		return nil, fmt.Errorf("firewall: list set %s: %w", SetGuests, err)
	}
	out := map[string]netip.Addr{}
	for _, e := range elems {
		if len(e.Key) != 20 {
			continue
		}
		out[strings.TrimRight(string(e.Key[:16]), "\x00")] = netip.AddrFrom4([4]byte(e.Key[16:20]))
	}
	return out, nil
}

func tableExists(c *nftables.Conn) (bool, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("firewall: list tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == TableName {
			return true, nil
		}
	}
	return false, nil
}

// connect checks the TAP name and returns a connection and our two sets, nil where absent.
func connect(tap string) (c *nftables.Conn, taps, guests *nftables.Set, err error) {
	if err := network.ValidateIfName(tap); err != nil {
		return nil, nil, nil, fmt.Errorf("firewall: %w", err)
	}
	if c, err = nftables.New(); err != nil {
		return nil, nil, nil, fmt.Errorf("firewall: nftables: %w", err)
	}
	taps, guests, err = ourSets(c)
	return c, taps, guests, err
}

// ourSets returns our two sets, nil where absent (or the table is).
func ourSets(c *nftables.Conn) (taps, guests *nftables.Set, err error) {
	ok, err := tableExists(c)
	if err != nil || !ok {
		return nil, nil, err
	}
	sets, err := c.GetSets(table)
	if err != nil {
		return nil, nil, fmt.Errorf("firewall: list sets: %w", err)
	}
	for _, s := range sets {
		switch s.Name {
		case SetTAPs:
			taps = s
		case SetGuests:
			guests = s
		}
	}
	return taps, guests, nil
}

func guestElems(c *nftables.Conn, guests *nftables.Set, tap string) ([]nftables.SetElement, error) {
	elems, err := c.GetSetElements(guests)
	if err != nil {
		return nil, fmt.Errorf("firewall: list set %s: %w", SetGuests, err)
	}
	var out []nftables.SetElement
	for _, e := range elems {
		if len(e.Key) == 20 && string(e.Key[:16]) == string(ifname(tap)) {
			out = append(out, nftables.SetElement{Key: e.Key})
		}
	}
	return out, nil
}

// ifname is an interface name as nftables stores it: IFNAMSIZ bytes, NUL padded.
func ifname(n string) []byte {
	b := make([]byte, 16)
	copy(b, n)
	return b
}

func guestKey(tap string, guest netip.Addr) []byte {
	a := guest.As4()
	return append(ifname(tap), a[:]...)
}

func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}
