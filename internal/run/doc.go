// Package run holds the pure parts of `firegopher up`, the drop-in for
// falcosecurity/kernel-testing (see /work/shared/kernel-testing.md): reading their Ansible
// vars files into a typed Run, planning each machine's TAP, addresses and files, writing
// their inventory.ini (or Ansible dynamic-inventory JSON), and the run's SSH key pair and
// known_hosts entries. Nothing here starts a VM or touches the network.
package run
