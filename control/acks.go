package control

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Each node acknowledges the epoch its data plane routes by under
// acks/<node>, on its own lease. A promotion after a failed fence waits
// until every node with a live lease has acknowledged the new epoch (a
// node without one has not confirmed the state for longer than it may
// route writes by it), or the fence delay, whichever comes first.

// ack publishes this node's epoch whenever the state cache changes.
func (p *Plane) ack(ctx context.Context) {
	changes, unsubscribe := p.cache.Subscribe()
	defer unsubscribe()
	key := p.store.key("acks/" + p.node)
	for ctx.Err() == nil {
		session, err := concurrency.NewSession(p.cli, concurrency.WithTTL(max(int(p.ttl/time.Second), 1)), concurrency.WithContext(ctx))
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
				continue
			}
		}
		var written uint64
		for alive := true; alive; {
			if st := p.cache.Current(); !st.NoQuorum && st.Epoch != written {
				pctx, cancel := context.WithTimeout(ctx, time.Second)
				_, err := p.cli.Put(pctx, key, strconv.FormatUint(st.Epoch, 10), clientv3.WithLease(session.Lease()))
				cancel()
				if err == nil {
					written = st.Epoch
				}
			}
			select {
			case <-ctx.Done():
				alive = false
			case <-session.Done():
				alive = false
			case <-changes:
			case <-time.After(time.Second):
			}
		}
		session.Orphan()
	}
}

// AwaitEpoch returns when every node with a live lease has acknowledged
// epoch (or a later one), or with an error naming the nodes still behind
// when ctx ends.
func (p *Plane) AwaitEpoch(ctx context.Context, epoch uint64) error {
	prefix := p.store.key("acks/")
	var behind []string // as of the last read that answered
	var lastErr error
	for {
		resp, err := p.cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err == nil {
			behind = behind[:0]
			for _, kv := range resp.Kvs {
				n, _ := strconv.ParseUint(string(kv.Value), 10, 64)
				if n < epoch {
					behind = append(behind, fmt.Sprintf("%s at %d", strings.TrimPrefix(string(kv.Key), prefix), n))
				}
			}
			if len(behind) == 0 {
				return nil
			}
		} else if ctx.Err() == nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if len(behind) == 0 && lastErr != nil {
				return fmt.Errorf("epoch %d acknowledgements: %w", epoch, lastErr)
			}
			if len(behind) == 0 {
				return fmt.Errorf("epoch %d acknowledgements: %w", epoch, ctx.Err())
			}
			sort.Strings(behind)
			return fmt.Errorf("epoch %d not acknowledged by %s", epoch, strings.Join(behind, ", "))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// AwaitEpoch waits for every node to route by epoch.
func (t Traffic) AwaitEpoch(ctx context.Context, epoch uint64) error {
	return t.p.AwaitEpoch(ctx, epoch)
}
