package replication

import (
	"strings"
	"testing"
	"time"
)

func TestEvaluate(t *testing.T) {
	rpo := 10 * time.Second
	cases := []struct {
		name    string
		lags    []Lag
		status  Status
		standby string
		reason  string
	}{
		{"nothing measured", []Lag{{Region: "west", Reason: "no measurement yet"}}, Unmeasured, "", "west: no measurement yet"},
		{"caught up", []Lag{{Region: "west", Seconds: 0.2, SecondsKnown: true}}, OK, "west", ""},
		{"over half", []Lag{{Region: "west", Seconds: 6, SecondsKnown: true}}, AtRisk, "west", "over half the RPO"},
		{"over rpo", []Lag{{Region: "west", Seconds: 11, SecondsKnown: true}}, Breached, "west", "lag 11.0s is over the RPO of 10s"},
		{"best of two", []Lag{{Region: "west", Seconds: 30, SecondsKnown: true}, {Region: "north", Seconds: 1, SecondsKnown: true}}, OK, "north", ""},
		{"broken within rpo", []Lag{{Region: "west", Seconds: 1, SecondsKnown: true, Broken: true, Reason: "link down"}}, AtRisk, "west", "west: link down"},
		{"broken over rpo", []Lag{{Region: "west", Seconds: 12, SecondsKnown: true, Broken: true, Reason: "link down"}}, Breached, "west", "over the RPO"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := Evaluate("db", c.lags, rpo)
			if e.Status != c.status || e.Standby != c.standby || !strings.Contains(e.Reason, c.reason) {
				t.Errorf("got %+v; want status %s standby %q reason containing %q", e, c.status, c.standby, c.reason)
			}
			if e.RPOSeconds != 10 {
				t.Errorf("rpo seconds = %v", e.RPOSeconds)
			}
		})
	}
}
