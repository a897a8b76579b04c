package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/lab"
	labapp "github.com/lifeboat-dr/lifeboat/lab/app"
)

func (a *app) labCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "A real multi-region lab on this machine, and drills against it",
		Long: `Lab starts, on this machine, a lab shaped like a real deployment: per region a
PostgreSQL server (primary in east, a streaming standby in west), a Redis
(primary / replica), a file share, the sample application and a Lifeboat
node; the third region is a witness with only a Lifeboat node.

Regions are network namespaces joined by a bridge, with netem latency between
them (--net netns: root). Without root, or without netem when latency is
asked, each region is a loopback address and every connection from one
region to another crosses a fault proxy (toxiproxy) that carries the latency
and the cuts (--net loopback: no privilege needed).`,
		Example: `  sudo lifeboat lab up --latency 80ms --sync
  lifeboat lab up --net loopback --latency 80ms --sync
  lifeboat lab drill region-outage --runs 5
  lifeboat lab down`,
	}
	cmd.AddCommand(a.labUpCommand(), a.labStatusCommand(), a.labDownCommand(), a.labAppCommand(), a.labDrillCommand(), a.labLinksCommand())
	return cmd
}

func labDirFlag(cmd *cobra.Command, dir *string) {
	cmd.Flags().StringVar(dir, "dir", lab.DefaultDir, "where the lab keeps its state")
}

func (a *app) labUpCommand() *cobra.Command {
	var (
		dir       string
		regions   int
		latency   time.Duration
		sync      bool
		async     bool
		pgBin     string
		logFormat string
		binary    string
		network   string
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start the lab",
		Example: `  sudo lifeboat lab up
  sudo lifeboat lab up --regions 2 --latency 20ms --async`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if sync && async {
				return usageError{fmt.Errorf("--sync and --async exclude each other")}
			}
			if regions != 2 && regions != 3 {
				return usageError{fmt.Errorf("--regions %d: use 2 or 3", regions)}
			}
			if latency < 0 || latency > 2*time.Second {
				return usageError{fmt.Errorf("--latency %s: use 0 to 2s", latency)}
			}
			if network != "auto" && network != lab.NetNS && network != lab.NetLoopback {
				return usageError{fmt.Errorf("--net %q: use auto, %s or %s", network, lab.NetNS, lab.NetLoopback)}
			}
			if network == "auto" {
				network = ""
			}
			bin := binary
			if bin == "" {
				var err error
				if bin, err = os.Executable(); err != nil {
					return err
				}
			}
			logger, err := a.logger("info", logFormat)
			if err != nil {
				return err
			}
			start := time.Now()
			l, err := lab.Up(cmd.Context(), lab.Options{Dir: dir, Regions: regions, Latency: latency, Sync: sync, Net: network, Binary: bin, PGBin: pgBin, Logger: logger})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "lab %s up in %s (%s replication, %s between regions, network: %s)\n", l.ID, time.Since(start).Round(time.Millisecond), replMode(l.Sync), time.Duration(l.LatencyMS)*time.Millisecond, l.Net)
			printLab(a.stdout, l)
			for _, n := range l.Notes {
				fmt.Fprintf(a.stdout, "note: %s\n", n)
			}
			return nil
		},
	}
	labDirFlag(cmd, &dir)
	cmd.Flags().IntVar(&regions, "regions", 3, "2 (east, west; one Lifeboat node outside both) or 3 (east, west and a witness)")
	cmd.Flags().DurationVar(&latency, "latency", 80*time.Millisecond, "round trip between two regions")
	cmd.Flags().BoolVar(&sync, "sync", false, "synchronous replication (no acknowledged write lost)")
	cmd.Flags().BoolVar(&async, "async", false, "asynchronous replication (the default)")
	cmd.Flags().StringVar(&network, "net", "auto", "how regions are separated: netns (namespaces, root), loopback (addresses and fault proxies) or auto")
	cmd.Flags().StringVar(&pgBin, "pg-bin", "/usr/lib/postgresql/15/bin", "PostgreSQL 15 programs")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "text or json")
	cmd.Flags().StringVar(&binary, "binary", "", "the lifeboat program the lab's processes run (default: this one)")
	cmd.Flags().MarkHidden("binary")
	return cmd
}

func replMode(sync bool) string {
	if sync {
		return "sync"
	}
	return "async"
}

