package report

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/runbook"
)

// memRuns serves recorded runs.
type memRuns struct{ runs []*runbook.Run }

func (m *memRuns) ListRuns(context.Context) ([]*runbook.Run, error) { return m.runs, nil }
func (m *memRuns) GetRun(_ context.Context, id string) (*runbook.Run, error) {
	for _, r := range m.runs {
		if r.ID == id {
			b, _ := json.Marshal(r) // a copy, as a store would return
			var c runbook.Run
			json.Unmarshal(b, &c)
			return &c, nil
		}
	}
	return nil, runbook.ErrNotFound
}

func startStore(t *testing.T) *control.Store {
	t.Helper()
	e, err := control.StartEmbedded(control.EmbedConfig{Name: "n1", Dir: t.TempDir(), Token: "test", LogLevel: "fatal"})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Close(ctx)
	})
	return control.NewStore(cli, "lab")
}

// TestReporterWritesAndRewrites replays a recorded drill's run and events
// into a real store: the leader's reporter writes the report once the run
// has ended, the follower's does not, and attaching the drill's outcome
// makes the leader write it again with the measurements.
func TestReporterWritesAndRewrites(t *testing.T) {
	in, _ := loadRecorded(t, "testdata/region-outage.input.json")
	store := startStore(t)
	ctx := context.Background()
	for _, e := range in.Events {
		e.Seq = 0
		if _, err := store.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	runs := &memRuns{runs: []*runbook.Run{in.Run}}
	cfg := config.DefaultConfig()
	cfg.Policy.RTO = config.Duration(5 * time.Minute)
	var mu sync.Mutex
	var recorded []control.Event
	record := func(e control.Event) { mu.Lock(); recorded = append(recorded, e); mu.Unlock() }

	follower := NewReporter(Options{Runs: runs, Archive: store, Config: cfg, Leading: func() bool { return false }, Record: record, Every: 20 * time.Millisecond})
	follower.Open()
	time.Sleep(150 * time.Millisecond)
	if err := follower.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Report(ctx, in.Run.ID); !errors.Is(err, control.ErrNoReport) {
		t.Fatalf("a follower wrote a report: %v", err)
	}

	leader := NewReporter(Options{Runs: runs, Archive: store, Config: cfg, Leading: func() bool { return true }, Record: record, Every: 20 * time.Millisecond})
	leader.Open()
	defer leader.Close(ctx)
	rep := waitReport(t, store, in.Run.ID, func(r *Report) bool { return true })
	if rep.Facts.Run.Drill != "" || rep.Facts.Integrity.WritesLost != nil {
		t.Fatalf("report before the drill was attached has drill facts: %+v", rep.Facts.Integrity)
	}
	if rep.Facts.Fault == nil || rep.Facts.Fault.Cite == 0 || !strings.Contains(rep.Facts.Fault.Message, "down") {
		t.Fatalf("fault evidence not found in the replayed stream: %+v", rep.Facts.Fault)
	}
	if len(rep.Facts.Timeline) == 0 || rep.Narrative.Source != "template" {
		t.Fatalf("report: %d timeline entries, narrative %q", len(rep.Facts.Timeline), rep.Narrative.Source)
	}

	d, _ := json.Marshal(in.Drill)
	if err := store.SaveDrill(ctx, in.Run.ID, d); err != nil {
		t.Fatal(err)
	}
	leader.Kick()
	rep = waitReport(t, store, in.Run.ID, func(r *Report) bool { return r.Facts.Run.Drill != "" })
	if rep.Facts.Integrity.WritesLost == nil || *rep.Facts.Integrity.WritesLost != 0 || rep.Facts.Objectives.RPOMet == nil || !*rep.Facts.Objectives.RPOMet {
		t.Fatalf("report after the drill: integrity %+v objectives %+v", rep.Facts.Integrity, rep.Facts.Objectives)
	}
	// Get serves the stored report.
	got, err := leader.Get(ctx, in.Run.ID)
	if err != nil || got.Facts.Run.Drill != "region-outage" {
		t.Fatalf("Get: %v %+v", err, got)
	}
	if _, err := leader.Get(ctx, "no-such-run"); !errors.Is(err, runbook.ErrNotFound) {
		t.Fatalf("Get of an unknown run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(recorded) != 2 || recorded[0].Type != control.EventReport || recorded[0].Run != in.Run.ID {
		t.Fatalf("report events: %+v", recorded)
	}
}

func waitReport(t *testing.T, store *control.Store, run string, ok func(*Report) bool) *Report {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := store.Report(context.Background(), run); err == nil {
			var rep Report
			if err := json.Unmarshal(b, &rep); err != nil {
				t.Fatal(err)
			}
			if ok(&rep) {
				return &rep
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no report of %s within 10s", run)
	return nil
}

// stubNarrator answers fixed prose.
type stubNarrator struct {
	summary  string
	rejected []string
	err      error
}

func (s stubNarrator) Narrate(context.Context, []byte) (string, string, string, []string, error) {
	return s.summary, "impact", "next", s.rejected, s.err
}

func TestNarrativeChoice(t *testing.T) {
	in, now := loadRecorded(t, "testdata/region-outage.input.json")
	f := Build(in)
	ctx := context.Background()
	if rep := New(ctx, f, stubNarrator{summary: "All good."}, now); rep.Narrative.Source != "llm" || rep.Narrative.Summary != "All good." {
		t.Fatalf("a checked narrative was not used: %+v", rep.Narrative)
	}
	rep := New(ctx, f, stubNarrator{summary: "Recovered in 2 s.", rejected: []string{"2"}}, now)
	if rep.Narrative.Source != "template" || !strings.Contains(rep.Narrative.Note, "rejected") || rep.Narrative.Rejected[0] != "2" {
		t.Fatalf("a narrative with an invented figure was used: %+v", rep.Narrative)
	}
	if rep.Narrative.Summary != Template(f).Summary {
		t.Fatal("the rejected narrative did not fall back to the template")
	}
	rep = New(ctx, f, stubNarrator{err: errors.New("timeout")}, now)
	if rep.Narrative.Source != "template" || !strings.Contains(rep.Narrative.Note, "timeout") {
		t.Fatalf("a failed narrator: %+v", rep.Narrative)
	}
}

func TestDrillValidate(t *testing.T) {
	neg, lost := -1.0, -2
	d := Drill{RecoverSeconds: &neg, WritesLost: &lost}
	err := d.Validate()
	if err == nil {
		t.Fatal("a bad drill outcome was accepted")
	}
	for _, want := range []string{"scenario: required", "fault_at: required", "recover_seconds: -1", "writes_lost: -2 is negative"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	ok := Drill{Scenario: "db-crash", FaultAt: time.Now()}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}
