package config

import (
	"strings"
	"testing"
	"time"
)

// drillsBase is a topology with a postgres service behind a writer
// endpoint and an http service; each case appends a drills section.
const drillsBase = `cluster: shop
regions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
services:
  - name: web
    kind: http
    endpoints: {east: "http://127.0.0.1:1", west: "http://127.0.0.1:2"}
  - name: db
    kind: postgres
    endpoints:
      east: postgres://u:${DB_PASSWORD}@127.0.0.1:5432/db
      west: postgres://u:${DB_PASSWORD}@127.0.0.1:5433/db
  - name: cache
    kind: postgres
    endpoints:
      east: postgres://u:${DB_PASSWORD}@127.0.0.1:5434/db
      west: postgres://u:${DB_PASSWORD}@127.0.0.1:5435/db
traffic:
  postgres:
    - {listen: "127.0.0.1:6432", service: db}
    - {listen: "127.0.0.1:6433", service: cache, role: reader}
`

func TestDrillsDefaults(t *testing.T) {
	cfg, err := load(t, drillsBase+`drills:
  workload: {service: db}
  scenarios:
    db-crash: {inject: "pg_ctl stop", restore: "pg_ctl start"}
    region-outage: {inject: "a", restore: "b", timeout: 30s}
  schedule:
    - {scenario: switchover, cron: "0 3 * * 1"}
    - {scenario: db-crash, cron: "CRON_TZ=Europe/Paris 30 4 1 * *", allow_faults: true}
`)
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Drills
	if d.Workload.Rate != 20 || d.Scenarios["db-crash"].Timeout.D() != 5*time.Minute || d.Scenarios["region-outage"].Timeout.D() != 30*time.Second {
		t.Errorf("defaults: rate %d, db-crash timeout %s, region-outage timeout %s", d.Workload.Rate, d.Scenarios["db-crash"].Timeout, d.Scenarios["region-outage"].Timeout)
	}
	if w, ok := cfg.DrillWriter("db"); !ok || w.Listen != "127.0.0.1:6432" {
		t.Errorf("DrillWriter(db) = %+v %v", w, ok)
	}
	if _, ok := cfg.DrillWriter("cache"); ok {
		t.Error("a reader endpoint counts as the writer")
	}
	var b strings.Builder
	if err := cfg.Print(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"rate: 20", "timeout: 5m", "allow_faults: true", `cron: 0 3 * * 1`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("config print lacks %q:\n%s", want, b.String())
		}
	}
	// Printed, it parses and validates again.
	if _, err := Parse(strings.NewReader(b.String()), env("DB_PASSWORD", "pw")); err != nil {
		t.Errorf("printed drills do not parse: %v", err)
	}
}