func printLab(w interface{ Write([]byte) (int, error) }, l *lab.Lab) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tROLE\tADDRESS\tNAMESPACE")
	for _, r := range l.Regions {
		ns := r.NS
		if ns == "" {
			ns = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, r.Role, r.IP, ns)
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, n := range l.Nodes {
		fmt.Fprintf(w, "node %-8s api/dashboard %s\n", n.Name, n.APIURL())
	}
	last := l.Nodes[len(l.Nodes)-1]
	fmt.Fprintf(w, "front door     %s (Host: %s)\n", l.FrontDoor(), lab.AppHost)
	fmt.Fprintf(w, "dns            dig @%s -p %d app.lab\n", last.IP, lab.PortDNS)
	fmt.Fprintf(w, "writer         %s:%d (Postgres; password in %s/lab.json)\n", last.IP, lab.PortWriter, l.Dir)
	fmt.Fprintf(w, "api token      in %s/lab.json (\"token\"; role admin): export LIFEBOAT_TOKEN=$(jq -r .token %s/lab.json)\n", l.Dir, l.Dir)
	fmt.Fprintf(w, "config         %s (each node's: %s/lifeboat-NODE.yaml)\n", l.Config, l.Dir)
	fmt.Fprintf(w, "logs           %s/logs\n", l.Dir)
}

func (a *app) labStatusCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:     "status",
		Short:   "Show the lab and what each node sees",
		Example: `  sudo lifeboat lab status`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lab.Load(dir)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "lab %s (%s replication, %dms between regions), up since %s\n", l.ID, replMode(l.Sync), l.LatencyMS, l.Created.Format(time.RFC3339))
			printLab(a.stdout, l)
			fmt.Fprintln(a.stdout)
			for _, n := range l.Nodes {
				ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
				st, err := l.NodeStatus(ctx, n)
				cancel()
				if err != nil {
					fmt.Fprintf(a.stdout, "node %s: no answer: %v\n", n.Name, err)
					continue
				}
				var regions []string
				for _, r := range st.Regions {
					regions = append(regions, fmt.Sprintf("%s %s", r.Name, r.State))
				}
				leader := ""
				epoch := uint64(0)
				if st.Control != nil {
					leader = st.Control.Leader
				}
				writer := ""
				if st.Traffic != nil {
					epoch = st.Traffic.State.Epoch
					for _, p := range st.Traffic.Postgres {
						if p.Role != "writer" {
							continue
						}
						if p.NAT {
							writer = "; writer endpoint: kernel NAT"
						} else {
							writer = "; writer endpoint: relay"
							if p.NATOff != "" {
								writer += " (" + p.NATOff + ")"
							}
						}
					}
				}
				fmt.Fprintf(a.stdout, "node %s: active %s, epoch %d, leader %s; %s%s\n", n.Name, st.ActiveRegion, epoch, leader, strings.Join(regions, ", "), writer)
			}
			return nil
		},
	}
	labDirFlag(cmd, &dir)
	return cmd
}

func (a *app) labDownCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:     "down",
		Short:   "Stop the lab and remove everything it made",
		Example: `  sudo lifeboat lab down --dir /tmp/lifeboat-lab`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lab.Load(dir)
			if err != nil {
				return err
			}
			if err := l.Down(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "lab %s down: processes stopped, namespaces and links deleted, %s removed\n", l.ID, dir)
			return nil
		},
	}
	labDirFlag(cmd, &dir)
	return cmd
}

func (a *app) labLinksCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:     "links",
		Short:   "Run a loopback lab's fault proxies (started by lab up)",
		Example: `  lifeboat lab links --dir /tmp/lifeboat-lab`,
		Hidden:  true,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return lab.ServeLinks(dir)
		},
	}
	labDirFlag(cmd, &dir)
	return cmd
}

func (a *app) labAppCommand() *cobra.Command {
	var listen, region, db string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:     "app",
		Short:   "Run the lab's sample application (started by lab up in each region)",
		Hidden:  true,
		Example: `  LAB_PASSWORD=... lifeboat lab app --listen 10.100.20.1:8080 --region east --db 127.0.0.1:6432`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, _ := a.env("LAB_PASSWORD")
			if listen == "" || region == "" || db == "" {
				return usageError{fmt.Errorf("--listen, --region and --db are required")}
			}
			logger, err := a.logger("info", "json")
			if err != nil {
				return err
			}
			dsn := fmt.Sprintf("postgres://lifeboat:%s@%s/lab?sslmode=disable", url.QueryEscape(pw), db)
			return labapp.Run(cmd.Context(), labapp.Config{Listen: listen, Region: region, DSN: dsn, Logger: logger, Timeout: timeout})
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "host:port to serve on")
	cmd.Flags().StringVar(&region, "region", "", "this instance's region")
	cmd.Flags().StringVar(&db, "db", "", "host:port of the Postgres writer endpoint (password from $LAB_PASSWORD)")
	cmd.Flags().DurationVar(&timeout, "timeout", 6*time.Second, "database time per request: longer than a switchover's hold (at most 5s), so held requests wait instead of failing")
	return cmd
}

