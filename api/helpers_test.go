package api

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
	"github.com/lifeboat-dr/lifeboat/observe"
	"github.com/lifeboat-dr/lifeboat/report"
	"github.com/lifeboat-dr/lifeboat/runbook"
	"github.com/lifeboat-dr/lifeboat/traffic"
)

// memRuns is a runbook.Store in memory: one active run at a time.
type memRuns struct {
	mu      sync.Mutex
	runs    map[string]*runbook.Run
	approve map[string]runbook.Approval
	cancel  map[string]runbook.Approval
}

var _ runbook.Store = (*memRuns)(nil)

func newMemRuns() *memRuns {
	return &memRuns{runs: map[string]*runbook.Run{}, approve: map[string]runbook.Approval{}, cancel: map[string]runbook.Approval{}}
}

func (m *memRuns) CreateRun(ctx context.Context, r *runbook.Run) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range m.runs {
		if !runbook.Terminal(o.Status) {
			return fmt.Errorf("%w: run %s", runbook.ErrBusy, o.ID)
		}
	}
	m.runs[r.ID] = r
	return nil
}

func (m *memRuns) SaveRun(ctx context.Context, r *runbook.Run) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.runs[r.ID] = r
	return nil
}

func (m *memRuns) GetRun(ctx context.Context, id string) (*runbook.Run, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.runs[id]
	if !ok {
		return nil, runbook.ErrNotFound
	}
	c := *r
	return &c, nil
}

func (m *memRuns) ListRuns(ctx context.Context) ([]*runbook.Run, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*runbook.Run
	for _, r := range m.runs {
		c := *r
		out = append(out, &c)
	}
	return out, nil
}

func (m *memRuns) ActiveRun(ctx context.Context) (*runbook.Run, error) { return nil, nil }

func (m *memRuns) Approve(ctx context.Context, runID, step string, a runbook.Approval) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.approve[runID+"/"+step] = a
	return nil
}

func (m *memRuns) Approval(ctx context.Context, runID, step string) (*runbook.Approval, error) {
	return nil, nil
}

func (m *memRuns) Cancel(ctx context.Context, runID string, c runbook.Approval) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cancel[runID] = c
	return nil
}

func (m *memRuns) Cancellation(ctx context.Context, runID string) (*runbook.Approval, error) {
	return nil, nil
}

// noControl stands for a control plane that is never reached (runs are
// not found before anything is stored); its store is nil.
type noControl struct{}

func (noControl) Status(ctx context.Context) control.Status { return control.Status{} }
func (noControl) Store() *control.Store                     { return nil }

type noReports struct{}

func (noReports) Get(ctx context.Context, id string) (*report.Report, error) {
	return nil, runbook.ErrNotFound
}
func (noReports) Kick() {}

type noLag struct{}

func (noLag) Window(since time.Time) observe.LagWindow { return observe.LagWindow{} }

// topology is a valid configuration of two regions, with tokens (named
// viewer, operator, admin; each token is its role followed by "-token")
// unless bare.
func topology(t testing.TB, withTokens bool) *Runs {
	t.Helper()
	tokens := ""
	if withTokens {
		tokens = fmt.Sprintf("api:\n  tokens:\n    - {name: watcher, role: viewer, sha256: %s}\n    - {name: ops, role: operator, sha256: %s}\n    - {name: root, role: admin, sha256: %s}\n",
			sha("viewer-token"), sha("operator-token"), sha("admin-token"))
	}
	cfg := testenv.Config(t, "cluster: apitest\n"+tokens+`regions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
services:
  - name: web
    kind: http
    critical: true
    endpoints:
      east: http://127.0.0.1:1
      west: http://127.0.0.1:2
`)
	return &Runs{Config: cfg, Store: newMemRuns(), State: traffic.NewMemState("east", 1), Lags: runbook.NewLagMemory()}
}

// fullServer serves every route, on fakes that answer "not found" to
// anything about a run; it never opens a listener.
func fullServer(t testing.TB, withTokens bool) *Server {
	t.Helper()
	return New(Config{Status: fixedStatus{Cluster: "apitest", ActiveRegion: "east"}, Runs: topology(t, withTokens), Control: noControl{},
		Reports: noReports{}, Lag: noLag{}, Gatherer: prometheus.NewRegistry(), RateLimit: RateLimit{PerMinute: -1},
		Dashboard: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>")) })})
}

// openControl opens a control plane of one embedded member for cfg,
// closed when the test ends.
func openControl(t *testing.T, cfg *config.Config) *control.Plane {
	t.Helper()
	cp, err := control.Open(t.Context(), cfg, control.Options{Node: "n1", DataDir: t.TempDir(), EtcdLogLevel: "fatal"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cp.Close(ctx)
	})
	return cp
}

// openServer opens a server (on a free loopback port unless cfg says
// where), closed when the test ends.
func openServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	s := New(cfg)
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Close(ctx)
	})
	return s
}

// serve answers one request through h as if it came from the local
// machine to 127.0.0.1:7480: a JSON body when body is not empty.
func serve(h http.Handler, method, path, token, body string, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "http://127.0.0.1:7480"+path, strings.NewReader(body))
	r.RemoteAddr = "127.0.0.1:50000"
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i+1] == "" {
			r.Header.Del(header[i])
		} else {
			r.Header.Set(header[i], header[i+1])
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}
