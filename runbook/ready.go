package runbook

import (
	"fmt"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/observe"
	"github.com/lifeboat-dr/lifeboat/replication"
)

// LagMemory remembers each standby's last lag measured while its
// replication worked. When the active region dies, replication breaks
// with it: what the standby would lose is the lag it had just before.
type LagMemory struct {
	mu sync.Mutex
	m  map[[2]string]replication.Lag
}

// NewLagMemory makes an empty memory.
func NewLagMemory() *LagMemory { return &LagMemory{m: map[[2]string]replication.Lag{}} }

// Observe records the working measurements of a status.
func (m *LagMemory) Observe(st observe.Status) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range st.Services {
		for _, l := range s.Replication {
			if !l.Broken && l.BytesKnown {
				m.m[[2]string{s.Name, l.Region}] = l
			}
		}
	}
}

// Forget drops what was measured (the primary changed: old lags say
// nothing about the new topology).
func (m *LagMemory) Forget() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.m)
}

// Last returns the last working measurement of a standby.
func (m *LagMemory) Last(service, region string) (replication.Lag, bool) {
	if m == nil {
		return replication.Lag{}, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.m[[2]string{service, region}]
	return l, ok
}

// takeover judges whether region could take over from the active region
// now, from the status and the remembered lags: its critical services
// up, its data services standbys, their lag (now, or the last working
// measurement when replication broke) known and within
// max_lag_on_failover. It returns the reasons it could not, what it
// noted, and the largest lag in bytes (the estimated loss).
func takeover(cfg *config.Config, st observe.Status, mem *LagMemory, region string) (problems, notes []string, worst int64) {
	for _, svc := range st.Services {
		sc, ok := cfg.Service(svc.Name)
		if !ok {
			continue
		}
		for _, ep := range svc.Endpoints {
			if ep.Region != region {
				continue
			}
			if sc.Critical && ep.Health != health.Up {
				problems = append(problems, fmt.Sprintf("%s is %s in %s", svc.Name, ep.Health, region))
			}
			if (sc.Kind == config.KindPostgres || sc.Kind == config.KindRedis) && ep.Health == health.Up && ep.Role == health.RolePrimary {
				problems = append(problems, fmt.Sprintf("%s in %s is a primary, not a standby", svc.Name, region))
			}
		}
		if sc.Replication == nil {
			continue
		}
		var lag *replication.Lag
		for i, l := range svc.Replication {
			if l.Region == region {
				lag = &svc.Replication[i]
			}
		}
		switch {
		case lag != nil && !lag.Broken && lag.BytesKnown:
			notes = append(notes, fmt.Sprintf("%s lags %s", svc.Name, config.ByteSize(lag.Bytes)))
		default:
			last, ok := mem.Last(svc.Name, region)
			if !ok {
				why := "never measured"
				if lag != nil && lag.Reason != "" {
					why = lag.Reason
				}
				problems = append(problems, fmt.Sprintf("%s lag in %s unknown (%s)", svc.Name, region, why))
				continue
			}
			lag = &last
			notes = append(notes, fmt.Sprintf("%s lagged %s when last measured %s ago", svc.Name, config.ByteSize(last.Bytes), time.Since(last.Time).Round(time.Millisecond)))
		}
		worst = max(worst, lag.Bytes)
		if lag.Bytes > int64(sc.Replication.MaxLagOnFailover) {
			problems = append(problems, fmt.Sprintf("%s lag %s in %s is over max_lag_on_failover %s", svc.Name, config.ByteSize(lag.Bytes), region, sc.Replication.MaxLagOnFailover))
		}
	}
	return problems, notes, worst
}
