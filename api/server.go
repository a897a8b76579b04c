// Package api serves Lifeboat's HTTP API (/api/v1/...; its OpenAPI
// document at /api/v1/openapi.json), /healthz, /metrics and the
// dashboard.
package api

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/dataplane"
	"github.com/lifeboat-dr/lifeboat/observe"
)

// StatusSource answers the current status without I/O.
type StatusSource interface {
	Status() observe.Status
}

// TrafficSource answers where the data plane sends traffic now.
type TrafficSource interface {
	Status() dataplane.Status
}

// ControlSource is the control plane: its members and leader, and the
// event stream.
type ControlSource interface {
	Status(ctx context.Context) control.Status
	Store() *control.Store
}

// StatusResponse is the body of GET /api/v1/status: the observation, where
// traffic goes when the node runs a data plane, and the control plane.
type StatusResponse struct {
	observe.Status
	Traffic *dataplane.Status `json:"traffic,omitempty"`
	Control *control.Status   `json:"control,omitempty"`
}

// Config configures a Server.
type Config struct {
	// Listen is host:port; port 0 picks a free port (see Addr). Empty:
	// API.Listen. Without any token configured, a host that is not
	// loopback is replaced by 127.0.0.1 (see Open).
	Listen string
	Status StatusSource
	// API is the topology's api section: its listen address (when Listen
	// is empty), its tokens (when it has any: else Runs.Config's) and its
	// TLS (a certificate: https; with a CA: client certificates
	// required).
	API config.API
	// RateLimit bounds each caller's mutating calls; zero: 30 a minute,
	// 10 at once.
	RateLimit RateLimit
	// Traffic, when set, adds the data plane's routing to the status.
	Traffic TrafficSource
	// Control, when set, adds the control plane to the status and serves
	// the events.
	Control ControlSource
	// Runs, when set, serves the runs: list, show, start, approve.
	Runs *Runs
	// Reports, with Runs and Control, serves runs' reports and takes
	// drills' outcomes.
	Reports Reports
	// Lag, when set, serves the recent replication lag (the dashboard's
	// chart).
	Lag LagSource
	// Dashboard, when set, is served at / and /ui/.
	Dashboard http.Handler
	// Gatherer serves /metrics; nil serves none.
	Gatherer prometheus.Gatherer
	Logger   *slog.Logger
}

// Server is the API's HTTP server.
type Server struct {
	cfg    Config
	logger *slog.Logger
	srv    *http.Server
	ln     net.Listener
	errc   chan error
	once   sync.Once
	// done is closed by Close: long-lived responses (event streams) end.
	done    chan struct{}
	limiter *limiter
	// routes are the patterns Handler registered ("GET /api/v1/runs").
	routes []string
	url    string
}

// New makes a server; it listens on Open.
func New(cfg Config) *Server {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, logger: logger, errc: make(chan error, 1), done: make(chan struct{}), limiter: newLimiter(cfg.RateLimit)}
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return s
}

// Handler routes the API. Every route is an operation of the OpenAPI
// document (api/openapi.go), which gives the role it needs and the type
// of its body; guard (api/security.go) enforces them.
func (s *Server) Handler() http.Handler {
	return s.audited(s.mux()) // every mutating call is recorded in the audit trail (api/audit.go)
}

// mux registers the routes this server has the sources for.
func (s *Server) mux() *http.ServeMux {
	mux := http.NewServeMux()
	s.routes = nil
	route := func(method, pattern string, h http.Handler) {
		op := operationFor(method, pattern)
		if op == nil {
			panic("api: route " + method + " " + pattern + " is not in the OpenAPI document (api/openapi.go)")
		}
		mux.Handle(method+" "+pattern, s.guard(op, h))
		s.routes = append(s.routes, method+" "+pattern)
	}
	get := func(pattern string, h http.HandlerFunc) { route(http.MethodGet, pattern, h) }
	post := func(pattern string, h http.HandlerFunc) { route(http.MethodPost, pattern, h) }
	get("/api/v1/openapi.json", s.openAPI)
	get("/api/v1/status", s.status)
	get("/api/v1/regions", s.regions)
	get("/api/v1/services", s.services)
	get("/api/v1/exposure", s.exposure)
	get("/api/v1/readiness", s.readiness)
	get("/api/v1/events", s.events)
	if s.cfg.Lag != nil {
		get("/api/v1/lag", s.lag)
	}
	if s.cfg.Control != nil {
		get("/api/v1/events/stream", s.stream)
	}
	if s.cfg.Runs != nil {
		get("/api/v1/runs", s.listRuns)
		post("/api/v1/runs", s.createRun)
		get("/api/v1/runs/{id}", s.showRun)
		post("/api/v1/runs/{id}/approve", s.approveRun)
		post("/api/v1/runs/{id}/cancel", s.cancelRun)
		if s.cfg.Reports != nil && s.cfg.Control != nil {
			get("/api/v1/runs/{id}/report", s.showReport)
			post("/api/v1/runs/{id}/drill", s.attachDrill)
			get("/api/v1/drills", s.drills)
		}
	}
	// Audit trail (api/audit.go): export and verification, admin only.
	if s.cfg.Runs != nil && s.cfg.Control != nil {
		get("/api/v1/audit", s.auditExport)
		get("/api/v1/audit/verify", s.auditVerify)
	}
	if s.cfg.Dashboard != nil {
		route(http.MethodGet, "/{$}", s.cfg.Dashboard)
		route(http.MethodGet, "/ui/", s.cfg.Dashboard)
	}
	get("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	if s.cfg.Gatherer != nil {
		route(http.MethodGet, "/metrics", promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn)}))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// Refused mutating calls are audited too: limit them as well.
		if mutating(r.Method) && !s.limiter.allow(w, s.rateKey(r)) {
			return
		}
		if allowed := allowedMethods(mux, r); len(allowed) > 0 {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allowed, ", ")))
			return
		}
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s (see /api/v1/openapi.json)", r.URL.Path))
	})
	return mux
}

