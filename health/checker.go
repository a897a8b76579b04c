package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/lifecycle"
)

// Target is one endpoint to probe and its thresholds.
type Target struct {
	Service string
	Region  string
	Prober  Prober
	// Interval between the starts of two probes.
	Interval time.Duration
	// Timeout of one probe; at most Interval.
	Timeout time.Duration
	// Jitter delays each probe by a random amount up to this, so that many
	// targets do not probe in lockstep.
	Jitter time.Duration
	// Fall consecutive failures make an up (or unknown) target down; Rise
	// consecutive successes make a down (or unknown) target up.
	Fall, Rise int
}

// Key names a target.
type Key struct{ Service, Region string }

func (k Key) String() string { return k.Service + "@" + k.Region }

// Verdict is a target's current health.
type Verdict struct {
	State State `json:"state"`
	// Since is when State last changed (the checker's start for unknown).
	Since time.Time `json:"since"`
	// Successes and Failures count the current run of equal results.
	Successes int `json:"successes"`
	Failures  int `json:"failures"`
	// Last is the latest observation; zero before the first probe ends.
	Last Observation `json:"last"`
}

// Checker probes every target on its own schedule, one probe in flight per
// target, and keeps each target's verdict.
type Checker struct {
	observer string
	logger   *slog.Logger
	observe  func(Observation, Verdict)
	redact   func(string) string

	targets []*target
	byKey   map[Key]*target

	cancel context.CancelFunc
	wg     sync.WaitGroup
	opened bool
}

type target struct {
	Target
	mu      sync.Mutex
	verdict Verdict
	// running is set while a probe that overran its timeout has not
	// returned yet; no other probe of the target starts meanwhile.
	running chan struct{}
}

// CheckerOption configures a Checker.
type CheckerOption func(*Checker)

// WithLogger logs verdict changes.
func WithLogger(l *slog.Logger) CheckerOption { return func(c *Checker) { c.logger = l } }

// WithObserve calls f after every probe with the observation and the
// verdict it led to. f runs on the probing goroutine and must be fast.
func WithObserve(f func(Observation, Verdict)) CheckerOption {
	return func(c *Checker) { c.observe = f }
}

// WithRedact passes every probe error through f before it is stored or
// logged, so that no secret reaches an observation.
func WithRedact(f func(string) string) CheckerOption { return func(c *Checker) { c.redact = f } }

// NewChecker makes a checker for the targets; observer names this node in
// every observation. It probes nothing until Open.
func NewChecker(observer string, targets []Target, opts ...CheckerOption) (*Checker, error) {
	c := &Checker{observer: observer, byKey: map[Key]*target{}, logger: slog.New(slog.DiscardHandler), redact: func(s string) string { return s }}
	for _, o := range opts {
		o(c)
	}
	now := time.Now()
	for _, t := range targets {
		k := Key{t.Service, t.Region}
		switch {
		case t.Prober == nil:
			return nil, fmt.Errorf("health: target %s has no prober", k)
		case t.Interval <= 0 || t.Timeout <= 0 || t.Timeout > t.Interval:
			return nil, fmt.Errorf("health: target %s: need 0 < timeout (%s) <= interval (%s)", k, t.Timeout, t.Interval)
		case t.Fall < 1 || t.Rise < 1:
			return nil, fmt.Errorf("health: target %s: fall and rise must be at least 1", k)
		case t.Jitter < 0 || t.Jitter >= t.Interval:
			return nil, fmt.Errorf("health: target %s: jitter %s must be in [0, interval)", k, t.Jitter)
		}
		if _, dup := c.byKey[k]; dup {
			return nil, fmt.Errorf("health: target %s given twice", k)
		}
		tt := &target{Target: t, verdict: Verdict{State: Unknown, Since: now}}
		c.targets = append(c.targets, tt)
		c.byKey[k] = tt
	}
	return c, nil
}

// Open starts one probing goroutine per target.
func (c *Checker) Open() error {
	if c.opened {
		return errors.New("health: checker already opened")
	}
	c.opened = true
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	for _, t := range c.targets {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.loop(ctx, t)
		}()
	}
	return nil
}

// Close stops probing and waits for probes in flight to end, or for ctx.
// A probe that ignores its context is not waited for beyond ctx.
func (c *Checker) Close(ctx context.Context) error {
	if c.cancel != nil {
		c.cancel()
	}
	if err := lifecycle.Wait(ctx, &c.wg); err != nil {
		return fmt.Errorf("health: close: %w", err)
	}
	return nil
}

