package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/firegopher/firegopher/internal/assets"
)

func newFirecrackerCommand(g *globalFlags) *cobra.Command {
	fc := &cobra.Command{Use: "firecracker", Short: "Manage Firecracker releases in the cache"}
	var version, from, sum string
	install := &cobra.Command{
		Use:   "install",
		Short: "Fetch a Firecracker release (firecracker + jailer), check its checksum, cache it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := assets.ValidateFirecrackerVersion(version)
			if err != nil {
				return err
			}
			store, err := g.store()
			if err != nil {
				return err
			}
			tgz := from
			if tgz == "" {
				tmp, err := store.TempDir("firecracker-*")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				if tgz, sum, err = assets.DownloadFirecracker(cmd.Context(), v, tmp); err != nil {
					return err
				}
			}
			d, f, err := store.ImportFirecracker(tgz, v, sum)
			if err != nil {
				return err
			}
			fmt.Printf("firecracker/v%s %s\n  firecracker %s\n  jailer      %s\n", f.Version, d, store.Path(f.Firecracker), store.Path(f.Jailer))
			return nil
		},
	}
	install.Flags().StringVar(&version, "version", assets.DefaultFirecrackerVersion, "release version")
	install.Flags().StringVar(&from, "from", "", "install from a release tarball already on disk (hosts without internet)")
	install.Flags().StringVar(&sum, "sha256", "", "expected SHA-256 of the --from tarball")
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the installed Firecracker releases, newest first (the newest is used)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			store, err := g.store()
			if err != nil {
				return err
			}
			list, err := store.Firecrackers()
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "VERSION\tFIRECRACKER\tJAILER\tSOURCE")
			for _, f := range list {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", f.Version, f.Firecracker.Short(), f.Jailer.Short(), f.Source)
			}
			return w.Flush()
		},
	}
	fc.AddCommand(install, ls)
	return fc
}
