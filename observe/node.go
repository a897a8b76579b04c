// Package observe is Lifeboat's eyes: from a topology it builds and runs the
// probes of every endpoint, the replication monitors of every data service
// and the version probes, and answers with one Status: regions, services,
// exposure and readiness. It also exports all of it as Prometheus metrics.
package observe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/files"
	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/postgres"
	"github.com/lifeboat-dr/lifeboat/probe"
	"github.com/lifeboat-dr/lifeboat/redis"
	"github.com/lifeboat-dr/lifeboat/replication"
)

// Options configures a Node.
type Options struct {
	// Observer is this node's name, carried by every observation.
	Observer string
	Logger   *slog.Logger
	// Registry receives the metrics; nil registers none.
	Registry prometheus.Registerer
	// FileSources gives the replication measurements of files services,
	// by service name; a files service without one is replicated by a
	// files.Replicator of the node's own.
	FileSources map[string]replication.Source
	// CopyFiles says whether this node copies files (the control plane's
	// leader); the others only measure the lag. nil: always copy.
	CopyFiles func() bool
}

// Node runs the observation of one topology.
type Node struct {
	cfg      *config.Config
	observer string
	logger   *slog.Logger
	start    time.Time

	checker *health.Checker
	// smu guards sources, openers and active: SetActive rebuilds the
	// replication monitors from the new primaries.
	smu       sync.RWMutex
	sources   map[string]replication.Source
	openers   []component
	active    string
	files     map[string]replication.Source
	copyFiles func() bool
	closers   []func()
	versions  *versionPoller
	regions   *health.RegionTracker
	metrics   *metrics
	client    *http.Client

	mu     sync.Mutex
	opened bool

	shared VerdictSource

	vmu       sync.Mutex
	onVerdict func(service, region string, from, to health.State, reason string)
	lastState map[health.Key]health.State
}

// OnVerdict registers f to be called when an endpoint's verdict changes
// (from a probing goroutine: f must not block).
func (n *Node) OnVerdict(f func(service, region string, from, to health.State, reason string)) {
	n.vmu.Lock()
	n.onVerdict = f
	n.vmu.Unlock()
}

// observed is the checker's callback: metrics, then verdict changes.
func (n *Node) observed(o health.Observation, v health.Verdict) {
	if n.metrics != nil {
		n.metrics.observe(o, v)
	}
	k := health.Key{Service: o.Service, Region: o.Region}
	n.vmu.Lock()
	prev, seen := n.lastState[k]
	if !seen {
		prev = health.Unknown
	}
	n.lastState[k] = v.State
	f := n.onVerdict
	n.vmu.Unlock()
	if f != nil && prev != v.State {
		f(o.Service, o.Region, prev, v.State, o.Error)
	}
}

// component is a long-lived part with its own goroutines.
type component interface {
	Open() error
	Close(ctx context.Context) error
}

