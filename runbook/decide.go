package runbook

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/internal/lifecycle"
	"github.com/lifeboat-dr/lifeboat/observe"
	"github.com/lifeboat-dr/lifeboat/postgres"
	"github.com/lifeboat-dr/lifeboat/redis"
)

// Decider is the automatic decision, on the leader: when the active
// region is down by quorum it starts (policy.failover: auto) or raises
// for approval (manual) a failover to the best ready standby.
//
// Guards: one run at a time; a cooldown after any automatic failover and
// at most policy.max_auto_failovers within policy.failover_window; only
// failovers are automatic (never a failback, never to a region whose data
// services are not replicating standbys); a target beyond
// max_lag_on_failover fails the run's check step instead of promoting.
type Decider struct {
	opts   DeciderOptions
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	refused string               // the last refusal, recorded once
	fenced  map[string]time.Time // when each endpoint was last fenced
}

// DeciderOptions configures a Decider.
type DeciderOptions struct {
	Config  *config.Config
	Store   Store
	Traffic Traffic
	Status  StatusSource
	Lags    *LagMemory
	Leading func() bool
	// Started is called with each run the decider creates (to kick the
	// executor).
	Started func(*Run)
	// Notice is called when the decider declines to act (once per
	// reason) and when it fences a primary outside the active region.
	Notice func(msg string)
	Every  time.Duration
	Logger *slog.Logger
	Now    func() time.Time
}

