package main

import (
	"github.com/spf13/cobra"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/image"
)

func newPrepareCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "prepare",
		Short: "Fetch and build the default kernel and root filesystem into the cache",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := g.logger()
			store, err := assets.Open(g.cacheDir())
			if err != nil {
				return err
			}
			if _, _, err := store.DefaultKernel(cmd.Context(), log); err != nil {
				return err
			}
			_, _, err = store.DefaultImage(cmd.Context(), image.DefaultRecipe(), log)
			return err
		},
	}
}
