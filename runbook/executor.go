package runbook

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/lifecycle"
	"github.com/lifeboat-dr/lifeboat/observe"
	"github.com/lifeboat-dr/lifeboat/traffic"
)

// Store persists runs and approvals. Implemented on etcd by the control
// plane.
type Store interface {
	// CreateRun stores a new run unless another run is active (ErrBusy,
	// wrapped with the active run's id).
	CreateRun(ctx context.Context, r *Run) error
	// SaveRun writes a run's progress. Only the leader may: it fails with
	// ErrNotLeader otherwise. A terminal run releases the lock.
	SaveRun(ctx context.Context, r *Run) error
	// GetRun returns a run, or ErrNotFound.
	GetRun(ctx context.Context, id string) (*Run, error)
	// ListRuns returns every run, newest first.
	ListRuns(ctx context.Context) ([]*Run, error)
	// ActiveRun returns the run that holds the lock, or nil.
	ActiveRun(ctx context.Context) (*Run, error)
	// Approve records an approval of a run's step (idempotent).
	Approve(ctx context.Context, runID, step string, a Approval) error
	// Approval returns a step's approval, or nil.
	Approval(ctx context.Context, runID, step string) (*Approval, error)
	// Cancel records a request to cancel a run (the first one stands);
	// Cancellation returns it, or nil.
	Cancel(ctx context.Context, runID string, c Approval) error
	Cancellation(ctx context.Context, runID string) (*Approval, error)
}

// Traffic is the routing state the traffic actions change (fenced by the
// leader's lease in the control plane).
type Traffic interface {
	State(ctx context.Context) (traffic.State, error)
	SetHold(ctx context.Context, held bool) (traffic.State, error)
	// Switch commits region as active at epoch from+1 if the epoch is
	// still from; if region is already active at a later epoch (this run's
	// own commit, before a leader change), it reports already and changes
	// nothing; if the epoch moved otherwise, it fails.
	Switch(ctx context.Context, region string, from uint64) (st traffic.State, already bool, err error)
	// AwaitEpoch returns when every live node's data plane routes by
	// epoch or a later one (an error when ctx ends first).
	AwaitEpoch(ctx context.Context, epoch uint64) error
	// AwaitHeld returns when every live node's data plane holds new
	// requests (or with an error naming those that do not when ctx ends).
	AwaitHeld(ctx context.Context) error
}

// StatusSource is the observation: health verdicts, lag, readiness.
type StatusSource interface {
	Status() observe.Status
}

// Recorder receives the run's events (run started, step ended, ...).
type Recorder interface {
	RunEvent(r *Run, s *StepRun, msg string)
}

// Scaler scales workloads in one Kubernetes cluster.
type Scaler interface {
	Scale(ctx context.Context, kind, namespace, name string, replicas int32, wait bool) (string, error)
}

// Options configures an Executor.
type Options struct {
	Config  *config.Config
	Store   Store
	Traffic Traffic
	Status  StatusSource
	// Lags remembers the standbys' lag from before a failure.
	Lags *LagMemory
	// Leading reports whether this node may act as leader now.
	Leading  func() bool
	Recorder Recorder
	// Kube returns the scaler of a kube context; nil: kubernetes.scale
	// steps fail saying no cluster is configured.
	Kube func(kubeContext string) (Scaler, error)
	// FenceDelay is how long after the new epoch commits a promotion
	// waits when the old primary could not be fenced: the time within
	// which every data-plane node either sees the new epoch or stops
	// routing writes (half the state lease), plus a margin.
	FenceDelay time.Duration
	// Poll is how often the leader looks for runs to execute. Default 200ms.
	Poll   time.Duration
	Client *http.Client
	Logger *slog.Logger
}

// Executor runs the active run when this node leads.
type Executor struct {
	opts   Options
	kick   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewExecutor makes an executor; Open starts it.
func NewExecutor(opts Options) *Executor {
	if opts.Poll <= 0 {
		opts.Poll = 200 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 30 * time.Second}
	}
	return &Executor{opts: opts, kick: make(chan struct{}, 1)}
}

// Open starts looking for work.
func (e *Executor) Open() error {
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.wg.Go(func() { e.loop(ctx) })
	return nil
}

// Close stops; a run in progress stops between attempts and is resumed
// by the next leader.
func (e *Executor) Close(ctx context.Context) error {
	if e.cancel != nil {
		e.cancel()
	}
	return lifecycle.Wait(ctx, &e.wg)
}

// Kick makes the executor look for work now.
func (e *Executor) Kick() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

