//go:build linux

package fctest

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"unsafe"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"
)

// vnetHdrLen is the virtio-net header Firecracker sets on its TAP (TUNSETVNETHDRSZ 12);
// every frame written to the TAP starts with one.
const vnetHdrLen = 12

// sendDiscover writes a DHCPDISCOVER from mac into tap, as a guest's first frame through
// its virtio-net device: what proves the TAP is attached and bridged to the host.
func sendDiscover(tap *os.File, mac string) error {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return err
	}
	d, err := dhcpv4.NewDiscovery(hw)
	if err != nil {
		return err
	}
	sz := vnetHdrLen
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, tap.Fd(), unix.TUNSETVNETHDRSZ, uintptr(unsafe.Pointer(&sz))); e != 0 {
		return fmt.Errorf("TUNSETVNETHDRSZ: %w", e)
	}
	_, err = tap.Write(append(make([]byte, vnetHdrLen), discoverFrame(hw, d.ToBytes())...))
	return err
}

// discoverFrame wraps a DHCP payload in UDP 68->67, IPv4 0.0.0.0->255.255.255.255 and a
// broadcast Ethernet frame from hw.
func discoverFrame(hw net.HardwareAddr, payload []byte) []byte {
	udpLen := 8 + len(payload)
	ipLen := 20 + udpLen
	f := make([]byte, 14+ipLen)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], hw)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(ip[2:], uint16(ipLen))
	copy(ip[16:20], []byte{255, 255, 255, 255})
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip[:20]))
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], 68)
	binary.BigEndian.PutUint16(udp[2:], 67)
	binary.BigEndian.PutUint16(udp[4:], uint16(udpLen))
	copy(udp[8:], payload) // UDP checksum 0: none, allowed over IPv4
	return f
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
