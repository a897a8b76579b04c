package observe

import (
	"fmt"
	"strings"

	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/replication"
)

// Kinds of transitions.
const (
	TransitionRegion    = "region"    // a region's state changed
	TransitionReadiness = "readiness" // a standby became ready or stopped being ready
	TransitionExposure  = "exposure"  // a data service's exposure crossed the RPO
)

// Transition is a change between two statuses worth recording: a region's
// state, a standby's readiness, an exposure entering or leaving breach.
type Transition struct {
	Kind    string
	Service string
	Region  string
	From    string
	To      string
	// Message says what changed and why, with the figures.
	Message string
}

// Transitions lists what changed from prev to cur. A region, standby or
// exposure absent from prev (the first status) is not a transition; a
// change of exposure matters only into or out of breach, so a lag that
// wavers around the at-risk line is quiet.
func Transitions(prev, cur Status) []Transition {
	var out []Transition
	was := map[string]health.RegionStatus{}
	for _, r := range prev.Regions {
		was[r.Name] = r
	}
	for _, r := range cur.Regions {
		p, ok := was[r.Name]
		if !ok || p.State == r.State {
			continue
		}
		msg := fmt.Sprintf("region %s: %s → %s", r.Name, p.State, r.State)
		if r.Reason != "" {
			msg += " (" + r.Reason + ")"
		}
		out = append(out, Transition{Kind: TransitionRegion, Region: r.Name, From: string(p.State), To: string(r.State), Message: msg})
	}
	ready := map[string]health.Readiness{}
	for _, r := range prev.Readiness {
		ready[r.Region] = r
	}
	for _, r := range cur.Readiness {
		p, ok := ready[r.Region]
		if !ok || p.Ready == r.Ready {
			continue
		}
		msg := fmt.Sprintf("standby %s is ready to take over", r.Region)
		if !r.Ready {
			msg = fmt.Sprintf("standby %s is no longer ready: %s", r.Region, strings.Join(r.Reasons, "; "))
		}
		out = append(out, Transition{Kind: TransitionReadiness, Region: r.Region, From: readyWord(p.Ready), To: readyWord(r.Ready), Message: msg})
	}
	exp := map[string]replication.Exposure{}
	for _, e := range prev.Exposure {
		exp[e.Service+"/"+e.Standby] = e
	}
	for _, e := range cur.Exposure {
		p, ok := exp[e.Service+"/"+e.Standby]
		if !ok || p.Status == e.Status || (p.Status != replication.Breached && e.Status != replication.Breached) {
			continue
		}
		msg := fmt.Sprintf("%s: exposure %s → %s: lag %.1fs, %d bytes (RPO %.0fs)", e.Service, p.Status, e.Status, e.LagSeconds, e.LagBytes, e.RPOSeconds)
		if e.Standby != "" {
			msg = fmt.Sprintf("%s → %s: exposure %s → %s: lag %.1fs, %d bytes (RPO %.0fs)", e.Service, e.Standby, p.Status, e.Status, e.LagSeconds, e.LagBytes, e.RPOSeconds)
		}
		out = append(out, Transition{Kind: TransitionExposure, Service: e.Service, Region: e.Standby, From: string(p.Status), To: string(e.Status), Message: msg})
	}
	return out
}

func readyWord(ready bool) string {
	if ready {
		return "ready"
	}
	return "not-ready"
}
