package files

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/replication"
)

var _ replication.Source = (*Replicator)(nil)

// reasonNoMeasurement is a standby's Reason before its first pass.
const reasonNoMeasurement = "no measurement yet"

// Endpoint is one store of a files service.
type Endpoint struct {
	// Region the store is in.
	Region string
	// URL is a gocloud.dev/blob URL (file:///dir, s3://bucket?...,
	// azblob://..., gs://...) or an absolute path.
	URL string
}

// ReplicatorConfig configures a Replicator.
type ReplicatorConfig struct {
	// Service is the files service's name, copied into every Lag.
	// Required.
	Service string
	// Primary is the store in the active region. Required.
	Primary Endpoint
	// Standbys are the copies, one per standby region. At least one;
	// regions distinct.
	Standbys []Endpoint
	// Interval is the time between the end of a pass and the start of the
	// next one, for each standby. Required (> 0).
	Interval time.Duration
	// Watch, for a file:// primary, also starts a pass soon (debounced by
	// WatchDelay) after the primary's directory tree changes (fsnotify).
	Watch bool
	// WatchDelay is the debounce of Watch. Default 200ms.
	WatchDelay time.Duration
	// Options of every pass. Options.DryRun makes the replicator only
	// measure.
	Options Options
	// Active reports whether this node should copy (it is the control
	// plane's leader). When it returns false the replicator only measures
	// (a dry-run pass), so that every node reports lag. nil: always copy.
	Active func() bool
	// Logger receives state changes (a standby broken or restored, passes
	// that copied). Default: discard.
	Logger *slog.Logger
}

// Replicator keeps the standbys of one files service in sync with its
// primary: one pass per standby every Interval (and after changes, with
// Watch), copying when Active says so and only measuring otherwise. It
// implements replication.Source: a standby's lag is what its last pass
// found pending. Call Open to start and Close to stop.
type Replicator struct {
	cfg      ReplicatorConfig
	log      *slog.Logger
	standbys []*standby

	mu     sync.Mutex // guards the fields below and every standby's figures
	cancel context.CancelFunc
	wg     *sync.WaitGroup
	closed bool
}

// standby is one standby store and what is known of it.
type standby struct {
	Endpoint
	// kick asks the standby's loop for a pass now (buffered, 1).
	kick chan struct{}
	// sem is held during a pass on this pair, by the loop or SyncNow.
	sem chan struct{}
	// syncer is the primary → standby syncer, opened on first use and
	// again after a failed pass. Guarded by sem.
	syncer *Syncer

	// Figures, guarded by Replicator.mu.
	last        Report    // last pass that listed both sides
	lastGood    bool      // last is set
	lastMode    string    // "copy" or "measure"
	lastTime    time.Time // when the last pass (good or not) ended
	lastSuccess time.Time // end of the last pass with nothing failed
	broken      string    // why the last pass failed; "" when it ran
}

// NewReplicator checks cfg. It does no I/O; Lag reports every standby as
// not measured yet until its first pass.
func NewReplicator(cfg ReplicatorConfig) (*Replicator, error) {
	switch {
	case cfg.Service == "":
		return nil, errors.New("files replicator: Service is required")
	case cfg.Primary.URL == "":
		return nil, fmt.Errorf("files replicator %q: Primary.URL is required", cfg.Service)
	case len(cfg.Standbys) == 0:
		return nil, fmt.Errorf("files replicator %q: at least one standby is required", cfg.Service)
	case cfg.Interval <= 0:
		return nil, fmt.Errorf("files replicator %q: Interval must be positive", cfg.Service)
	}
	if cfg.WatchDelay <= 0 {
		cfg.WatchDelay = 200 * time.Millisecond
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Options.Logger == nil {
		cfg.Options.Logger = log
	}
	r := &Replicator{cfg: cfg, log: log.With("service", cfg.Service)}
	seen := map[string]bool{}
	for i, ep := range cfg.Standbys {
		switch {
		case ep.Region == "":
			return nil, fmt.Errorf("files replicator %q: Standbys[%d].Region is required", cfg.Service, i)
		case ep.URL == "":
			return nil, fmt.Errorf("files replicator %q: Standbys[%d].URL is required", cfg.Service, i)
		case seen[ep.Region]:
			return nil, fmt.Errorf("files replicator %q: region %q has two standbys", cfg.Service, ep.Region)
		case StoreURL(ep.URL) == StoreURL(cfg.Primary.URL):
			return nil, fmt.Errorf("files replicator %q: standby %q is the primary's store %s", cfg.Service, ep.Region, config.RedactURL(ep.URL))
		}
		seen[ep.Region] = true
		r.standbys = append(r.standbys, &standby{Endpoint: ep, kick: make(chan struct{}, 1), sem: make(chan struct{}, 1)})
	}
	return r, nil
}

// Open starts one pass loop per standby (their first passes start at
// once) and, with Watch, the watch of the primary's directory. It fails
// if the replicator is already open or was closed.
func (r *Replicator) Open() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed:
		return fmt.Errorf("files replicator %q: open after close", r.cfg.Service)
	case r.cancel != nil:
		return fmt.Errorf("files replicator %q: already open", r.cfg.Service)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg = &sync.WaitGroup{}
	for _, sb := range r.standbys {
		r.wg.Go(func() { r.loop(ctx, sb) })
	}
	if r.cfg.Watch {
		if dir, ok := localDir(r.cfg.Primary.URL); ok {
			w := &watcher{root: dir, delay: r.cfg.WatchDelay, retry: r.cfg.Interval, log: r.log, notify: r.kickAll}
			r.wg.Go(func() { w.run(ctx) })
		} else {
			r.log.Warn("files replicator: Watch needs a file:// primary; passes run every Interval only", "primary", config.RedactURL(r.cfg.Primary.URL))
		}
	}
	return nil
}

