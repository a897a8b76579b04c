package observe

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/replication"
)

// metrics exports the node's observations. Counters and the latency
// histogram are updated by every probe; the state gauges are computed from
// Status at each scrape, so they never disagree with the API.
type metrics struct {
	node     *Node
	probes   *prometheus.CounterVec
	duration *prometheus.HistogramVec

	endpointHealth *prometheus.Desc
	regionState    *prometheus.Desc
	lagSeconds     *prometheus.Desc
	lagBytes       *prometheus.Desc
	broken         *prometheus.Desc
	exposure       *prometheus.Desc
	exposureBytes  *prometheus.Desc
	exposureStatus *prometheus.Desc
	rpo            *prometheus.Desc
	ready          *prometheus.Desc
}

func newMetrics(reg prometheus.Registerer, n *Node) (*metrics, error) {
	m := &metrics{
		node: n,
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeboat_probes_total",
			Help: "Probes run, by service, region and result (success or failure).",
		}, []string{"service", "region", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lifeboat_probe_duration_seconds",
			Help:    "Time one probe took.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"service", "region"}),
		endpointHealth: prometheus.NewDesc("lifeboat_endpoint_health",
			"Health verdict of a service endpoint: 1 for the current state (up, down, unknown), 0 for the others.",
			[]string{"service", "region", "state"}, nil),
		regionState: prometheus.NewDesc("lifeboat_region_state",
			"State of a region: 1 for the current state (up, degraded, down, unknown), 0 for the others.",
			[]string{"region", "state"}, nil),
		lagSeconds: prometheus.NewDesc("lifeboat_replication_lag_seconds",
			"Seconds of writes on the primary not yet visible on this standby, from Lifeboat's heartbeat.",
			[]string{"service", "region"}, nil),
		lagBytes: prometheus.NewDesc("lifeboat_replication_lag_bytes",
			"Bytes of replication stream not yet replayed on this standby.",
			[]string{"service", "region"}, nil),
		broken: prometheus.NewDesc("lifeboat_replication_broken",
			"1 when this standby does not replicate from the primary.",
			[]string{"service", "region"}, nil),
		exposure: prometheus.NewDesc("lifeboat_exposure_seconds",
			"Seconds of writes a data service would lose if its active region died now.",
			[]string{"service"}, nil),
		exposureBytes: prometheus.NewDesc("lifeboat_exposure_bytes",
			"Bytes a data service would lose if its active region died now.",
			[]string{"service"}, nil),
		exposureStatus: prometheus.NewDesc("lifeboat_exposure_status",
			"Exposure compared with the RPO: 1 for the current status (ok, at-risk, breached, unknown), 0 for the others.",
			[]string{"service", "status"}, nil),
		rpo: prometheus.NewDesc("lifeboat_policy_rpo_seconds",
			"The recovery point objective of the policy.", nil, nil),
		ready: prometheus.NewDesc("lifeboat_region_ready",
			"1 when a standby region could take over now.",
			[]string{"region"}, nil),
	}
	for _, c := range []prometheus.Collector{m.probes, m.duration, m} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observe(o health.Observation, _ health.Verdict) {
	result := "success"
	if !o.OK {
		result = "failure"
	}
	m.probes.WithLabelValues(o.Service, o.Region, result).Inc()
	m.duration.WithLabelValues(o.Service, o.Region).Observe(o.Latency.Seconds())
}

// Describe sends the state gauges' descriptions.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.endpointHealth, m.regionState, m.lagSeconds, m.lagBytes, m.broken,
		m.exposure, m.exposureBytes, m.exposureStatus, m.rpo, m.ready} {
		ch <- d
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Collect computes the state gauges from the node's status.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	st := m.node.Status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, s := range st.Services {
		for _, e := range s.Endpoints {
			for _, state := range []health.State{health.Up, health.Down, health.Unknown} {
				gauge(m.endpointHealth, boolValue(e.Health == state), s.Name, e.Region, string(state))
			}
		}
		for _, l := range s.Replication {
			if l.SecondsKnown {
				gauge(m.lagSeconds, l.Seconds, s.Name, l.Region)
			}
			if l.BytesKnown {
				gauge(m.lagBytes, float64(l.Bytes), s.Name, l.Region)
			}
			gauge(m.broken, boolValue(l.Broken), s.Name, l.Region)
		}
	}
	for _, r := range st.Regions {
		for _, state := range []health.RegionState{health.RegionUp, health.RegionDegraded, health.RegionDown, health.RegionUnknown} {
			gauge(m.regionState, boolValue(r.State == state), r.Name, string(state))
		}
	}
	for _, e := range st.Exposure {
		if e.Status != replication.Unmeasured {
			gauge(m.exposure, e.LagSeconds, e.Service)
			gauge(m.exposureBytes, float64(e.LagBytes), e.Service)
		}
		for _, s := range []replication.Status{replication.OK, replication.AtRisk, replication.Breached, replication.Unmeasured} {
			gauge(m.exposureStatus, boolValue(e.Status == s), e.Service, string(s))
		}
	}
	gauge(m.rpo, m.node.cfg.Policy.RPO.D().Seconds())
	for _, r := range st.Readiness {
		gauge(m.ready, boolValue(r.Ready), r.Region)
	}
}
