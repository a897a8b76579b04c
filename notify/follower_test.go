package notify

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
)

// startStore starts an embedded etcd member and returns the store of
// cluster "shop" on it; both are closed when the test ends.
func startStore(t *testing.T) *control.Store {
	t.Helper()
	e, err := control.StartEmbedded(control.EmbedConfig{Name: "east-1", Dir: t.TempDir(), Token: "test", LogLevel: "fatal"})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		e.Close(context.Background())
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Close(ctx)
	})
	return control.NewStore(cli, "shop")
}

// follow opens a follower of store into a new dispatcher to r (one node's
// notifier); both are closed when the test ends.
func follow(t *testing.T, store *control.Store, r *receiver, leading func() bool) *Follower {
	t.Helper()
	d := open(t, []config.Channel{webhook("ops", r.url(), 0)}, Options{})
	f := NewFollower(store, store.Cursor("notify"), d, FollowerOptions{Leading: leading, Every: 20 * time.Millisecond})
	if err := f.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := f.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return f
}

// expect reads the receiver's next deliveries and compares their keys.
func expect(t *testing.T, r *receiver, keys ...string) {
	t.Helper()
	for _, want := range keys {
		var n Notification
		if err := json.Unmarshal(r.next(t, 10*time.Second).body, &n); err != nil {
			t.Fatal(err)
		}
		if n.Key != want {
			t.Errorf("delivered %q, want %q", n.Key, want)
		}
	}
	r.none(t, 300*time.Millisecond)
}

func TestFollowerResumesAfterALeaderChange(t *testing.T) {
	store := startStore(t)
	ctx := context.Background()
	appendEvent := func(e control.Event) {
		t.Helper()
		if _, err := store.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	// History from before notifications were configured: not replayed.
	appendEvent(control.Event{Type: control.EventRegion, Region: "east", Status: "down", Message: "east is down"})
	appendEvent(control.Event{Type: control.EventRun, Run: "r0", Status: "failed", Message: "failover failed"})

	// Each node's dispatcher posts to its own receiver: who sent what shows.
	r, rb := newReceiver(t, 0), newReceiver(t, 0)
	var aLeads atomic.Bool
	aLeads.Store(true)
	follow(t, store, r, aLeads.Load)
	cursor := store.Cursor("notify")
	waitCursor(t, cursor, 2)

	appendEvent(control.Event{Type: control.EventRegion, Region: "west", Status: "down", Message: "west is down"})
	appendEvent(control.Event{Type: control.EventNotification, Status: "failed", Severity: control.SeverityCritical, Channel: "ops", Message: "a record"})
	appendEvent(control.Event{Type: control.EventRun, Run: "r1", Status: "failed", Message: "failover failed"})
	expect(t, r, "region-down/west/down", "run-failed/r1")
	waitCursor(t, cursor, 5)

	// Node A loses the lead; events keep coming while nobody leads.
	aLeads.Store(false)
	time.Sleep(100 * time.Millisecond)
	appendEvent(control.Event{Type: control.EventRun, Run: "r2", Status: "succeeded", Message: "switchover done"})
	appendEvent(control.Event{Type: control.EventReadiness, Service: "db", Region: "west", Status: "not-ready", Message: "lag"})
	r.none(t, 200*time.Millisecond)

	// Node B leads: it continues at A's cursor, without re-sending A's
	// notifications (its dispatcher has no memory of them); A, not
	// leading, sends nothing.
	follow(t, store, rb, func() bool { return true })
	expect(t, rb, "run-completed/r2", "readiness-lost/db/west/not-ready")
	r.none(t, 50*time.Millisecond)
	head, err := store.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitCursor(t, cursor, head)
}

// waitCursor waits until the cursor is saved at seq.
func waitCursor(t *testing.T, c Cursor, seq uint64) {
	t.Helper()
	var got uint64
	var ok bool
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var err error
		if got, ok, err = c.Load(context.Background()); err == nil && ok && got == seq {
			return
		}
	}
	t.Fatalf("cursor at %d (saved: %v), want %d", got, ok, seq)
}

