package control

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/lifecycle"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Elector campaigns for leadership of the cluster and says, at any moment,
// whether this node may act as leader.
//
// A leader stops acting the moment its lease may have expired: leadership
// is valid only until the time of the last keep-alive it sent plus the
// lease's remaining TTL at that answer, minus a margin. A leader frozen
// (SIGSTOP, a long GC pause, a partition) wakes up past that deadline and
// does not act, before its lease could be given to another node.
type Elector struct {
	store  *Store
	node   string
	ttl    int
	logger *slog.Logger

	mu         sync.Mutex
	fence      Fence
	validUntil time.Time
	leading    bool
	onChange   func(leading bool)
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	handOff    raftHandOff
	rank       func(node string) int
}

// raftHandOff moves etcd's raft leadership off this node's own member,
// to the best-ranked member that takes it.
type raftHandOff interface {
	HoldsLeadership() bool
	HandOffLeadership(ctx context.Context, rank func(member string) int, leader string) error
}

// handOffEvery is how often a leader checks that its member does not hold
// etcd's leadership (it may come back to it after an election), and how
// long a new leader leads before it gives way to a better-placed node.
const handOffEvery = 2 * time.Second

// handOffSettle is how long a successor waits before it first moves
// etcd's leadership off its member. After a leader's death its successor
// is often the member it had handed etcd's leadership to: until it hands
// it on, one more death would cost both elections.
const handOffSettle = 500 * time.Millisecond

// HandOffRaftLeadership makes the leader keep etcd's raft leadership on
// another member (see Embedded.HandOffLeadership). Call before Open.
func (e *Elector) HandOffRaftLeadership(h raftHandOff) { e.handOff = h }

// Prefer ranks the nodes for leadership (lower is better; see
// Plane.placement): a leader that sees a better-ranked node campaigning
// gives way to it when no run is in progress, and etcd's raft leadership
// goes to the best-ranked other member. Call before Open.
func (e *Elector) Prefer(rank func(node string) int) { e.rank = rank }

