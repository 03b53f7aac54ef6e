package image

import (
	"slices"
	"strings"
	"testing"
)

var recipeFields = []string{"suite", "mirror", "components", "packages"}

func TestValidate(t *testing.T) {
	ok := DefaultRecipe()
	with := func(f func(r *Recipe)) Recipe {
		r := DefaultRecipe()
		f(&r)
		return r
	}
	tests := []struct {
		name string
		r    Recipe
		bad  []string // fields the error must name; nil means valid
	}{
		{"default", ok, nil},
		{"no packages, no components", Recipe{Suite: "bookworm", Mirror: "http://deb.debian.org/debian"}, nil},
		{"ubuntu", Recipe{Suite: "jammy", Mirror: "http://archive.ubuntu.com/ubuntu", Components: []string{"main", "universe"}}, nil},
		{"https mirror", with(func(r *Recipe) { r.Mirror = "https://deb.debian.org/debian/" }), nil},
		{"file mirror", with(func(r *Recipe) { r.Mirror = "file:///srv/mirror/debian" }), nil},
		{"mirror with port", with(func(r *Recipe) { r.Mirror = "http://localhost:3142/debian" }), nil},
		{"package names with + . -", with(func(r *Recipe) { r.Packages = []string{"g++", "libc6-dev", "python3.11", "xz-utils"} }), nil},
		{"suite with digits and dash", with(func(r *Recipe) { r.Suite = "bookworm-backports" }), nil},

		{"suite empty", with(func(r *Recipe) { r.Suite = "" }), []string{"suite"}},
		{"suite uppercase", with(func(r *Recipe) { r.Suite = "Bookworm" }), []string{"suite"}},
		{"suite leading dash", with(func(r *Recipe) { r.Suite = "-bookworm" }), []string{"suite"}},
		{"suite with space", with(func(r *Recipe) { r.Suite = "book worm" }), []string{"suite"}},
		{"suite path", with(func(r *Recipe) { r.Suite = "../etc" }), []string{"suite"}},
		{"suite underscore", with(func(r *Recipe) { r.Suite = "book_worm" }), []string{"suite"}},

		{"mirror empty", with(func(r *Recipe) { r.Mirror = "" }), []string{"mirror"}},
		{"mirror no scheme", with(func(r *Recipe) { r.Mirror = "deb.debian.org/debian" }), []string{"mirror"}},
		{"mirror ftp", with(func(r *Recipe) { r.Mirror = "ftp://deb.debian.org/debian" }), []string{"mirror"}},
		{"mirror no host", with(func(r *Recipe) { r.Mirror = "http:///debian" }), []string{"mirror"}},
		{"mirror sources line", with(func(r *Recipe) { r.Mirror = "deb http://deb.debian.org/debian bookworm main" }), []string{"mirror"}},
		{"mirror comma", with(func(r *Recipe) { r.Mirror = "http://a.example/debian,http://b.example/debian" }), []string{"mirror"}},
		{"mirror file with host", with(func(r *Recipe) { r.Mirror = "file://host/srv" }), []string{"mirror"}},
		{"mirror option", with(func(r *Recipe) { r.Mirror = "--mode=unshare" }), []string{"mirror"}},

		{"component uppercase", with(func(r *Recipe) { r.Components = []string{"Main"} }), []string{"components"}},
		{"component empty", with(func(r *Recipe) { r.Components = []string{"main", ""} }), []string{"components"}},
		{"component comma", with(func(r *Recipe) { r.Components = []string{"main,contrib"} }), []string{"components"}},

		{"package uppercase", with(func(r *Recipe) { r.Packages = []string{"Curl"} }), []string{"packages"}},
		{"package one char", with(func(r *Recipe) { r.Packages = []string{"x"} }), []string{"packages"}},
		{"package empty", with(func(r *Recipe) { r.Packages = []string{""} }), []string{"packages"}},
		{"package leading dash", with(func(r *Recipe) { r.Packages = []string{"--no-check-gpg"} }), []string{"packages"}},
		{"package leading plus", with(func(r *Recipe) { r.Packages = []string{"+foo"} }), []string{"packages"}},
		{"package underscore", with(func(r *Recipe) { r.Packages = []string{"foo_bar"} }), []string{"packages"}},
		{"package version", with(func(r *Recipe) { r.Packages = []string{"curl=7.88.1"} }), []string{"packages"}},
		{"package comma", with(func(r *Recipe) { r.Packages = []string{"curl,wget"} }), []string{"packages"}},

		{"everything bad", Recipe{Suite: "X", Mirror: "gopher://x", Components: []string{"A"}, Packages: []string{"Y"}}, recipeFields},
		{"zero recipe", Recipe{}, []string{"suite", "mirror"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.r.Validate()
			if tt.bad == nil {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want an error naming %v, got none", tt.bad)
			}
			msg := err.Error()
			for _, f := range recipeFields {
				named := strings.Contains(msg, "recipe "+f+":")
				want := slices.Contains(tt.bad, f)
				if named != want {
					t.Errorf("field %s named = %v, want %v; error: %v", f, named, want, msg)
				}
			}
		})
	}
}

func TestKey(t *testing.T) {
	base := DefaultRecipe()
	// Pinned: a changed key silently makes every cached image unreachable.
	const want = "variant=apt suite=bookworm components=main mirror=http://deb.debian.org/debian packages=ca-certificates,curl,python3"
	if got := base.Key(); got != want {
		t.Fatalf("Key() = %q, want %q", got, want)
	}

	same := []Recipe{
		{Suite: "bookworm", Mirror: "http://deb.debian.org/debian", Packages: []string{"python3", "curl", "ca-certificates"}},
		{Suite: "bookworm", Mirror: "http://deb.debian.org/debian", Components: []string{"main"}, Packages: []string{"curl", "python3", "ca-certificates", "curl"}},
	}
	for _, r := range same {
		if r.Key() != want {
			t.Errorf("Key(%+v) = %q, want %q", r, r.Key(), want)
		}
	}

	differ := map[string]func(r *Recipe){
		"suite":       func(r *Recipe) { r.Suite = "trixie" },
		"mirror":      func(r *Recipe) { r.Mirror = "http://localhost/debian" },
		"components":  func(r *Recipe) { r.Components = []string{"main", "contrib"} },
		"packages":    func(r *Recipe) { r.Packages = append(r.Packages, "git") },
		"no packages": func(r *Recipe) { r.Packages = nil },
	}
	for name, f := range differ {
		r := DefaultRecipe()
		f(&r)
		if r.Key() == want {
			t.Errorf("changing %s kept the key %q", name, want)
		}
	}

	// Key must not reorder the caller's slice.
	r := Recipe{Suite: "bookworm", Mirror: "http://deb.debian.org/debian", Packages: []string{"b-pkg", "a-pkg"}}
	_ = r.Key()
	if r.Packages[0] != "b-pkg" {
		t.Errorf("Key sorted the caller's Packages in place: %v", r.Packages)
	}
}
