package control

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the node's view of the control plane, computed at
// scrape time without I/O:
//
//	lifeboat_leader{node}       1 when this node leads
//	lifeboat_quorum{node}       1 while this node confirms the state (0: no quorum, writes refused)
//	lifeboat_epoch{node,active} the epoch in force, labelled with the active region
type Collector struct {
	p                     *Plane
	leader, quorum, epoch *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// Collector returns the plane's Prometheus collector.
func (p *Plane) Collector() *Collector {
	return &Collector{p: p,
		leader: prometheus.NewDesc("lifeboat_leader", "1 when this node is the control plane's leader.", []string{"node"}, nil),
		quorum: prometheus.NewDesc("lifeboat_quorum", "1 while this node confirms the routing state with a quorum; 0 means it refuses writes.", []string{"node"}, nil),
		epoch:  prometheus.NewDesc("lifeboat_epoch", "The epoch in force, labelled with the active region.", []string{"node", "active"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.leader
	ch <- c.quorum
	ch <- c.epoch
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	_, leading := c.p.elector.Leading()
	st := c.p.cache.Current()
	ch <- prometheus.MustNewConstMetric(c.leader, prometheus.GaugeValue, b2f(leading), c.p.node)
	ch <- prometheus.MustNewConstMetric(c.quorum, prometheus.GaugeValue, b2f(!st.NoQuorum), c.p.node)
	ch <- prometheus.MustNewConstMetric(c.epoch, prometheus.GaugeValue, float64(st.Epoch), c.p.node, st.Active)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
