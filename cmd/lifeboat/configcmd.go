package main

import (
	"github.com/spf13/cobra"
)

func (a *app) configCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Inspect the topology file",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	var path string
	print := &cobra.Command{
		Use:   "print",
		Short: "Print the topology with defaults filled in and secrets redacted",
		Long: `Print validates the topology file and writes it back as YAML with every
default filled in. Passwords in DSNs, API keys, webhook URLs, credential
headers and the values of secret-looking environment variables
(*PASSWORD*, *TOKEN*, *KEY*, *SECRET*...) are replaced by <redacted>.`,
		Example: `  DB_PASSWORD=secret lifeboat config print -c examples/minimal.yaml`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig(path)
			if err != nil {
				return err
			}
			return cfg.Print(a.stdout)
		},
	}
	configFlag(print, &path)
	cmd.AddCommand(print)
	return cmd
}
