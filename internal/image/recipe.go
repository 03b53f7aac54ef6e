// Package image makes root filesystem images: the base-image recipe and directory → ext4.
package image

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Recipe is the seed's base image: a Debian/Ubuntu suite bootstrapped with mmdebstrap --variant=apt.
type Recipe struct {
	Suite  string `json:"suite"`  // default "bookworm"
	Mirror string `json:"mirror"` // default "http://deb.debian.org/debian"
	// Components of the archive; empty means "main". Ubuntu suites want main,universe.
	Components []string `json:"components,omitempty"`
	// Packages on top of the apt variant (Essential: yes, apt); default ca-certificates, curl, python3.
	Packages []string `json:"packages,omitempty"`
}

// DefaultRecipe is the image VMs boot when the user names none.
func DefaultRecipe() Recipe {
	return Recipe{
		Suite:      "bookworm",
		Mirror:     "http://deb.debian.org/debian",
		Components: []string{"main"},
		Packages:   []string{"ca-certificates", "curl", "python3"},
	}
}

var (
	// The first character must not be '-': these end up as mmdebstrap arguments.
	suitePattern     = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	componentPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	// Debian policy 5.6.1: lowercase letters, digits, '+', '-', '.'; at least two
	// characters; starting with an alphanumeric.
	packagePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
)

// Validate checks every field and reports each bad one by name.
func (r Recipe) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("recipe %s: "+format, append([]any{field}, args...)...))
	}
	switch {
	case r.Suite == "":
		bad("suite", "empty")
	case !suitePattern.MatchString(r.Suite):
		bad("suite", "%q: want lowercase letters, digits and '-' (like bookworm or jammy)", r.Suite)
	}
	if err := checkMirror(r.Mirror); err != nil {
		bad("mirror", "%v", err)
	}
	for _, c := range r.Components {
		if !componentPattern.MatchString(c) {
			bad("components", "%q: want lowercase letters, digits and '-' (like main or universe)", c)
		}
	}
	for _, p := range r.Packages {
		if !packagePattern.MatchString(p) {
			bad("packages", "%q is not a Debian package name (a-z, 0-9, '+', '-', '.'; 2 or more characters, starting with a letter or digit)", p)
		}
	}
	return errors.Join(errs...)
}

func checkMirror(m string) error {
	if m == "" {
		return errors.New("empty")
	}
	// mmdebstrap would also take a whole sources.list line here; we only want a URL.
	if strings.ContainsAny(m, " \t\r\n,") {
		return fmt.Errorf("%q: a URL has no spaces or commas", m)
	}
	u, err := url.Parse(m)
	if err != nil {
		return fmt.Errorf("%q: %v", m, err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return fmt.Errorf("%q: no host", m)
		}
	case "file":
		if u.Path == "" || u.Host != "" {
			return fmt.Errorf("%q: want file:///absolute/path", m)
		}
	default:
		return fmt.Errorf("%q: want an http://, https:// or file:/// URL", m)
	}
	return nil
}

// normalized is r in canonical form: what Build runs and Key describes.
func (r Recipe) normalized() Recipe {
	r.Components = sortedUnique(r.Components)
	if len(r.Components) == 0 {
		r.Components = []string{"main"}
	}
	r.Packages = sortedUnique(r.Packages)
	return r
}

func sortedUnique(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

// Key is a stable string identifying the recipe content (for a cache key): the same suite,
// mirror, components and set of packages give the same key whatever their order.
func (r Recipe) Key() string {
	n := r.normalized()
	return fmt.Sprintf("variant=apt suite=%s components=%s mirror=%s packages=%s",
		n.Suite, strings.Join(n.Components, ","), n.Mirror, strings.Join(n.Packages, ","))
}
