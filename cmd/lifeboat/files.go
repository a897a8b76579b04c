package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/api"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/files"
)

func (a *app) filesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "files",
		Short: "File share and bucket replication: status, and a sync on demand",
		Long: `Lifeboat copies each files service from the active region to every standby,
continuously (on change for file:// shares, every sync.interval otherwise).
"files status" shows how far behind each copy is; "files sync" runs one pass
now, or lists what it would copy and delete with --dry-run.`,
	}
	cmd.AddCommand(a.filesStatusCommand(), a.filesSyncCommand())
	return cmd
}

func (a *app) filesStatusCommand() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:     "status",
		Short:   "Show each files service's replication lag, per standby",
		Example: `  lifeboat files status --server http://127.0.0.1:7480`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(f)
			if err != nil {
				return err
			}
			var st api.StatusResponse
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/status", nil, &st); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SERVICE\tSTANDBY\tLAG\tPENDING\tBYTES\tLAST SUCCESS\tSTATE")
			n := 0
			for _, s := range st.Services {
				if s.Kind != config.KindFiles {
					continue
				}
				n++
				if len(s.Replication) == 0 {
					fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\tnot measured yet\n", s.Name)
				}
				for _, l := range s.Replication {
					state := "ok"
					if l.Broken {
						state = "broken: " + l.Reason
					}
					lag := "-"
					if l.SecondsKnown {
						lag = fmt.Sprintf("%.1fs", l.Seconds)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", s.Name, l.Region, lag, l.Objects, config.ByteSize(l.Bytes), orDash(l.Details["last_success"]), state)
				}
			}
			tw.Flush()
			if n == 0 {
				fmt.Fprintln(a.stdout, "no files service in this topology")
			}
			for _, e := range st.Exposure {
				if svc, ok := findService(st, e.Service); ok && svc == config.KindFiles {
					fmt.Fprintf(a.stdout, "exposure %s: %s (lag %.1fs against an RPO of %.0fs)\n", e.Service, e.Status, e.LagSeconds, e.RPOSeconds)
				}
			}
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

func findService(st api.StatusResponse, name string) (string, bool) {
	for _, s := range st.Services {
		if s.Name == name {
			return s.Kind, true
		}
	}
	return "", false
}

func (a *app) filesSyncCommand() *cobra.Command {
	var (
		cfgPath, from, to string
		dryRun, reverse   bool
		timeout           time.Duration
	)
	cmd := &cobra.Command{
		Use:   "sync SERVICE",
		Short: "Copy a files service from one region to another now",
		Long: `Sync runs one pass of the files service from --from (default: the configured
active region) to --to (default: every other region), or the other way with
--reverse (a failback's copy back). With --dry-run it lists what it would copy
and delete and changes nothing.`,
		Example: `  lifeboat files sync userfiles -c lifeboat.yaml --dry-run
  lifeboat files sync userfiles -c lifeboat.yaml --to west
  lifeboat files sync userfiles -c lifeboat.yaml --from west --to east`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig(cfgPath)
			if err != nil {
				return err
			}
			svc, ok := cfg.Service(args[0])
			if !ok || svc.Kind != config.KindFiles {
				return usageError{fmt.Errorf("%q is not a files service of %s", args[0], cfg.File())}
			}
			if from == "" {
				from = cfg.ActiveRegion()
			}
			if _, ok := svc.Endpoints[from]; !ok {
				return usageError{fmt.Errorf("--from %q: service %s has no endpoint there", from, svc.Name)}
			}
			var targets []string
			for _, r := range cfg.RegionsByPriority() {
				if _, ok := svc.Endpoints[r.Name]; ok && r.Name != from && (to == "" || to == r.Name) {
					targets = append(targets, r.Name)
				}
			}
			if len(targets) == 0 {
				return usageError{fmt.Errorf("--to %q: service %s has no other region with an endpoint", to, svc.Name)}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var failed error
			for _, t := range targets {
				src, dst := from, t
				if reverse {
					src, dst = t, from
				}
				if err := a.syncOnce(ctx, cfg, svc, src, dst, dryRun); err != nil {
					failed = errors.Join(failed, err)
				}
			}
			return failed
		},
	}
	configFlag(cmd, &cfgPath)
	cmd.Flags().StringVar(&from, "from", "", "the region to copy from (default: the configured active region)")
	cmd.Flags().StringVar(&to, "to", "", "the region to copy to (default: every other region)")
	cmd.Flags().BoolVar(&reverse, "reverse", false, "copy from --to back to --from")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be copied and deleted; change nothing")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Hour, "give up after this long")
	return cmd
}

func (a *app) syncOnce(ctx context.Context, cfg *config.Config, svc *config.Service, src, dst string, dryRun bool) error {
	opts := files.Options{Delete: svc.Sync.Delete, Concurrency: svc.Sync.Concurrency, DryRun: dryRun}
	s, err := files.OpenSyncer(ctx, svc.Endpoints[src], svc.Endpoints[dst], opts)
	if err != nil {
		return err
	}
	defer s.Close()
	rep, err := s.Sync(ctx)
	if err != nil {
		return err
	}
	verb := "copied"
	if dryRun {
		verb = "would copy"
		for _, k := range rep.ToCopy {
			fmt.Fprintf(a.stdout, "copy   %s\n", k)
		}
		for _, k := range rep.ToDelete {
			fmt.Fprintf(a.stdout, "delete %s\n", k)
		}
	}
	copied, deleted := rep.Copied, rep.Deleted
	if dryRun {
		copied, deleted = rep.PendingObjects, rep.PendingDeletes
	}
	fmt.Fprintf(a.stdout, "%s %s → %s: %s %d, delete %d, unchanged %d, in %s\n", svc.Name, src, dst, verb,
		copied, deleted, rep.Unchanged, rep.Finished.Sub(rep.Started).Round(time.Millisecond))
	if rep.DeletesWithheld != "" {
		fmt.Fprintf(a.stdout, "deletions withheld: %s\n", rep.DeletesWithheld)
	}
	for _, f := range rep.Failed {
		fmt.Fprintf(a.stdout, "FAILED %s (%s): %s\n", f.Key, f.Op, f.Err)
	}
	if len(rep.Failed) > 0 {
		return fmt.Errorf("%s %s → %s: %d objects not copied", svc.Name, src, dst, len(rep.Failed))
	}
	return nil
}
