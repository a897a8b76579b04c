package main

import (
	"github.com/lifeboat-dr/lifeboat/runbook"

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
		a.reportCommand(),
		a.cancelCommand(),
		a.runCommand(runbook.KindFailover, "Fail over to a standby region (unplanned: the active region is lost)",
			`Failover makes --to the active region when the active one is lost: it checks
the target is ready (lag within max_lag_on_failover, unless --force), holds new
requests, fences what it can reach of the old region, commits a new epoch (the
fence every data plane obeys), promotes the target's databases and caches,
releases traffic to it and verifies. It prints the run id and follows the run
until it ends (exit 0 on success), unless --no-wait.`,
			`  lifeboat failover --to west --dry-run
  lifeboat failover --to west --yes
  lifeboat failover --to west --yes --force --reason "east unreachable for 10m"`),
		a.runCommand(runbook.KindSwitchover, "Move the active region on purpose, losing nothing",
			`Switchover is the planned move: hold new requests, fence the active region's
databases, wait until the target has replayed everything, commit the new epoch,
promote, release, then make the old primaries standbys of the new ones. Nothing
acknowledged is lost; requests wait during the hold instead of failing.`,
			`  lifeboat switchover --to west
  lifeboat switchover --to west --dry-run --server http://10.0.0.5:7480`),
		a.runCommand(runbook.KindFailback, "Move back to the preferred region after a failover",
			`Failback brings the preferred region (the configured active one, or --to)
back: its old primaries become standbys of the active region (pg_rewind, or a
base backup when rewind cannot; the divergent WAL is recorded in the run), they
catch up, then a switchover moves traffic back.`,
			`  lifeboat failback
  lifeboat failback --to east --dry-run`),
		a.runsCommand(),
		a.approveCommand(),
		a.labCommand(),
		a.filesCommand(),
		a.drillCommand(),
		a.auditCommand(),
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
