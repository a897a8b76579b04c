package observe

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
	"github.com/lifeboat-dr/lifeboat/replication"
)

// app is a real HTTP server standing for one region's web service, with a
// version endpoint.
type app struct {
	srv     *httptest.Server
	version atomic.Value
}

func newApp(t *testing.T, version string) *app {
	a := &app{}
	a.version.Store(version)
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			fmt.Fprintln(w, "ok")
		case "/version":
			fmt.Fprintf(w, `{"model": {"version": %q}}`, a.version.Load().(string))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(a.srv.Close)
	return a
}

// topology writes a two-region config over real servers.
func topology(t *testing.T, east, west *app, pg *testenv.PGPair, rd *testenv.RedisPair, rpo string) *config.Config {
	t.Helper()
	doc := fmt.Sprintf(`cluster: obs
regions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
services:
  - name: web
    kind: http
    critical: true
    endpoints: {east: %q, west: %q}
    health: {path: /healthz, interval: 100ms, timeout: 80ms, fall: 3, rise: 1}
    version: {url: /version, json_field: model.version}
  - name: db
    kind: postgres
    critical: true
    endpoints: {east: %q, west: %q}
    health: {interval: 100ms, timeout: 80ms, fall: 3, rise: 1}
    replication: {heartbeat: 100ms, max_lag_on_failover: 64MB}
  - name: cache
    kind: redis
    endpoints: {east: %q, west: %q}
    health: {interval: 100ms, timeout: 80ms, fall: 3, rise: 1}
    replication: {heartbeat: 100ms}
policy:
  rpo: %s
`, east.srv.URL, west.srv.URL, pg.Primary.DSN(), pg.Standby.DSN(), rd.Primary.URL(), rd.Replica.URL(), rpo)
	cfg := testenv.Config(t, doc)
	return cfg
}