// New builds the probes and monitors of cfg (a validated configuration).
// Nothing runs until Open.
func New(cfg *config.Config, opts Options) (*Node, error) {
	if opts.Observer == "" {
		return nil, errors.New("observe: an observer name is required")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	n := &Node{
		cfg:       cfg,
		observer:  opts.Observer,
		logger:    logger,
		start:     time.Now(),
		sources:   map[string]replication.Source{},
		active:    cfg.ActiveRegion(),
		files:     opts.FileSources,
		copyFiles: opts.CopyFiles,
		client:    &http.Client{Transport: probe.NewTransport(), CheckRedirect: noRedirect},
	}
	n.regions = health.NewRegionTracker(cfg, n.start)
	ok := false
	defer func() {
		if !ok {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for _, o := range n.openers {
				o.Close(ctx) // releases clients; safe before Open
			}
			n.closeProbers()
		}
	}()

	var targets []health.Target
	for i := range cfg.Services {
		s := &cfg.Services[i]
		for _, r := range cfg.RegionsByPriority() {
			ep, has := s.Endpoints[r.Name]
			if !has {
				continue
			}
			p, err := n.prober(s, ep)
			if err != nil {
				return nil, fmt.Errorf("observe: services %s, region %s: %w", s.Name, r.Name, err)
			}
			h := s.Health
			targets = append(targets, health.Target{
				Service: s.Name, Region: r.Name, Prober: p,
				Interval: h.Interval.D(), Timeout: h.Timeout.D(), Jitter: h.Jitter.D(),
				Fall: h.Fall, Rise: h.Rise,
			})
		}
		if err := n.addSource(s, n.active, opts.FileSources); err != nil {
			return nil, err
		}
	}
	var err error
	n.versions, err = newVersionPoller(cfg, n.client, logger)
	if err != nil {
		return nil, err
	}
	if opts.Registry != nil {
		n.metrics, err = newMetrics(opts.Registry, n)
		if err != nil {
			return nil, err
		}
	}
	n.lastState = map[health.Key]health.State{}
	n.checker, err = health.NewChecker(n.observer, targets, health.WithLogger(logger), health.WithObserve(n.observed), health.WithRedact(cfg.Redact))
	if err != nil {
		return nil, err
	}
	ok = true
	return n, nil
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// prober makes the probe of one endpoint for its kind.
func (n *Node) prober(s *config.Service, ep string) (health.Prober, error) {
	p, closer, err := NewProber(n.client, s, ep)
	if closer != nil {
		n.closers = append(n.closers, closer)
	}
	return p, err
}

// NewProber makes the probe of one endpoint of s for its kind; close,
// when not nil, releases its connections.
func NewProber(client *http.Client, s *config.Service, ep string) (p health.Prober, close func(), err error) {
	switch s.Kind {
	case config.KindHTTP:
		p, err := probe.NewHTTP(client, ep, s.Health)
		return p, nil, err
	case config.KindTCP:
		return probe.NewTCP(ep), nil, nil
	case config.KindPostgres:
		p := postgres.NewProber(ep)
		return p, p.Close, nil
	case config.KindRedis:
		p, err := redis.NewProber(ep)
		if err != nil {
			return nil, nil, err
		}
		return p, func() { p.Close() }, nil
	case config.KindFiles:
		return files.NewProber(ep), nil, nil
	}
	return nil, nil, fmt.Errorf("kind %q has no probe", s.Kind)
}

// addSource makes the replication monitor of a data service, from the
// active region to every other non-witness region.
func (n *Node) addSource(s *config.Service, active string, fileSources map[string]replication.Source) error {
	primary, ok := s.Endpoints[active]
	if !ok || !s.IsData() {
		return nil
	}
	var standbys []string
	for _, r := range n.cfg.RegionsByPriority() {
		if _, has := s.Endpoints[r.Name]; has && r.Name != active {
			standbys = append(standbys, r.Name)
		}
	}
	switch s.Kind {
	case config.KindPostgres:
		mc := postgres.MonitorConfig{
			Service: s.Name, Observer: n.observer, Logger: n.logger,
			Primary:  postgres.Endpoint{Region: active, DSN: primary},
			Interval: s.Replication.Heartbeat.D(), Timeout: s.Health.Timeout.D(),
		}
		for _, r := range standbys {
			mc.Standbys = append(mc.Standbys, postgres.Endpoint{Region: r, DSN: s.Endpoints[r]})
		}
		m := postgres.NewMonitor(mc)
		n.sources[s.Name] = m
		n.openers = append(n.openers, m)
	case config.KindRedis:
		mc := redis.MonitorConfig{
			Service: s.Name, Observer: n.observer, Logger: n.logger,
			Primary:  redis.Endpoint{Region: active, URL: primary},
			Interval: s.Replication.Heartbeat.D(), Timeout: s.Health.Timeout.D(),
		}
		for _, r := range standbys {
			mc.Standbys = append(mc.Standbys, redis.Endpoint{Region: r, URL: s.Endpoints[r]})
		}
		m, err := redis.NewMonitor(mc)
		if err != nil {
			return fmt.Errorf("observe: service %s: %w", s.Name, err)
		}
		n.sources[s.Name] = m
		n.openers = append(n.openers, m)
	case config.KindFiles:
		if src, ok := fileSources[s.Name]; ok {
			n.sources[s.Name] = src
			break
		}
		rc := files.ReplicatorConfig{
			Service: s.Name, Primary: files.Endpoint{Region: active, URL: primary},
			Interval: s.Sync.Interval.D(), Watch: true, Active: n.copyFiles, Logger: n.logger,
			Options: files.Options{Delete: s.Sync.Delete, Concurrency: s.Sync.Concurrency, Logger: n.logger},
		}
		for _, r := range standbys {
			rc.Standbys = append(rc.Standbys, files.Endpoint{Region: r, URL: s.Endpoints[r]})
		}
		m, err := files.NewReplicator(rc)
		if err != nil {
			return fmt.Errorf("observe: service %s: %w", s.Name, err)
		}
		n.sources[s.Name] = m
		n.openers = append(n.openers, m)
	}
	return nil
}

// Open starts probing and measuring.
func (n *Node) Open() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.opened {
		return errors.New("observe: already open")
	}
	var started []component
	n.smu.RLock()
	openers := append([]component{n.checker, n.versions}, n.openers...)
	n.smu.RUnlock()
	for _, c := range openers {
		if err := c.Open(); err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			for _, s := range started {
				s.Close(ctx)
			}
			cancel()
			return err
		}
		started = append(started, c)
	}
	n.opened = true
	n.logger.Info("observing", "observer", n.observer, "services", len(n.cfg.Services), "regions", len(n.cfg.Regions))
	return nil
}