func (a *app) labDrillCommand() *cobra.Command {
	var (
		dir    string
		runs   int
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "drill SCENARIO",
		Short: "Run a drill in the lab and measure detection, recovery, errors and loss",
		Long: `Drill injects a fault in the lab's active region (or runs a planned move) while a
workload writes through the global endpoint, and measures from recorded
timestamps: time to detect, time to recover (first write acknowledged by the
new primary), client errors and their window, acknowledged writes lost, the
loss Lifeboat predicted just before the fault, and split-brain violations over
the whole write history. After each run the lab is put back (failback).

Scenarios: ` + strings.Join(lab.Scenarios(), ", ") + `.`,
		Example: `  sudo lifeboat lab drill region-outage
  sudo lifeboat lab drill switchover --runs 5 --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runs < 1 || runs > 1000 {
				return usageError{fmt.Errorf("--runs %d: use 1 to 1000", runs)}
			}
			if !slices.Contains(lab.Scenarios(), args[0]) {
				return usageError{fmt.Errorf("scenario %q is not one of %s", args[0], strings.Join(lab.Scenarios(), ", "))}
			}
			l, err := lab.Load(dir)
			if err != nil {
				return err
			}
			var results []*lab.DrillResult
			var failed error
			for i := 0; i < runs; i++ {
				res, err := l.Drill(cmd.Context(), args[0])
				if res != nil {
					results = append(results, res)
					if !asJSON {
						printDrill(a.stdout, i+1, res)
					}
				}
				if err != nil {
					failed = fmt.Errorf("run %d: %w", i+1, err)
					break
				}
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if runs == 1 && len(results) == 1 {
					enc.Encode(results[0])
				} else {
					enc.Encode(drillSummary(results))
				}
			} else if len(results) > 1 {
				s := drillSummary(results)
				fmt.Fprintf(a.stdout, "\n%d runs: detect %s, recover %s, writes lost %d in all, split-brain violations %d\n",
					len(results), fmtSummary(s.Summary["detect_seconds"]), fmtSummary(s.Summary["recover_seconds"]), s.TotalLost, s.TotalViolations)
			}
			return failed
		},
	}
	labDirFlag(cmd, &dir)
	cmd.Flags().IntVar(&runs, "runs", 1, "how many times to run the drill")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the measurements as JSON")
	return cmd
}

// drillRuns is the JSON of several runs.
type drillRuns struct {
	Runs            []*lab.DrillResult     `json:"runs"`
	Summary         map[string]lab.Summary `json:"summary"`
	TotalLost       int                    `json:"writes_lost_total"`
	TotalViolations int                    `json:"split_brain_violations_total"`
}

func drillSummary(results []*lab.DrillResult) drillRuns {
	out := drillRuns{Runs: results, Summary: map[string]lab.Summary{}}
	var detect, recover, window []*float64
	for _, r := range results {
		detect = append(detect, r.DetectSeconds)
		recover = append(recover, r.RecoverSeconds)
		window = append(window, r.ErrorWindowSeconds)
		if r.WritesLost != nil {
			out.TotalLost += *r.WritesLost
		}
		if r.SplitBrainViolations != nil {
			out.TotalViolations += *r.SplitBrainViolations
		}
	}
	out.Summary["detect_seconds"] = lab.Summarize(detect)
	out.Summary["recover_seconds"] = lab.Summarize(recover)
	out.Summary["error_window_seconds"] = lab.Summarize(window)
	return out
}

func fmtSummary(s lab.Summary) string {
	if s.Median == nil {
		return "not measured"
	}
	return fmt.Sprintf("median %.2fs p95 %.2fs max %.2fs", *s.Median, *s.P95, *s.Max)
}

func fmtSeconds(v *float64) string {
	if v == nil {
		return "not measured"
	}
	return fmt.Sprintf("%.2fs", *v)
}

func fmtInt(v *int) string {
	if v == nil {
		return "not measured"
	}
	return strconv.Itoa(*v)
}

func printDrill(w io.Writer, n int, r *lab.DrillResult) {
	fmt.Fprintf(w, "drill %d: %s (%s replication) %s → %s, run %s %s\n", n, r.Scenario, r.Replication, r.From, r.To, r.RunID, r.RunbookStatus)
	fmt.Fprintf(w, "  detect %s, recover %s, client errors %d (window %s)\n", fmtSeconds(r.DetectSeconds), fmtSeconds(r.RecoverSeconds), r.ClientErrors, fmtSeconds(r.ErrorWindowSeconds))
	fmt.Fprintf(w, "  writes acknowledged %d, lost %s (predicted loss %s), split-brain violations %s\n", r.WritesAcked, fmtInt(r.WritesLost), fmtSeconds(r.PredictedLossSeconds), fmtInt(r.SplitBrainViolations))
	for _, v := range r.Violations {
		fmt.Fprintf(w, "  VIOLATION %s\n", v)
	}
	if r.Report != nil && !strings.HasPrefix(*r.Report, "/api/") {
		fmt.Fprintf(w, "  report: %s\n", *r.Report)
	}
	for _, note := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", note)
	}
}