// NewElector makes an elector for node with a lease of ttl seconds
// (minimum 1). onChange, if set, is called when this node gains or loses
// leadership.
func NewElector(store *Store, node string, ttl int, logger *slog.Logger, onChange func(bool)) *Elector {
	if ttl < 1 {
		ttl = 1
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Elector{store: store, node: node, ttl: ttl, logger: logger, onChange: onChange}
}

// Open starts campaigning.
func (e *Elector) Open() error {
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	if e.handOff != nil {
		e.wg.Go(func() { e.keepRaftPlaced(ctx) })
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for ctx.Err() == nil {
			if err := e.campaign(ctx); err != nil && ctx.Err() == nil {
				e.logger.Warn("election round ended", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}
	}()
	return nil
}

// Close resigns (if leading) and stops.
func (e *Elector) Close(ctx context.Context) error {
	if e.cancel != nil {
		e.cancel()
	}
	return lifecycle.Wait(ctx, &e.wg)
}

// campaign runs one session: campaign, lead until the session ends.
func (e *Elector) campaign(ctx context.Context) error {
	cli := e.store.Client()
	// The lease is sure to live TTL after the moment a request that
	// created or renewed it was *sent*: every validity is measured from a
	// send time, never from when an answer arrived.
	sent := time.Now()
	lease, err := cli.Grant(ctx, int64(e.ttl))
	if err != nil {
		return err
	}
	e.extend(sent, lease.TTL)
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	kaDone := make(chan struct{})
	go func() {
		defer close(kaDone)
		period := time.Duration(e.ttl) * time.Second / 3
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-kctx.Done():
				return
			case <-t.C:
			}
			sent := time.Now()
			rctx, cancel := context.WithTimeout(kctx, period)
			resp, err := cli.KeepAliveOnce(rctx, lease.ID)
			cancel()
			if err != nil {
				if errors.Is(err, rpctypes.ErrLeaseNotFound) {
					return // the lease is gone: leadership with it
				}
				continue // validity runs out on its own
			}
			e.extend(sent, resp.TTL)
		}
	}()
	session, err := concurrency.NewSession(cli, concurrency.WithLease(lease.ID), concurrency.WithContext(kctx))
	if err != nil {
		return err
	}
	defer func() {
		// Hand over at once: revoke the lease, bounded in time.
		session.Orphan()
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		cli.Revoke(rctx, lease.ID)
	}()
	election := concurrency.NewElection(session, e.store.key("leader"))
	// A node that campaigns behind a leader succeeds it; the first leader
	// of a cluster just started has no predecessor.
	_, err = election.Leader(ctx)
	succeeds := err == nil
	if err := election.Campaign(ctx, e.node); err != nil {
		return err
	}
	e.setLeading(true, Fence{Key: election.Key(), Rev: election.Rev()})
	e.record(e.node + " became leader")
	yield := make(chan string, 1)
	if e.handOff != nil || e.rank != nil {
		go e.place(kctx, yield, succeeds)
	}
	select {
	case <-ctx.Done():
		e.setLeading(false, Fence{})
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		election.Resign(rctx)
		return nil
	case to := <-yield:
		e.setLeading(false, Fence{})
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		election.Resign(rctx)
		e.record(e.node + " gave way to " + to + ", better placed to lead")
		// Campaign again, behind it.
		select {
		case <-ctx.Done():
		case <-time.After(handOffEvery):
		}
		return nil
	case <-session.Done():
	case <-kaDone:
	}
	e.setLeading(false, Fence{})
	e.logger.Warn("lost leadership: lease ended")
	e.record(e.node + " lost leadership: its lease ended")
	return errors.New("lease ended")
}

// place, while this node leads, hands etcd's leadership to another member
// and gives way (through yield) to a better-ranked candidate. A successor
// (succeeds) first looks after half a second; the first leader of a
// cluster just started lets the members settle for handOffEvery.
func (e *Elector) place(ctx context.Context, yield chan<- string, succeeds bool) {
	since := time.Now()
	rank := e.rank
	if rank == nil {
		rank = func(string) int { return 0 }
	}
	wait := handOffEvery
	if succeeds {
		wait = handOffSettle
	}
	for {
		// A new leader settles first (the cluster may just have started,
		// or just elected it).
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = handOffEvery
		// Nothing moves while a run is in progress: a raft leadership
		// transfer stalls reads for a moment, and a run keeps its leader.
		if !e.runInProgress(ctx) {
			live := e.campaigners(ctx)
			if e.handOff != nil {
				if err := e.handOff.HandOffLeadership(ctx, rank, e.node); err != nil && ctx.Err() == nil {
					e.logger.Warn("etcd leadership stays on the leader's member", "err", err)
				}
			}
			if to := e.betterCandidate(live); to != "" && time.Since(since) >= handOffEvery {
				yield <- to
				return
			}
		}
	}
}

// keepRaftPlaced, while this node does not lead, moves etcd's raft
// leadership off its member when a better-placed member (not the Lifeboat
// leader's) answers: the ranking changes with the active region, and a
// raft leader left in the region that became active would make that
// region's outage cost an election before the failover. The leader's own
// member is looked after by place.
func (e *Elector) keepRaftPlaced(ctx context.Context) {
	if e.rank == nil {
		return
	}
	t := time.NewTicker(handOffEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, leading := e.Leading(); leading || !e.handOff.HoldsLeadership() || e.runInProgress(ctx) {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, time.Second)
		leader, err := e.Leader(lctx)
		cancel()
		if err != nil || leader == "" {
			continue
		}
		if err := e.handOff.HandOffLeadership(ctx, e.rank, leader); err != nil && ctx.Err() == nil {
			e.logger.Debug("etcd leadership stays on this member", "err", err)
		}
	}
}

// runInProgress says whether a run holds the lock (or the store cannot
// tell).
func (e *Elector) runInProgress(ctx context.Context) bool {
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	lock, err := e.store.Client().Get(rctx, e.store.key("run-lock"), clientv3.WithSerializable(), clientv3.WithCountOnly())
	return err != nil || lock.Count > 0
}

// campaigners are the nodes campaigning now (this one included), read from
// this node's member; empty when it cannot tell.
func (e *Elector) campaigners(ctx context.Context) map[string]struct{} {
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := e.store.Client().Get(rctx, e.store.key("leader"), clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		return nil
	}
	live := make(map[string]struct{}, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		live[string(kv.Value)] = struct{}{}
	}
	return live
}

// betterCandidate is the best-ranked campaigning node, if it is ranked
// better than this one, or "".
func (e *Elector) betterCandidate(live map[string]struct{}) string {
	if e.rank == nil {
		return ""
	}
	best, bestRank := "", e.rank(e.node)
	for other := range live {
		if r := e.rank(other); r < bestRank || (r == bestRank && best != "" && other < best) {
			best, bestRank = other, r
		}
	}
	return best
}

// record appends an election event, bounded in time: leadership must not
// wait on the event stream.
func (e *Elector) record(msg string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(e.ttl)*time.Second/3)
	defer cancel()
	if _, err := e.store.Append(ctx, Event{Type: EventElection, Node: e.node, Message: msg}); err != nil {
		e.logger.Warn("election event not stored", "err", err)
	}
}

// extend records that the lease lives at least ttl seconds after since,
// the send time of the request that renewed it.
func (e *Elector) extend(since time.Time, ttl int64) {
	// A margin of a tenth of the TTL covers clock rate differences between
	// this node and etcd's.
	until := since.Add(time.Duration(ttl)*time.Second - time.Duration(e.ttl)*time.Second/10)
	e.mu.Lock()
	if until.After(e.validUntil) {
		e.validUntil = until
	}
	e.mu.Unlock()
}

func (e *Elector) setLeading(leading bool, f Fence) {
	e.mu.Lock()
	changed := e.leading != leading
	e.leading, e.fence = leading, f
	e.mu.Unlock()
	if changed {
		e.logger.Info("leadership changed", "node", e.node, "leading", leading)
		if e.onChange != nil {
			e.onChange(leading)
		}
	}
}

// Leading reports whether this node may act as leader now, and the fence
// to make changes with.
func (e *Elector) Leading() (Fence, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.leading || time.Now().After(e.validUntil) {
		return Fence{}, false
	}
	return e.fence, true
}

// Leader returns the current leader's name, as the store says.
func (e *Elector) Leader(ctx context.Context) (string, error) {
	resp, err := e.store.Client().Get(ctx, e.store.key("leader"), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}
