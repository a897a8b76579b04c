package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/api"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/dashboard"
	"github.com/lifeboat-dr/lifeboat/dataplane"
	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/kube"
	"github.com/lifeboat-dr/lifeboat/llm"
	"github.com/lifeboat-dr/lifeboat/notify"
	"github.com/lifeboat-dr/lifeboat/observe"
	"github.com/lifeboat-dr/lifeboat/replication"
	"github.com/lifeboat-dr/lifeboat/report"
	"github.com/lifeboat-dr/lifeboat/runbook"
	"github.com/lifeboat-dr/lifeboat/traffic"
)

type serveFlags struct {
	config    string
	dataDir   string
	etcd      []string
	etcdCA    string
	etcdCert  string
	etcdKey   string
	etcdLog   string
	node      string
	listen    string
	logLevel  string
	logFormat string
}

func (a *app) serveCommand() *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a node: probes, replication monitors, DNS, HTTP proxy, Postgres endpoints, API",
		Long: `Serve runs a Lifeboat node for the topology: it probes every service endpoint
in every region, measures replication lag and exposure of the data services,
judges each region's state and each standby's readiness, and serves them at
GET /api/v1/status, with Prometheus metrics at /metrics and /healthz.

It also runs the data plane of the traffic section: the authoritative DNS
server (traffic.dns), the HTTP front door (traffic.http) and the Postgres
writer/reader endpoints (traffic.postgres). The status shows where each
record, route and endpoint sends traffic now.

It runs until interrupted (SIGINT or SIGTERM), then stops its probes and
closes its connections.`,
		Example: `  DB_PASSWORD=secret lifeboat serve -c examples/minimal.yaml --node east-1
  lifeboat serve -c lifeboat.yaml --listen 127.0.0.1:0 --log-format json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.serve(cmd.Context(), f)
		},
	}
	configFlag(cmd, &f.config)
	host, _ := os.Hostname()
	cmd.Flags().StringVar(&f.node, "node", host, "this node's name, carried by every observation")
	cmd.Flags().StringVar(&f.listen, "listen", "", "API listen address (default: api.listen from the config)")
	cmd.Flags().StringVar(&f.dataDir, "data-dir", "lifeboat-data", "where the embedded etcd member keeps the state")
	cmd.Flags().StringSliceVar(&f.etcd, "etcd-endpoints", nil, "use this etcd cluster instead of an embedded member (comma-separated URLs)")
	cmd.Flags().StringVar(&f.etcdCA, "etcd-cacert", "", "CA certificate to verify the etcd cluster's TLS")
	cmd.Flags().StringVar(&f.etcdCert, "etcd-cert", "", "client certificate for the etcd cluster")
	cmd.Flags().StringVar(&f.etcdKey, "etcd-key", "", "client key for the etcd cluster")
	cmd.Flags().StringVar(&f.etcdLog, "etcd-log-level", "fatal", "log level of the embedded etcd member (debug, info, warn, error, fatal)")
	cmd.Flags().StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().StringVar(&f.logFormat, "log-format", "text", "text or json")
	return cmd
}

// etcdTLS builds the TLS configuration for an external etcd cluster.
func etcdTLS(f serveFlags) (*tls.Config, error) {
	if f.etcdCA == "" && f.etcdCert == "" && f.etcdKey == "" {
		return nil, nil
	}
	if len(f.etcd) == 0 {
		return nil, usageError{errors.New("--etcd-cacert/--etcd-cert/--etcd-key go with --etcd-endpoints")}
	}
	if (f.etcdCert == "") != (f.etcdKey == "") {
		return nil, usageError{errors.New("--etcd-cert and --etcd-key go together")}
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.etcdCA != "" {
		pem, err := os.ReadFile(f.etcdCA)
		if err != nil {
			return nil, usageError{fmt.Errorf("--etcd-cacert: %w", err)}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usageError{fmt.Errorf("--etcd-cacert %s: no PEM certificate in it", f.etcdCA)}
		}
		conf.RootCAs = pool
	}
	if f.etcdCert != "" {
		cert, err := tls.LoadX509KeyPair(f.etcdCert, f.etcdKey)
		if err != nil {
			return nil, usageError{fmt.Errorf("--etcd-cert/--etcd-key: %w", err)}
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}

func (a *app) logger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: use debug, info, warn or error", level)}
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(a.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(a.stderr, opts)), nil
	}
	return nil, usageError{fmt.Errorf("--log-format %q: use text or json", format)}
}

func (a *app) serve(ctx context.Context, f serveFlags) error {
	logger, err := a.logger(f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	if f.node == "" {
		return usageError{fmt.Errorf("--node: a node name is required")}
	}
	cfg, err := a.loadConfig(f.config)
	if err != nil {
		return err
	}
	// The data plane allocates per request and its heap is small: collect
	// garbage less often than Go's default (GOGC=100) unless told
	// otherwise. Measured in BENCHMARKS.md.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	listen := cfg.API.Listen
	if f.listen != "" {
		listen = f.listen
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	tlsConf, err := etcdTLS(f)
	if err != nil {
		return err
	}
	// Only the leader copies files; every node measures their lag.
	var elector atomic.Pointer[control.Elector]
	copyFiles := func() bool {
		e := elector.Load()
		if e == nil {
			return false
		}
		_, ok := e.Leading()
		return ok
	}
	node, err := observe.New(cfg, observe.Options{Observer: f.node, Logger: logger, Registry: reg, CopyFiles: copyFiles})
	if err != nil {
		return err
	}
	cp, err := control.Open(ctx, cfg, control.Options{Node: f.node, DataDir: f.dataDir, Endpoints: f.etcd, TLS: tlsConf, Logger: logger, EtcdLogLevel: f.etcdLog})
	if err != nil {
		closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		node.Close(closeCtx)
		return err
	}
	elector.Store(cp.Elector())
	reg.MustRegister(cp.Collector())
	// Every verdict change goes to the event stream, from the first probe.
	node.OnVerdict(func(service, region string, from, to health.State, reason string) {
		cp.Record(control.Event{Type: control.EventVerdict, Service: service, Region: region, Status: string(to), Severity: verdictSeverity(to),
			Message: strings.TrimSpace(fmt.Sprintf("%s in %s: %s → %s %s", service, region, from, to, reason))})
	})
	// Regions are judged by the cluster's quorum verdicts: each node's
	// verdicts are one vote.
	node.UseVerdicts(cp.ShareVerdicts(control.LocalFunc(node.LocalVerdicts), 250*time.Millisecond))
	// closeEarly closes what is open when serve cannot start.
	closeEarly := func(err error) error {
		closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cp.Close(closeCtx)
		node.Close(closeCtx)
		return err
	}
	if err := node.Open(); err != nil {
		return closeEarly(err)
	}
	// The report's narrator and the notification channels, before anything
	// else starts: a bad one stops serve here.
	var narrator report.Narrator
	if cfg.Report.LLM != nil {
		c, err := llm.New(cfg.Report.LLM, llm.Options{Redact: cfg.Redact, Logger: logger})
		if err != nil {
			return closeEarly(usageError{fmt.Errorf("report.llm: %w", err)})
		}
		narrator = llmNarrator{c}
	}
	notifier, err := notify.New(cfg.Notify.Channels, notify.Options{Record: cp.Record, Logger: logger})
	if err != nil {
		return closeEarly(usageError{fmt.Errorf("notify: %w", err)})
	}
	// The leader executes runs and makes the automatic decision; every
	// node follows the active region in its replication monitors.
	lags := runbook.NewLagMemory()
	leading := func() bool { _, ok := cp.Elector().Leading(); return ok }
	// The leader's loops read their member's copy of runs and state (no
	// round trip between regions per read); what they change is fenced.
	executor := runbook.NewExecutor(runbook.Options{Config: cfg, Store: cp.LocalRuns(), Traffic: cp.Traffic(), Status: node, Lags: lags,
		Leading: leading, Recorder: cp, FenceDelay: cp.FenceDelay(), Logger: logger, Kube: kubeScaler})
	decider := runbook.NewDecider(runbook.DeciderOptions{Config: cfg, Store: cp.LocalRuns(), Traffic: cp.LocalTraffic(), Status: node, Lags: lags,
		Leading: leading, Started: func(*runbook.Run) { executor.Kick() }, Logger: logger,
		Notice: func(msg string) { cp.Record(control.Event{Type: control.EventDecision, Message: msg}) }})
	stopFollow := followActive(cp.State(), node, lags, logger)
	lagHistory := observe.NewLagHistory(time.Hour)
	stopTransitions := recordTransitions(node, leading, cp.Record, lagHistory, 250*time.Millisecond)
	reporter := report.NewReporter(report.Options{Runs: cp.Runs(), Archive: cp.Store(), Status: node, Config: cfg,
		Narrator: narrator, Leading: leading, Record: cp.Record, Logger: logger})
	// Notifications follow the event stream on the leader, from a cursor
	// kept in the store, so a new leader neither repeats nor skips.
	notifier.Open()
	follower := notify.NewFollower(cp.Store(), cp.Store().Cursor("notify"), notifier, notify.FollowerOptions{Leading: leading, Logger: logger})
	follower.Open()
	executor.Open()
	decider.Open()
	reporter.Open()
	// The data plane routes from the control plane's state (static
	// stability: the last known state when the store is unreachable).
	router := traffic.NewRouter(cfg, cp.State(), node, 0)
	router.Open()
	plane, err := dataplane.New(cfg, router, logger)
	if err == nil {
		err = plane.Open()
	}
	var srv *api.Server
	if err == nil {
		srv = api.New(api.Config{Listen: listen, API: cfg.API, Status: node, Traffic: plane, Control: cp, Gatherer: reg, Logger: logger,
			Runs:    &api.Runs{Config: cfg, Store: cp.Runs(), State: cp.State(), Lags: lags, Started: func(*runbook.Run) { executor.Kick() }},
			Reports: reporter, Lag: lagHistory, Dashboard: dashboard.Handler()})
		err = srv.Open()
	}
	if err != nil {
		closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if plane != nil {
			plane.Close(closeCtx)
		}
		router.Close(closeCtx)
		closeNotify(follower, notifier)
		reporter.Close(closeCtx)
		decider.Close(closeCtx)
		executor.Close(closeCtx)
		stopTransitions()
		stopFollow()
		cp.Close(closeCtx)
		node.Close(closeCtx)
		return err
	}
	// Scheduled drills (drills.schedule) run on the leader, through this
	// node's own API.
	drills := drillScheduler(cfg, f.node, srv.URL(), leading, cp.Record, logger)
	drills.Open()
	fmt.Fprintf(a.stdout, "lifeboat %s serving cluster %q as node %q: api %s\n", buildVersion(), cfg.Cluster.Name, f.node, srv.URL())

	var serveErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case serveErr = <-srv.Err():
		logger.Error("api server failed", "err", serveErr)
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := drills.Close(closeCtx); err != nil {
		logger.Warn("scheduled drills close", "err", err)
	}
	if err := srv.Close(closeCtx); err != nil {
		logger.Warn("api close", "err", err)
	}
	if err := plane.Close(closeCtx); err != nil {
		logger.Warn("data plane close", "err", err)
	}
	router.Close(closeCtx)
	closeNotify(follower, notifier)
	reporter.Close(closeCtx)
	decider.Close(closeCtx)
	executor.Close(closeCtx)
	stopTransitions()
	stopFollow()
	if err := cp.Close(closeCtx); err != nil {
		logger.Warn("control plane close", "err", err)
	}
	if err := node.Close(closeCtx); err != nil {
		logger.Warn("observe close", "err", err)
	}
	return serveErr
}

// followActive points the node's replication monitors at the active
// region of the routing state whenever it changes. It returns the
// function that stops following.
func followActive(src traffic.StateSource, node *observe.Node, lags *runbook.LagMemory, logger *slog.Logger) func() {
	ch, unsubscribe := src.Subscribe()
	done := make(chan struct{})
	stopped := make(chan struct{})
	follow := func() {
		active := src.Current().Active
		if active == "" || active == node.Active() {
			return
		}
		lags.Forget()
		if err := node.SetActive(active); err != nil {
			logger.Warn("follow the active region", "active", active, "err", err)
		}
	}
	go func() {
		defer close(stopped)
		follow()
		for {
			select {
			case <-done:
				return
			case <-ch:
				follow()
			}
		}
	}()
	return func() {
		unsubscribe()
		close(done)
		<-stopped
	}
}

// closeNotify stops following the stream, then gives the notifications
// still queued a few seconds of their own (a dead channel must not eat the
// shutdown's budget).
func closeNotify(f *notify.Follower, d *notify.Dispatcher) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	f.Close(ctx)
	d.Close(ctx)
}

// llmNarrator lets a language model write a report's prose, every figure
// checked against the facts.
type llmNarrator struct{ c *llm.Client }

func (n llmNarrator) Narrate(ctx context.Context, facts []byte) (string, string, string, []string, error) {
	out, rejected, err := n.c.Checked(ctx, json.RawMessage(facts))
	return out.Summary, out.Impact, out.NextSteps, rejected, err
}

// recordTransitions records, while this node leads, every change of a
// region's state, a standby's readiness and an exposure's breach, as
// events. Every node keeps comparing, so a new leader knows the last
// status and does not report old news; every node also keeps the lag
// history its dashboard charts. It returns the function that stops.
func recordTransitions(node *observe.Node, leading func() bool, record func(control.Event), lags *observe.LagHistory, every time.Duration) func() {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(every)
		defer t.Stop()
		prev := node.Status()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			cur := node.Status()
			lags.Record(cur)
			if leading() {
				for _, tr := range observe.Transitions(prev, cur) {
					record(transitionEvent(tr))
				}
			}
			prev = cur
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// transitionEvent is the event of a status transition.
func transitionEvent(tr observe.Transition) control.Event {
	e := control.Event{Service: tr.Service, Region: tr.Region, Status: tr.To, Message: tr.Message, Severity: control.SeverityInfo}
	switch tr.Kind {
	case observe.TransitionRegion:
		e.Type = control.EventRegion
		switch tr.To {
		case string(health.RegionDown):
			e.Severity = control.SeverityCritical
		case string(health.RegionDegraded):
			e.Severity = control.SeverityWarning
		}
	case observe.TransitionReadiness:
		e.Type = control.EventReadiness
		if tr.To != "ready" {
			e.Severity = control.SeverityWarning
		}
	case observe.TransitionExposure:
		e.Type = control.EventExposure
		if tr.To == string(replication.Breached) {
			e.Severity = control.SeverityWarning
		}
	}
	return e
}

// verdictSeverity grades an endpoint's verdict.
func verdictSeverity(to health.State) string {
	if to == health.Down {
		return control.SeverityWarning
	}
	return control.SeverityInfo
}

// kubeScaler is the Kubernetes access of kubernetes.scale steps: the
// kube context named by the step, from the default kubeconfig (KUBECONFIG
// or ~/.kube/config).
func kubeScaler(kubeContext string) (runbook.Scaler, error) {
	s, err := kube.FromKubeconfig("", kubeContext)
	if err != nil {
		return nil, err
	}
	return scaler{s}, nil
}

// scaler adapts kube.Scaler to the runbook's Scaler.
type scaler struct{ s *kube.Scaler }

func (a scaler) Scale(ctx context.Context, kind, namespace, name string, replicas int32, wait bool) (string, error) {
	res, err := a.s.Scale(ctx, kind, namespace, name, replicas, wait)
	if err != nil {
		return "", err
	}
	if res.Already {
		return fmt.Sprintf("%s %s/%s already at %d replicas (%d ready)", kind, namespace, name, res.To, res.Ready), nil
	}
	return fmt.Sprintf("%s %s/%s scaled %d → %d (%d ready)", kind, namespace, name, res.From, res.To, res.Ready), nil
}