// memStream is an event stream in memory.
type memStream struct {
	mu  sync.Mutex
	evs []control.Event
}

func (m *memStream) add(e control.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e.Seq = uint64(len(m.evs) + 1)
	m.evs = append(m.evs, e)
}

func (m *memStream) Events(_ context.Context, after uint64, limit int64) ([]control.Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if after >= uint64(len(m.evs)) {
		return nil, nil
	}
	out := m.evs[after:]
	if int64(len(out)) > limit {
		out = out[:limit]
	}
	return append([]control.Event(nil), out...), nil
}

func (m *memStream) LastSeq(context.Context) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return uint64(len(m.evs)), nil
}

// brokenCursor was saved at 0 once and cannot be saved any more.
type brokenCursor struct{}

func (brokenCursor) Load(context.Context) (uint64, bool, error) { return 0, true, nil }
func (brokenCursor) Save(context.Context, uint64) error         { return errors.New("etcd unreachable") }

func TestFollowerDoesNotResendWhenTheCursorIsNotSaved(t *testing.T) {
	src := &memStream{}
	r := newReceiver(t, 0)
	d := open(t, []config.Channel{webhook("ops", r.url(), 0)}, Options{DedupWindow: -1})
	leading := true
	f := NewFollower(src, brokenCursor{}, d, FollowerOptions{Leading: func() bool { return leading }, Batch: 2})
	for _, run := range []string{"r1", "r2", "r3"} {
		src.add(control.Event{Type: control.EventRun, Run: run, Status: "failed"})
	}
	ctx := context.Background()
	if n, err := f.poll(ctx); n != 2 || err == nil {
		t.Errorf("first poll: %d queued, %v; want 2 and the save's error", n, err)
	}
	if n, err := f.poll(ctx); n != 1 || err == nil {
		t.Errorf("second poll: %d queued, %v; want the third only", n, err)
	}
	expect(t, r, "run-failed/r1", "run-failed/r2", "run-failed/r3")
	// Once it has stopped leading, only the saved cursor counts.
	leading = false
	if n, err := f.poll(ctx); n != 0 || err != nil {
		t.Errorf("poll while not leading: %d %v", n, err)
	}
	leading = true
	if n, _ := f.poll(ctx); n != 2 {
		t.Errorf("poll after a break in the lead: %d queued, want a batch of 2 from the saved cursor", n)
	}
	expect(t, r, "run-failed/r1", "run-failed/r2")
}

// memCursor is a cursor in memory.
type memCursor struct {
	seq   uint64
	saved bool
}

func (c *memCursor) Load(context.Context) (uint64, bool, error) { return c.seq, c.saved, nil }
func (c *memCursor) Save(_ context.Context, seq uint64) error {
	c.seq, c.saved = max(c.seq, seq), true
	return nil
}

func TestFollowerSavesWhatItQueuedBeforeLosingTheLead(t *testing.T) {
	src := &memStream{}
	src.add(control.Event{Type: control.EventAudit}) // history
	r := newReceiver(t, 0)
	d := open(t, []config.Channel{webhook("ops", r.url(), 0)}, Options{})
	calls := 0
	// Leads for the first poll's check and two events, then loses it.
	f := NewFollower(src, &memCursor{}, d, FollowerOptions{Leading: func() bool { calls++; return calls <= 4 }})
	ctx := context.Background()
	if n, err := f.poll(ctx); n != 0 || err != nil {
		t.Fatalf("first poll: %d %v", n, err)
	}
	for _, run := range []string{"r1", "r2", "r3"} {
		src.add(control.Event{Type: control.EventRun, Run: run, Status: "failed"})
	}
	if n, err := f.poll(ctx); n != 2 || err != nil {
		t.Errorf("poll losing the lead: %d queued, %v; want 2", n, err)
	}
	if c := f.cursor.(*memCursor); c.seq != 3 {
		t.Errorf("cursor at %d, want 3 (history, r1, r2)", c.seq)
	}
	expect(t, r, "run-failed/r1", "run-failed/r2")
}
