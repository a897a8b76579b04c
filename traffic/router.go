package traffic

import (
	"context"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/lifecycle"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/health"
)

// Verdicts is where the Router reads endpoint health: the observe node.
type Verdicts interface {
	Verdicts() map[health.Key]health.Verdict
}

// Decision modes: why these endpoints were chosen.
const (
	ModeHealthy    = "healthy"     // from the healthy endpoints
	ModeColdStart  = "cold-start"  // no verdict yet: config priorities
	ModeFailOpen   = "fail-open"   // none healthy: every endpoint
	ModeFailStatic = "fail-static" // none healthy: the last known good
)

// Endpoint is one region's endpoint of a service.
type Endpoint struct {
	Region string `json:"region"`
	// Addr is the endpoint as configured: a URL, host:port or DSN.
	Addr string `json:"-"`
	// Healthy is the endpoint's verdict at decision time.
	Healthy bool `json:"healthy"`
}

// Decision is where one request (or DNS query) for a service goes.
type Decision struct {
	Service string `json:"service"`
	Policy  string `json:"policy"`
	// Endpoints in preference order: the first serves; the next ones are
	// where a retry goes. For multivalue, all of them serve.
	Endpoints []Endpoint `json:"endpoints"`
	Mode      string     `json:"mode"`
	Active    string     `json:"active"`
	Epoch     uint64     `json:"epoch"`
}

// snapshot is what decisions are made from; replaced whole on every change.
type snapshot struct {
	state   State
	healthy map[health.Key]health.State
	// decided caches, per policy and service, the decisions under state
	// (weighted decisions are drawn per call and not cached).
	decided map[string]map[string]Decision
	// lastGood is, per service, the regions healthy when some last were.
	lastGood map[string]map[string]bool
}

// Router makes routing decisions from the latest snapshot of health and
// state. Decide does no I/O and takes no lock.
type Router struct {
	cfg      *config.Config
	state    StateSource
	verdicts Verdicts
	// refresh is how often health verdicts are re-read.
	refresh time.Duration

	snap    atomic.Pointer[snapshot]
	changed chan struct{} // closed and replaced on every new snapshot
	mu      sync.Mutex    // guards changed and lastGood updates

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewRouter makes a router; it keeps its snapshot fresh between Open and
// Close. refresh bounds how stale health can be (default 50ms); a change
// of state is applied as soon as it is notified.
func NewRouter(cfg *config.Config, state StateSource, verdicts Verdicts, refresh time.Duration) *Router {
	if refresh <= 0 {
		refresh = 50 * time.Millisecond
	}
	r := &Router{cfg: cfg, state: state, verdicts: verdicts, refresh: refresh, changed: make(chan struct{})}
	r.update()
	return r
}

// Open starts following state changes and health.
func (r *Router) Open() error {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	ch, unsubscribe := r.state.Subscribe()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer unsubscribe()
		t := time.NewTicker(r.refresh)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
			case <-t.C:
			}
			r.update()
		}
	}()
	return nil
}

// Close stops following.
func (r *Router) Close(ctx context.Context) error {
	if r.cancel != nil {
		r.cancel()
	}
	return lifecycle.Wait(ctx, &r.wg)
}

// Changed returns a channel closed at the next snapshot that differs in
// state (active region, epoch, hold) or in an endpoint's verdict; for
// servers that must act on a switch.
func (r *Router) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// Health is the verdict on a service's endpoint in a region, as of the
// last snapshot ("" before any).
func (r *Router) Health(service, region string) health.State {
	snap := r.snap.Load()
	if snap == nil {
		return ""
	}
	return snap.healthy[health.Key{Service: service, Region: region}]
}

// State is the routing state now.
func (r *Router) State() State { return r.state.Current() }

// Source is the state source the router follows.
func (r *Router) Source() StateSource { return r.state }

