package control

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestEventsBetweenAndReports(t *testing.T) {
	m := startMember(t, "east-1", t.TempDir(), nil)
	defer m.stop()
	ctx := context.Background()
	if evs, err := m.store.EventsBetween(ctx, time.Time{}, time.Now(), 10); err != nil || len(evs) != 0 {
		t.Fatalf("empty stream: %v %v", evs, err)
	}
	base := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	for i := range 50 {
		if _, err := m.store.Append(ctx, Event{Type: EventVerdict, Time: base.Add(time.Duration(i) * time.Second), Message: "tick"}); err != nil {
			t.Fatal(err)
		}
	}
	last, err := m.store.LastSeq(ctx)
	if err != nil || last != 50 {
		t.Fatalf("last seq %d, %v; want 50", last, err)
	}
	evs, err := m.store.EventsBetween(ctx, base.Add(10*time.Second), base.Add(19*time.Second), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 10 || evs[0].Seq != 11 || evs[9].Seq != 20 {
		t.Fatalf("window [10s, 19s]: %d events, first %+v", len(evs), evs)
	}
	evs, err = m.store.EventsBetween(ctx, base.Add(45*time.Second), base.Add(time.Hour), 3)
	if err != nil || len(evs) != 3 || evs[0].Seq != 46 {
		t.Fatalf("limited window: %+v %v", evs, err)
	}
	if evs, _ := m.store.EventsBetween(ctx, base.Add(time.Hour), base.Add(2*time.Hour), 3); len(evs) != 0 {
		t.Fatalf("window after the stream: %+v", evs)
	}

	if _, err := m.store.Report(ctx, "r1"); !errors.Is(err, ErrNoReport) {
		t.Fatalf("missing report: %v", err)
	}
	if err := m.store.SaveReport(ctx, "r1", []byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	if b, err := m.store.Report(ctx, "r1"); err != nil || string(b) != `{"a":1}` {
		t.Fatalf("report: %s %v", b, err)
	}
	if _, err := m.store.Drill(ctx, "r1"); !errors.Is(err, ErrNoDrill) {
		t.Fatalf("missing drill: %v", err)
	}
	if err := m.store.SaveDrill(ctx, "r1", []byte(`{"writes_lost":0}`)); err != nil {
		t.Fatal(err)
	}
	if b, err := m.store.Drill(ctx, "r1"); err != nil || string(b) != `{"writes_lost":0}` {
		t.Fatalf("drill: %s %v", b, err)
	}
	if all, err := m.store.Drills(ctx); err != nil || len(all) != 1 || string(all["r1"]) != `{"writes_lost":0}` {
		t.Fatalf("drills: %v %v", all, err)
	}
	// Attaching a drill drops the report, to be written again with it.
	if _, err := m.store.Report(ctx, "r1"); !errors.Is(err, ErrNoReport) {
		t.Fatalf("report after a drill was attached: %v", err)
	}
}
