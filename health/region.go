package health

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/replication"
)

// RegionState is a region's health, from its services' verdicts.
type RegionState string

// Region states.
const (
	RegionUp       RegionState = "up"
	RegionDegraded RegionState = "degraded" // a non-critical service is down
	RegionDown     RegionState = "down"     // a critical service is down
	RegionUnknown  RegionState = "unknown"  // no verdict yet, or a witness
)

// RegionStatus is a region's state, why, and since when.
type RegionStatus struct {
	Name   string      `json:"name"`
	Role   string      `json:"role"`
	State  RegionState `json:"state"`
	Reason string      `json:"reason"`
	Since  time.Time   `json:"since"`
}

// EvaluateRegion derives a region's state from its services' verdicts: down
// when a critical service is down, unknown while a critical service has no
// verdict, degraded when another service is down, up otherwise. A region
// without critical services is down only when all its services are.
func EvaluateRegion(cfg *config.Config, region config.Region, verdicts map[Key]Verdict) (RegionState, string) {
	if region.Role == config.RoleWitness {
		return RegionUnknown, "witness: no services to probe"
	}
	var critDown, critUnknown, otherDown []string
	total, down, hasCritical := 0, 0, false
	for _, s := range cfg.Services {
		if _, ok := s.Endpoints[region.Name]; !ok {
			continue
		}
		total++
		v, ok := verdicts[Key{s.Name, region.Name}]
		if !ok {
			v = Verdict{State: Unknown}
		}
		what := s.Name
		if v.State == Down && v.Last.Error != "" {
			what += " (" + v.Last.Error + ")"
		}
		if v.State == Down {
			down++
		}
		switch {
		case s.Critical:
			hasCritical = true
			if v.State == Down {
				critDown = append(critDown, what)
			} else if v.State == Unknown {
				critUnknown = append(critUnknown, what)
			}
		case v.State == Down:
			otherDown = append(otherDown, what)
		}
	}
	switch {
	case len(critDown) > 0:
		return RegionDown, "critical service down: " + strings.Join(critDown, "; ")
	case len(critUnknown) > 0:
		return RegionUnknown, "no verdict yet for " + strings.Join(critUnknown, ", ")
	case !hasCritical && total > 0 && down == total:
		return RegionDown, "every service down: " + strings.Join(otherDown, "; ")
	case len(otherDown) > 0:
		return RegionDegraded, "service down: " + strings.Join(otherDown, "; ")
	case total == 0:
		return RegionUnknown, "no services in this region"
	}
	return RegionUp, "all services up"
}

// RegionTracker remembers when each region's state last changed.
type RegionTracker struct {
	mu   sync.Mutex
	last map[string]RegionStatus
}

// NewRegionTracker starts every region unknown at start.
func NewRegionTracker(cfg *config.Config, start time.Time) *RegionTracker {
	rt := &RegionTracker{last: map[string]RegionStatus{}}
	for _, r := range cfg.Regions {
		rt.last[r.Name] = RegionStatus{Name: r.Name, Role: r.Role, State: RegionUnknown, Reason: "starting", Since: start}
	}
	return rt
}

// Update evaluates every region at now and returns their statuses in the
// configuration's order, with Since moved only where the state changed.
func (rt *RegionTracker) Update(cfg *config.Config, verdicts map[Key]Verdict, now time.Time) []RegionStatus {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	out := make([]RegionStatus, 0, len(cfg.Regions))
	for _, r := range cfg.Regions {
		state, reason := EvaluateRegion(cfg, r, verdicts)
		prev, ok := rt.last[r.Name]
		st := RegionStatus{Name: r.Name, Role: r.Role, State: state, Reason: reason, Since: changedAt(cfg, r.Name, verdicts, now)}
		if ok && prev.State == state {
			st.Since = prev.Since
		}
		rt.last[r.Name] = st
		out = append(out, st)
	}
	return out
}

// changedAt is when a region's state last had cause to change: the latest
// verdict change of its services (the tracker is asked only now and then,
// so "now" would say when someone looked, not when it happened).
func changedAt(cfg *config.Config, region string, verdicts map[Key]Verdict, now time.Time) time.Time {
	var latest time.Time
	for _, s := range cfg.Services {
		if v, ok := verdicts[Key{s.Name, region}]; ok && v.Since.After(latest) && !v.Since.After(now) {
			latest = v.Since
		}
	}
	if latest.IsZero() {
		return now
	}
	return latest
}

