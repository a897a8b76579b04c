package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/spf13/cobra"
)

func errUnexpectedArgs(cmd *cobra.Command, args []string) error {
	return fmt.Errorf("%s: unexpected argument %q (see %s --help)", cmd.CommandPath(), args[0], cmd.CommandPath())
}

// configFlag adds -c/--config to cmd.
func configFlag(cmd *cobra.Command, path *string) {
	cmd.Flags().StringVarP(path, "config", "c", "lifeboat.yaml", "topology file")
}

// loadConfig reads and validates the topology. Problems in the file are
// printed one per line and returned as errReported with exitUsage.
func (a *app) loadConfig(path string) (*config.Config, error) {
	var opts []config.Option
	if a.lookupEnv != nil {
		opts = append(opts, config.WithLookupEnv(a.lookupEnv))
	}
	cfg, err := config.Load(path, opts...)
	if err == nil {
		return cfg, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil, usageError{err: fmt.Errorf("config file %s does not exist (give one with -c FILE)", path)}
	}
	es, ok := config.AsErrors(err)
	if !ok {
		return nil, err
	}
	for _, e := range es {
		fmt.Fprintln(a.stderr, e)
	}
	fmt.Fprintf(a.stderr, "%s: %d problem(s) found\n", path, len(es))
	return nil, errReported{code: exitUsage}
}

func (a *app) validateCommand() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check a topology file and print a summary",
		Long: `Validate reads the topology file, expands ${VAR} references from the
environment and checks everything: syntax, unknown keys, types, references
between sections and values in range. It prints a one-line summary and exits
0, or prints every problem with its file, line and key and exits 2.`,
		Example: `  DB_PASSWORD=secret lifeboat validate -c examples/minimal.yaml`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig(path)
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, summary(cfg))
			return nil
		},
	}
	configFlag(cmd, &path)
	return cmd
}

// summary is the one line validate prints for a good topology.
func summary(cfg *config.Config) string {
	data := 0
	for _, s := range cfg.Services {
		if s.IsData() {
			data++
		}
	}
	return fmt.Sprintf("%s: ok: cluster %q, %d regions (active %s), %d services (%d data), rpo %s, rto %s, failover %s",
		cfg.File(), cfg.Cluster.Name, len(cfg.Regions), cfg.ActiveRegion(), len(cfg.Services), data,
		cfg.Policy.RPO, cfg.Policy.RTO, cfg.Policy.Failover)
}
