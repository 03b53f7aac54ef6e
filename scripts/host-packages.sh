#!/usr/bin/env bash
# Installs the Debian packages firegopher and its tests use. Idempotent; run as root.
set -euo pipefail
packages=(
  qemu-system-x86   # the VMM of the qemu backend
  qemu-utils        # qemu-img: per-VM qcow2 overlays over the cached raw image (O(1) clones)
  mmdebstrap        # bootstraps the default root filesystem
  e2fsprogs         # mkfs.ext4 -d, debugfs
  xfsprogs          # a reflink-capable filesystem for the clone tests
  busybox-static    # the bare-VMM baseline initrd of bench/boot
  cpio              # bench/boot packs that initrd
  nftables          # nft: the firewall tests compare rulesets
  dnsmasq-base      # the seed's dnsmasq DHCP mode
  iproute2          # ip netns: network tests run in namespaces they create
  curl              # e2e: the host reaches guests
  docker-registry   # e2e: a real OCI registry on loopback
  openssh-client    # firegopher ssh; Ansible's connection to run machines
  rsync             # e2e: ansible.posix.synchronize, as kernel-testing's playbooks use it
  ansible           # e2e: their playbooks, run against firegopher up's inventory
  tmux              # e2e: run -it, exec -it and attach in a real terminal
  containerd        # e2e: the runtime shim under a real containerd (1.6 in Debian 12), and ctr
  containernetworking-plugins  # e2e: a CNI bridge for the shim's pod network test
  dpkg apt ca-certificates make
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# apt-get download (the default kernel) needs package lists even when nothing is missing.
if [ ${#missing[@]} -gt 0 ] || [ -z "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v -e lock -e partial)" ]; then
  apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  export PATH=/usr/local/go/bin:$PATH
fi
command -v go >/dev/null 2>&1 || { echo "Go 1.24 or newer is needed (https://go.dev/dl); Debian 12's golang is too old" >&2; exit 1; }
