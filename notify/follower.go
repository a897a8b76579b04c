package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/internal/lifecycle"
)

// EventSource is the event stream (control.Store implements it).
type EventSource interface {
	// Events returns up to limit events with a sequence number above
	// after, in order; none when there are none yet.
	Events(ctx context.Context, after uint64, limit int64) ([]control.Event, error)
	// LastSeq is the sequence number of the newest event (0: none yet).
	LastSeq(ctx context.Context) (uint64, error)
}

// Cursor is where the follower stands in the stream, shared by every node
// so that a new leader continues where the old one stopped
// (control.Store.Cursor implements it).
type Cursor interface {
	// Load returns the saved sequence number; false when none was ever
	// saved.
	Load(ctx context.Context) (uint64, bool, error)
	// Save records that every event up to seq was handled. It never moves
	// the cursor backwards.
	Save(ctx context.Context, seq uint64) error
}

// control implements both; it cannot assert it (notify imports control).
var (
	_ EventSource = (*control.Store)(nil)
	_ Cursor      = (*control.Cursor)(nil)
)

// FollowerOptions tunes a Follower.
type FollowerOptions struct {
	// Leading says whether this node leads; only the leader follows. nil:
	// always.
	Leading func() bool
	// Every is the polling interval. Default 1s.
	Every time.Duration
	// Batch is how many events one read returns at most. Default 100.
	Batch int64
	// Timeout bounds one poll's reads and writes. Default 5s.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Follower feeds a Dispatcher from the event stream, on the leader only.
// Each poll reads the events after the cursor, classifies them, queues the
// notifications and saves the cursor. On the cluster's very first start (no
// cursor saved) it starts at the head of the stream: history is not
// replayed.
//
// Delivery is at most once across a change of leader: the cursor moves when
// a notification is queued, so what an old leader had queued but not yet
// delivered when it stopped is not sent again by the next one.
type Follower struct {
	src    EventSource
	cursor Cursor
	d      *Dispatcher
	opts   FollowerOptions

	// pos is the last sequence number queued while leading without a
	// break; valid only then (a save that failed is not lost).
	pos      uint64
	posValid bool

	mu     sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewFollower makes a follower of src that queues into d. Nothing runs
// until Open.
func NewFollower(src EventSource, cursor Cursor, d *Dispatcher, opts FollowerOptions) *Follower {
	if opts.Leading == nil {
		opts.Leading = func() bool { return true }
	}
	if opts.Every <= 0 {
		opts.Every = time.Second
	}
	if opts.Batch <= 0 {
		opts.Batch = 100
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Follower{src: src, cursor: cursor, d: d, opts: opts}
}

// Open starts polling.
func (f *Follower) Open() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cancel != nil {
		return errors.New("notify: follower opened twice")
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.wg.Go(func() { f.loop(ctx) })
	return nil
}

// Close stops polling and waits for the poll in progress (within ctx).
func (f *Follower) Close(ctx context.Context) error {
	f.mu.Lock()
	cancel := f.cancel
	f.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	return lifecycle.Wait(ctx, &f.wg)
}

// loop polls every interval until ctx ends.
func (f *Follower) loop(ctx context.Context) {
	t := time.NewTicker(f.opts.Every)
	defer t.Stop()
	anchored := false
	for {
		// Every node, leader or not, anchors the cursor at the head the
		// first time the cluster runs, as soon as it starts: a leader
		// elected later then starts from there, not from wherever the head
		// is by its first poll.
		if !anchored {
			actx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
			_, err := f.start(actx)
			cancel()
			anchored = err == nil
		}
		if _, err := f.poll(ctx); err != nil && ctx.Err() == nil {
			f.opts.Logger.Warn("notifications: following the event stream failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// poll handles the events after the cursor when this node leads, and
// returns how many notifications it queued.
func (f *Follower) poll(ctx context.Context) (int, error) {
	if !f.opts.Leading() {
		f.posValid = false
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	defer cancel()
	pos, err := f.start(ctx)
	if err != nil {
		return 0, err
	}
	queued := 0
	for {
		evs, err := f.src.Events(ctx, pos, f.opts.Batch)
		if err != nil {
			return queued, fmt.Errorf("notify: read events after %d: %w", pos, err)
		}
		handled, leading := 0, true
		for _, e := range evs {
			// Leadership lost in the middle: save what was queued, the
			// next leader takes over from there.
			if leading = f.opts.Leading(); !leading {
				f.posValid = false
				break
			}
			if n, ok := Classify(e); ok {
				f.d.Notify(n)
				queued++
			}
			pos, handled = e.Seq, handled+1
			f.pos, f.posValid = pos, true
		}
		if handled > 0 {
			if err := f.cursor.Save(ctx, pos); err != nil {
				return queued, fmt.Errorf("notify: save the cursor at %d: %w", pos, err)
			}
		}
		if !leading || int64(len(evs)) < f.opts.Batch {
			return queued, nil
		}
	}
}

// start is where this poll begins: the saved cursor (or this node's own
// position when it is further and it has led without a break since), or on
// the first start of all the head of the stream, saved at once.
func (f *Follower) start(ctx context.Context) (uint64, error) {
	seq, ok, err := f.cursor.Load(ctx)
	if err != nil {
		return 0, fmt.Errorf("notify: load the cursor: %w", err)
	}
	if !ok {
		if seq, err = f.src.LastSeq(ctx); err != nil {
			return 0, fmt.Errorf("notify: read the head of the event stream: %w", err)
		}
		if err := f.cursor.Save(ctx, seq); err != nil {
			return 0, fmt.Errorf("notify: save the cursor at %d: %w", seq, err)
		}
		f.opts.Logger.Info("notifications start at the head of the event stream", "seq", seq)
	}
	if f.posValid && f.pos > seq {
		seq = f.pos
	}
	return seq, nil
}
