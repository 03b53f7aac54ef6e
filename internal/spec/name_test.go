package spec

import (
	"strings"
	"testing"
)

func TestParseName(t *testing.T) {
	for _, ok := range []string{"default", "jammy", "a", "web-1.2_x", strings.Repeat("a", 63), "0day"} {
		if got, err := ParseName("--name", ok); err != nil || got != ok {
			t.Errorf("ParseName(%q) = %q, %v", ok, got, err)
		}
	}
	for _, bad := range []string{"", "Jammy", "-x", ".x", "a/b", "a b", strings.Repeat("a", 64), "ü"} {
		if _, err := ParseName("--name", bad); err == nil || !strings.HasPrefix(err.Error(), "--name: ") {
			t.Errorf("ParseName(%q) = %v, want an error naming --name", bad, err)
		}
	}
}
