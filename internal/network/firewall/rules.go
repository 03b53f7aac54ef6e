package firewall

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The table we want, built from the config. Each rule carries a comment naming it (and
// the pool, where it matters): Check compares rules by comment, and `nft list` shows them.

type ruleSpec struct {
	comment string
	exprs   []expr.Any
}

func (r ruleSpec) rule(ch *nftables.Chain) *nftables.Rule {
	return &nftables.Rule{
		Table:    table,
		Chain:    ch,
		Exprs:    r.exprs,
		UserData: userdata.AppendString(nil, userdata.TypeComment, r.comment),
	}
}

type chainSpec struct {
	chain *nftables.Chain
	rules []ruleSpec
}

type desired struct {
	sets   []*nftables.Set
	chains []chainSpec
}

func (d desired) chain(name string) (*nftables.Chain, bool) {
	for _, c := range d.chains {
		if c.chain.Name == name {
			return c.chain, true
		}
	}
	return nil, false
}

func (d desired) set(name string) (*nftables.Set, bool) {
	for _, s := range d.sets {
		if s.Name == name {
			return s, true
		}
	}
	return nil, false
}

func build(cfg HostConfig) desired {
	accept := nftables.ChainPolicyAccept
	chain := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return &nftables.Chain{Name: name, Table: table, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept}
	}
	pool := cfg.Pool.String()

	vmToVM, vmToVMVerdict := "firegopher: VM to VM dropped", expr.VerdictDrop
	if cfg.AllowVMToVM {
		vmToVM, vmToVMVerdict = "firegopher: VM to VM allowed", expr.VerdictAccept
	}

	return desired{
		sets: []*nftables.Set{
			// Host byte order is how nft itself declares ifname; without it `nft list`
			// shows the names reversed, i.e. as "".
			{Table: table, Name: SetTAPs, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian},
			{Table: table, Name: SetGuests, KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr), Concatenation: true},
		},
		chains: []chainSpec{
			{
				// Priority raw: before conntrack, so spoofed packets never create state.
				chain: chain("prerouting", nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityRaw),
				rules: []ruleSpec{
					{"firegopher: no IPv6 from VMs", cat(
						iifIn(SetTAPs),
						nfproto(unix.NFPROTO_IPV6),
						verdict(expr.VerdictDrop))},
					{"firegopher: DHCP from VMs without an address", cat(
						iifIn(SetTAPs),
						nfproto(unix.NFPROTO_IPV4),
						l4proto(unix.IPPROTO_UDP),
						ipField(12, netip.IPv4Unspecified()),
						ipField(16, netip.AddrFrom4([4]byte{255, 255, 255, 255})),
						udpDport(67),
						verdict(expr.VerdictAccept))},
					{"firegopher: anti-spoofing, a TAP sends only from its guest address", cat(
						iifIn(SetTAPs),
						nfproto(unix.NFPROTO_IPV4),
						[]expr.Any{
							&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
							// Register 2 directly follows register 1's 16 bytes: the pair is
							// the concatenation ifname . ipv4_addr.
							&expr.Payload{DestRegister: 2, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
							&expr.Lookup{SourceRegister: 1, SetName: SetGuests, Invert: true},
						},
						verdict(expr.VerdictDrop))},
				},
			},
			{
				chain: chain("input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter),
				rules: []ruleSpec{
					{"firegopher: VMs may reach the host (DHCP, DNS)", cat(
						iifIn(SetTAPs),
						verdict(expr.VerdictAccept))},
				},
			},
			{
				chain: chain("forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter),
				rules: []ruleSpec{
					{vmToVM, cat(
						iifIn(SetTAPs),
						oifIn(SetTAPs, false),
						verdict(vmToVMVerdict))},
					{"firegopher: VMs of " + pool + " to the outside", cat(
						iifIn(SetTAPs),
						nfproto(unix.NFPROTO_IPV4),
						ipPrefix(12, cfg.Pool),
						verdict(expr.VerdictAccept))},
					{"firegopher: replies to VMs", cat(
						oifIn(SetTAPs, false),
						ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED),
						verdict(expr.VerdictAccept))},
					{"firegopher: published ports into VMs", cat(
						oifIn(SetTAPs, false),
						ctStatus(ipsDstNAT),
						verdict(expr.VerdictAccept))},
					{"firegopher: no new connections into VMs", cat(
						oifIn(SetTAPs, false),
						verdict(expr.VerdictDrop))},
				},
			},
			{
				// Published ports (Publish adds one rule per port and VM): to the host's
				// addresses from outside, and from the host itself.
				chain: chain(chainPublishIn, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest),
			},
			{
				chain: chain(chainPublishLocal, nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest),
			},
			{
				chain: chain("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource),
				rules: []ruleSpec{
					{"firegopher: masquerade the host's loopback to published ports", cat(
						nfproto(unix.NFPROTO_IPV4),
						ipPrefix(12, netip.MustParsePrefix("127.0.0.0/8")),
						oifIn(SetTAPs, false),
						[]expr.Any{&expr.Masq{}})},
					{"firegopher: masquerade " + pool + " leaving the host", cat(
						nfproto(unix.NFPROTO_IPV4),
						ipPrefix(12, cfg.Pool),
						oifIn(SetTAPs, true),
						[]expr.Any{&expr.Masq{}})},
				},
			},
		},
	}
}

func cat(parts ...[]expr.Any) []expr.Any { return slices.Concat(parts...) }

func iifIn(set string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: set},
	}
}

