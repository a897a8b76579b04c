package report

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/observe"
	"github.com/lifeboat-dr/lifeboat/runbook"
)

// Runs reads runs (control.Runs implements it).
type Runs interface {
	ListRuns(ctx context.Context) ([]*runbook.Run, error)
	GetRun(ctx context.Context, id string) (*runbook.Run, error)
}

// Archive is where events are read and reports and drill outcomes kept
// (control.Store implements it).
type Archive interface {
	EventsBetween(ctx context.Context, from, to time.Time, limit int) ([]control.Event, error)
	Report(ctx context.Context, run string) ([]byte, error)
	SaveReport(ctx context.Context, run string, b []byte) error
	Drill(ctx context.Context, run string) ([]byte, error)
}

// StatusSource answers the current status (observe.Node).
type StatusSource interface{ Status() observe.Status }

// Options configure a Reporter.
type Options struct {
	Runs    Runs
	Archive Archive
	Status  StatusSource
	Config  *config.Config
	// Narrator, when set, writes the prose (report.llm).
	Narrator Narrator
	// Leading says whether this node leads: only the leader writes
	// reports.
	Leading func() bool
	// Record appends an event (a report was written).
	Record func(control.Event)
	Logger *slog.Logger
	// Every is how often the leader looks for finished runs without a
	// report. Default 1s.
	Every time.Duration
	// Recent is how many of the newest runs are looked at. Default 20.
	Recent int
}

// maxEvents bounds the events a report cites.
const maxEvents = 1000

// Reporter writes the report of every finished run, on the leader, and
// again when a drill's outcome is attached to it.
type Reporter struct {
	opts Options
	kick chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// NewReporter makes a reporter; Open starts it.
func NewReporter(opts Options) *Reporter {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Every <= 0 {
		opts.Every = time.Second
	}
	if opts.Recent <= 0 {
		opts.Recent = 20
	}
	return &Reporter{opts: opts, kick: make(chan struct{}, 1), stop: make(chan struct{})}
}

// Open starts the loop.
func (g *Reporter) Open() {
	g.wg.Add(1)
	go g.loop()
}

// Close stops the loop and waits for it.
func (g *Reporter) Close(ctx context.Context) error {
	g.once.Do(func() { close(g.stop) })
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Kick makes the loop look now (a run ended, a drill was attached).
func (g *Reporter) Kick() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

func (g *Reporter) loop() {
	defer g.wg.Done()
	t := time.NewTicker(g.opts.Every)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-g.stop; cancel() }()
	for {
		if g.opts.Leading == nil || g.opts.Leading() {
			if err := g.catchUp(ctx); err != nil && ctx.Err() == nil {
				g.opts.Logger.Warn("reports", "err", err)
			}
		}
		select {
		case <-g.stop:
			return
		case <-t.C:
		case <-g.kick:
		}
	}
}

// catchUp writes the missing reports of the newest finished runs.
func (g *Reporter) catchUp(ctx context.Context) error {
	runs, err := g.opts.Runs.ListRuns(ctx)
	if err != nil {
		return err
	}
	if len(runs) > g.opts.Recent {
		runs = runs[:g.opts.Recent]
	}
	for _, run := range runs {
		if !runbook.Terminal(run.Status) {
			continue
		}
		_, err := g.opts.Archive.Report(ctx, run.ID)
		if err == nil {
			continue
		}
		if !errors.Is(err, control.ErrNoReport) {
			return err
		}
		rep, err := g.build(ctx, run)
		if err != nil {
			return err
		}
		b, err := json.Marshal(rep)
		if err != nil {
			return err
		}
		if err := g.opts.Archive.SaveReport(ctx, run.ID, b); err != nil {
			return err
		}
		g.opts.Logger.Info("report written", "run", run.ID, "narrative", rep.Narrative.Source)
		if g.opts.Record != nil {
			msg := fmt.Sprintf("report of %s %s → %s written (narrative: %s)", run.Kind, run.From, run.To, rep.Narrative.Source)
			if rep.Narrative.Note != "" {
				msg += "; " + rep.Narrative.Note
			}
			g.opts.Record(control.Event{Type: control.EventReport, Run: run.ID, Severity: control.SeverityInfo, Status: rep.Narrative.Source, Message: msg})
		}
	}
	return nil
}

// Get returns a run's report: the stored one, or one computed now (not
// stored, template narrative) while the run has none yet.
func (g *Reporter) Get(ctx context.Context, runID string) (*Report, error) {
	b, err := g.opts.Archive.Report(ctx, runID)
	if err == nil {
		var rep Report
		if err := json.Unmarshal(b, &rep); err != nil {
			return nil, fmt.Errorf("report: the stored report of %s is corrupt: %w", runID, err)
		}
		return &rep, nil
	}
	if !errors.Is(err, control.ErrNoReport) {
		return nil, err
	}
	run, err := g.opts.Runs.GetRun(ctx, runID)
	if err != nil {
		return nil, err
	}
	in, err := g.input(ctx, run)
	if err != nil {
		return nil, err
	}
	return New(ctx, Build(in), nil, time.Now()), nil
}

func (g *Reporter) build(ctx context.Context, run *runbook.Run) (*Report, error) {
	in, err := g.input(ctx, run)
	if err != nil {
		return nil, err
	}
	nctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	return New(nctx, Build(in), g.opts.Narrator, time.Now()), nil
}

// input gathers a run's report input, secrets redacted.
func (g *Reporter) input(ctx context.Context, run *runbook.Run) (Input, error) {
	in := Input{Run: run, Now: time.Now().UTC()}
	if g.opts.Config != nil {
		in.Policy = g.opts.Config.Policy
		run.Redact(g.opts.Config.Redact)
	}
	if b, err := g.opts.Archive.Drill(ctx, run.ID); err == nil {
		var d Drill
		if err := json.Unmarshal(b, &d); err != nil {
			return in, fmt.Errorf("report: the drill outcome of %s is corrupt: %w", run.ID, err)
		}
		in.Drill = &d
	} else if !errors.Is(err, control.ErrNoDrill) {
		return in, err
	}
	from, to := Window(run, in.Drill, in.Now)
	evs, err := g.opts.Archive.EventsBetween(ctx, from, to, maxEvents)
	if err != nil {
		return in, err
	}
	in.Events = relevant(evs, run.ID)
	if g.opts.Config != nil {
		for i := range in.Events {
			in.Events[i].Message = g.opts.Config.Redact(in.Events[i].Message)
		}
	}
	if g.opts.Status != nil {
		st := g.opts.Status.Status()
		in.Status = &st
	}
	return in, nil
}

// relevant keeps the events a DR timeline cites: the run's own, and the
// health, routing and decision events around it (not other runs', not
// notification deliveries, reports or API audit entries).
func relevant(evs []control.Event, run string) []control.Event {
	var out []control.Event
	for _, e := range evs {
		switch e.Type {
		case control.EventNotification, control.EventReport, control.EventAudit:
			continue
		case control.EventRun, control.EventStep:
			if e.Run != run {
				continue
			}
		}
		out = append(out, e)
	}
	return out
}
