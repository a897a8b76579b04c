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
		var written string
		for alive := true; alive; {
			if st := p.cache.Current(); !st.NoQuorum && ackValue(st.Epoch, st.Held) != written {
				v := ackValue(st.Epoch, st.Held)
				pctx, cancel := context.WithTimeout(ctx, time.Second)
				_, err := p.cli.Put(pctx, key, v, clientv3.WithLease(session.Lease()))
				cancel()
				if err == nil {
					written = v
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
	return p.awaitAcks(ctx, fmt.Sprintf("epoch %d", epoch), func(e uint64, _ bool) bool { return e >= epoch })
}

// AwaitHeld returns when every node with a live lease has acknowledged a
// hold (its data plane holds new requests), or with an error naming the
// nodes that have not when ctx ends.
func (p *Plane) AwaitHeld(ctx context.Context) error {
	return p.awaitAcks(ctx, "the hold", func(_ uint64, held bool) bool { return held })
}

// ackValue is a node's acknowledgement: its epoch, and " held" while its
// data plane holds new requests.
func ackValue(epoch uint64, held bool) string {
	v := strconv.FormatUint(epoch, 10)
	if held {
		v += " held"
	}
	return v
}

func parseAck(v string) (epoch uint64, held bool) {
	f := strings.Fields(v)
	if len(f) > 0 {
		epoch, _ = strconv.ParseUint(f[0], 10, 64)
	}
	return epoch, len(f) > 1 && f[1] == "held"
}

// awaitAcks waits until every live acknowledgement satisfies ok.
func (p *Plane) awaitAcks(ctx context.Context, what string, ok func(epoch uint64, held bool) bool) error {
	prefix := p.store.key("acks/")
	var behind []string // as of the last read that answered
	var lastErr error
	for {
		resp, err := p.cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err == nil {
			behind = behind[:0]
			for _, kv := range resp.Kvs {
				if n, held := parseAck(string(kv.Value)); !ok(n, held) {
					behind = append(behind, fmt.Sprintf("%s at %s", strings.TrimPrefix(string(kv.Key), prefix), kv.Value))
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
				return fmt.Errorf("%s acknowledgements: %w", what, lastErr)
			}
			if len(behind) == 0 {
				return fmt.Errorf("%s acknowledgements: %w", what, ctx.Err())
			}
			sort.Strings(behind)
			return fmt.Errorf("%s not acknowledged by %s", what, strings.Join(behind, ", "))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// AwaitEpoch waits for every node to route by epoch.
func (t Traffic) AwaitEpoch(ctx context.Context, epoch uint64) error {
	return t.p.AwaitEpoch(ctx, epoch)
}

// AwaitHeld waits for every node's data plane to hold new requests.
func (t Traffic) AwaitHeld(ctx context.Context) error { return t.p.AwaitHeld(ctx) }
