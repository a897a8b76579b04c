package control

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/lifecycle"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lifeboat-dr/lifeboat/traffic"
)

// StateCache is the data plane's view of the routing state: a local copy
// of the store's state, updated by a watch, that keeps serving the last
// known state when the store is unreachable (static stability) and marks
// it NoQuorum when it cannot confirm it for longer than staleAfter.
type StateCache struct {
	*traffic.MemState
	store      *Store
	staleAfter time.Duration
	logger     *slog.Logger

	mu        sync.Mutex
	confirmed time.Time
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

var _ traffic.StateSource = (*StateCache)(nil)

// NewStateCache starts from initial (the state read at start);
// staleAfter is normally the election lease TTL.
func NewStateCache(store *Store, initial traffic.State, staleAfter time.Duration, logger *slog.Logger) *StateCache {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	mem := traffic.NewMemState(initial.Active, initial.Epoch)
	mem.Set(initial) // keeps Held
	return &StateCache{
		MemState: mem,
		store:    store, staleAfter: staleAfter, logger: logger, confirmed: time.Now(),
	}
}

// Open starts the watch and the quorum check.
func (c *StateCache) Open() error {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(3)
	go func() { defer c.wg.Done(); c.watch(ctx) }()
	go func() { defer c.wg.Done(); c.confirm(ctx) }()
	go func() { defer c.wg.Done(); c.watchdog(ctx) }()
	return nil
}

// Close stops both.
func (c *StateCache) Close(ctx context.Context) error {
	if c.cancel != nil {
		c.cancel()
	}
	return lifecycle.Wait(ctx, &c.wg)
}

// apply takes a state read from the store (which never carries NoQuorum).
func (c *StateCache) apply(st traffic.State) {
	if err := c.Set(st); err != nil {
		c.logger.Error("store state older than the cached one: ignored", "err", err)
	}
}

// watch follows the state key; a broken watch is restarted.
func (c *StateCache) watch(ctx context.Context) {
	k := c.store.key("state")
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for resp := range c.store.cli.Watch(wctx, k) {
			if resp.Err() != nil {
				break
			}
			for _, ev := range resp.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				var st traffic.State
				if json.Unmarshal(ev.Kv.Value, &st) == nil {
					c.markConfirmed()
					c.apply(st)
				}
			}
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *StateCache) markConfirmed() {
	c.mu.Lock()
	c.confirmed = time.Now()
	c.mu.Unlock()
}

// confirm reads the state with a linearizable read several times per
// staleAfter. A read may take longer than staleAfter (a slow store is not
// a lost quorum): it confirms the state as of when it was sent. Reads
// overlap (up to confirmReads in flight): one read held up on its way
// does not hold up the confirmations sent after it.
func (c *StateCache) confirm(ctx context.Context) {
	every := c.staleAfter / 4
	t := time.NewTicker(every)
	defer t.Stop()
	var reads sync.WaitGroup
	defer reads.Wait()
	inFlight := make(chan struct{}, confirmReads)
	var lastApplied time.Time // when the read last applied was sent
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		select {
		case inFlight <- struct{}{}:
		default:
			continue // as many reads wait already
		}
		sent := time.Now()
		reads.Go(func() {
			defer func() { <-inFlight }()
			rctx, cancel := context.WithTimeout(ctx, c.staleAfter)
			st, _, err := c.store.LoadState(rctx)
			cancel()
			if err != nil {
				return
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if sent.After(c.confirmed) {
				c.confirmed = sent
			}
			// A read sent before the one last applied may carry an older
			// state; a read confirmed too long ago routes nothing.
			if !sent.After(lastApplied) || time.Since(sent) > c.staleAfter {
				return
			}
			lastApplied = sent
			if c.Current().NoQuorum {
				c.logger.Info("quorum reached again: routing writes")
			}
			st.NoQuorum = false
			c.apply(st)
		})
	}
}

// confirmReads bounds the confirmation reads in flight at once.
const confirmReads = 4

// watchdog marks the state NoQuorum as soon as it has gone unconfirmed
// for staleAfter, whatever the reads in flight: the fence delay of a
// promotion counts on this bound.
func (c *StateCache) watchdog(ctx context.Context) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		lost := time.Since(c.confirmed) > c.staleAfter
		c.mu.Unlock()
		if cur := c.Current(); lost && !cur.NoQuorum {
			c.logger.Warn("no quorum: serving reads from the last known state, refusing writes", "unconfirmed_for", c.staleAfter)
			cur.NoQuorum = true
			c.apply(cur)
		}
	}
}
