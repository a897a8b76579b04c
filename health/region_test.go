package health

import (
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
	"github.com/lifeboat-dr/lifeboat/replication"
)

const topo = `cluster: t
regions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
  - {name: tie, priority: 3, role: witness}
services:
  - name: web
    kind: http
    critical: true
    endpoints: {east: "http://127.0.0.1:1", west: "http://127.0.0.1:2"}
    version: {url: /version, json_field: model}
  - name: search
    kind: http
    endpoints: {east: "http://127.0.0.1:3", west: "http://127.0.0.1:4"}
  - name: db
    kind: postgres
    critical: true
    endpoints: {east: "postgres://u@127.0.0.1:5/db", west: "postgres://u@127.0.0.1:6/db"}
    replication: {max_lag_on_failover: 1MB}
`

func topology(t *testing.T) *config.Config {
	t.Helper()
	cfg := testenv.Config(t, topo)
	return cfg
}

func verdicts(states map[string]State) map[Key]Verdict {
	out := map[Key]Verdict{}
	for k, s := range states {
		svc, region, _ := strings.Cut(k, "@")
		v := Verdict{State: s}
		if s == Down {
			v.Last.Error = "connection refused"
		}
		if svc == "db" && s == Up {
			v.Last.Role = RolePrimary
			if region == "west" {
				v.Last.Role = RoleStandby
			}
		}
		out[Key{svc, region}] = v
	}
	return out
}

func allUp() map[string]State {
	return map[string]State{"web@east": Up, "web@west": Up, "search@east": Up, "search@west": Up, "db@east": Up, "db@west": Up}
}

func TestEvaluateRegion(t *testing.T) {
	cfg := topology(t)
	east, _ := cfg.Region("east")
	tie, _ := cfg.Region("tie")
	cases := []struct {
		name   string
		change map[string]State
		state  RegionState
		reason string
	}{
		{"all up", nil, RegionUp, "all services up"},
		{"critical down", map[string]State{"db@east": Down}, RegionDown, "critical service down: db (connection refused)"},
		{"non-critical down", map[string]State{"search@east": Down}, RegionDegraded, "service down: search"},
		{"cold start", map[string]State{"web@east": Unknown}, RegionUnknown, "no verdict yet for web"},
		{"down beats unknown", map[string]State{"web@east": Unknown, "db@east": Down}, RegionDown, "db"},
	}
	for _, c := range cases {
		states := allUp()
		for k, v := range c.change {
			states[k] = v
		}
		st, reason := EvaluateRegion(cfg, east, verdicts(states))
		if st != c.state || !strings.Contains(reason, c.reason) {
			t.Errorf("%s: %s %q, want %s %q", c.name, st, reason, c.state, c.reason)
		}
	}
	if st, _ := EvaluateRegion(cfg, tie, verdicts(allUp())); st != RegionUnknown {
		t.Errorf("witness = %s", st)
	}
}

func TestRegionTrackerSince(t *testing.T) {
	cfg := topology(t)
	t0 := time.Unix(1000, 0)
	rt := NewRegionTracker(cfg, t0)
	up := verdicts(allUp())
	st := rt.Update(cfg, up, t0.Add(time.Second))
	if st[0].State != RegionUp || !st[0].Since.Equal(t0.Add(time.Second)) {
		t.Fatalf("first = %+v", st[0])
	}
	st = rt.Update(cfg, up, t0.Add(5*time.Second))
	if !st[0].Since.Equal(t0.Add(time.Second)) {
		t.Errorf("since moved without a change: %v", st[0].Since)
	}
	down := allUp()
	down["db@east"] = Down
	st = rt.Update(cfg, verdicts(down), t0.Add(9*time.Second))
	if st[0].State != RegionDown || !st[0].Since.Equal(t0.Add(9*time.Second)) {
		t.Errorf("after change = %+v", st[0])
	}
}

func TestEvaluateReadiness(t *testing.T) {
	cfg := topology(t)
	goodLag := map[string][]replication.Lag{"db": {{Region: "west", BytesKnown: true, Bytes: 1000, SecondsKnown: true}}}
	sameVersion := map[string]map[string]Version{"web": {"east": {Value: "gpt-4o-2024"}, "west": {Value: "gpt-4o-2024"}}}
	in := ReadinessInput{Active: "east", Verdicts: verdicts(allUp()), Lags: goodLag, Versions: sameVersion}
	r := EvaluateReadiness(cfg, in)
	if len(r) != 1 || r[0].Region != "west" || !r[0].Ready || len(r[0].Reasons) != 0 {
		t.Fatalf("ready case = %+v", r)
	}

	down := allUp()
	down["web@west"] = Down
	bad := ReadinessInput{
		Active:   "east",
		Verdicts: verdicts(down),
		Lags:     map[string][]replication.Lag{"db": {{Region: "west", BytesKnown: true, Bytes: 5 << 20, SecondsKnown: true}}},
		Versions: map[string]map[string]Version{"web": {"east": {Value: "v2"}, "west": {Value: "v1"}}},
	}
	r = EvaluateReadiness(cfg, bad)
	want := []string{"web is down: connection refused", "db lag 5MiB is over max_lag_on_failover 1MiB", `web version "v1" differs from "v2" in east`}
	if r[0].Ready {
		t.Fatal("not-ready region reported ready")
	}
	for _, w := range want {
		found := false
		for _, got := range r[0].Reasons {
			found = found || got == w
		}
		if !found {
			t.Errorf("reasons %q lack %q", r[0].Reasons, w)
		}
	}

	broken := ReadinessInput{Active: "east", Verdicts: verdicts(allUp()), Versions: sameVersion,
		Lags: map[string][]replication.Lag{"db": {{Region: "west", Broken: true, Reason: "wal receiver not streaming"}}}}
	r = EvaluateReadiness(cfg, broken)
	if r[0].Ready || r[0].Reasons[0] != "db replication broken: wal receiver not streaming" {
		t.Errorf("broken = %+v", r[0])
	}

	two := verdicts(allUp())
	v := two[Key{"db", "west"}]
	v.Last.Role = RolePrimary
	two[Key{"db", "west"}] = v
	r = EvaluateReadiness(cfg, ReadinessInput{Active: "east", Verdicts: two, Lags: goodLag, Versions: sameVersion})
	if r[0].Ready || !strings.Contains(r[0].Reasons[0], "split-brain risk") {
		t.Errorf("two primaries = %+v", r[0])
	}
}