func (e *Executor) loop(ctx context.Context) {
	t := time.NewTicker(e.opts.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-e.kick:
		}
		if !e.opts.Leading() {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := e.opts.Store.ActiveRun(rctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				e.opts.Logger.Warn("runs: cannot read the active run", "err", err)
			}
			continue
		}
		if r == nil || Terminal(r.Status) {
			continue
		}
		if err := e.Execute(ctx, r); err != nil && ctx.Err() == nil {
			e.opts.Logger.Warn("run interrupted", "run", r.ID, "err", err)
		}
	}
}

// execution is one executor's work on one run.
type execution struct {
	e   *Executor
	run *Run
	mu  sync.Mutex // guards run

	// The run's states are written in order by one writer; a step's
	// progress does not wait for it (a new leader runs again any step not
	// recorded as finished, and every action is idempotent), so steps do
	// not pay a round trip to the store each way. A group of steps starts
	// once everything before it is stored (so a deposed leader stops
	// there), and what must be stored before going on (the run's start, a
	// wait for approval, its end) waits for its own state and every
	// earlier one.
	saves   sync.Mutex // guards the fields below
	next    *Run       // the latest state not yet handed to the writer
	queued  uint64     // states queued so far
	written uint64     // states written (or given up) so far
	saveErr error      // the first failed write
	saved   chan struct{}
	writing bool
}

// Execute runs r's remaining steps while this node leads. It returns
// ErrNotLeader (wrapped) when leadership is lost: the run stays as
// saved, for the next leader.
func (e *Executor) Execute(ctx context.Context, r *Run) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A leader that loses its lease stops acting at once: the steps'
	// contexts end.
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if !e.opts.Leading() {
					cancel()
					return
				}
			}
		}
	}()
	x := &execution{e: e, run: r}
	return x.execute(ctx)
}

func (x *execution) save(ctx context.Context) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.saveLocked(ctx)
}

// saveLocked stores the run's state (x.mu held) and waits until it is
// written.
func (x *execution) saveLocked(ctx context.Context) error {
	if ctx.Err() != nil && !x.e.opts.Leading() {
		return ErrNotLeader
	}
	return x.waitSaved(ctx, x.saveLater())
}

// saveLater queues the run's state (x.mu held) for the writer and
// returns its number; an error of an earlier write is returned by the
// next saveLocked.
func (x *execution) saveLater() uint64 {
	b, err := json.Marshal(x.run)
	snap := &Run{}
	if err == nil {
		err = json.Unmarshal(b, snap)
	}
	x.saves.Lock()
	defer x.saves.Unlock()
	x.queued++
	if err != nil {
		x.saveErr = cmp.Or(x.saveErr, err)
		x.written = x.queued
		return x.queued
	}
	x.next = snap
	if x.saved == nil {
		x.saved = make(chan struct{})
	}
	if !x.writing {
		x.writing = true
		go x.writer()
	}
	return x.queued
}

// writer writes the latest queued state until none is left.
func (x *execution) writer() {
	for {
		x.saves.Lock()
		snap, upTo := x.next, x.queued
		x.next = nil
		if snap == nil {
			x.writing = false
			x.saves.Unlock()
			return
		}
		x.saves.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := x.e.opts.Store.SaveRun(ctx, snap)
		cancel()
		x.saves.Lock()
		if err != nil && x.saveErr == nil {
			x.saveErr = err
		}
		x.written = upTo
		close(x.saved)
		x.saved = make(chan struct{})
		x.saves.Unlock()
	}
}

// flush waits until every queued state is written.
func (x *execution) flush(ctx context.Context) error {
	x.saves.Lock()
	n := x.queued
	x.saves.Unlock()
	return x.waitSaved(ctx, n)
}

// waitSaved waits until state n is written and returns the first write
// error so far.
func (x *execution) waitSaved(ctx context.Context, n uint64) error {
	for {
		x.saves.Lock()
		done, err, saved := x.written >= n, x.saveErr, x.saved
		x.saves.Unlock()
		if done {
			return err
		}
		select {
		case <-saved:
		case <-time.After(6 * time.Second):
			return fmt.Errorf("runbook: the run's state was not stored within 6s")
		}
	}
}

func (x *execution) event(s *StepRun, format string, args ...any) {
	if x.e.opts.Recorder != nil {
		x.e.opts.Recorder.RunEvent(x.run, s, fmt.Sprintf(format, args...))
	}
}

