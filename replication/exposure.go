package replication

import (
	"fmt"
	"time"
)

// Status compares an exposure with the recovery point objective.
type Status string

// Exposure statuses.
const (
	// OK: the exposure is at most half the RPO.
	OK Status = "ok"
	// AtRisk: above half the RPO, or the best standby's replication is
	// broken while still within the RPO.
	AtRisk Status = "at-risk"
	// Breached: above the RPO.
	Breached Status = "breached"
	// Unmeasured: no standby has been measured yet (cold start, or a files
	// service whose sync engine is not running). Not an RPO verdict.
	Unmeasured Status = "unknown"
)

// Exposure is what a data service would lose if its active region died now:
// the lag of its best standby, the one a failover would promote.
type Exposure struct {
	Service    string  `json:"service"`
	LagSeconds float64 `json:"lag_seconds"`
	LagBytes   int64   `json:"lag_bytes"`
	// Objects pending, for files services.
	Objects    int64   `json:"objects,omitempty"`
	RPOSeconds float64 `json:"rpo_seconds"`
	Status     Status  `json:"status"`
	// Standby is the region whose lag this is.
	Standby string `json:"standby,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Measured is when the figures were taken.
	Measured time.Time `json:"measured"`
}

// Evaluate computes a service's exposure from its standbys' lags. The best
// standby is the one with the smallest lag in seconds among those measured;
// a standby whose replication is broken still counts with its last known
// lag, which keeps growing while the primary takes writes.
func Evaluate(service string, lags []Lag, rpo time.Duration) Exposure {
	e := Exposure{Service: service, RPOSeconds: rpo.Seconds(), Status: Unmeasured, Reason: "no standby measured yet"}
	var best *Lag
	for i := range lags {
		l := &lags[i]
		if !l.SecondsKnown {
			continue
		}
		if best == nil || l.Seconds < best.Seconds || (l.Seconds == best.Seconds && best.Broken && !l.Broken) {
			best = l
		}
	}
	if best == nil {
		for _, l := range lags {
			if l.Reason != "" {
				e.Reason = fmt.Sprintf("%s: %s", l.Region, l.Reason)
				break
			}
		}
		return e
	}
	e.LagSeconds = best.Seconds
	e.LagBytes = best.Bytes
	e.Objects = best.Objects
	e.Standby = best.Region
	e.Measured = best.Time
	e.Reason = ""
	switch {
	case best.Seconds > rpo.Seconds():
		e.Status = Breached
		e.Reason = fmt.Sprintf("lag %.1fs is over the RPO of %s", best.Seconds, rpo)
	case best.Broken:
		e.Status = AtRisk
		e.Reason = fmt.Sprintf("%s: %s", best.Region, best.Reason)
	case best.Seconds > rpo.Seconds()/2:
		e.Status = AtRisk
		e.Reason = fmt.Sprintf("lag %.1fs is over half the RPO of %s", best.Seconds, rpo)
	default:
		e.Status = OK
	}
	return e
}
