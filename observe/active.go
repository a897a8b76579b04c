package observe

import (
	"context"
	"errors"
	"time"

	"github.com/lifeboat-dr/lifeboat/replication"
)

// Active is the region whose data services the node measures replication
// from.
func (n *Node) Active() string {
	n.smu.RLock()
	defer n.smu.RUnlock()
	return n.active
}

// SetActive follows a change of the active region: the replication
// monitors of the data services are rebuilt with the new region's
// endpoints as primaries, and readiness is judged against it. Called by
// the control plane when the routing state's active region changes.
func (n *Node) SetActive(region string) error {
	if _, ok := n.cfg.Region(region); !ok {
		return errors.New("observe: region " + region + " is not declared")
	}
	n.smu.Lock()
	if n.active == region {
		n.smu.Unlock()
		return nil
	}
	old := n.openers
	n.active = region
	n.sources = map[string]replication.Source{}
	n.openers = nil
	var errs []error
	for i := range n.cfg.Services {
		if err := n.addSource(&n.cfg.Services[i], region, n.files); err != nil {
			errs = append(errs, err)
		}
	}
	fresh := n.openers
	n.smu.Unlock()

	n.mu.Lock()
	defer n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, c := range old {
		c.Close(ctx)
	}
	if n.opened {
		for _, c := range fresh {
			if err := c.Open(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	n.logger.Info("observing replication from the new active region", "active", region)
	return errors.Join(errs...)
}
