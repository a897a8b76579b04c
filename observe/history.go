package observe

import (
	"sort"
	"sync"
	"time"
)

// LagPoint is one sample of a standby's lag.
type LagPoint struct {
	T          time.Time `json:"t"`
	LagSeconds float64   `json:"lag_seconds"`
	LagBytes   int64     `json:"lag_bytes"`
}

// LagSeries is one data service's lag toward one standby over time.
type LagSeries struct {
	Service string     `json:"service"`
	Standby string     `json:"standby"`
	Points  []LagPoint `json:"points"`
}

// LagWindow is the lag of every data service over a span, with the RPO.
type LagWindow struct {
	RPOSeconds float64     `json:"rpo_seconds"`
	Series     []LagSeries `json:"series"`
}

// LagHistory keeps the recent lag of every service toward every standby,
// sampled from Status, for the dashboard's chart: a bounded ring per
// series (Keep of samples; older ones are dropped).
type LagHistory struct {
	keep time.Duration
	mu   sync.Mutex
	rpo  float64
	data map[[2]string][]LagPoint
}

// NewLagHistory keeps samples for keep.
func NewLagHistory(keep time.Duration) *LagHistory {
	return &LagHistory{keep: keep, data: map[[2]string][]LagPoint{}}
}

// Record adds the lags of st (the measured ones) and drops samples older
// than the span kept.
func (h *LagHistory) Record(st Status) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, svc := range st.Services {
		for _, l := range svc.Replication {
			if !l.SecondsKnown && !l.BytesKnown {
				continue
			}
			t := l.Time
			if t.IsZero() {
				t = st.Time
			}
			k := [2]string{svc.Name, l.Region}
			pts := h.data[k]
			if n := len(pts); n > 0 && !t.After(pts[n-1].T) {
				continue // the same measurement seen again
			}
			h.data[k] = append(pts, LagPoint{T: t, LagSeconds: l.Seconds, LagBytes: l.Bytes})
		}
	}
	for _, e := range st.Exposure {
		if e.RPOSeconds > 0 {
			h.rpo = e.RPOSeconds
		}
	}
	cut := st.Time.Add(-h.keep)
	for k, pts := range h.data {
		i := sort.Search(len(pts), func(i int) bool { return !pts[i].T.Before(cut) })
		if i == len(pts) {
			delete(h.data, k)
			continue
		}
		h.data[k] = append(pts[:0:0], pts[i:]...)
	}
}

// Window returns the samples taken at or after since, series sorted by
// service then standby.
func (h *LagHistory) Window(since time.Time) LagWindow {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := LagWindow{RPOSeconds: h.rpo, Series: []LagSeries{}}
	for k, pts := range h.data {
		i := sort.Search(len(pts), func(i int) bool { return !pts[i].T.Before(since) })
		out.Series = append(out.Series, LagSeries{Service: k[0], Standby: k[1], Points: append([]LagPoint{}, pts[i:]...)})
	}
	sort.Slice(out.Series, func(i, j int) bool {
		a, b := out.Series[i], out.Series[j]
		return a.Service < b.Service || (a.Service == b.Service && a.Standby < b.Standby)
	})
	return out
}
