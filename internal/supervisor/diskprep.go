package supervisor

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/firegopher/firegopher/internal/diskprep"
	"github.com/firegopher/firegopher/internal/network/dhcp"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/state"
)

// prepareDisk makes a foreign guest's pre-boot changes in its fresh clone, without mounting
// it: the machine's files (root's authorized_keys), fresh SSH host keys (images bake the
// same ones into every VM), and a regular /etc/resolv.conf. The host keys' public halves
// go into the VM's record, for known_hosts.
func prepareDisk(ctx context.Context, vm *VM) error {
	m := vm.Machine
	if m.Mode != spec.ModeForeign {
		return nil // our init applies files inside the guest
	}
	var e diskprep.Edits
	for _, f := range m.Files {
		if f.Dir {
			e.Mkdir(f.Path, fs.FileMode(f.Mode), 0, 0)
		} else {
			e.WriteFile(f.Path, f.Data, fs.FileMode(f.Mode), 0, 0)
		}
	}
	keys, err := diskprep.GenerateHostKeys("root@" + m.Hostname())
	if err != nil {
		return err
	}
	keys.Install(&e, "root@"+m.Hostname())
	e.WriteFile("/etc/resolv.conf", resolvConf(m.Network), 0o644, 0, 0)
	if err := diskprep.Apply(ctx, vm.Log, vm.path(DiskFile), &e); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	var pubs []string
	for _, k := range keys {
		pubs = append(pubs, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.Public))))
	}
	_, err = vm.State.Update(vm.ID(), func(r *state.VM) error { r.HostKeys = pubs; return nil })
	return err
}

func unrecordHostKeys(vm *VM) error {
	if vm.Machine.Mode != spec.ModeForeign {
		return nil
	}
	_, err := vm.State.Update(vm.ID(), func(r *state.VM) error { r.HostKeys = nil; return nil })
	return err
}

// resolvConf names the machine's DNS servers (a regular file: kernel-testing's initrd only
// replaces a symlinked one).
func resolvConf(n *spec.Network) []byte {
	var b bytes.Buffer
	dns := dhcp.DefaultDNS
	if n != nil && len(n.DNS) > 0 {
		dns = n.DNS
	}
	for _, d := range dns {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	return b.Bytes()
}