func (x *execution) execute(ctx context.Context) error {
	r := x.run
	x.mu.Lock()
	if !r.StartedAt.IsZero() {
		r.Resumed++
	} else {
		r.StartedAt = time.Now().UTC()
	}
	if r.Status == StatusPending {
		r.Status = StatusRunning
	}
	resumed := r.Resumed
	err := x.saveLocked(ctx)
	x.mu.Unlock()
	if err != nil {
		return err
	}
	if resumed > 0 {
		x.event(nil, "run %s resumed by a new leader (%d)", r.ID, resumed)
	} else {
		x.event(nil, "%s %s → %s started (%s)", r.Kind, r.From, r.To, r.Trigger)
	}
	for g := range r.Groups {
		// Once the epoch has switched, what the last group did is stored,
		// fenced by this node's leadership, before the next acts (a
		// promotion, say): a leader deposed meanwhile stops here. Before,
		// the lease's own validity decides (the switch itself is fenced).
		x.mu.Lock()
		switched := x.run.Epoch != 0
		x.mu.Unlock()
		if switched {
			if err := x.flush(ctx); err != nil {
				return err
			}
		} else if !x.e.opts.Leading() {
			return ErrNotLeader
		}
		if done, err := x.cancelled(ctx); done || err != nil {
			return err
		}
		var group []*StepRun
		for _, s := range r.Steps {
			if s.Group == g {
				group = append(group, s)
			}
		}
		var wg sync.WaitGroup
		errs := make([]error, len(group))
		for i, s := range group {
			if s.Status == StatusSucceeded || s.Status == StatusFailed || s.Status == StatusSkipped {
				continue
			}
			wg.Go(func() { errs[i] = x.step(ctx, s) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			if errors.Is(err, errCancelled) {
				if done, cerr := x.cancelled(ctx); done || cerr != nil {
					return cerr
				}
			}
			return err // leadership lost or stopping: the run stays as saved
		}
		for _, s := range group {
			if s.Status != StatusFailed {
				continue
			}
			switch s.OnFailure {
			case config.OnFailureContinue:
				continue
			case config.OnFailureRollback:
				x.rollback(ctx)
				return x.finish(ctx, StatusRolledBack, fmt.Sprintf("step %s failed: %s; rolled back", s.Name, s.Error))
			default:
				return x.finish(ctx, StatusFailed, fmt.Sprintf("step %s failed: %s", s.Name, s.Error))
			}
		}
	}
	return x.finish(ctx, StatusSucceeded, "")
}

func (x *execution) finish(ctx context.Context, status, msg string) error {
	x.mu.Lock()
	x.run.Status = status
	x.run.Error = msg
	x.run.FinishedAt = time.Now().UTC()
	err := x.saveLocked(ctx)
	d := x.run.FinishedAt.Sub(x.run.StartedAt)
	x.mu.Unlock()
	if err != nil {
		return err
	}
	if msg != "" {
		x.event(nil, "%s %s → %s %s after %s: %s", x.run.Kind, x.run.From, x.run.To, status, d.Round(time.Millisecond), msg)
	} else {
		x.event(nil, "%s %s → %s %s in %s", x.run.Kind, x.run.From, x.run.To, status, d.Round(time.Millisecond))
	}
	return nil
}

// matches evaluates a step's condition against the run.
func (x *execution) matches(when string) bool {
	if when == "" {
		return true
	}
	key, op, value, err := config.ParseWhen(when)
	if err != nil {
		return false
	}
	var have string
	switch key {
	case "severity":
		have = x.run.Severity
	case "trigger":
		have = x.run.Trigger
	case "forced":
		have = fmt.Sprint(x.run.Forced)
	}
	return (have == value) == (op == "=")
}

// step runs one step to its end (or until leadership is lost).
func (x *execution) step(ctx context.Context, s *StepRun) error {
	if !x.matches(s.When) {
		x.mu.Lock()
		s.Status = StatusSkipped
		s.StartedAt = time.Now().UTC()
		s.FinishedAt = s.StartedAt
		s.Output = "condition not met: " + s.When
		x.saveLater()
		x.mu.Unlock()
		return nil
	}
	if s.Approve != "" && s.ApprovedBy == "" {
		if err := x.awaitApproval(ctx, s); err != nil {
			return err
		}
	}
	act, ok := actionFor(s.Action)
	x.mu.Lock()
	s.Status = StatusRunning
	if s.StartedAt.IsZero() {
		s.StartedAt = time.Now().UTC()
	}
	x.saveLater()
	x.mu.Unlock()
	x.event(s, "step %s (%s) started", s.Name, s.Action)
	var out string
	var runErr error
	if !ok {
		runErr = fmt.Errorf("unknown action %q", s.Action)
	}
	for attempt := 0; ok && attempt <= s.Retries; attempt++ {
		if ctx.Err() != nil {
			return fmt.Errorf("step %s: %w", s.Name, ErrNotLeader)
		}
		x.mu.Lock()
		s.Attempts++
		x.mu.Unlock()
		actx, cancel := context.WithTimeout(ctx, s.Timeout())
		out, runErr = act.run(actx, x, s)
		cancel()
		if runErr == nil {
			break
		}
		if ctx.Err() != nil {
			// Interrupted, not failed: the next leader runs it again.
			return fmt.Errorf("step %s: %w", s.Name, ErrNotLeader)
		}
		if attempt < s.Retries {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	redact := x.e.opts.Config.Redact
	x.mu.Lock()
	s.FinishedAt = time.Now().UTC()
	s.Output = redact(out)
	if runErr != nil {
		s.Status = StatusFailed
		s.Error = redact(runErr.Error())
	} else {
		s.Status = StatusSucceeded
	}
	d := s.FinishedAt.Sub(s.StartedAt)
	x.saveLater()
	x.mu.Unlock()
	if s.Status == StatusFailed {
		x.event(s, "step %s failed after %s: %s", s.Name, d.Round(time.Millisecond), s.Error)
	} else {
		x.event(s, "step %s succeeded in %s", s.Name, d.Round(time.Millisecond))
	}
	return nil
}

// awaitApproval parks the run until the step is approved.
func (x *execution) awaitApproval(ctx context.Context, s *StepRun) error {
	announced := false
	for {
		a, err := x.e.opts.Store.Approval(ctx, x.run.ID, s.Name)
		if err == nil && a != nil {
			x.mu.Lock()
			s.ApprovedBy, s.ApprovedAt = fmt.Sprintf("%s (%s)", a.By, a.Role), a.At
			// No longer waiting: the approval's event must not read as a
			// call for one.
			s.Status = StatusPending
			x.run.Status = StatusRunning
			err := x.saveLocked(ctx)
			x.mu.Unlock()
			if err == nil {
				x.event(s, "step %s approved by %s", s.Name, s.ApprovedBy)
			}
			return err
		}
		if !announced {
			x.mu.Lock()
			s.Status = StatusWaitingApproval
			x.run.Status = StatusWaitingApproval
			err := x.saveLocked(ctx)
			x.mu.Unlock()
			if err != nil {
				return err
			}
			x.event(s, "step %s waits for the approval of a %s", s.Name, s.Approve)
			announced = true
		}
		if c, err := x.e.opts.Store.Cancellation(ctx, x.run.ID); err == nil && c != nil {
			return errCancelled
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("step %s: %w", s.Name, ErrNotLeader)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// errCancelled ends an approval wait: the run was cancelled.
var errCancelled = errors.New("runbook: run cancelled")

// cancelled ends the run when an operator asked to cancel it, as long as
// its epoch has not switched (after the switch, undoing the fence could
// give the old region writes again: the run goes on to the end). It
// reports whether the run ended.
func (x *execution) cancelled(ctx context.Context) (bool, error) {
	x.mu.Lock()
	switched := x.run.Epoch != 0
	x.mu.Unlock()
	if switched {
		return false, nil // too late to cancel
	}
	c, err := x.e.opts.Store.Cancellation(ctx, x.run.ID)
	if err != nil || c == nil {
		return false, nil // unknown: keep going, look again at the next group
	}
	x.mu.Lock()
	for _, s := range x.run.Steps {
		if s.Status == StatusWaitingApproval {
			s.Status, s.Output = StatusSkipped, "the run was cancelled"
		}
	}
	x.mu.Unlock()
	x.rollback(ctx)
	return true, x.finish(ctx, StatusCancelled, fmt.Sprintf("cancelled by %s (%s) at %s", c.By, c.Role, c.At.Format(time.RFC3339)))
}

// rollback undoes the succeeded steps that can be undone, newest first.
func (x *execution) rollback(ctx context.Context) {
	for i := len(x.run.Steps) - 1; i >= 0; i-- {
		s := x.run.Steps[i]
		act, ok := actionFor(s.Action)
		if s.Status != StatusSucceeded || !ok || act.undo == nil {
			continue
		}
		u := &StepRun{Step: Step{Name: "undo-" + s.Name, Action: s.Action, Args: s.Args, Group: s.Group, TimeoutSeconds: s.TimeoutSeconds, OnFailure: config.OnFailureContinue},
			Status: StatusRunning, StartedAt: time.Now().UTC(), Attempts: 1}
		uctx, cancel := context.WithTimeout(ctx, s.Timeout())
		out, err := act.undo(uctx, x, s)
		cancel()
		x.mu.Lock()
		u.FinishedAt = time.Now().UTC()
		u.Output = x.e.opts.Config.Redact(out)
		u.Status = StatusSucceeded
		if err != nil {
			u.Status, u.Error = StatusFailed, x.e.opts.Config.Redact(err.Error())
		}
		x.run.Rollback = append(x.run.Rollback, u)
		x.saveLocked(ctx)
		x.mu.Unlock()
		x.event(u, "rollback: %s %s", u.Name, u.Status)
	}
}
