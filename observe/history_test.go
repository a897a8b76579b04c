package observe

import (
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/replication"
)

func TestLagHistory(t *testing.T) {
	h := NewLagHistory(time.Minute)
	t0 := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	status := func(at time.Time, lag float64) Status {
		return Status{Time: at,
			Services: []ServiceStatus{{Name: "db", Replication: []replication.Lag{{Service: "db", Region: "west", Time: at, Seconds: lag, SecondsKnown: true, Bytes: int64(lag * 100), BytesKnown: true}}},
				{Name: "cache", Replication: []replication.Lag{{Service: "cache", Region: "west", Time: at}}}}, // unmeasured: not kept
			Exposure: []replication.Exposure{{Service: "db", RPOSeconds: 60}}}
	}
	for i := range 90 {
		at := t0.Add(time.Duration(i) * time.Second)
		h.Record(status(at, float64(i)))
		h.Record(status(at, float64(i))) // the same measurement twice: one point
	}
	w := h.Window(t0)
	if w.RPOSeconds != 60 || len(w.Series) != 1 {
		t.Fatalf("window: %+v", w)
	}
	s := w.Series[0]
	// Kept: the last minute (samples 29..89 inclusive: 61 points).
	if s.Service != "db" || s.Standby != "west" || len(s.Points) != 61 || s.Points[0].LagSeconds != 29 || s.Points[60].LagBytes != 8900 {
		t.Fatalf("series: %s→%s %d points, first %+v", s.Service, s.Standby, len(s.Points), s.Points[0])
	}
	if n := len(h.Window(t0.Add(80 * time.Second)).Series[0].Points); n != 10 {
		t.Fatalf("window since 80s: %d points, want 10", n)
	}
}
