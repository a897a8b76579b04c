package health

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// switchable is a prober whose result the test sets.
type switchable struct {
	mu  sync.Mutex
	err error
}

func (s *switchable) set(err error) { s.mu.Lock(); s.err = err; s.mu.Unlock() }
func (s *switchable) Probe(ctx context.Context) Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Result{Err: s.err}
}

func start(t *testing.T, targets ...Target) *Checker {
	t.Helper()
	c, err := NewChecker("node-a", targets)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return c
}

func waitState(t *testing.T, c *Checker, k Key, want State, within time.Duration) Verdict {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		v, _ := c.Verdict(k.Service, k.Region)
		if v.State == want {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: state %s after %s, want %s (last %+v)", k, v.State, within, want, v.Last)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testTarget(p Prober) Target {
	return Target{Service: "web", Region: "east", Prober: p, Interval: 20 * time.Millisecond, Timeout: 10 * time.Millisecond, Fall: 3, Rise: 2}
}

func TestColdStartUnknownThenThresholds(t *testing.T) {
	p := &switchable{}
	var mu sync.Mutex
	var seen []Verdict
	c, err := NewChecker("node-a", []Target{testTarget(p)}, WithObserve(func(o Observation, v Verdict) {
		mu.Lock()
		seen = append(seen, v)
		mu.Unlock()
	}))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := c.Verdict("web", "east"); v.State != Unknown {
		t.Fatalf("before the first probe: %s, want unknown", v.State)
	}
	if err := c.Open(); err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	k := Key{"web", "east"}
	v := waitState(t, c, k, Up, time.Second)
	if v.Last.Observer != "node-a" || !v.Last.OK {
		t.Errorf("last observation = %+v", v.Last)
	}
	mu.Lock()
	if len(seen) < 2 || seen[0].State != Unknown || seen[1].State != Up {
		t.Errorf("rise 2: verdicts after probes 1 and 2 = %+v, want unknown then up", seen)
	}
	mu.Unlock()

	p.set(errors.New("boom"))
	v = waitState(t, c, k, Down, time.Second)
	if v.Failures < 3 || v.Last.Error != "boom" {
		t.Errorf("down verdict = %+v, want 3 failures and the error", v)
	}
	// One success is not enough to rise.
	p.set(nil)
	v = waitState(t, c, k, Up, time.Second)
	if v.Successes < 2 {
		t.Errorf("rose after %d successes, want 2", v.Successes)
	}
}

func TestFlappingBelowFallStaysUp(t *testing.T) {
	var n atomic.Int64
	// Fails every other probe: never three in a row.
	p := ProberFunc(func(ctx context.Context) Result {
		if n.Add(1)%2 == 0 {
			return Result{Err: errors.New("blip")}
		}
		return Result{}
	})
	tg := testTarget(p)
	tg.Rise = 1
	c := start(t, tg)
	waitState(t, c, Key{"web", "east"}, Up, time.Second)
	for n.Load() < 20 {
		time.Sleep(10 * time.Millisecond)
		if v, _ := c.Verdict("web", "east"); v.State != Up {
			t.Fatalf("went %s with failures below fall", v.State)
		}
	}
}

func TestPanicIsAFailure(t *testing.T) {
	c := start(t, testTarget(ProberFunc(func(ctx context.Context) Result { panic("probe bug") })))
	v := waitState(t, c, Key{"web", "east"}, Down, time.Second)
	if !strings.Contains(v.Last.Error, "probe panicked: probe bug") {
		t.Errorf("error = %q", v.Last.Error)
	}
}

func TestTimeoutIsAFailure(t *testing.T) {
	c := start(t, testTarget(ProberFunc(func(ctx context.Context) Result {
		<-ctx.Done()
		return Result{Err: ctx.Err()}
	})))
	v := waitState(t, c, Key{"web", "east"}, Down, time.Second)
	if !strings.Contains(v.Last.Error, "timed out after 10ms") {
		t.Errorf("error = %q", v.Last.Error)
	}
	if v.Last.Latency > 200*time.Millisecond {
		t.Errorf("a 10ms timeout took %s", v.Last.Latency)
	}
}

// A prober that ignores its context and returns success late is still a
// failure: the answer came after the timeout.
func TestLateSuccessIsAFailure(t *testing.T) {
	c := start(t, testTarget(ProberFunc(func(ctx context.Context) Result {
		time.Sleep(15 * time.Millisecond)
		return Result{}
	})))
	waitState(t, c, Key{"web", "east"}, Down, 2*time.Second)
}

func TestOneProbeInFlight(t *testing.T) {
	var inFlight, maxInFlight, calls atomic.Int64
	p := ProberFunc(func(ctx context.Context) Result {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := maxInFlight.Load()
			if n <= m || maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		calls.Add(1)
		time.Sleep(30 * time.Millisecond) // longer than the interval, ignoring ctx
		return Result{}
	})
	start(t, testTarget(p))
	deadline := time.Now().Add(2 * time.Second)
	for calls.Load() < 5 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if calls.Load() < 5 {
		t.Fatalf("only %d probes ran", calls.Load())
	}
	if m := maxInFlight.Load(); m != 1 {
		t.Errorf("%d probes in flight at once, want 1", m)
	}
}

func TestBadTargets(t *testing.T) {
	ok := testTarget(&switchable{})
	cases := map[string]func(*Target){
		"no prober":        func(t *Target) { t.Prober = nil },
		"timeout>interval": func(t *Target) { t.Timeout = time.Second },
		"fall 0":           func(t *Target) { t.Fall = 0 },
		"jitter=interval":  func(t *Target) { t.Jitter = t.Interval },
	}
	for name, mutate := range cases {
		tg := ok
		mutate(&tg)
		if _, err := NewChecker("n", []Target{tg}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewChecker("n", []Target{ok, ok}); err == nil {
		t.Error("duplicate target accepted")
	}
}

// A real HTTP server that stops answering goes down within interval × fall
// + timeout (asserted generously; the figure is measured in a benchmark).
func TestRealHTTPServerStops(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	p := ProberFunc(func(ctx context.Context) Result {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return Result{Err: err}
		}
		resp.Body.Close()
		return Result{}
	})
	tg := Target{Service: "web", Region: "east", Prober: p, Interval: 50 * time.Millisecond, Timeout: 30 * time.Millisecond, Fall: 3, Rise: 2}
	c := start(t, tg)
	k := Key{"web", "east"}
	waitState(t, c, k, Up, 2*time.Second)
	stopped := time.Now()
	srv.CloseClientConnections()
	srv.Close()
	v := waitState(t, c, k, Down, 10*time.Second)
	bound := tg.Interval*time.Duration(tg.Fall) + tg.Timeout
	if took := v.Since.Sub(stopped); took > 4*bound {
		t.Errorf("down after %s, bound %s (×4 slack)", took, bound)
	}
	http.DefaultClient.CloseIdleConnections()
}

// A probe that ignores its context and hangs: the target goes down with
// each tick counted as a failure, and no second probe starts.
func TestHungProbe(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int64
	c := start(t, testTarget(ProberFunc(func(ctx context.Context) Result {
		if calls.Add(1) == 1 {
			return Result{}
		}
		<-release // a stuck mount: ignores ctx
		return Result{}
	})))
	defer close(release)
	v := waitState(t, c, Key{"web", "east"}, Down, 2*time.Second)
	if !strings.Contains(v.Last.Error, "previous probe still running") && !strings.Contains(v.Last.Error, "timed out") {
		t.Errorf("error = %q", v.Last.Error)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d probes started, want 2 (one that answered, one hung)", n)
	}
}