func TestDrillsValidation(t *testing.T) {
	cases := []struct {
		name, drills string
		want         string // "" when the section is valid
	}{
		{"minimal", "  workload: {service: db}\n", ""},
		{"no workload", "  scenarios: {}\n", "drills.workload.service: is required"},
		{"undeclared service", "  workload: {service: nope}\n", `drills.workload.service: service "nope" is not declared`},
		{"not postgres", "  workload: {service: web}\n", `drills.workload.service: service "web" is http; the drill's workload writes to a postgres service`},
		{"no writer", "  workload: {service: cache}\n", `drills.workload.service: service "cache" has no writer endpoint in traffic.postgres`},
		{"rate zero", "  workload: {service: db, rate: 0}\n", "drills.workload.rate: 0 is not from 1 to 1000"},
		{"rate high", "  workload: {service: db, rate: 5000}\n", "drills.workload.rate: 5000 is not from 1 to 1000"},
		{"bad address", "  workload: {service: db, address: db.example}\n", `drills.workload.address: "db.example" is not host:port`},
		{"unknown scenario", "  workload: {service: db}\n  scenarios:\n    meteor: {inject: a, restore: b}\n", `drills.scenarios.meteor: unknown scenario "meteor" (one of region-outage, db-crash, network-partition, replication-lag, switchover, failback)`},
		{"no inject", "  workload: {service: db}\n  scenarios:\n    region-outage: {restore: b}\n", "drills.scenarios.region-outage.inject: is required"},
		{"empty scenario", "  workload: {service: db}\n  scenarios:\n    db-crash:\n", "drills.scenarios.db-crash.inject: is required"},
		{"no restore", "  workload: {service: db}\n  scenarios:\n    network-partition: {inject: a}\n", `drills.scenarios.network-partition.restore: is required: the command that undoes the fault ("true" if it undoes itself)`},
		{"planned with commands", "  workload: {service: db}\n  scenarios:\n    switchover: {inject: a}\n", "drills.scenarios.switchover: switchover is a planned move that Lifeboat runs itself: it takes no inject or restore command"},
		{"zero timeout", "  workload: {service: db}\n  scenarios:\n    db-crash: {inject: a, restore: b, timeout: 0s}\n", "drills.scenarios.db-crash.timeout: 0s must be above 0 and at most 1h0m0s"},
		{"bad cron", "  workload: {service: db}\n  schedule:\n    - {scenario: switchover, cron: \"0 3 * *\"}\n", `drills.schedule[0].cron: "0 3 * *" is not a cron expression (minute hour day-of-month month day-of-week): expected exactly 5 fields`},
		{"cron out of range", "  workload: {service: db}\n  schedule:\n    - {scenario: switchover, cron: \"61 * * * *\"}\n", `drills.schedule[0].cron: "61 * * * *" is not a cron expression`},
		{"cron zone only", "  workload: {service: db}\n  schedule:\n    - {scenario: switchover, cron: \"CRON_TZ=UTC\"}\n", `drills.schedule[0].cron: "CRON_TZ=UTC" is not a cron expression (minute hour day-of-month month day-of-week): "CRON_TZ=UTC" names a time zone but no schedule after it`},
		{"cron bad zone", "  workload: {service: db}\n  schedule:\n    - {scenario: switchover, cron: \"TZ=Mars/Olympus 0 3 * * *\"}\n", `drills.schedule[0].cron: "TZ=Mars/Olympus 0 3 * * *" is not a cron expression`},
		{"no cron", "  workload: {service: db}\n  schedule:\n    - {scenario: switchover}\n", "drills.schedule[0].cron: is required"},
		{"descriptor", "  workload: {service: db}\n  schedule:\n    - {scenario: failback, cron: \"@weekly\"}\n", ""},
		{"unknown scheduled", "  workload: {service: db}\n  schedule:\n    - {scenario: meteor, cron: \"@daily\"}\n", `drills.schedule[0].scenario: unknown scenario "meteor"`},
		{"fault without consent", "  workload: {service: db}\n  scenarios:\n    db-crash: {inject: a, restore: b}\n  schedule:\n    - {scenario: db-crash, cron: \"@daily\"}\n", "drills.schedule[0].scenario: db-crash injects a real fault: a scheduled run needs allow_faults: true"},
		{"fault without commands", "  workload: {service: db}\n  schedule:\n    - {scenario: db-crash, cron: \"@daily\", allow_faults: true}\n", "drills.schedule[0].scenario: db-crash has no commands: add drills.scenarios.db-crash (inject, restore)"},
		{"unknown key", "  workload: {service: db}\n  schedule:\n    - {scenario: switchover, cron: \"@daily\", allow_fault: true}\n", `drills.schedule[0].allow_fault: unknown key "allow_fault" (did you mean "allow_faults"?)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := drillsBase + "drills:\n" + tc.drills
			_, err := load(t, doc)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("rejected:\n%v\n%s", err, doc)
			case tc.want == "":
			case err == nil:
				t.Fatalf("accepted:\n%s", doc)
			case !strings.Contains(err.Error(), tc.want):
				t.Errorf("error:\n%v\nwant it to contain:\n%s", err, tc.want)
			}
		})
	}
}

// Scheduled drills call the node's API: with tokens configured, they need
// one.
func TestDrillsToken(t *testing.T) {
	tokens := "api:\n  tokens:\n    - {name: ops, role: operator, sha256: " + strings.Repeat("a", 64) + "}\n"
	schedule := "drills:\n  workload: {service: db}\n  schedule:\n    - {scenario: switchover, cron: \"@weekly\"}\n"
	_, err := load(t, drillsBase+tokens+schedule)
	if err == nil || !strings.Contains(err.Error(), "drills.token: is required: scheduled drills call this node's API, which needs an operator token once api.tokens is set") {
		t.Errorf("no token: %v", err)
	}
	cfg, err := load(t, drillsBase+tokens+schedule+"  token: ${LIFEBOAT_DRILL_TOKEN}\n", env("DB_PASSWORD", "pw", "LIFEBOAT_DRILL_TOKEN", "drill-token-value"))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	cfg.Print(&b)
	if cfg.Drills.Token.Value() != "drill-token-value" || strings.Contains(b.String(), "drill-token-value") {
		t.Errorf("token %q; printed:\n%s", cfg.Drills.Token.Value(), b.String())
	}
	// Without tokens the API needs none.
	if _, err := load(t, drillsBase+schedule); err != nil {
		t.Errorf("no api tokens: %v", err)
	}
}

func TestParseCron(t *testing.T) {
	from := time.Date(2026, 3, 2, 2, 0, 0, 0, time.UTC) // a Monday
	cases := []struct {
		expr string
		want time.Time
	}{
		{"0 3 * * 1", time.Date(2026, 3, 2, 3, 0, 0, 0, time.UTC)},
		{"*/15 * * * *", time.Date(2026, 3, 2, 2, 15, 0, 0, time.UTC)},
		{"@daily", time.Date(2026, 3, 3, 0, 0, 0, 0, time.UTC)},
		{"CRON_TZ=Asia/Tokyo 0 12 * * *", time.Date(2026, 3, 2, 3, 0, 0, 0, time.UTC)},
	}
	for _, c := range cases {
		s, err := ParseCron(c.expr)
		if err != nil {
			t.Errorf("%s: %v", c.expr, err)
			continue
		}
		// The node's own time zone does not matter: UTC unless named.
		if got := s.Next(from.In(time.FixedZone("node", 5*3600))); !got.Equal(c.want) {
			t.Errorf("%s: next after %s is %s, want %s", c.expr, from, got.UTC(), c.want)
		}
	}
	for _, bad := range []string{"", "TZ=", "CRON_TZ=UTC", "* * * * * *", "0 25 * * *", "@fortnightly"} {
		if _, err := ParseCron(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