func oifIn(set string, invert bool) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: set, Invert: invert},
	}
}

func nfproto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

func l4proto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

// ipField matches the IPv4 header address at offset (12 source, 16 destination).
func ipField(offset uint32, a netip.Addr) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
	}
}

func ipPrefix(offset uint32, p netip.Prefix) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: net.CIDRMask(p.Bits(), 32), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

func udpDport(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

func ctState(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// ipsDstNAT is conntrack's IPS_DST_NAT status bit: the connection was destination-NATed.
const ipsDstNAT = 1 << 5

func ctStatus(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

// state is what our table holds now.
type state struct {
	table  bool
	chains map[string]*nftables.Chain
	sets   map[string]*nftables.Set
	rules  map[string][]*nftables.Rule
}

func readState(c *nftables.Conn) (state, error) {
	st := state{chains: map[string]*nftables.Chain{}, sets: map[string]*nftables.Set{}, rules: map[string][]*nftables.Rule{}}
	ok, err := tableExists(c)
	if err != nil || !ok {
		return st, err
	}
	st.table = true
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return st, fmt.Errorf("firewall: list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != TableName {
			continue
		}
		st.chains[ch.Name] = ch
		rules, err := c.GetRules(table, ch)
		if err != nil {
			return st, fmt.Errorf("firewall: list rules of chain %s: %w", ch.Name, err)
		}
		st.rules[ch.Name] = rules
	}
	sets, err := c.GetSets(table)
	if err != nil {
		return st, fmt.Errorf("firewall: list sets: %w", err)
	}
	for _, s := range sets {
		st.sets[s.Name] = s
	}
	return st, nil
}

// missing says, in words, how st differs from what cfg wants.
func (st state) missing(cfg HostConfig) []string {
	if !st.table {
		return []string{"nftables table inet " + TableName}
	}
	var out []string
	want := build(cfg)
	for _, s := range want.sets {
		have, ok := st.sets[s.Name]
		if !ok || !sameSet(have, s) {
			out = append(out, fmt.Sprintf("set inet %s %s (type %s)", TableName, s.Name, s.KeyType.Name))
		}
	}
	for name := range st.sets {
		if _, ok := want.set(name); !ok {
			out = append(out, fmt.Sprintf("set inet %s %s: not ours, to be removed", TableName, name))
		}
	}
	for _, cs := range want.chains {
		have, ok := st.chains[cs.chain.Name]
		if !ok || !sameChain(have, cs.chain) {
			out = append(out, fmt.Sprintf("chain inet %s %s (type %s hook %d priority %d policy accept)",
				TableName, cs.chain.Name, cs.chain.Type, *cs.chain.Hooknum, *cs.chain.Priority))
			for _, r := range cs.rules {
				out = append(out, fmt.Sprintf("rule in chain %s: %s", cs.chain.Name, r.comment))
			}
			continue
		}
		var rules []*nftables.Rule
		var got []string
		for _, r := range st.rules[cs.chain.Name] {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			if strings.HasPrefix(comment, publishPrefix) {
				continue // a VM's published port, not part of the host's table
			}
			rules, got = append(rules, r), append(got, comment)
		}
		for i, r := range cs.rules {
			switch {
			case !slices.Contains(got, r.comment):
				out = append(out, fmt.Sprintf("rule in chain %s: %s", cs.chain.Name, r.comment))
			case i >= len(got) || got[i] != r.comment:
				out = append(out, fmt.Sprintf("rule in chain %s out of order: %s", cs.chain.Name, r.comment))
			case len(rules[i].Exprs) != len(r.exprs):
				out = append(out, fmt.Sprintf("rule in chain %s changed: %s", cs.chain.Name, r.comment))
			}
		}
		for _, g := range got {
			if !slices.ContainsFunc(cs.rules, func(r ruleSpec) bool { return r.comment == g }) {
				out = append(out, fmt.Sprintf("rule in chain %s: %q not ours, to be removed", cs.chain.Name, g))
			}
		}
	}
	for name := range st.chains {
		if _, ok := want.chain(name); !ok {
			out = append(out, fmt.Sprintf("chain inet %s %s: not ours, to be removed", TableName, name))
		}
	}
	return out
}

func sameChain(have, want *nftables.Chain) bool {
	return have.Type == want.Type &&
		have.Hooknum != nil && *have.Hooknum == *want.Hooknum &&
		have.Priority != nil && *have.Priority == *want.Priority &&
		have.Policy != nil && *have.Policy == *want.Policy
}

func sameSet(have, want *nftables.Set) bool {
	return have.KeyType.Name == want.KeyType.Name && have.KeyType.Bytes == want.KeyType.Bytes &&
		have.Concatenation == want.Concatenation && !have.Interval && !have.IsMap && !have.Constant
}
