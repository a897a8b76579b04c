package drill

// schedule.go runs the configuration's scheduled drills (drills.schedule)
// on the leader at their cron times.

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/internal/lifecycle"
)

// Statuses of the drill events a Scheduler records.
const (
	ScheduledStarted   = "started"
	ScheduledSkipped   = "skipped"
	ScheduledSucceeded = "succeeded"
	ScheduledFailed    = "failed"
)

// SchedulerOptions configures a Scheduler.
type SchedulerOptions struct {
	// Schedule is the drills to run (drills.schedule).
	Schedule []config.DrillSchedule
	// Leading reports whether this node leads: only the leader starts
	// drills.
	Leading func() bool
	// Run runs one drill (a Runner pointed at this node's API).
	Run func(ctx context.Context, e config.DrillSchedule) (*Outcome, error)
	// Record appends an event to the stream (type drill): each scheduled
	// start, skip and end.
	Record func(control.Event)
	Logger *slog.Logger
	// Now is the clock (default time.Now); Tick how often it is read
	// (default 1s).
	Now  func() time.Time
	Tick time.Duration
}

// Scheduler starts each scheduled drill when its cron time comes, if this
// node leads then. One drill runs at a time: a time that comes while a
// drill runs is skipped (and recorded); a time that passes while the node
// is down or not the leader is not made up for.
type Scheduler struct {
	opts    SchedulerOptions
	entries []scheduled

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	running string // the scenario of the drill running, "" if none
}

type scheduled struct {
	config.DrillSchedule
	cron cron.Schedule
	next time.Time
}

// NewScheduler parses the schedule's cron expressions.
func NewScheduler(opts SchedulerOptions) (*Scheduler, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Tick <= 0 {
		opts.Tick = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Record == nil {
		opts.Record = func(control.Event) {}
	}
	s := &Scheduler{opts: opts}
	for i, e := range opts.Schedule {
		c, err := config.ParseCron(e.Cron)
		if err != nil {
			return nil, fmt.Errorf("drills.schedule[%d].cron: %w", i, err)
		}
		s.entries = append(s.entries, scheduled{DrillSchedule: e, cron: c})
	}
	return s, nil
}

// Open starts watching the clock (nothing when the schedule is empty).
func (s *Scheduler) Open() {
	if len(s.entries) == 0 || s.cancel != nil {
		return
	}
	now := s.opts.Now()
	for i := range s.entries {
		s.entries[i].next = s.entries[i].cron.Next(now)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(s.opts.Tick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.tick(ctx)
			}
		}
	}()
}

// Close stops the clock and cancels a drill in progress (which still
// runs its restore command), then waits for it until ctx ends.
func (s *Scheduler) Close(ctx context.Context) error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	return lifecycle.Wait(ctx, &s.wg)
}

// Running is the scenario of the scheduled drill in progress, "" if none.
func (s *Scheduler) Running() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

func (s *Scheduler) tick(ctx context.Context) {
	now := s.opts.Now()
	for i := range s.entries {
		e := &s.entries[i]
		if now.Before(e.next) {
			continue
		}
		due := e.next
		e.next = e.cron.Next(now)
		s.start(ctx, e.DrillSchedule, due)
	}
}

func (s *Scheduler) start(ctx context.Context, e config.DrillSchedule, due time.Time) {
	if !s.opts.Leading() {
		s.opts.Logger.Debug("scheduled drill: not the leader", "scenario", e.Scenario, "due", due)
		return
	}
	what := fmt.Sprintf("scheduled drill %s (cron %q, due %s)", e.Scenario, e.Cron, due.UTC().Format(time.RFC3339))
	s.mu.Lock()
	busy := s.running
	if busy == "" {
		s.running = e.Scenario
	}
	s.mu.Unlock()
	if busy != "" {
		s.opts.Record(control.Event{Type: control.EventDrill, Status: ScheduledSkipped, Severity: control.SeverityWarning,
			Message: what + " skipped: the scheduled drill " + busy + " is still running"})
		return
	}
	s.opts.Record(control.Event{Type: control.EventDrill, Status: ScheduledStarted, Severity: control.SeverityInfo, Message: what + " started"})
	s.opts.Logger.Info("scheduled drill started", "scenario", e.Scenario, "cron", e.Cron)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		out, err := s.opts.Run(ctx, e)
		s.mu.Lock()
		s.running = ""
		s.mu.Unlock()
		ev := endEvent(what, out, err)
		s.opts.Record(ev)
		s.opts.Logger.Info("scheduled drill ended", "scenario", e.Scenario, "status", ev.Status, "run", ev.Run, "message", ev.Message)
	}()
}

// endEvent describes how a scheduled drill ended.
func endEvent(what string, out *Outcome, err error) control.Event {
	e := control.Event{Type: control.EventDrill, Status: ScheduledSucceeded, Severity: control.SeverityInfo}
	var parts []string
	if out != nil {
		e.Run = out.RunID
		if out.RunID != "" {
			parts = append(parts, fmt.Sprintf("run %s %s", out.RunID, out.RunbookStatus))
		}
		if out.RecoverSeconds != nil {
			parts = append(parts, fmt.Sprintf("recovered in %.3f s", *out.RecoverSeconds))
		}
		if out.WritesLost != nil {
			parts = append(parts, fmt.Sprintf("%d of %d acknowledged writes lost", *out.WritesLost, out.WritesAcked))
		}
		if out.SplitBrainViolations != nil {
			parts = append(parts, fmt.Sprintf("%d split-brain violations", *out.SplitBrainViolations))
		}
		if out.Report != nil {
			parts = append(parts, "report "+*out.Report)
		}
	}
	if err != nil {
		e.Status, e.Severity = ScheduledFailed, control.SeverityWarning
		parts = append([]string{err.Error()}, parts...)
	}
	if out != nil && (out.WritesLost != nil && *out.WritesLost > 0 || out.SplitBrainViolations != nil && *out.SplitBrainViolations > 0) {
		e.Severity = control.SeverityCritical
	}
	e.Message = what + " " + e.Status
	if len(parts) > 0 {
		e.Message += ": " + strings.Join(parts, ", ")
	}
	return e
}
