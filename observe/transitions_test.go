package observe

import (
	"reflect"
	"testing"

	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/replication"
)

func TestTransitions(t *testing.T) {
	prev := Status{
		Regions:   []health.RegionStatus{{Name: "east", State: health.RegionUp}, {Name: "west", State: health.RegionUp}},
		Readiness: []health.Readiness{{Region: "west", Ready: true}},
		Exposure: []replication.Exposure{
			{Service: "db", Standby: "west", Status: replication.OK},
			{Service: "cache", Standby: "west", Status: replication.OK},
		},
	}
	cur := Status{
		Regions: []health.RegionStatus{
			{Name: "east", State: health.RegionDown, Reason: "db down"},
			{Name: "west", State: health.RegionUp},
			{Name: "witness", State: health.RegionUnknown}, // new: not a transition
		},
		Readiness: []health.Readiness{{Region: "west", Ready: false, Reasons: []string{"db lag 20MB"}}},
		Exposure: []replication.Exposure{
			{Service: "db", Standby: "west", Status: replication.Breached, LagSeconds: 75, LagBytes: 2048, RPOSeconds: 60},
			{Service: "cache", Standby: "west", Status: replication.AtRisk}, // ok → at-risk: quiet
		},
	}
	got := Transitions(prev, cur)
	want := []Transition{
		{Kind: TransitionRegion, Region: "east", From: "up", To: "down", Message: "region east: up → down (db down)"},
		{Kind: TransitionReadiness, Region: "west", From: "ready", To: "not-ready", Message: "standby west is no longer ready: db lag 20MB"},
		{Kind: TransitionExposure, Service: "db", Region: "west", From: "ok", To: "breached", Message: "db → west: exposure ok → breached: lag 75.0s, 2048 bytes (RPO 60s)"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("transitions:\n got %+v\nwant %+v", got, want)
	}
	// Back again: the region comes up, the standby is ready, the breach ends.
	back := Transitions(cur, prev)
	if len(back) != 3 || back[0].To != "up" || back[1].To != "ready" || back[2].From != "breached" || back[2].To != "ok" {
		t.Fatalf("transitions back: %+v", back)
	}
	if n := len(Transitions(cur, cur)); n != 0 {
		t.Fatalf("no change gave %d transitions", n)
	}
}