// Close stops the loops and the watch, waits for them (until ctx is
// done; a copy under way is cancelled), then closes the stores. It is
// idempotent and may be called without Open. It returns ctx's error,
// wrapped, when the loops did not end in time.
func (r *Replicator) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	cancel, wg := r.cancel, r.wg
	r.mu.Unlock()

	var errs []error
	if cancel != nil {
		cancel()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("files replicator %q: wait for the sync loops: %w", r.cfg.Service, ctx.Err()))
		}
	}
	for _, sb := range r.standbys {
		select {
		case sb.sem <- struct{}{}:
			// Held for good: nothing runs a pass after Close.
			if sb.syncer != nil {
				errs = append(errs, sb.syncer.Close())
				sb.syncer = nil
			}
		case <-ctx.Done():
			// A SyncNow still runs: it closes its syncer itself.
		}
	}
	return errors.Join(errs...)
}

func (r *Replicator) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// kickAll asks every standby's loop for a pass now.
func (r *Replicator) kickAll() {
	for _, sb := range r.standbys {
		select {
		case sb.kick <- struct{}{}:
		default:
		}
	}
}

// loop runs a pass at once, then Interval after the end of each pass or
// when kicked, until ctx is done.
func (r *Replicator) loop(ctx context.Context, sb *standby) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-sb.kick:
		}
		select {
		case sb.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		active := r.cfg.Active == nil || r.cfg.Active()
		rep, err := r.passLocked(ctx, sb, !active || r.cfg.Options.DryRun)
		<-sb.sem
		if ctx.Err() != nil {
			return
		}
		r.record(sb, rep, err, !active || r.cfg.Options.DryRun)
		timer.Reset(r.cfg.Interval)
	}
}

// passLocked runs one primary → standby pass; the caller holds sb.sem.
func (r *Replicator) passLocked(ctx context.Context, sb *standby, dryRun bool) (Report, error) {
	if sb.syncer == nil {
		s, err := OpenSyncer(ctx, r.cfg.Primary.URL, sb.URL, r.cfg.Options)
		if err != nil {
			return Report{Started: time.Now(), Finished: time.Now(), DryRun: dryRun}, err
		}
		sb.syncer = s
	}
	rep, err := sb.syncer.sync(ctx, dryRun)
	if err != nil {
		// Open the stores again next time: a share may have been
		// remounted, an endpoint's address changed.
		sb.syncer.Close()
		sb.syncer = nil
	}
	return rep, err
}

// record publishes a pass's outcome as the standby's lag.
func (r *Replicator) record(sb *standby, rep Report, err error, dryRun bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	wasBroken, wasPending := sb.broken, sb.lastGood && sb.last.PendingObjects > 0
	sb.lastTime = rep.Finished
	if err != nil {
		sb.broken = err.Error()
		if sb.broken == "" {
			sb.broken = "sync failed"
		}
		if wasBroken == "" {
			r.log.Warn("files replication broken", "region", sb.Region, "error", sb.broken)
		}
		return
	}
	sb.broken = ""
	sb.last, sb.lastGood = rep, true
	sb.lastMode = "copy"
	if dryRun {
		sb.lastMode = "measure"
	}
	if len(rep.Failed) == 0 && (dryRun || rep.PendingObjects == 0) {
		sb.lastSuccess = rep.Finished
	}
	if wasBroken != "" {
		r.log.Info("files replication restored", "region", sb.Region)
	}
	if !dryRun && wasPending && rep.PendingObjects == 0 {
		r.log.Info("files replication caught up", "region", sb.Region, "copied", rep.Copied)
	}
}

