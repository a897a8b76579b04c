package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/api"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/drill"
	"github.com/lifeboat-dr/lifeboat/lab"
	"github.com/lifeboat-dr/lifeboat/runbook"
)

type drillFlags struct {
	clientFlags
	dryRun, asJSON, yes bool
	to                  string
	runs                int
	waitTimeout         time.Duration
}

func (a *app) drillCommand() *cobra.Command {
	var f drillFlags
	cmd := &cobra.Command{
		Use:   "drill SCENARIO | --dry-run",
		Short: "Run a drill against a running topology and measure it, or rehearse one (--dry-run)",
		Long: `Drill SCENARIO runs a drill against the topology a node serves, while a workload
writes through the writer endpoint of drills.workload.service, and measures what
lifeboat lab drill measures: time to detect, time to recover (first write
acknowledged by the new primary), client errors and their window, acknowledged
writes lost, the loss predicted just before the fault, split-brain violations
over the whole write history, each step's duration. The measurements are
attached to the run, whose DR report is written again with them (lifeboat
report RUN_ID).

Scenarios: ` + strings.Join(config.DrillScenarios(), ", ") + `.
switchover and failback are planned moves the drill starts itself. The others
inject a real fault with the command of drills.scenarios.SCENARIO.inject (run
with sh -c, LIFEBOAT_SCENARIO, LIFEBOAT_FROM and LIFEBOAT_TO set), wait for the
failover the leader raises (replication-lag: for the lag gate to refuse it),
then run drills.scenarios.SCENARIO.restore, also when the drill fails. They
need --yes. A drill does not move the topology back: after a switchover the
standby stays active, after a fault the old region stays fenced until a
failback. Point --server at a node outside the region the fault hits.

lifeboat serve runs the drills of drills.schedule itself, on the leader, at
their cron times (UTC unless CRON_TZ=...); a scheduled drill that injects a
fault needs allow_faults: true, and is refused when the fault would hit the
leader's own region (cluster.peers).

Drill --dry-run is a rehearsal that changes nothing: each standby's readiness,
each data service's exposure, the failover plan to --to (default: the first
ready standby) and its pre-checks.`,
		Example: `  lifeboat drill switchover -c lifeboat.yaml --json
  lifeboat drill db-crash -c lifeboat.yaml --server http://10.0.2.5:7480 --yes
  lifeboat drill region-outage -c lifeboat.yaml --runs 3 --yes
  lifeboat drill --dry-run --server http://127.0.0.1:7480`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageError{errUnexpectedArgs(cmd, args[1:])}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case f.dryRun && len(args) > 0:
				return usageError{fmt.Errorf("--dry-run rehearses a failover and takes no SCENARIO (%q)", args[0])}
			case f.dryRun:
				return a.drillDryRun(cmd.Context(), f)
			case len(args) == 0:
				return usageError{fmt.Errorf("name a SCENARIO (%s) or give --dry-run: without a scenario, only --dry-run drills run against a live topology", strings.Join(config.DrillScenarios(), ", "))}
			}
			return a.drill(cmd.Context(), f, args[0])
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "rehearse: readiness, exposure, the failover plan and its pre-checks; change nothing")
	cmd.Flags().StringVar(&f.to, "to", "", "the region expected to take over (default: the first ready standby; failback: the configured active region)")
	cmd.Flags().IntVar(&f.runs, "runs", 1, "how many times to run the drill")
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print the measurements as JSON")
	cmd.Flags().BoolVar(&f.yes, "yes", false, "confirm a drill that injects a real fault (every scenario but switchover and failback)")
	cmd.Flags().DurationVar(&f.waitTimeout, "wait-timeout", 30*time.Minute, "how long to wait for the drill's run to end (a manual policy waits for lifeboat approve)")
	return cmd
}

// drill runs a scenario --runs times and prints the measurements as lab
// drill does.
func (a *app) drill(ctx context.Context, f drillFlags, scenario string) error {
	if !slices.Contains(config.DrillScenarios(), scenario) {
		return usageError{fmt.Errorf("scenario %q is not one of %s", scenario, strings.Join(config.DrillScenarios(), ", "))}
	}
	if f.runs < 1 || f.runs > 1000 {
		return usageError{fmt.Errorf("--runs %d: use 1 to 1000", f.runs)}
	}
	planned := config.PlannedDrill(scenario)
	if !planned && !f.yes {
		return usageError{fmt.Errorf("%s injects a real fault into the topology (the command of drills.scenarios.%s.inject) and waits for a failover: add --yes to go ahead", scenario, scenario)}
	}
	if f.config == "" {
		return usageError{errors.New("-c/--config is required: the drill reads its workload and fault commands from the topology file's drills section")}
	}
	cfg, err := a.loadConfig(f.config)
	if err != nil {
		return err
	}
	if cfg.Drills == nil {
		return usageError{fmt.Errorf("%s has no drills section: add drills.workload.service (a postgres service with a writer endpoint) and, for faults, drills.scenarios", f.config)}
	}
	if sc := cfg.Drills.Scenarios[scenario]; !planned && (sc == nil || sc.Inject == "") {
		return usageError{fmt.Errorf("%s: drills.scenarios.%s is not configured: add its inject and restore commands", f.config, scenario)}
	}
	c, err := a.client(f.clientFlags)
	if err != nil {
		return err
	}
	if c.token == "" {
		c.token = cfg.Drills.Token.Value()
	}
	runner := &drill.Runner{API: drill.APIFunc(c.do), Config: cfg, To: f.to, RunTimeout: f.waitTimeout,
		Progress: func(msg string) { fmt.Fprintln(a.stderr, msg) }}
	var results []*lab.DrillResult
	var failed error
	for i := 0; i < f.runs; i++ {
		out, err := runner.Run(ctx, scenario)
		if out != nil {
			res := out
			results = append(results, res)
			if !f.asJSON {
				printDrill(a.stdout, i+1, res)
				if res.RunID != "" {
					fmt.Fprintf(a.stdout, "  report: lifeboat report %s\n", res.RunID)
				}
			}
		}
		if err != nil {
			failed = fmt.Errorf("run %d: %w", i+1, err)
			break
		}
	}
	printDrillRuns(a.stdout, results, f.runs, f.asJSON)
	return failed
}

