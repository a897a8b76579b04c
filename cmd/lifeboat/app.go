package main

import (
	"context"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// app holds what every subcommand shares; no package-level state, so tests
// run many apps side by side.
type app struct {
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
}

func newApp(stdout, stderr io.Writer) *app {
	return &app{stdout: stdout, stderr: stderr}
}

func (a *app) run(ctx context.Context, args []string) error {
	root := a.rootCommand()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	// cobra has no error type for an unknown command; it is a usage error.
	if err != nil && strings.HasPrefix(err.Error(), "unknown command ") {
		return usageError{err: err}
	}
	return err
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "lifeboat",
		Short: "Multi-region disaster-recovery control plane",
		Long: `Lifeboat watches an application that runs in several regions, decides when a
region has failed, fails over its databases, caches, files and traffic, fails
back later, and measures all of it in drills.

Everything is described in one topology file, lifeboat.yaml.`,
		Example: `  lifeboat validate -c lifeboat.yaml
  lifeboat config print -c lifeboat.yaml`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{err: err}
	})
	root.AddCommand(
		a.validateCommand(),
		a.configCommand(),
		a.versionCommand(),
		a.serveCommand(),
		a.statusCommand(),
		a.eventsCommand(),
	)
	return root
}

// noArgs rejects positional arguments as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{err: errUnexpectedArgs(cmd, args)}
	}
	return nil
}
