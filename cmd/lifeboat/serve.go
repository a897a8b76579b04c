package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/api"
	"github.com/lifeboat-dr/lifeboat/dataplane"
	"github.com/lifeboat-dr/lifeboat/observe"
	"github.com/lifeboat-dr/lifeboat/traffic"
)

type serveFlags struct {
	config    string
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
	cmd.Flags().StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().StringVar(&f.logFormat, "log-format", "text", "text or json")
	return cmd
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
	listen := cfg.API.Listen
	if f.listen != "" {
		listen = f.listen
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	node, err := observe.New(cfg, observe.Options{Observer: f.node, Logger: logger, Registry: reg})
	if err != nil {
		return err
	}
	if err := node.Open(); err != nil {
		closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		node.Close(closeCtx)
		return err
	}
	// The routing state lives in memory until the control plane's store
	// holds it: the configured active region at epoch 1.
	state := traffic.NewMemState(cfg.ActiveRegion(), 1)
	router := traffic.NewRouter(cfg, state, node, 0)
	router.Open()
	plane, err := dataplane.New(cfg, router, logger)
	if err == nil {
		err = plane.Open()
	}
	var srv *api.Server
	if err == nil {
		srv = api.New(api.Config{Listen: listen, Status: node, Traffic: plane, Gatherer: reg, Logger: logger})
		err = srv.Open()
	}
	if err != nil {
		closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if plane != nil {
			plane.Close(closeCtx)
		}
		router.Close(closeCtx)
		node.Close(closeCtx)
		return err
	}
	if len(cfg.API.Tokens) == 0 {
		logger.Warn("no API tokens configured: the API is read-only status and should listen on loopback only", "addr", srv.Addr())
	}
	fmt.Fprintf(a.stdout, "lifeboat %s serving cluster %q as node %q: api http://%s\n", buildVersion(), cfg.Cluster, f.node, srv.Addr())

	var serveErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case serveErr = <-srv.Err():
		logger.Error("api server failed", "err", serveErr)
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Close(closeCtx); err != nil {
		logger.Warn("api close", "err", err)
	}
	if err := plane.Close(closeCtx); err != nil {
		logger.Warn("data plane close", "err", err)
	}
	router.Close(closeCtx)
	if err := node.Close(closeCtx); err != nil {
		logger.Warn("observe close", "err", err)
	}
	return serveErr
}