// Lag returns the latest measurement of every standby, in the order of
// ReplicatorConfig.Standbys, in a new slice the caller owns. It does no
// I/O.
//
// Seconds is now minus the source modification time of the oldest object
// the last pass left pending (0 when none was), so it keeps growing
// between passes while something is pending. When the last pass failed
// (Broken), Seconds is at least the time since the last pass that did
// run started: anything written since may be missing. Bytes and Objects
// are what the last pass left pending. Details: mode (copy or measure),
// last_success, copied, deleted, failed, pending_deletes.
func (r *Replicator) Lag() []replication.Lag {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	lags := make([]replication.Lag, len(r.standbys))
	for i, sb := range r.standbys {
		l := replication.Lag{Service: r.cfg.Service, Region: sb.Region, Time: sb.lastTime, Details: map[string]string{}}
		if sb.lastGood {
			rep := sb.last
			l.SecondsKnown, l.BytesKnown = true, true
			l.Bytes, l.Objects = rep.PendingBytes, int64(rep.PendingObjects)
			if !rep.OldestPending.IsZero() {
				l.Seconds = max(0, now.Sub(rep.OldestPending).Seconds())
			}
			if sb.broken != "" {
				l.Seconds = max(l.Seconds, now.Sub(rep.Started).Seconds())
			}
			l.Details["mode"] = sb.lastMode
			l.Details["copied"] = strconv.Itoa(rep.Copied)
			l.Details["deleted"] = strconv.Itoa(rep.Deleted)
			l.Details["failed"] = strconv.Itoa(len(rep.Failed))
			l.Details["pending_deletes"] = strconv.Itoa(rep.PendingDeletes)
			if len(rep.Failed) > 0 && sb.broken == "" {
				l.Reason = fmt.Sprintf("%d objects failed, first: %s", len(rep.Failed), rep.Failed[0])
			}
		}
		if !sb.lastSuccess.IsZero() {
			l.Details["last_success"] = sb.lastSuccess.UTC().Format(time.RFC3339)
		}
		switch {
		case sb.broken != "":
			l.Broken, l.Reason = true, sb.broken
		case sb.lastTime.IsZero():
			l.Reason = reasonNoMeasurement
		}
		l.Details = maps.Clone(l.Details)
		lags[i] = l
	}
	return lags
}

// SyncNow runs one copying pass between the primary and the standby of
// region at once, whatever Active says, after any pass under way on that
// pair: primary → standby, or with reverse standby → primary (a failback).
// A forward pass updates the standby's lag. It works before Open, not
// after Close.
func (r *Replicator) SyncNow(ctx context.Context, region string, reverse bool) (Report, error) {
	var sb *standby
	for _, s := range r.standbys {
		if s.Region == region {
			sb = s
		}
	}
	if sb == nil {
		return Report{}, fmt.Errorf("files replicator %q: no standby in region %q", r.cfg.Service, region)
	}
	if r.isClosed() {
		return Report{}, fmt.Errorf("files replicator %q: closed", r.cfg.Service)
	}
	select {
	case sb.sem <- struct{}{}:
	case <-ctx.Done():
		return Report{}, fmt.Errorf("files replicator %q: wait for the pass under way on %s: %w", r.cfg.Service, region, ctx.Err())
	}
	defer func() { <-sb.sem }()
	if r.isClosed() {
		return Report{}, fmt.Errorf("files replicator %q: closed", r.cfg.Service)
	}
	dryRun := r.cfg.Options.DryRun
	if !reverse {
		rep, err := r.passLocked(ctx, sb, dryRun)
		if ctx.Err() == nil {
			r.record(sb, rep, err, dryRun)
		}
		if r.isClosed() && sb.syncer != nil {
			sb.syncer.Close()
			sb.syncer = nil
		}
		return rep, err
	}
	s, err := OpenSyncer(ctx, sb.URL, r.cfg.Primary.URL, r.cfg.Options)
	if err != nil {
		return Report{}, err
	}
	defer s.Close()
	rep, err := s.sync(ctx, dryRun)
	if err == nil {
		r.log.Info("files sync back to the primary", "region", region, "copied", rep.Copied, "deleted", rep.Deleted, "failed", len(rep.Failed))
	}
	return rep, err
}
