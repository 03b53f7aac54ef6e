package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/volume"
)

func (g *globalFlags) volumes() (*volume.Store, error) {
	h, err := g.host()
	if err != nil {
		return nil, err
	}
	return h.Volumes(), nil
}

func newVolumeCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "Manage named volumes: ext4 disks that outlive VMs (run -v NAME:/GUEST/PATH)",
		Example: `  firegopher volume create data --size 2G
  firegopher run -v data:/data -- sh -c 'date >> /data/log'
  firegopher run -v data:/data:ro -- cat /data/log`,
	}
	cmd.AddCommand(newVolumeCreateCommand(g), newVolumeLsCommand(g), newVolumeInspectCommand(g), newVolumeRmCommand(g))
	return cmd
}

func newVolumeCreateCommand(g *globalFlags) *cobra.Command {
	var size string
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Make an empty volume (a sparse ext4 disk, made by mkfs.ext4)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := spec.ParseSize("--size", size)
			if err != nil {
				return err
			}
			vols, err := g.volumes()
			if err != nil {
				return err
			}
			v, err := vols.Create(cmd.Context(), args[0], n)
			if err != nil {
				return err
			}
			fmt.Println(v.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&size, "size", volume.DefaultSize.String(), "size of the disk (K, M, G, T suffixes; sparse: it takes what the guest writes)")
	return cmd
}

func newVolumeLsCommand(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List volumes and the running VMs they are attached to",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			vols, err := g.volumes()
			if err != nil {
				return err
			}
			list, err := vols.List()
			if err != nil {
				return err
			}
			if asJSON {
				return printVolumeJSON(append([]volume.Volume{}, list...))
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSIZE\tALLOCATED\tCREATED\tATTACHED TO")
			for _, v := range list {
				fmt.Fprintf(tw, "%s\t%s\t%.1f MiB\t%s ago\t%s\n", v.Name, v.Size, float64(v.Allocated)/(1<<20),
					time.Since(v.Created).Round(time.Second), describeUsers(v.Users))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func describeUsers(users []volume.User) string {
	var s []string
	for _, u := range users {
		if u.ReadOnly {
			s = append(s, u.VM+" (ro)")
		} else {
			s = append(s, u.VM)
		}
	}
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ", ")
}

func newVolumeInspectCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME",
		Short: "Print a volume as JSON: size, creation time, disk file, the running VMs it is attached to",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			vols, err := g.volumes()
			if err != nil {
				return err
			}
			v, err := vols.Inspect(args[0])
			if err != nil {
				return err
			}
			return printVolumeJSON(v)
		},
	}
}

func newVolumeRmCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME...",
		Short: "Remove volumes and their data (refused while a VM has one attached)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			vols, err := g.volumes()
			if err != nil {
				return err
			}
			for _, name := range args {
				if err := vols.Remove(name); err != nil {
					return err
				}
				fmt.Println(name)
			}
			return nil
		},
	}
}

func printVolumeJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
