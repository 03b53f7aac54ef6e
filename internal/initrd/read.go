package initrd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cavaliergopher/cpio"

	"github.com/firegopher/firegopher/internal/vmconfig"
)

// ReadFile returns the content of the file at guestPath as the kernel would leave it after
// unpacking every archive of the initramfs at path in turn: the last layer that has it wins.
func ReadFile(path, guestPath string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	want := strings.TrimPrefix(guestPath, "/")
	br := bufio.NewReader(f)
	var found []byte
	for {
		// Archives may be separated by NUL padding, as the kernel allows.
		b, err := br.Peek(1)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if b[0] == 0 {
			br.ReadByte()
			continue
		}
		r := cpio.NewReader(br)
		for {
			hdr, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("initrd %s: %w", path, err)
			}
			if hdr.Name == want {
				if found, err = io.ReadAll(r); err != nil {
					return nil, err
				}
			}
		}
	}
	if found == nil {
		return nil, fmt.Errorf("initrd %s: no %s", path, guestPath)
	}
	return found, nil
}

// ReadConfig returns the VM config carried by the initramfs at path.
func ReadConfig(path string) (*vmconfig.Config, error) {
	data, err := ReadFile(path, vmconfig.Path)
	if err != nil {
		return nil, err
	}
	return vmconfig.Parse(data)
}