// printDrillRuns ends the output of drills run times: as JSON, the one
// result or every result and their summary; as text, the summary of
// several. (lab drill prints the same.)
func printDrillRuns(w io.Writer, results []*lab.DrillResult, runs int, asJSON bool) {
	switch {
	case asJSON && len(results) > 0:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if runs == 1 {
			enc.Encode(results[0])
		} else {
			enc.Encode(drillSummary(results))
		}
	case !asJSON && len(results) > 1:
		s := drillSummary(results)
		fmt.Fprintf(w, "\n%d runs: detect %s, recover %s, writes lost %d in all, split-brain violations %d\n",
			len(results), fmtSummary(s.Summary["detect_seconds"]), fmtSummary(s.Summary["recover_seconds"]), s.TotalLost, s.TotalViolations)
	}
}

// drillDryRun rehearses a failover: readiness, exposure, the plan and its
// pre-checks.
func (a *app) drillDryRun(ctx context.Context, f drillFlags) error {
	c, err := a.client(f.clientFlags)
	if err != nil {
		return err
	}
	var st api.StatusResponse
	if err := c.do(ctx, http.MethodGet, "/api/v1/status", nil, &st); err != nil {
		return err
	}
	to := f.to
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
	if err := c.do(ctx, http.MethodPost, "/api/v1/runs", api.RunRequest{Kind: runbook.KindFailover, To: to, DryRun: true}, &dr); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "\n%s\n", dr.Text)
	return printChecks(a.stdout, dr.Checks)
}

// drillScheduler is the scheduler of the configuration's drills.schedule
// that serve opens once its API listens at apiURL: on the leader, each
// drill runs through this node's own API, with drills.token. An unplanned
// drill whose fault would hit the region of node (cluster.peers) is
// refused: the node could not restore it.
func drillScheduler(cfg *config.Config, node, apiURL string, leading func() bool, record func(control.Event), logger *slog.Logger) *drill.Scheduler {
	var entries []config.DrillSchedule
	if cfg.Drills != nil {
		entries = cfg.Drills.Schedule
	}
	home := ""
	for _, p := range cfg.Cluster.Peers {
		if p.Name == node {
			home = p.Region
		}
	}
	s, err := drill.NewScheduler(drill.SchedulerOptions{Schedule: entries, Leading: leading, Record: record, Logger: logger,
		Run: func(ctx context.Context, e config.DrillSchedule) (*drill.Outcome, error) {
			c, err := ownAPI(cfg, apiURL)
			if err != nil {
				return nil, err
			}
			defer c.http.CloseIdleConnections()
			r := &drill.Runner{API: drill.APIFunc(c.do), Config: cfg, Home: home,
				Progress: func(msg string) { logger.Info("scheduled drill", "scenario", e.Scenario, "progress", msg) }}
			return r.Run(ctx, e.Scenario)
		}})
	if err != nil {
		// Validate parsed every expression already.
		logger.Error("scheduled drills disabled", "err", err)
		s, _ = drill.NewScheduler(drill.SchedulerOptions{})
	}
	return s
}

// ownAPI is a client of this node's API at apiURL (an unspecified host
// is reached on loopback). Over TLS it trusts exactly the node's own
// certificate, and presents it when api.tls requires client certificates.
func ownAPI(cfg *config.Config, apiURL string) (*apiClient, error) {
	u, err := url.Parse(apiURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("drill: the API's URL %q", apiURL)
	}
	if host, port, err := net.SplitHostPort(u.Host); err == nil {
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			u.Host = net.JoinHostPort("127.0.0.1", port)
		}
	}
	c := &apiClient{base: strings.TrimSuffix(u.String(), "/"), http: &http.Client{Timeout: 30 * time.Second}}
	if cfg.Drills != nil {
		c.token = cfg.Drills.Token.Value()
	}
	if u.Scheme == "https" {
		cert, err := tls.LoadX509KeyPair(cfg.API.TLS.Cert, cfg.API.TLS.Key)
		if err != nil {
			return nil, fmt.Errorf("drill: api.tls: %w", err)
		}
		conf := &tls.Config{MinVersion: tls.VersionTLS12,
			// The peer is this process: its certificate is pinned, not
			// checked against a name (the API may listen on an address
			// its certificate does not name).
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, cert.Certificate[0]) {
					return errors.New("the API answered with a certificate that is not api.tls.cert")
				}
				return nil
			}}
		if cfg.API.TLS.CA != "" {
			conf.Certificates = []tls.Certificate{cert}
		}
		c.http.Transport = &http.Transport{TLSClientConfig: conf}
	}
	return c, nil
}
