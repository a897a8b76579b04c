package control

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/lifecycle"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/lifeboat-dr/lifeboat/health"
)

// Local is where a node's own verdicts come from (the observe node).
type Local interface {
	Verdicts() map[health.Key]health.Verdict
}

// LocalFunc adapts a function to Local.
type LocalFunc func() map[health.Key]health.Verdict

// Verdicts calls f.
func (f LocalFunc) Verdicts() map[health.Key]health.Verdict { return f() }

// vote is one node's verdict on one endpoint, as stored under
// observations/<observer>/<service>/<region>.
type vote struct {
	State health.State `json:"state"`
	Since time.Time    `json:"since"`
	Error string       `json:"error,omitempty"`
}

// Quorum shares this node's verdicts through the store and answers the
// cluster's verdicts: an endpoint is down only when a majority of the nodes
// that can still reach the store say so, up when a majority says up, and
// unknown otherwise (contested, or no votes). A node cut off from a region
// is one vote, not the truth. With a single node its vote decides.
//
// Votes live under the node's own lease: a node that dies or loses the
// store stops voting within the lease TTL.
type Quorum struct {
	store  *Store
	node   string
	local  Local
	ttl    int
	every  time.Duration
	logger *slog.Logger

	mu    sync.Mutex
	votes map[string]map[health.Key]vote // by observer

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewQuorum shares local's verdicts every interval, under a lease of ttl
// seconds.
func NewQuorum(store *Store, node string, local Local, ttl int, every time.Duration, logger *slog.Logger) *Quorum {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if ttl < 2 {
		ttl = 2
	}
	return &Quorum{store: store, node: node, local: local, ttl: ttl, every: every, logger: logger, votes: map[string]map[health.Key]vote{}}
}

func (q *Quorum) prefix() string { return q.store.key("observations/") }

// Open starts publishing and watching.
func (q *Quorum) Open() error {
	ctx, cancel := context.WithCancel(context.Background())
	q.cancel = cancel
	q.wg.Add(2)
	go func() { defer q.wg.Done(); q.publish(ctx) }()
	go func() { defer q.wg.Done(); q.watch(ctx) }()
	return nil
}

// Close stops both; the node's votes expire with its lease.
func (q *Quorum) Close(ctx context.Context) error {
	if q.cancel != nil {
		q.cancel()
	}
	return lifecycle.Wait(ctx, &q.wg)
}

// publish writes this node's verdicts under its lease, every interval
// (only what changed is written).
func (q *Quorum) publish(ctx context.Context) {
	for ctx.Err() == nil {
		session, err := concurrency.NewSession(q.store.Client(), concurrency.WithTTL(q.ttl), concurrency.WithContext(ctx))
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
				continue
			}
		}
		written := map[health.Key]vote{}
		t := time.NewTicker(q.every)
		for alive := true; alive; {
			for k, v := range q.local.Verdicts() {
				vt := vote{State: v.State, Since: v.Since, Error: v.Last.Error}
				if w, ok := written[k]; ok && w.State == vt.State && w.Since.Equal(vt.Since) {
					continue
				}
				b, _ := json.Marshal(vt)
				pctx, cancel := context.WithTimeout(ctx, q.every)
				_, err := q.store.Client().Put(pctx, q.prefix()+q.node+"/"+k.Service+"/"+k.Region, string(b), clientv3.WithLease(session.Lease()))
				cancel()
				if err == nil {
					written[k] = vt
				}
			}
			select {
			case <-ctx.Done():
				alive = false
			case <-session.Done():
				alive = false // lease lost: publish everything again under a new one
			case <-t.C:
			}
		}
		t.Stop()
		session.Orphan()
	}
}

// watch keeps the table of every node's votes.
func (q *Quorum) watch(ctx context.Context) {
	for ctx.Err() == nil {
		gctx, gcancel := context.WithTimeout(ctx, time.Duration(q.ttl)*time.Second)
		resp, err := q.store.Client().Get(gctx, q.prefix(), clientv3.WithPrefix())
		gcancel()
		if err != nil {
			// Cut off from the store: the others' votes are unknown, so
			// this node's own verdicts stand until it reaches it again.
			q.mu.Lock()
			q.votes = map[string]map[health.Key]vote{}
			q.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		table := map[string]map[health.Key]vote{}
		for _, kv := range resp.Kvs {
			q.apply(table, string(kv.Key), kv.Value)
		}
		q.mu.Lock()
		q.votes = table
		q.mu.Unlock()
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range q.store.Client().Watch(wctx, q.prefix(), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
			if wr.Err() != nil {
				break
			}
			q.mu.Lock()
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					q.remove(q.votes, string(ev.Kv.Key))
				} else {
					q.apply(q.votes, string(ev.Kv.Key), ev.Kv.Value)
				}
			}
			q.mu.Unlock()
		}
		cancel()
	}
}

// parseKey splits observations/<observer>/<service>/<region>.
func (q *Quorum) parseKey(key string) (string, health.Key, bool) {
	parts := strings.Split(strings.TrimPrefix(key, q.prefix()), "/")
	if len(parts) != 3 {
		return "", health.Key{}, false
	}
	return parts[0], health.Key{Service: parts[1], Region: parts[2]}, true
}

func (q *Quorum) apply(table map[string]map[health.Key]vote, key string, value []byte) {
	obs, k, ok := q.parseKey(key)
	var v vote
	if !ok || json.Unmarshal(value, &v) != nil {
		return
	}
	if table[obs] == nil {
		table[obs] = map[health.Key]vote{}
	}
	table[obs][k] = v
}

func (q *Quorum) remove(table map[string]map[health.Key]vote, key string) {
	obs, k, ok := q.parseKey(key)
	if !ok || table[obs] == nil {
		return
	}
	delete(table[obs], k)
	if len(table[obs]) == 0 {
		delete(table, obs)
	}
}

// Voters lists the nodes whose votes are alive.
func (q *Quorum) Voters() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]string, 0, len(q.votes))
	for obs := range q.votes {
		out = append(out, obs)
	}
	return out
}

// Verdicts returns the cluster's verdict on every endpoint this node
// probes. The details (last observation, counts) are this node's; the
// state is the majority's. While no vote is in the store (this node cut
// off, or starting), the local verdicts stand: one vote decides.
func (q *Quorum) Verdicts() map[health.Key]health.Verdict {
	local := q.local.Verdicts()
	q.mu.Lock()
	defer q.mu.Unlock()
	voters := len(q.votes)
	if voters == 0 {
		return local
	}
	out := make(map[health.Key]health.Verdict, len(local))
	for k, v := range local {
		up, down := 0, 0
		var since time.Time
		for _, byKey := range q.votes {
			vt, ok := byKey[k]
			if !ok {
				continue
			}
			switch vt.State {
			case health.Up:
				up++
			case health.Down:
				down++
			}
			if vt.Since.After(since) {
				since = vt.Since
			}
		}
		state := health.Unknown
		switch {
		case 2*down > voters:
			state = health.Down
		case 2*up > voters:
			state = health.Up
		}
		if state != v.State {
			v.State = state
			if !since.IsZero() {
				v.Since = since
			}
		}
		out[k] = v
	}
	return out
}