// allowedMethods lists the methods that have a route for r's path.
func allowedMethods(mux *http.ServeMux, r *http.Request) []string {
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "/" && pattern != "" {
			out = append(out, m)
		}
	}
	return out
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.statusResponse(r.Context()))
}

// events serves GET /api/v1/events?after=N&limit=M: the events with a
// sequence number above after, oldest first.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Control == nil {
		writeError(w, http.StatusNotFound, "this node runs no control plane")
		return
	}
	q := r.URL.Query()
	after, limit := uint64(0), int64(100)
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("after=%q: not a sequence number", v))
			return
		}
		after = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit=%q: a number from 1 to 1000", v))
			return
		}
		limit = n
	}
	evs, err := s.cfg.Control.Store().Events(r.Context(), after, limit)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "events: "+err.Error())
		return
	}
	for i := range evs {
		evs[i].Message = s.redact(evs[i].Message)
	}
	writeJSON(w, http.StatusOK, evs)
}

// Error is the body of every error response.
type Error struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, Error{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// Open listens and starts serving: https with a certificate (API.TLS),
// requiring client certificates with a CA. Without any token configured,
// the API listens on loopback only: a listen host that is not loopback
// (an empty host, 0.0.0.0, ::, a LAN address) is replaced by 127.0.0.1,
// with a warning that names both addresses.
func (s *Server) Open() error {
	configured := s.cfg.Listen
	if configured == "" {
		configured = s.cfg.API.Listen
	}
	if configured == "" {
		configured = config.DefaultAPIListen
	}
	tlsConf, err := serverTLS(s.cfg.API.TLS)
	if err != nil {
		return err
	}
	tokens := len(s.tokens()) > 0
	addr, moved := listenAddr(configured, tokens)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("api: listen on %s: %w", addr, err)
	}
	s.ln = ln
	scheme := "http"
	if tlsConf != nil {
		scheme = "https"
		s.srv.TLSConfig = tlsConf
	}
	s.url = scheme + "://" + ln.Addr().String()
	go func() {
		var err error
		if tlsConf != nil {
			err = s.srv.ServeTLS(ln, "", "")
		} else {
			err = s.srv.Serve(ln)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.errc <- err
		close(s.errc)
	}()
	switch {
	case moved:
		s.logger.Warn("no API tokens configured: the API listens on loopback only, not on the configured address (configure api.tokens to serve it)",
			"configured", configured, "listening", ln.Addr().String())
	case !tokens:
		s.logger.Warn("no API tokens configured: the API listens on loopback only and every local caller is an admin", "addr", ln.Addr().String())
	}
	s.logger.Info("api listening", "url", s.url, "client_certificates", tlsConf != nil && tlsConf.ClientAuth == tls.RequireAndVerifyClientCert)
	return nil
}

// Addr is the address the server listens on, after Open.
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URL is the server's base URL after Open: https://addr with TLS, else
// http://addr.
func (s *Server) URL() string { return s.url }

// Err reports a serving failure; it is closed when the server stops.
func (s *Server) Err() <-chan error { return s.errc }

// Close stops accepting, lets requests in flight finish until ctx is done,
// then closes.
func (s *Server) Close(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		close(s.done)
		if s.ln == nil {
			return
		}
		err = s.srv.Shutdown(ctx)
		if err != nil {
			s.srv.Close()
		}
	})
	return err
}
