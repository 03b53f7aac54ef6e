package oci

import "testing"

// Loopback registries may speak plain HTTP without --insecure; nothing else may.
func TestParseSourceScheme(t *testing.T) {
	for _, c := range []struct {
		ref      string
		insecure bool
		want     string
	}{
		{"localhost:5000/ab/cd:1", false, "http"},
		{"127.0.0.2:5000/ab", false, "http"},
		{"[::1]:5000/ab", false, "http"},
		{"localhost.example.com/ab", false, "https"},
		{"127.example.com/ab", false, "https"},
		{"localhost/ab", false, "https"}, // Docker Hub's repository localhost/ab
		{"example.com/ab", false, "https"},
		{"example.com/ab", true, "http"},
	} {
		s, err := parseSource(c.ref, c.insecure)
		if err != nil {
			t.Errorf("parseSource(%q): %v", c.ref, err)
			continue
		}
		if got := s.ref.Context().Scheme(); got != c.want {
			t.Errorf("parseSource(%q, insecure=%v): scheme %s, want %s", c.ref, c.insecure, got, c.want)
		}
	}
}