func (c *Checker) loop(ctx context.Context, t *target) {
	// The first probe starts after a random part of the jitter so that a
	// cold start is answered quickly but targets spread out; after that the
	// schedule is fixed, so detection stays within fall × interval + timeout.
	next := time.Now().Add(randDuration(t.Jitter))
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		start := time.Now()
		c.probeOnce(ctx, t)
		if ctx.Err() != nil {
			return
		}
		// Schedule from the start of this probe, so the interval does not
		// drift with probe latency; a slow probe never overlaps the next.
		next = start.Add(t.Interval)
		if d := time.Until(next); d > 0 {
			timer.Reset(d)
		} else {
			timer.Reset(0)
		}
	}
}

func randDuration(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	return rand.N(max)
}

// probeOnce runs one probe with the target's timeout, recovering a panic as
// a failure, and updates the verdict. A probe that ignores its context and
// overruns the timeout is recorded as failed at the timeout; until it
// returns, no new probe starts and every tick is a failure, so a hung probe
// (a stuck NFS mount, say) cannot freeze the verdict.
func (c *Checker) probeOnce(ctx context.Context, t *target) {
	start := time.Now()
	if t.running != nil {
		select {
		case <-t.running:
			t.running = nil
		default:
			c.record(t, Observation{Time: start, Error: "previous probe still running past its timeout"})
			return
		}
	}
	pctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	done := make(chan Result, 1)
	finished := make(chan struct{})
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(finished)
		done <- safeProbe(pctx, t.Prober)
	}()
	var res Result
	select {
	case res = <-done:
	case <-pctx.Done():
		// Give a well-behaved probe a moment to return its own error (a
		// driver cancelling a connection attempt needs a little while).
		grace := min(max(t.Timeout/4, 10*time.Millisecond), time.Second)
		select {
		case res = <-done:
		case <-time.After(grace):
			t.running = finished
			res = Result{Err: fmt.Errorf("no answer")}
		}
	}
	latency := time.Since(start)
	if ctx.Err() != nil {
		return // shutting down: not an observation
	}
	obs := Observation{Time: start, Latency: latency, OK: res.Err == nil, Role: res.Role}
	if res.Err == nil && latency > t.Timeout {
		obs.OK = false
		res.Err = fmt.Errorf("answered after %s", latency.Round(time.Millisecond))
	}
	if res.Err != nil {
		obs.Error = res.Err.Error()
		if pctx.Err() == context.DeadlineExceeded {
			obs.Error = fmt.Sprintf("timed out after %s: %s", t.Timeout, obs.Error)
		}
	}
	c.record(t, obs)
}

// record completes an observation, applies it and reports it.
func (c *Checker) record(t *target, obs Observation) {
	obs.Service, obs.Region, obs.Observer = t.Service, t.Region, c.observer
	obs.Error = c.redact(obs.Error)
	v, changed, prev := t.record(obs)
	if changed {
		c.logger.Info("endpoint health changed", "service", t.Service, "region", t.Region,
			"from", prev, "to", v.State, "error", obs.Error)
	}
	if c.observe != nil {
		c.observe(obs, v)
	}
}

func safeProbe(ctx context.Context, p Prober) (res Result) {
	defer func() {
		if r := recover(); r != nil {
			res = Result{Err: fmt.Errorf("probe panicked: %v", r)}
		}
	}()
	return p.Probe(ctx)
}

// record applies the fall/rise thresholds to one observation.
func (t *target) record(obs Observation) (v Verdict, changed bool, prev State) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v = t.verdict
	prev = v.State
	if obs.OK {
		v.Successes++
		v.Failures = 0
		if v.State != Up && v.Successes >= t.Rise {
			v.State, v.Since = Up, obs.Time.Add(obs.Latency)
		}
	} else {
		v.Failures++
		v.Successes = 0
		if v.State != Down && v.Failures >= t.Fall {
			v.State, v.Since = Down, obs.Time.Add(obs.Latency)
		}
	}
	v.Last = obs
	t.verdict = v
	return v, v.State != prev, prev
}

// Verdict returns the current verdict of a target.
func (c *Checker) Verdict(service, region string) (Verdict, bool) {
	t, ok := c.byKey[Key{service, region}]
	if !ok {
		return Verdict{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.verdict, true
}

// Verdicts returns every target's current verdict.
func (c *Checker) Verdicts() map[Key]Verdict {
	out := make(map[Key]Verdict, len(c.targets))
	for _, t := range c.targets {
		t.mu.Lock()
		out[Key{t.Service, t.Region}] = t.verdict
		t.mu.Unlock()
	}
	return out
}
