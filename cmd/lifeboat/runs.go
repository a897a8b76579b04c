package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/api"
	"github.com/lifeboat-dr/lifeboat/runbook"
)

// clientFlags are the options of every command that calls the API.
type clientFlags struct {
	server, config, token string
}

func (f *clientFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.server, "server", "", "URL of a node's API (default: from -c, else http://127.0.0.1:7480)")
	cmd.Flags().StringVarP(&f.config, "config", "c", "", "topology file whose api.listen names the node")
	cmd.Flags().StringVar(&f.token, "token", "", "API bearer token (default: $LIFEBOAT_TOKEN)")
}

// apiClient calls a node's API.
type apiClient struct {
	base, token string
	http        *http.Client
}

func (a *app) client(f clientFlags) (*apiClient, error) {
	base, err := a.statusServer(f.server, f.config)
	if err != nil {
		return nil, err
	}
	tok := f.token
	if tok == "" {
		tok, _ = a.env("LIFEBOAT_TOKEN")
	}
	return &apiClient{base: base, token: tok, http: &http.Client{Timeout: 30 * time.Second}}, nil
}

func (a *app) env(k string) (string, bool) {
	if a.lookupEnv != nil {
		return a.lookupEnv(k)
	}
	return os.LookupEnv(k)
}

// do sends body (JSON) and decodes the answer into out; an error answer
// becomes an error with the API's message.
func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("no answer from %s (is lifeboat serve running?): %w", c.base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e api.Error
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s: %s", resp.Status, e.Error)
		}
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(raw)))
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

type runFlags struct {
	clientFlags
	to          string
	dryRun      bool
	force, yes  bool
	noWait      bool
	reason      string
	waitTimeout time.Duration
}

// runCommand makes failover, switchover and failback.
func (a *app) runCommand(kind, short, long, example string) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:     kind,
		Short:   short,
		Long:    long,
		Example: example,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if kind != runbook.KindFailback && f.to == "" {
				return usageError{errors.New("--to: the region to make active is required")}
			}
			if kind == runbook.KindFailover && !f.yes && !f.dryRun {
				return usageError{errors.New("a failover promotes a standby and fences the active region: add --yes to go ahead, or --dry-run to see the plan")}
			}
			c, err := a.client(f.clientFlags)
			if err != nil {
				return err
			}
			req := api.RunRequest{Kind: kind, To: f.to, Force: f.force, DryRun: f.dryRun, Reason: f.reason}
			ctx := cmd.Context()
			if f.dryRun {
				var dr api.DryRunResponse
				if err := c.do(ctx, http.MethodPost, "/api/v1/runs", req, &dr); err != nil {
					return err
				}
				fmt.Fprint(a.stdout, dr.Text)
				fmt.Fprintln(a.stdout)
				return printChecks(a.stdout, dr.Checks)
			}
			var run runbook.Run
			if err := c.do(ctx, http.MethodPost, "/api/v1/runs", req, &run); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "run %s: %s %s → %s\n", run.ID, run.Kind, run.From, run.To)
			if f.noWait {
				return nil
			}
			return a.follow(ctx, c, run.ID, f.waitTimeout)
		},
	}
	f.add(cmd)
	if kind != runbook.KindFailback {
		cmd.Flags().StringVar(&f.to, "to", "", "the region to make active")
	} else {
		cmd.Flags().StringVar(&f.to, "to", "", "the region to move back to (default: the configured active region)")
	}
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "print the plan and run the pre-checks; change nothing")
	cmd.Flags().BoolVar(&f.noWait, "no-wait", false, "print the run id and return at once")
	cmd.Flags().StringVar(&f.reason, "reason", "", "why, recorded with the run")
	cmd.Flags().DurationVar(&f.waitTimeout, "wait-timeout", 30*time.Minute, "how long to wait for the run to end")
	if kind == runbook.KindFailover {
		cmd.Flags().BoolVar(&f.force, "force", false, "proceed even when the target is not ready (its lag over max_lag_on_failover); the run records the estimated loss")
		cmd.Flags().BoolVar(&f.yes, "yes", false, "confirm the failover")
	}
	return cmd
}

// printChecks prints a dry run's pre-checks; an error says how many failed.
func printChecks(w io.Writer, checks []runbook.Check) error {
	fmt.Fprintln(w, "pre-checks (nothing was changed):")
	failed := 0
	for _, ch := range checks {
		mark := "ok  "
		if !ch.OK {
			mark = "FAIL"
			failed++
		}
		fmt.Fprintf(w, "  %s %s: %s\n", mark, ch.What, ch.Detail)
	}
	if failed > 0 {
		return fmt.Errorf("%d pre-check(s) failed", failed)
	}
	return nil
}

