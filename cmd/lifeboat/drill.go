package main

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/api"
	"github.com/lifeboat-dr/lifeboat/runbook"
)

func (a *app) drillCommand() *cobra.Command {
	var (
		f      clientFlags
		dryRun bool
		to     string
	)
	cmd := &cobra.Command{
		Use:   "drill --dry-run",
		Short: "Rehearse a failover against a running topology without touching it",
		Long: `Drill --dry-run is a readiness-and-plan rehearsal against the topology a node
serves: it shows each standby's readiness and each data service's exposure,
then plans the failover to --to (default: the first ready standby) and runs
its pre-checks. Nothing is changed. (Drills with fault injection run in the
lab: lifeboat lab drill.)`,
		Example: `  lifeboat drill --dry-run --server http://127.0.0.1:7480
  lifeboat drill --dry-run --to west`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !dryRun {
				return usageError{errors.New("only --dry-run drills run against a live topology; fault-injecting drills run in the lab (lifeboat lab drill)")}
			}
			c, err := a.client(f)
			if err != nil {
				return err
			}
			var st api.StatusResponse
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/status", nil, &st); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "cluster %s, active region %s\n", st.Cluster, st.ActiveRegion)
			for _, e := range st.Exposure {
				fmt.Fprintf(a.stdout, "exposure %s: %s (lag %.1fs, %d bytes; RPO %.0fs)\n", e.Service, e.Status, e.LagSeconds, e.LagBytes, e.RPOSeconds)
			}
			for _, r := range st.Readiness {
				state := "ready"
				if !r.Ready {
					state = "NOT READY: " + strings.Join(r.Reasons, "; ")
				}
				fmt.Fprintf(a.stdout, "standby %s: %s\n", r.Region, state)
				if to == "" && r.Ready {
					to = r.Region
				}
			}
			if to == "" {
				return errors.New("no standby is ready: a failover now would need --force and lose data (see the reasons above)")
			}
			var dr api.DryRunResponse
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/runs", api.RunRequest{Kind: runbook.KindFailover, To: to, DryRun: true}, &dr); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "\n%s\n", dr.Text)
			return printChecks(a.stdout, dr.Checks)
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "rehearse: readiness, exposure, the failover plan and its pre-checks; change nothing")
	cmd.Flags().StringVar(&to, "to", "", "the region to rehearse failing over to (default: the first ready standby)")
	return cmd
}