// update takes a new snapshot.
func (r *Router) update() {
	st := r.state.Current()
	healthy := map[health.Key]health.State{}
	if r.verdicts != nil {
		for k, v := range r.verdicts.Verdicts() {
			healthy[k] = v.State
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := r.snap.Load()
	lastGood := map[string]map[string]bool{}
	for _, s := range r.cfg.Services {
		good := map[string]bool{}
		for region := range s.Endpoints {
			if healthy[health.Key{Service: s.Name, Region: region}] == health.Up {
				good[region] = true
			}
		}
		if len(good) == 0 && prev != nil {
			good = prev.lastGood[s.Name]
		}
		lastGood[s.Name] = good
	}
	next := &snapshot{state: st, healthy: healthy, lastGood: lastGood, decided: map[string]map[string]Decision{}}
	for _, policy := range []string{config.PolicyFailover, config.PolicyMultivalue} {
		m := map[string]Decision{}
		for _, s := range r.cfg.Services {
			m[s.Name] = r.decide(next, st, s.Name, policy, nil)
		}
		next.decided[policy] = m
	}
	r.snap.Store(next)
	if prev == nil || prev.state != st || !maps.Equal(prev.healthy, healthy) {
		close(r.changed)
		r.changed = make(chan struct{})
	}
}

// Decide returns where traffic for a service goes under a policy. weights
// are used by the weighted policy (nil: equal weights). The returned
// Endpoints are shared: callers must not modify them.
func (r *Router) Decide(service, policy string, weights map[string]int) Decision {
	snap := r.snap.Load()
	// The state is read now, not from the snapshot: a switch applies to
	// the very next decision, before the snapshot catches up.
	st := r.state.Current()
	if st == snap.state {
		if d, ok := snap.decided[policy][service]; ok {
			return d
		}
	}
	return r.decide(snap, st, service, policy, weights)
}

func (r *Router) decide(snap *snapshot, st State, service, policy string, weights map[string]int) Decision {
	d := Decision{Service: service, Policy: policy, Active: st.Active, Epoch: st.Epoch}
	s, ok := r.cfg.Service(service)
	if !ok {
		return d
	}
	// Candidates: the active region first, then the others by priority.
	var ordered []Endpoint
	add := func(region string) {
		if addr, ok := s.Endpoints[region]; ok {
			ordered = append(ordered, Endpoint{Region: region, Addr: addr,
				Healthy: snap.healthy[health.Key{Service: service, Region: region}] == health.Up})
		}
	}
	add(st.Active)
	for _, reg := range r.cfg.RegionsByPriority() {
		if reg.Name != st.Active {
			add(reg.Name)
		}
	}
	var chosen []Endpoint
	allUnknown := true
	for _, e := range ordered {
		if e.Healthy {
			chosen = append(chosen, e)
		}
		if snap.healthy[health.Key{Service: service, Region: e.Region}] != health.Unknown && snap.healthy[health.Key{Service: service, Region: e.Region}] != "" {
			allUnknown = false
		}
	}
	d.Mode = ModeHealthy
	switch {
	case len(chosen) > 0:
	case allUnknown:
		d.Mode, chosen = ModeColdStart, ordered
	case r.cfg.Traffic.WhenAllDown == config.FailOpen:
		d.Mode, chosen = ModeFailOpen, ordered
	default:
		d.Mode = ModeFailStatic
		for _, e := range ordered {
			if snap.lastGood[service][e.Region] {
				chosen = append(chosen, e)
			}
		}
		if len(chosen) == 0 {
			chosen = ordered // never seen healthy: config priorities
		}
	}
	// Fallbacks (for retries) follow the chosen ones.
	if policy != config.PolicyMultivalue {
		in := map[string]bool{}
		for _, e := range chosen {
			in[e.Region] = true
		}
		for _, e := range ordered {
			if !in[e.Region] {
				chosen = append(chosen, e)
			}
		}
	}
	if policy == config.PolicyWeighted {
		chosen = weightedFirst(chosen, weights, d.Mode == ModeHealthy)
	}
	d.Endpoints = chosen
	return d
}

// weightedFirst moves one endpoint, drawn by weight among the serving ones,
// to the front.
func weightedFirst(eps []Endpoint, weights map[string]int, onlyHealthy bool) []Endpoint {
	total := 0
	for _, e := range eps {
		if onlyHealthy && !e.Healthy {
			continue
		}
		total += weight(weights, e.Region)
	}
	if total <= 0 {
		return eps
	}
	n := rand.IntN(total)
	for i, e := range eps {
		if onlyHealthy && !e.Healthy {
			continue
		}
		n -= weight(weights, e.Region)
		if n < 0 {
			out := make([]Endpoint, 0, len(eps))
			out = append(out, e)
			out = append(out, eps[:i]...)
			return append(out, eps[i+1:]...)
		}
	}
	return eps
}

func weight(weights map[string]int, region string) int {
	if weights == nil {
		return 1
	}
	return weights[region]
}
