package drill

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
)

// clock is a settable time.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

type recorder struct {
	mu  sync.Mutex
	evs []control.Event
}

func (r *recorder) Record(e control.Event) { r.mu.Lock(); r.evs = append(r.evs, e); r.mu.Unlock() }

func (r *recorder) events() []control.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]control.Event(nil), r.evs...)
}

// wait returns the events once there are n.
func (r *recorder) wait(t *testing.T, n int) []control.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		evs := r.events()
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events, want %d: %+v", len(evs), n, evs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Only the leader starts scheduled drills, at their cron times; one at a
// time (a time that comes meanwhile is skipped); every start, skip and
// end is an event.
func TestScheduler(t *testing.T) {
	clk := &clock{now: time.Date(2026, 3, 2, 10, 0, 30, 0, time.UTC)}
	var leading atomic.Bool
	rec := &recorder{}
	type call struct {
		scenario string
		done     chan struct{}
	}
	calls := make(chan call, 10)
	results := make(chan error, 10)
	lost := 0
	s, err := NewScheduler(SchedulerOptions{
		Schedule: []config.DrillSchedule{{Scenario: "switchover", Cron: "* * * * *"}},
		Leading:  leading.Load,
		Record:   rec.Record,
		Now:      clk.Now,
		Tick:     2 * time.Millisecond,
		Run: func(ctx context.Context, e config.DrillSchedule) (*Outcome, error) {
			done := make(chan struct{})
			calls <- call{e.Scenario, done}
			select {
			case <-done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			err := <-results
			out := &Outcome{RunID: "run-1", RunbookStatus: "succeeded", WritesAcked: 120, WritesLost: &lost, SplitBrainViolations: &lost}
			if err != nil {
				out = &Outcome{RunbookStatus: "none"}
			}
			return out, err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Open()
	defer s.Close(context.Background())
	expectNoCall := func(what string) {
		t.Helper()
		select {
		case c := <-calls:
			t.Fatalf("%s: a drill started (%s)", what, c.scenario)
		case <-time.After(50 * time.Millisecond):
		}
	}
	nextCall := func(what string) call {
		t.Helper()
		select {
		case c := <-calls:
			return c
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no drill started", what)
		}
		return call{}
	}

	expectNoCall("before its time")
	clk.set(time.Date(2026, 3, 2, 10, 1, 0, 0, time.UTC))
	expectNoCall("not the leader")
	if evs := rec.events(); len(evs) != 0 {
		t.Fatalf("a follower recorded %+v", evs)
	}

	leading.Store(true)
	clk.set(time.Date(2026, 3, 2, 10, 1, 40, 0, time.UTC))
	expectNoCall("the leader, between two times")
	clk.set(time.Date(2026, 3, 2, 10, 2, 0, 0, time.UTC))
	c := nextCall("the leader at its time")
	if c.scenario != "switchover" || s.Running() != "switchover" {
		t.Errorf("started %q, running %q", c.scenario, s.Running())
	}
	evs := rec.wait(t, 1)
	if e := evs[0]; e.Type != control.EventDrill || e.Status != ScheduledStarted ||
		e.Message != `scheduled drill switchover (cron "* * * * *", due 2026-03-02T10:02:00Z) started` {
		t.Errorf("start event %+v", e)
	}
	// The next time comes while the drill runs: skipped.
	clk.set(time.Date(2026, 3, 2, 10, 3, 0, 0, time.UTC))
	evs = rec.wait(t, 2)
	if e := evs[1]; e.Status != ScheduledSkipped || e.Severity != control.SeverityWarning || !strings.Contains(e.Message, "due 2026-03-02T10:03:00Z) skipped: the scheduled drill switchover is still running") {
		t.Errorf("skip event %+v", e)
	}
	expectNoCall("while one runs")
	results <- nil
	close(c.done)
	evs = rec.wait(t, 3)
	if e := evs[2]; e.Status != ScheduledSucceeded || e.Run != "run-1" || e.Severity != control.SeverityInfo ||
		!strings.Contains(e.Message, ") succeeded: run run-1 succeeded, 0 of 120 acknowledged writes lost, 0 split-brain violations") {
		t.Errorf("end event %+v", e)
	}
	for s.Running() != "" {
		time.Sleep(time.Millisecond)
	}

	// A drill that fails is recorded so.
	clk.set(time.Date(2026, 3, 2, 10, 4, 0, 0, time.UTC))
	c = nextCall("the next time")
	results <- errors.New("drill: no standby is ready to take over")
	close(c.done)
	evs = rec.wait(t, 5)
	if e := evs[4]; e.Status != ScheduledFailed || e.Severity != control.SeverityWarning ||
		!strings.Contains(e.Message, "failed: drill: no standby is ready to take over") {
		t.Errorf("failure event %+v", e)
	}

	// Leadership lost: the next time passes.
	leading.Store(false)
	clk.set(time.Date(2026, 3, 2, 10, 5, 0, 0, time.UTC))
	expectNoCall("leadership lost")

	// Close cancels a drill in progress and waits for it.
	leading.Store(true)
	clk.set(time.Date(2026, 3, 2, 10, 6, 0, 0, time.UTC))
	nextCall("leader again")
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	evs = rec.wait(t, 7)
	if e := evs[6]; e.Status != ScheduledFailed || !strings.Contains(e.Message, "context canceled") {
		t.Errorf("cancelled drill %+v", e)
	}
}

func TestSchedulerConfig(t *testing.T) {
	if _, err := NewScheduler(SchedulerOptions{Schedule: []config.DrillSchedule{{Scenario: "switchover", Cron: "0 3 * *"}}}); err == nil ||
		!strings.Contains(err.Error(), "drills.schedule[0].cron") {
		t.Errorf("bad cron: %v", err)
	}
	// Nothing scheduled: Open and Close do nothing.
	s, err := NewScheduler(SchedulerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Open()
	if err := s.Close(context.Background()); err != nil {
		t.Error(err)
	}
}
