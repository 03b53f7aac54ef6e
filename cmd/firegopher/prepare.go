package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/assets/oci"
	"github.com/firegopher/firegopher/internal/image"
	"github.com/firegopher/firegopher/internal/spec"
)

// recipeFlags are the base-image recipe's flags, shared by prepare and image build.
type recipeFlags struct {
	recipe         image.Recipe
	name, packages string
}

func (f *recipeFlags) register(cmd *cobra.Command) {
	f.recipe = image.DefaultRecipe()
	cmd.Flags().StringVar(&f.recipe.Suite, "suite", f.recipe.Suite, "distribution suite to bootstrap")
	cmd.Flags().StringVar(&f.recipe.Mirror, "mirror", f.recipe.Mirror, "package mirror URL")
	cmd.Flags().StringVar(&f.packages, "packages", strings.Join(f.recipe.Packages, ","), "comma-separated packages to include")
	cmd.Flags().StringVar(&f.name, "name", "", "image name in the cache (default: \"default\", or the suite for other recipes)")
}

// build bootstraps (or finds in the cache) the recipe's image and returns its name.
func (f *recipeFlags) build(cmd *cobra.Command, g *globalFlags, store *assets.Store) (string, error) {
	r, name := f.recipe, f.name
	if cmd.Flags().Changed("packages") {
		r.Packages = nil
		for _, p := range strings.Split(f.packages, ",") {
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
	if _, err := spec.ParseName("--name", name); err != nil {
		return "", err
	}
	if name == "default" && custom {
		return "", fmt.Errorf("--name: \"default\" is the default recipe's; name this one")
	}
	if err := r.Validate(); err != nil {
		return "", err
	}
	_, _, err := store.RecipeImage(cmd.Context(), name, r, g.logger())
	return name, err
}

func newPrepareCommand(g *globalFlags) *cobra.Command {
	var rf recipeFlags
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
			store, err := g.store()
			if err != nil {
				return err
			}
			if _, _, err := store.DefaultKernel(cmd.Context(), g.logger()); err != nil {
				return err
			}
			_, err = rf.build(cmd, g, store)
			return err
		},
	}
	rf.register(cmd)
	return cmd
}

func newImageCommand(g *globalFlags) *cobra.Command {
	img := &cobra.Command{Use: "image", Short: "Build root filesystem images"}
	var rf recipeFlags
	var insecure bool
	build := &cobra.Command{
		Use:   "build [flags] REF",
		Short: "Bootstrap the base-image recipe and publish it as an *-image OCI image (registry or oci:./layout)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := g.store()
			if err != nil {
				return err
			}
			name, err := rf.build(cmd, g, store)
			if err != nil {
				return err
			}
			if err := oci.Push(cmd.Context(), store, "image/"+name, args[0], insecure); err != nil {
				return err
			}
			fmt.Printf("image/%s pushed to %s\n", name, args[0])
			return nil
		},
	}
	rf.register(build)
	build.Flags().BoolVar(&insecure, "insecure", false, "let the registry speak plain HTTP (loopback registries always may)")
	img.AddCommand(build)
	return img
}