// NewDecider makes a decider; Open starts it.
func NewDecider(opts DeciderOptions) *Decider {
	if opts.Every <= 0 {
		opts.Every = 250 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Decider{opts: opts}
}

// Open starts deciding.
func (d *Decider) Open() error {
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.wg.Go(func() {
		t := time.NewTicker(d.opts.Every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			d.opts.Lags.Observe(d.opts.Status.Status())
			if d.opts.Leading() {
				// Bounded: a store request stuck on a partitioned member
				// must not stall every later decision.
				dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				if _, err := d.Decide(dctx); err != nil && ctx.Err() == nil {
					d.opts.Logger.Warn("decision failed", "err", err)
				}
				cancel()
			}
		}
	})
	return nil
}

// Close stops deciding.
func (d *Decider) Close(ctx context.Context) error {
	if d.cancel != nil {
		d.cancel()
	}
	return lifecycle.Wait(ctx, &d.wg)
}

func (d *Decider) refuse(reason string) {
	d.mu.Lock()
	same := d.refused == reason
	d.refused = reason
	d.mu.Unlock()
	if !same {
		d.opts.Logger.Warn("automatic failover refused", "reason", reason)
		if d.opts.Notice != nil {
			d.opts.Notice("automatic failover refused: " + reason)
		}
	}
}

// Decide looks once: it returns the run it created, if any.
func (d *Decider) Decide(ctx context.Context) (*Run, error) {
	cfg := d.opts.Config
	st, err := d.opts.Traffic.State(ctx)
	if err != nil {
		return nil, err
	}
	status := d.opts.Status.Status()
	running, err := d.opts.Store.ActiveRun(ctx)
	if err != nil {
		return nil, err
	}
	if running == nil && status.ActiveRegion == st.Active {
		d.enforceFences(ctx, st.Active, status)
	}
	var activeState health.RegionStatus
	for _, r := range status.Regions {
		if r.Name == st.Active {
			activeState = r
		}
	}
	if activeState.State != health.RegionDown {
		d.mu.Lock()
		d.refused = ""
		d.mu.Unlock()
		return nil, nil
	}
	if running != nil {
		return nil, nil // the run in progress decides
	}
	if status.ActiveRegion != st.Active {
		return nil, nil // the observation has not followed the last switch yet
	}
	target, why := bestStandby(cfg, status, d.opts.Lags)
	if target == "" {
		d.refuse(fmt.Sprintf("region %s is down but no standby is ready: %s", st.Active, why))
		return nil, nil
	}
	runs, err := d.opts.Store.ListRuns(ctx)
	if err != nil {
		return nil, err
	}
	now := d.opts.Now()
	p := cfg.Policy
	count := 0
	for _, r := range runs {
		if r.Trigger != TriggerAuto || r.Kind != KindFailover {
			continue
		}
		if now.Sub(r.CreatedAt) < p.Cooldown.D() {
			d.refuse(fmt.Sprintf("region %s is down but the last automatic failover (run %s) is within the cooldown of %s", st.Active, r.ID, p.Cooldown))
			return nil, nil
		}
		if now.Sub(r.CreatedAt) < p.FailoverWindow.D() {
			count++
		}
	}
	if count >= p.MaxAutoFailovers {
		d.refuse(fmt.Sprintf("region %s is down but %d automatic failovers already ran within %s (policy.max_auto_failovers %d)", st.Active, count, p.FailoverWindow, p.MaxAutoFailovers))
		return nil, nil
	}
	severity := outageSeverity(cfg, status, st.Active)
	req := Request{Kind: KindFailover, From: st.Active, To: target, Severity: severity}
	if p.Failover != config.FailoverAuto || (p.AutoSeverity == config.SeverityCritical && severity != config.SeverityCritical) {
		req.Approve = config.TokenOperator
	}
	plan, err := Generate(cfg, req)
	if err != nil {
		return nil, err
	}
	run := NewRun(plan, TriggerAuto, "policy", fmt.Sprintf("region %s down: %s", st.Active, activeState.Reason), now)
	run.StartEpoch = st.Epoch
	run.Exposure = status.Exposure
	if err := d.opts.Store.CreateRun(ctx, run); err != nil {
		return nil, err
	}
	d.opts.Logger.Info("automatic failover raised", "run", run.ID, "from", st.Active, "to", target, "policy", p.Failover)
	if d.opts.Started != nil {
		d.opts.Started(run)
	}
	return run, nil
}

// outageSeverity is critical when every critical service of the region is
// down (the region is gone), major otherwise.
func outageSeverity(cfg *config.Config, status observe.Status, region string) string {
	for _, svc := range status.Services {
		if !svc.Critical {
			continue
		}
		for _, ep := range svc.Endpoints {
			if ep.Region == region && ep.Health != health.Down {
				return config.SeverityMajor
			}
		}
	}
	return config.SeverityCritical
}

// enforceFences fences a primary that appears outside the active region
// while no run is active: an old primary restarted after a failover comes
// back writable, and must refuse writes until failback reprotects it.
func (d *Decider) enforceFences(ctx context.Context, active string, status observe.Status) {
	for _, svc := range status.Services {
		if svc.Kind != config.KindPostgres && svc.Kind != config.KindRedis {
			continue
		}
		sc, ok := d.opts.Config.Service(svc.Name)
		if !ok {
			continue
		}
		for _, ep := range svc.Endpoints {
			if ep.Region == active || ep.Health != health.Up || ep.Role != health.RolePrimary {
				continue
			}
			key := svc.Name + "@" + ep.Region
			d.mu.Lock()
			last := d.fenced[key]
			d.mu.Unlock()
			if time.Since(last) < 2*time.Second {
				continue
			}
			fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			msg, err := fenceEndpoint(fctx, sc, ep.Region)
			cancel()
			d.mu.Lock()
			if d.fenced == nil {
				d.fenced = map[string]time.Time{}
			}
			d.fenced[key] = time.Now()
			d.mu.Unlock()
			if err != nil {
				d.opts.Logger.Warn("cannot fence a primary outside the active region", "service", svc.Name, "region", ep.Region, "err", d.opts.Config.Redact(err.Error()))
				continue
			}
			if msg != "" && d.opts.Notice != nil {
				d.opts.Notice(fmt.Sprintf("%s in %s is a primary outside the active region %s: %s", svc.Name, ep.Region, active, msg))
			}
		}
	}
}

// fenceEndpoint fences one data endpoint; the message is empty when it
// already refused writes.
func fenceEndpoint(ctx context.Context, sc *config.Service, region string) (string, error) {
	ep := sc.Endpoints[region]
	switch sc.Kind {
	case config.KindPostgres:
		if fenced, err := postgres.IsFenced(ctx, ep); err != nil || fenced {
			return "", err
		}
		res, err := postgres.Fence(ctx, ep)
		if err != nil || res.AlreadyFenced {
			return "", err
		}
		return fmt.Sprintf("fenced (read-only, %d sessions terminated)", res.Terminated), nil
	case config.KindRedis:
		if fenced, err := redis.IsFenced(ctx, ep); err != nil || fenced {
			return "", err
		}
		if _, err := redis.Fence(ctx, ep); err != nil {
			return "", err
		}
		return "fenced (writes refused)", nil
	}
	return "", nil
}

// bestStandby is the most preferred region that could take over.
func bestStandby(cfg *config.Config, status observe.Status, mem *LagMemory) (string, string) {
	var reasons []string
	for _, r := range cfg.RegionsByPriority() {
		if r.Name == status.ActiveRegion || r.Role == config.RoleWitness {
			continue
		}
		problems, _, _ := takeover(cfg, status, mem, r.Name)
		if len(problems) == 0 {
			return r.Name, ""
		}
		reasons = append(reasons, r.Name+": "+strings.Join(problems, ", "))
	}
	if len(reasons) == 0 {
		return "", "no standby region"
	}
	return "", strings.Join(reasons, "; ")
}
