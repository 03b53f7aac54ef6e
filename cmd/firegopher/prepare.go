package main

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/spf13/cobra"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/image"
)

var imageName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

func newPrepareCommand(g *globalFlags) *cobra.Command {
	r := image.DefaultRecipe()
	var name, packages string
	cmd := &cobra.Command{
		Use:   "prepare",
		Short: "Fetch the default kernel and bootstrap a root filesystem image into the cache",
		Long: `Fetch the default kernel and bootstrap a root filesystem into the cache. Without flags
it builds the default image (Debian bookworm with ca-certificates, curl, python3); with
--suite/--mirror/--packages it builds another recipe under --name, e.g.

  firegopher prepare --suite jammy --mirror http://archive.ubuntu.com/ubuntu --name jammy
  firegopher run --image jammy -- cat /etc/os-release`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("packages") {
				r.Packages = nil
				for _, p := range strings.Split(packages, ",") {
					if p = strings.TrimSpace(p); p != "" {
						r.Packages = append(r.Packages, p)
					}
				}
			}
			custom := cmd.Flags().Changed("suite") || cmd.Flags().Changed("mirror") || cmd.Flags().Changed("packages")
			if name == "" {
				name = "default"
				if custom {
					name = r.Suite
				}
			}
			if !imageName.MatchString(name) {
				return fmt.Errorf("--name: %q, want lowercase letters, digits, '.', '_', '-'", name)
			}
			if name == "default" && custom {
				return fmt.Errorf("--name: \"default\" is the default recipe's; name this one")
			}
			if err := r.Validate(); err != nil {
				return err
			}
			log := g.logger()
			store, err := assets.Open(g.cacheDir())
			if err != nil {
				return err
			}
			if _, _, err := store.DefaultKernel(cmd.Context(), log); err != nil {
				return err
			}
			_, _, err = store.RecipeImage(cmd.Context(), name, r, log)
			return err
		},
	}
	cmd.Flags().StringVar(&r.Suite, "suite", r.Suite, "distribution suite to bootstrap")
	cmd.Flags().StringVar(&r.Mirror, "mirror", r.Mirror, "package mirror URL")
	cmd.Flags().StringVar(&packages, "packages", strings.Join(r.Packages, ","), "comma-separated packages to include")
	cmd.Flags().StringVar(&name, "name", "", "image name in the cache (default: \"default\", or the suite for other recipes)")
	return cmd
}