func openNode(t *testing.T, cfg *config.Config, reg prometheus.Registerer) *Node {
	t.Helper()
	n, err := New(cfg, Options{Observer: "node-test", Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return n
}

// eventually polls the node's status until cond holds.
func eventually(t *testing.T, n *Node, within time.Duration, what string, cond func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := n.Status()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s; status:\n%+v", what, within, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func endpoint(st Status, service, region string) EndpointStatus {
	for _, s := range st.Services {
		if s.Name == service {
			for _, e := range s.Endpoints {
				if e.Region == region {
					return e
				}
			}
		}
	}
	return EndpointStatus{}
}

func exposure(st Status, service string) replication.Exposure {
	for _, e := range st.Exposure {
		if e.Service == service {
			return e
		}
	}
	return replication.Exposure{}
}

func region(st Status, name string) health.RegionStatus {
	for _, r := range st.Regions {
		if r.Name == name {
			return r
		}
	}
	return health.RegionStatus{}
}

func TestObserveRealTopology(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	rd := testenv.StartRedis(t)
	east, west := newApp(t, "gpt-4o-2024-08-06"), newApp(t, "gpt-4o-2024-08-06")
	cfg := topology(t, east, west, pg, rd, "2s")
	reg := prometheus.NewRegistry()
	n := openNode(t, cfg, reg)

	// Cold start: unknown until the first verdicts, then everything up.
	st := eventually(t, n, 10*time.Second, "all up and west ready", func(st Status) bool {
		return region(st, "east").State == health.RegionUp && region(st, "west").State == health.RegionUp &&
			len(st.Readiness) == 1 && st.Readiness[0].Ready
	})
	if st.ActiveRegion != "east" {
		t.Errorf("active region = %q", st.ActiveRegion)
	}
	if e := endpoint(st, "db", "east"); e.Role != health.RolePrimary || e.Observer != "node-test" {
		t.Errorf("db east = %+v", e)
	}
	if e := endpoint(st, "db", "west"); e.Role != health.RoleStandby {
		t.Errorf("db west = %+v", e)
	}
	if e := endpoint(st, "cache", "west"); e.Role != health.RoleStandby {
		t.Errorf("cache west = %+v", e)
	}
	if e := exposure(st, "db"); e.Status != replication.OK || e.Standby != "west" {
		t.Errorf("db exposure idle = %+v", e)
	}

	t.Run("lag rises while replay is paused, exposure breached, then recovers", func(t *testing.T) {
		pg.Standby.Exec(t, "SELECT pg_wal_replay_pause()")
		pg.Primary.Exec(t, "CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, body text)")
		pg.Primary.Exec(t, "INSERT INTO orders (body) SELECT repeat('x', 100) FROM generate_series(1, 1000)")
		st := eventually(t, n, 15*time.Second, "db exposure breached", func(st Status) bool {
			return exposure(st, "db").Status == replication.Breached
		})
		e := exposure(st, "db")
		if e.LagSeconds <= 2 || e.LagBytes <= 0 || !strings.Contains(e.Reason, "over the RPO") {
			t.Errorf("breached exposure = %+v", e)
		}
		pg.Standby.Exec(t, "SELECT pg_wal_replay_resume()")
		st = eventually(t, n, 15*time.Second, "db exposure back to ok", func(st Status) bool {
			e := exposure(st, "db")
			return e.Status == replication.OK && e.LagSeconds < 1
		})
	})

	t.Run("version mismatch makes the standby not ready", func(t *testing.T) {
		west.version.Store("gpt-4o-2024-05-13")
		st := eventually(t, n, 10*time.Second, "west not ready", func(st Status) bool {
			return len(st.Readiness) == 1 && !st.Readiness[0].Ready
		})
		want := `web version "gpt-4o-2024-05-13" differs from "gpt-4o-2024-08-06" in east`
		if r := st.Readiness[0].Reasons; len(r) != 1 || r[0] != want {
			t.Errorf("reasons = %q, want [%q]", r, want)
		}
		west.version.Store("gpt-4o-2024-08-06")
		eventually(t, n, 10*time.Second, "west ready again", func(st Status) bool { return st.Readiness[0].Ready })
	})

	t.Run("metrics pass promlint and carry the state", func(t *testing.T) {
		problems, err := promlint.NewWithMetricFamilies(mustGather(t, reg)).Lint()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
		text := gatherText(t, reg)
		for _, want := range []string{
			`lifeboat_region_state{region="east",state="up"} 1`,
			`lifeboat_endpoint_health{region="west",service="db",state="up"} 1`,
			`lifeboat_region_ready{region="west"} 1`,
			`lifeboat_exposure_status{service="db",status="ok"} 1`,
			`lifeboat_replication_broken{region="west",service="cache"} 0`,
			`lifeboat_policy_rpo_seconds 2`,
			`lifeboat_probes_total{region="east",result="success",service="web"}`,
			`lifeboat_replication_lag_seconds{region="west",service="db"}`,
			`lifeboat_replication_lag_bytes{region="west",service="cache"}`,
		} {
			if !strings.Contains(text, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})

	t.Run("redis replica whose primary is gone reports broken replication", func(t *testing.T) {
		rd.Primary.Kill(t)
		st := eventually(t, n, 15*time.Second, "cache replication broken", func(st Status) bool {
			for _, s := range st.Services {
				if s.Name == "cache" && len(s.Replication) == 1 && s.Replication[0].Broken {
					return true
				}
			}
			return false
		})
		var reasons []string
		for _, r := range st.Readiness {
			reasons = append(reasons, r.Reasons...)
		}
		if !strings.Contains(strings.Join(reasons, "\n"), "cache replication broken") {
			t.Errorf("readiness reasons lack the broken cache: %q", reasons)
		}
		if e := endpoint(st, "cache", "east"); e.Health != health.Down && !strings.Contains(e.Error, "refused") {
			t.Logf("cache east = %+v", e)
		}
	})

	t.Run("primary stopped: db down within interval x fall + timeout, region down", func(t *testing.T) {
		stopped := time.Now()
		pg.Primary.Stop(t, "immediate")
		st := eventually(t, n, 15*time.Second, "db east down", func(st Status) bool {
			return endpoint(st, "db", "east").Health == health.Down
		})
		e := endpoint(st, "db", "east")
		took := e.Since.Sub(stopped)
		bound := 3*100*time.Millisecond + 80*time.Millisecond + 100*time.Millisecond // fall × interval + timeout + jitter
		if took > 5*bound {
			t.Errorf("down after %s; bound %s (×5 slack)", took, bound)
		}
		if e.Error == "" || strings.Contains(e.Error, pg.Primary.Password) {
			t.Errorf("down error = %q", e.Error)
		}
		st = eventually(t, n, 5*time.Second, "east down", func(st Status) bool {
			return region(st, "east").State == health.RegionDown
		})
		if r := region(st, "east"); !strings.Contains(r.Reason, "critical service down: db") {
			t.Errorf("east reason = %q", r.Reason)
		}
	})
}

// Bad endpoints give clear reasons, never a crash or a stuck probe.
func TestObserveBadEndpoints(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	rd := testenv.StartRedis(t)
	dead := testenv.FreePort(t)
	wrongPw := strings.Replace(pg.Standby.DSN(), pg.Standby.Password, "not-the-password", 1)
	doc := fmt.Sprintf(`cluster: bad
regions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
services:
  - name: db
    kind: postgres
    critical: true
    endpoints: {east: %q, west: %q}
    # SCRAM authentication under -race on two busy cores can take longer
    # than 80ms: give the wrong-password probe room to fail by itself.
    health: {interval: 500ms, timeout: 400ms, fall: 2, rise: 1}
    replication: {heartbeat: 100ms}
  - name: notreplica
    kind: postgres
    endpoints: {east: %q, west: %q}
    health: {interval: 100ms, timeout: 80ms, fall: 2, rise: 1}
    replication: {heartbeat: 100ms}
  - name: lonely
    kind: redis
    endpoints: {east: %q, west: %q}
    health: {interval: 100ms, timeout: 80ms, fall: 2, rise: 1}
    replication: {heartbeat: 100ms}
  - name: gone
    kind: tcp
    endpoints: {east: "127.0.0.1:%d", west: "127.0.0.1:%d"}
    health: {interval: 100ms, timeout: 80ms, fall: 2, rise: 1}
`, pg.Primary.DSN(), wrongPw, pg.Primary.DSN(), pg.Primary.DSN(), rd.Primary.URL(), rd.Primary.URL(), dead, dead)
	cfg := testenv.Config(t, doc)
	n := openNode(t, cfg, nil)
	wantReasons := []string{"db is down", "notreplica is a primary here", "lonely is a primary here", "notreplica replication broken: not a replica", "lonely replication broken: not a replica"}
	st := eventually(t, n, 15*time.Second, "every bad endpoint judged", func(st Status) bool {
		if endpoint(st, "db", "west").Health != health.Down || endpoint(st, "gone", "east").Health != health.Down || len(st.Readiness) != 1 {
			return false
		}
		reasons := strings.Join(st.Readiness[0].Reasons, "\n")
		for _, want := range wantReasons {
			if !strings.Contains(reasons, want) {
				return false
			}
		}
		return true
	})
	if e := endpoint(st, "db", "west"); !strings.Contains(e.Error, "password authentication failed") || strings.Contains(e.Error, "not-the-password") {
		t.Errorf("wrong password error = %q", e.Error)
	}
	if e := endpoint(st, "gone", "east"); !strings.Contains(e.Error, "connection refused") {
		t.Errorf("dead port error = %q", e.Error)
	}
	for _, s := range st.Services {
		for _, l := range s.Replication {
			if strings.Contains(l.Reason, pg.Primary.Password) || strings.Contains(l.Reason, rd.Primary.Password) {
				t.Errorf("%s reason shows a password: %q", s.Name, l.Reason)
			}
		}
	}
}

func mustGather(t *testing.T, reg *prometheus.Registry) []*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// gatherText is the /metrics page as Prometheus scrapes it.
func gatherText(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}