// Close stops every probe and monitor and waits for them.
func (n *Node) Close(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []error
	if n.opened {
		n.smu.RLock()
		openers := append([]component{n.checker, n.versions}, n.openers...)
		n.smu.RUnlock()
		for _, c := range openers {
			if err := c.Close(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		n.opened = false
	}
	n.closeProbers()
	n.client.CloseIdleConnections()
	return errors.Join(errs...)
}

func (n *Node) closeProbers() {
	for _, c := range n.closers {
		c()
	}
	n.closers = nil
}

// Status is everything the node knows now.
type Status struct {
	Cluster      string                 `json:"cluster"`
	Observer     string                 `json:"observer"`
	Time         time.Time              `json:"time"`
	ActiveRegion string                 `json:"active_region"`
	Regions      []health.RegionStatus  `json:"regions"`
	Services     []ServiceStatus        `json:"services"`
	Exposure     []replication.Exposure `json:"exposure"`
	Readiness    []health.Readiness     `json:"readiness"`
}

// ServiceStatus is one service in every region.
type ServiceStatus struct {
	Name      string           `json:"name"`
	Kind      string           `json:"kind"`
	Critical  bool             `json:"critical"`
	Endpoints []EndpointStatus `json:"endpoints"`
	// Replication has one entry per standby region, for data services.
	Replication []replication.Lag `json:"replication,omitempty"`
}

// EndpointStatus is one service's endpoint in one region.
type EndpointStatus struct {
	Region string       `json:"region"`
	Health health.State `json:"health"`
	// Role is primary, standby or unknown for data services, empty
	// otherwise.
	Role      health.Role `json:"role,omitempty"`
	LatencyMS float64     `json:"latency_ms"`
	Error     string      `json:"error"`
	Since     time.Time   `json:"since"`
	LastProbe time.Time   `json:"last_probe,omitzero"`
	Observer  string      `json:"observer"`
	Version   string      `json:"version,omitempty"`
}

// Status computes the current status. It does no I/O.
func (n *Node) Status() Status {
	now := time.Now()
	verdicts := n.Verdicts()
	versions := n.versions.snapshot()
	lags := map[string][]replication.Lag{}
	n.smu.RLock()
	active := n.active
	measured := map[string]bool{}
	for name := range n.sources {
		measured[name] = true
	}
	for name, src := range n.sources {
		l := append([]replication.Lag(nil), src.Lag()...)
		sort.Slice(l, func(i, j int) bool { return l[i].Region < l[j].Region })
		lags[name] = l
	}
	n.smu.RUnlock()
	st := Status{
		Cluster:      n.cfg.Cluster.Name,
		Observer:     n.observer,
		Time:         now,
		ActiveRegion: active,
		Regions:      n.regions.Update(n.cfg, verdicts, now),
		Services:     []ServiceStatus{},
		Exposure:     []replication.Exposure{},
	}
	for i := range n.cfg.Services {
		s := &n.cfg.Services[i]
		ss := ServiceStatus{Name: s.Name, Kind: s.Kind, Critical: s.Critical, Replication: lags[s.Name]}
		for _, r := range n.cfg.RegionsByPriority() {
			if _, has := s.Endpoints[r.Name]; !has {
				continue
			}
			v := verdicts[health.Key{Service: s.Name, Region: r.Name}]
			es := EndpointStatus{
				Region:    r.Name,
				Health:    v.State,
				LatencyMS: float64(v.Last.Latency.Microseconds()) / 1000,
				Error:     v.Last.Error,
				Since:     v.Since,
				LastProbe: v.Last.Time,
				Observer:  n.observer,
				Version:   versions[s.Name][r.Name].Value,
			}
			if s.Kind == config.KindPostgres || s.Kind == config.KindRedis {
				es.Role = v.Last.Role
				if es.Role == "" || v.State != health.Up {
					es.Role = health.RoleUnknown
				}
			}
			ss.Endpoints = append(ss.Endpoints, es)
		}
		st.Services = append(st.Services, ss)
		if s.IsData() {
			e := replication.Evaluate(s.Name, lags[s.Name], n.cfg.Policy.RPO.D())
			if !measured[s.Name] {
				e.Reason = "no replication source for this service"
			}
			st.Exposure = append(st.Exposure, e)
		}
	}
	st.Readiness = health.EvaluateReadiness(n.cfg, health.ReadinessInput{
		Active: active, Verdicts: verdicts, Lags: lags, Versions: versions,
	})
	n.redact(&st)
	return st
}

// redact passes every text of a status that may quote an error through the
// configuration's redaction, in one place, so no path can leak a secret.
func (n *Node) redact(st *Status) {
	r := n.cfg.Redact
	for i := range st.Regions {
		st.Regions[i].Reason = r(st.Regions[i].Reason)
	}
	for i := range st.Services {
		s := &st.Services[i]
		for j := range s.Endpoints {
			s.Endpoints[j].Error = r(s.Endpoints[j].Error)
		}
		for j := range s.Replication {
			l := &s.Replication[j]
			l.Reason = r(l.Reason)
			if len(l.Details) > 0 {
				d := make(map[string]string, len(l.Details))
				for k, v := range l.Details {
					d[k] = r(v)
				}
				l.Details = d
			}
		}
	}
	for i := range st.Exposure {
		st.Exposure[i].Reason = r(st.Exposure[i].Reason)
	}
	for i := range st.Readiness {
		for j := range st.Readiness[i].Reasons {
			st.Readiness[i].Reasons[j] = r(st.Readiness[i].Reasons[j])
		}
	}
}

// VerdictSource gives the verdicts the node judges regions by.
type VerdictSource interface {
	Verdicts() map[health.Key]health.Verdict
}

// UseVerdicts makes the node judge regions, readiness and routing by src
// (the cluster's quorum verdicts) instead of its own. Call before Open.
func (n *Node) UseVerdicts(src VerdictSource) { n.shared = src }

// LocalVerdicts returns this node's own verdicts.
func (n *Node) LocalVerdicts() map[health.Key]health.Verdict { return n.checker.Verdicts() }

// Verdicts returns the verdicts the node acts on: the cluster's when
// shared, else its own (for the router).
func (n *Node) Verdicts() map[health.Key]health.Verdict {
	if n.shared != nil {
		return n.shared.Verdicts()
	}
	return n.checker.Verdicts()
}
