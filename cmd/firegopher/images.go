package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/assets/oci"
)

func (g *globalFlags) store() (*assets.Store, error) { return assets.Open(g.cacheDir()) }

func newPullCommand(g *globalFlags) *cobra.Command {
	var o oci.Options
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Fetch a kernel (*-kernel*) or root filesystem image from an OCI registry or layout",
		Long: `Fetch a kernel or a root filesystem into the cache. REF is registry/repo:tag, a
@sha256: digest, or oci:./layout-dir[:tag]. Kernel images hold /boot/vmlinux (or a bzImage),
optionally /boot/initrd and /lib/modules/<version>; image references either ship one ext4
file or are ordinary container images, flattened into ext4 with their Env, Entrypoint, Cmd,
WorkingDir and User kept as the defaults of firegopher run.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := g.store()
			if err != nil {
				return err
			}
			o.Log, o.Progress = g.logger(), os.Stderr
			res, err := oci.Pull(cmd.Context(), store, args[0], o)
			if err != nil {
				return err
			}
			if res.Cached {
				fmt.Fprintf(os.Stderr, "%s/%s is up to date\n", res.Kind, res.Name)
			}
			fmt.Printf("%s/%s %s\n", res.Kind, res.Name, res.Digest)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.Name, "name", "", "local name (default: from the repository and tag)")
	cmd.Flags().StringVar(&o.Kind, "kind", "", "kernel or image (default: detected)")
	cmd.Flags().Int64Var(&o.DiskSize, "disk-size", 0, "ext4 size in bytes for flattened container images (default: content + headroom)")
	cmd.Flags().BoolVar(&o.Insecure, "insecure", false, "let the registry speak plain HTTP (loopback registries always may)")
	return cmd
}

func newPushCommand(g *globalFlags) *cobra.Command {
	var insecure bool
	cmd := &cobra.Command{
		Use:   "push KIND/NAME REF",
		Short: "Publish a cached kernel or image as an OCI image (the seed's *-kernel / *-image layouts)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := g.store()
			if err != nil {
				return err
			}
			return oci.Push(cmd.Context(), store, args[0], args[1], insecure)
		},
	}
	cmd.Flags().BoolVar(&insecure, "insecure", false, "let the registry speak plain HTTP (loopback registries always may)")
	return cmd
}

func newImagesCommand(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "images",
		Aliases: []string{"ls-assets"},
		Short:   "List cached kernels, images and snapshot templates",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			store, err := g.store()
			if err != nil {
				return err
			}
			entries, err := oci.List(store)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(entries)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KIND\tNAME\tDIGEST\tSIZE\tCREATED\tSOURCE")
			for _, e := range entries {
				src := e.Source
				if e.Problem != "" {
					src = "PROBLEM: " + e.Problem
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f MiB\t%s ago\t%s\n", e.Kind, e.Name, e.Digest.Short(),
					float64(e.Size)/(1<<20), time.Since(e.Tagged).Round(time.Second), src)
			}
			if err := printTemplates(tw, g.templates()); err != nil {
				return err
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newRmiCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rmi KIND/NAME...",
		Short: "Remove cached kernels or images (their blobs go at the next assets gc)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			store, err := g.store()
			if err != nil {
				return err
			}
			for _, a := range args {
				if err := oci.Remove(store, a); err != nil {
					return err
				}
				fmt.Println(a)
			}
			return nil
		},
	}
}

func newAssetsCommand(g *globalFlags) *cobra.Command {
	assetsCmd := &cobra.Command{Use: "assets", Short: "Manage the asset cache"}
	var allTemplates bool
	gcCmd := &cobra.Command{
		Use:   "gc",
		Short: "Remove cached blobs no kernel or image refers to, scratch files of crashed pulls, and snapshot templates that can no longer be used",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			store, err := g.store()
			if err != nil {
				return err
			}
			tmp, err := oci.CleanTmp(store, 24*time.Hour)
			if err != nil {
				return err
			}
			for _, p := range tmp {
				fmt.Println("removed scratch", p)
			}
			removed, err := oci.GC(store)
			for _, d := range removed {
				fmt.Println("removed blob", d)
			}
			if err != nil {
				return err
			}
			// After the blobs: a template of a kernel just removed goes too.
			gone, err := gcTemplates(g.templates(), store, allTemplates)
			for _, p := range gone {
				fmt.Println("removed template", filepath.Base(p))
			}
			return err
		},
	}
	gcCmd.Flags().BoolVar(&allTemplates, "templates", false, "remove every snapshot template (the next runs rebuild them)")
	assetsCmd.AddCommand(gcCmd)
	return assetsCmd
}
