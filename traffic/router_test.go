package traffic

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/health"
)

const topo = `cluster: t
regions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
  - {name: north, priority: 3}
services:
  - name: web
    kind: http
    endpoints: {east: "http://10.0.0.1", west: "http://10.0.0.2", north: "http://10.0.0.3"}
traffic:
  when_all_down: %s
`

// fakeVerdicts is the health input, set by the test (the router's own
// input, not an external system).
type fakeVerdicts struct {
	mu sync.Mutex
	m  map[health.Key]health.Verdict
}

func (f *fakeVerdicts) set(states map[string]health.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m = map[health.Key]health.Verdict{}
	for region, s := range states {
		f.m[health.Key{Service: "web", Region: region}] = health.Verdict{State: s}
	}
}

func (f *fakeVerdicts) Verdicts() map[health.Key]health.Verdict {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m
}

func newRouter(t *testing.T, mode string) (*Router, *fakeVerdicts, *MemState) {
	t.Helper()
	cfg, err := config.Parse(strings.NewReader(strings.Replace(topo, "%s", mode, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	v := &fakeVerdicts{}
	st := NewMemState("east", 1)
	r := NewRouter(cfg, st, v, 10*time.Millisecond)
	return r, v, st
}

func regions(d Decision) string {
	var out []string
	for _, e := range d.Endpoints {
		out = append(out, e.Region)
	}
	return strings.Join(out, ",")
}

func TestDecide(t *testing.T) {
	r, v, st := newRouter(t, "fail-static")
	const up, down, unknown = health.Up, health.Down, health.Unknown
	steps := []struct {
		name   string
		states map[string]health.State
		policy string
		want   string
		mode   string
	}{
		{"cold start", map[string]health.State{}, "failover", "east,west,north", ModeColdStart},
		{"cold start multivalue", map[string]health.State{"east": unknown}, "multivalue", "east,west,north", ModeColdStart},
		{"all up", map[string]health.State{"east": up, "west": up, "north": up}, "failover", "east,west,north", ModeHealthy},
		{"multivalue healthy only", map[string]health.State{"east": up, "west": down, "north": up}, "multivalue", "east,north", ModeHealthy},
		{"east down", map[string]health.State{"east": down, "west": up, "north": up}, "failover", "west,north,east", ModeHealthy},
		{"only north", map[string]health.State{"east": down, "west": down, "north": up}, "failover", "north,east,west", ModeHealthy},
		{"all down: last good", map[string]health.State{"east": down, "west": down, "north": down}, "failover", "north,east,west", ModeFailStatic},
	}
	for _, s := range steps {
		v.set(s.states)
		r.update()
		d := r.Decide("web", s.policy, nil)
		if got := regions(d); got != s.want || d.Mode != s.mode {
			t.Errorf("%s: %s (%s), want %s (%s)", s.name, got, d.Mode, s.want, s.mode)
		}
	}
	// A switch of the active region puts it first.
	v.set(map[string]health.State{"east": up, "west": up, "north": up})
	if err := st.Switch("west", 2); err != nil {
		t.Fatal(err)
	}
	r.update()
	if d := r.Decide("web", "failover", nil); regions(d) != "west,east,north" || d.Epoch != 2 || d.Active != "west" {
		t.Errorf("after switch: %s epoch %d", regions(d), d.Epoch)
	}
	if err := st.Switch("east", 2); err == nil {
		t.Error("an epoch that does not grow was accepted")
	}
}

func TestFailOpen(t *testing.T) {
	r, v, _ := newRouter(t, "fail-open")
	v.set(map[string]health.State{"east": health.Down, "west": health.Down, "north": health.Down})
	r.update()
	if d := r.Decide("web", "multivalue", nil); regions(d) != "east,west,north" || d.Mode != ModeFailOpen {
		t.Errorf("fail-open: %s %s", regions(d), d.Mode)
	}
}

func TestWeighted(t *testing.T) {
	r, v, _ := newRouter(t, "fail-static")
	v.set(map[string]health.State{"east": health.Up, "west": health.Up, "north": health.Down})
	r.update()
	counts := map[string]int{}
	for i := 0; i < 4000; i++ {
		counts[r.Decide("web", "weighted", map[string]int{"east": 3, "west": 1, "north": 100}).Endpoints[0].Region]++
	}
	if counts["north"] != 0 {
		t.Errorf("an unhealthy region was served: %v", counts)
	}
	if ratio := float64(counts["east"]) / float64(counts["west"]); ratio < 2.4 || ratio > 3.8 {
		t.Errorf("east:west = %.2f, want about 3 (%v)", ratio, counts)
	}
}

// A change of state reaches the snapshot within 100ms.
func TestStateChangeApplied(t *testing.T) {
	r, v, st := newRouter(t, "fail-static")
	v.set(map[string]health.State{"east": health.Up, "west": health.Up})
	r.refresh = time.Hour // only the notification can apply it
	if err := r.Open(); err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	changed := r.Changed()
	start := time.Now()
	st.Switch("west", 7)
	select {
	case <-changed:
	case <-time.After(time.Second):
		t.Fatal("no change notified")
	}
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Errorf("applied after %s", took)
	}
	if d := r.Decide("web", "failover", nil); d.Active != "west" || d.Epoch != 7 {
		t.Errorf("decision after switch: %+v", d)
	}
}

func TestHold(t *testing.T) {
	st := NewMemState("east", 1)
	ctx := context.Background()
	if waited, _, err := WaitHold(ctx, st, time.Second); waited || err != nil {
		t.Fatalf("not held: waited=%v err=%v", waited, err)
	}
	st.Hold()
	go func() { time.Sleep(50 * time.Millisecond); st.Switch("west", 2); st.Release() }()
	start := time.Now()
	waited, timedOut, err := WaitHold(ctx, st, 5*time.Second)
	if !waited || timedOut || err != nil || time.Since(start) < 40*time.Millisecond {
		t.Fatalf("held: waited=%v timedOut=%v err=%v after %s", waited, timedOut, err, time.Since(start))
	}
	if st.Current().Active != "west" {
		t.Error("released before the switch")
	}
	st.Hold()
	_, timedOut, _ = WaitHold(ctx, st, 30*time.Millisecond)
	if !timedOut {
		t.Error("a hold past its bound did not time out")
	}
}