// follow prints a run's steps as they end, until the run ends.
func (a *app) follow(ctx context.Context, c *apiClient, id string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	printed := map[string]string{}
	for {
		var run runbook.Run
		err := c.do(ctx, http.MethodGet, "/api/v1/runs/"+id, nil, &run)
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("run %s did not end within %s (it goes on; see lifeboat runs show %s)", id, limit, id)
		}
		if err == nil {
			for _, s := range run.Steps {
				if printed[s.Name] == s.Status || s.Status == runbook.StatusPending || s.Status == runbook.StatusRunning {
					continue
				}
				printed[s.Name] = s.Status
				fmt.Fprintf(a.stdout, "  %-16s %-28s %s\n", s.Status, s.Name, stepDetail(s))
			}
			if runbook.Terminal(run.Status) {
				fmt.Fprintf(a.stdout, "run %s %s in %s (epoch %d)\n", run.ID, run.Status, run.FinishedAt.Sub(run.StartedAt).Round(time.Millisecond), run.Epoch)
				if run.Status != runbook.StatusSucceeded {
					return fmt.Errorf("run %s %s: %s", run.ID, run.Status, run.Error)
				}
				return nil
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func stepDetail(s *runbook.StepRun) string {
	d := ""
	if !s.FinishedAt.IsZero() && !s.StartedAt.IsZero() {
		d = s.FinishedAt.Sub(s.StartedAt).Round(time.Millisecond).String() + " "
	}
	if s.Error != "" {
		return d + s.Error
	}
	if s.Status == runbook.StatusWaitingApproval {
		return "needs the approval of a " + s.Approve + " (lifeboat approve)"
	}
	return d + s.Output
}

func (a *app) runsCommand() *cobra.Command {
	var f clientFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "runs",
		Short: "List failover, switchover and failback runs, newest first",
		Long: `Runs lists the cluster's runs, newest first: id, kind, status, regions, epoch
and duration. "runs show ID" prints one run's timeline.`,
		Example: `  lifeboat runs
  lifeboat runs --json
  lifeboat runs show 20261122-060102.123-a1b2c3 --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(f)
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/runs", nil, &raw); err != nil {
				return err
			}
			if asJSON {
				fmt.Fprintln(a.stdout, string(raw))
				return nil
			}
			var runs []*runbook.Run
			if err := json.Unmarshal(raw, &runs); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tKIND\tSTATUS\tFROM\tTO\tEPOCH\tTRIGGER\tDURATION")
			for _, r := range runs {
				d := "-"
				if !r.FinishedAt.IsZero() {
					d = r.FinishedAt.Sub(r.StartedAt).Round(time.Millisecond).String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.ID, r.Kind, r.Status, r.From, r.To, r.Epoch, r.Trigger, d)
			}
			return tw.Flush()
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the runs as JSON")
	cmd.AddCommand(a.runsShowCommand())
	return cmd
}

func (a *app) runsShowCommand() *cobra.Command {
	var f clientFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "show ID",
		Short:   "Print one run's timeline",
		Example: `  lifeboat runs show 20261122-060102.123-a1b2c3`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(f)
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/runs/"+args[0], nil, &raw); err != nil {
				return err
			}
			if asJSON {
				fmt.Fprintln(a.stdout, string(raw))
				return nil
			}
			var r runbook.Run
			if err := json.Unmarshal(raw, &r); err != nil {
				return err
			}
			printRun(a.stdout, &r)
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the run as JSON")
	return cmd
}

func printRun(w io.Writer, r *runbook.Run) {
	fmt.Fprintf(w, "run %s: %s %s → %s, %s (trigger %s", r.ID, r.Kind, r.From, r.To, r.Status, r.Trigger)
	if r.By != "" {
		fmt.Fprintf(w, ", by %s", r.By)
	}
	fmt.Fprintf(w, ")\nepoch %d → %d", r.StartEpoch, r.Epoch)
	if r.Forced {
		fmt.Fprintf(w, ", FORCED (estimated loss up to %d bytes)", r.EstimatedLossBytes)
	}
	fmt.Fprintln(w)
	if r.Reason != "" {
		fmt.Fprintf(w, "reason: %s\n", r.Reason)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tSTEP\tACTION\tSTATUS\tSTART\tDURATION\tRESULT")
	for _, s := range r.Steps {
		start, d := "-", "-"
		if !s.StartedAt.IsZero() {
			start = "+" + s.StartedAt.Sub(r.StartedAt).Round(time.Millisecond).String()
			if !s.FinishedAt.IsZero() {
				d = s.FinishedAt.Sub(s.StartedAt).Round(time.Millisecond).String()
			}
		}
		res := s.Output
		if s.Error != "" {
			res = s.Error
		}
		if s.ApprovedBy != "" {
			res = "approved by " + s.ApprovedBy + "; " + res
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Groups[s.Group], s.Name, s.Action, s.Status, start, d, res)
	}
	for _, s := range r.Rollback {
		fmt.Fprintf(tw, "rollback\t%s\t%s\t%s\t-\t%s\t%s\n", s.Name, s.Action, s.Status, s.FinishedAt.Sub(s.StartedAt).Round(time.Millisecond), s.Output+s.Error)
	}
	tw.Flush()
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "error: %s\n", r.Error)
	}
}

func (a *app) approveCommand() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "approve RUN [STEP]",
		Short: "Approve a run's step that waits for approval",
		Long: `Approve records the approval of a gated step (by the token's name and role)
so the run goes on. Without STEP, the step waiting for approval is approved.`,
		Example: `  LIFEBOAT_TOKEN=... lifeboat approve 20261122-060102.123-a1b2c3
  lifeboat approve 20261122-060102.123-a1b2c3 hold --token "$OPS_TOKEN"`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(f)
			if err != nil {
				return err
			}
			req := api.ApproveRequest{}
			if len(args) == 2 {
				req.Step = args[1]
			}
			var out map[string]any
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/runs/"+args[0]+"/approve", req, &out); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "approved step %v of run %s as %v\n", out["step"], args[0], out["approved_by"])
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

func (a *app) cancelCommand() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "cancel RUN",
		Short: "Cancel a run that has not switched its epoch yet",
		Long: `Cancel asks the leader to stop a run before its next group of steps (or while
it waits for an approval) and to undo what can be undone: the hold is released,
fences are lifted. A run that has committed its new epoch cannot be cancelled:
undoing its fence then could give the old region writes again; let it finish
and fail back.`,
		Example: `  lifeboat cancel 20261122-060102.123-a1b2c3 --token "$OPS_TOKEN"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(f)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/runs/"+url.PathEscape(args[0])+"/cancel", nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "run %s: cancel requested (see lifeboat runs show %s)\n", args[0], args[0])
			return nil
		},
	}
	f.add(cmd)
	return cmd
}