// Version is what one region's endpoint of a service reports as its version.
type Version struct {
	// Value is the last version read successfully; it is kept when a later
	// read fails, so a dead active region still has a version to compare.
	Value string    `json:"value,omitempty"`
	Time  time.Time `json:"time"`
	// Error is the latest read's failure, if it failed.
	Error string `json:"error,omitempty"`
}

// Readiness says whether a standby region could take over now, and every
// reason why not.
type Readiness struct {
	Region  string   `json:"region"`
	Ready   bool     `json:"ready"`
	Reasons []string `json:"reasons"`
}

// ReadinessInput is what readiness is judged from.
type ReadinessInput struct {
	Active   string
	Verdicts map[Key]Verdict
	// Lags by service name.
	Lags map[string][]replication.Lag
	// Versions by service name, then region.
	Versions map[string]map[string]Version
}

// EvaluateReadiness judges every region that is neither active nor a
// witness. A region is ready when its critical services are up, its data
// services replicate with a lag within max_lag_on_failover, its data
// endpoints are standbys, and its versions match the active region's.
func EvaluateReadiness(cfg *config.Config, in ReadinessInput) []Readiness {
	out := []Readiness{}
	for _, r := range cfg.RegionsByPriority() {
		if r.Name == in.Active || r.Role == config.RoleWitness {
			continue
		}
		reasons := []string{}
		for i := range cfg.Services {
			s := &cfg.Services[i]
			if _, ok := s.Endpoints[r.Name]; !ok {
				continue
			}
			reasons = append(reasons, serviceReasons(s, r.Name, in)...)
		}
		out = append(out, Readiness{Region: r.Name, Ready: len(reasons) == 0, Reasons: reasons})
	}
	return out
}

func serviceReasons(s *config.Service, region string, in ReadinessInput) []string {
	var reasons []string
	v, ok := in.Verdicts[Key{s.Name, region}]
	if !ok {
		v = Verdict{State: Unknown}
	}
	if s.Critical {
		switch v.State {
		case Down:
			reasons = append(reasons, fmt.Sprintf("%s is down: %s", s.Name, v.Last.Error))
		case Unknown:
			reasons = append(reasons, fmt.Sprintf("%s has no health verdict yet", s.Name))
		}
	}
	if v.State == Up && v.Last.Role == RolePrimary && (s.Kind == config.KindPostgres || s.Kind == config.KindRedis) {
		reasons = append(reasons, fmt.Sprintf("%s is a primary here, not a standby of %s (two primaries: split-brain risk)", s.Name, in.Active))
	}
	if s.Replication != nil {
		var lag *replication.Lag
		for i, l := range in.Lags[s.Name] {
			if l.Region == region {
				lag = &in.Lags[s.Name][i]
			}
		}
		switch {
		case lag != nil && lag.Broken:
			reasons = append(reasons, fmt.Sprintf("%s replication broken: %s", s.Name, lag.Reason))
		case lag == nil || !lag.SecondsKnown || !lag.BytesKnown:
			reasons = append(reasons, fmt.Sprintf("%s replication lag not measured yet", s.Name))
		case lag.BytesKnown && lag.Bytes > int64(s.Replication.MaxLagOnFailover):
			reasons = append(reasons, fmt.Sprintf("%s lag %s is over max_lag_on_failover %s", s.Name,
				config.ByteSize(lag.Bytes), s.Replication.MaxLagOnFailover))
		}
	}
	if s.Version != nil {
		versions := in.Versions[s.Name]
		mine, theirs := versions[region], versions[in.Active]
		switch {
		case mine.Value == "" || mine.Error != "":
			reasons = append(reasons, fmt.Sprintf("%s version unknown: %s", s.Name, orDefault(mine.Error, "not probed yet")))
		case theirs.Value == "":
			reasons = append(reasons, fmt.Sprintf("%s version of active region %s unknown: %s", s.Name, in.Active, orDefault(theirs.Error, "not probed yet")))
		case mine.Value != theirs.Value:
			reasons = append(reasons, fmt.Sprintf("%s version %q differs from %q in %s", s.Name, mine.Value, theirs.Value, in.Active))
		}
	}
	sort.Strings(reasons)
	return reasons
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
