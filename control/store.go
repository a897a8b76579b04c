package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lifeboat-dr/lifeboat/traffic"
)

// Errors of state changes.
var (
	// ErrNotLeader: only the elected leader changes the routing state.
	ErrNotLeader = errors.New("control: this node is not the leader")
	// ErrConflict: the state changed since it was read.
	ErrConflict = errors.New("control: the state changed concurrently")
)

// Store is the cluster's state in etcd. Keys, under /lifeboat/<cluster>/:
//
//	state            the routing state (JSON traffic.State: active, epoch, held)
//	leader/          the election
//	events/<seq>     the append-only event stream (seq: 20 digits)
//	events-seq       the chain's head: "<seq> <hash>" of the last event
type Store struct {
	cli    *clientv3.Client
	prefix string
	// appendMu makes this process's writers of the event stream take
	// turns, so that they do not make each other retry.
	appendMu *sync.Mutex
}

// NewStore uses cli for the cluster's keys.
func NewStore(cli *clientv3.Client, cluster string) *Store {
	return &Store{cli: cli, prefix: "/lifeboat/" + cluster + "/", appendMu: new(sync.Mutex)}
}

func (s *Store) key(k string) string { return s.prefix + k }

// Client is the etcd client.
func (s *Store) Client() *clientv3.Client { return s.cli }

// LoadState reads the routing state and the revision it was written at
// (0 and the zero state when none was ever written).
func (s *Store) LoadState(ctx context.Context) (traffic.State, int64, error) {
	return s.loadState(ctx)
}

func (s *Store) loadState(ctx context.Context, opts ...clientv3.OpOption) (traffic.State, int64, error) {
	resp, err := s.cli.Get(ctx, s.key("state"), opts...)
	if err != nil {
		return traffic.State{}, 0, err
	}
	if len(resp.Kvs) == 0 {
		return traffic.State{}, 0, nil
	}
	var st traffic.State
	if err := json.Unmarshal(resp.Kvs[0].Value, &st); err != nil {
		return traffic.State{}, 0, fmt.Errorf("control: state in the store is corrupt: %w", err)
	}
	return st, resp.Kvs[0].ModRevision, nil
}

// InitState writes the initial state (the configured active region, epoch
// 1) unless a state exists. It returns the state in force.
func (s *Store) InitState(ctx context.Context, active string) (traffic.State, error) {
	st := traffic.State{Active: active, Epoch: 1}
	b, _ := json.Marshal(st)
	k := s.key("state")
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(b))).
		Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return traffic.State{}, err
	}
	if resp.Succeeded {
		s.Append(ctx, Event{Type: EventEpoch, Node: "", Message: fmt.Sprintf("initial state: active %s, epoch 1", active), Epoch: 1, Region: active})
		return st, nil
	}
	kv := resp.Responses[0].GetResponseRange().Kvs[0]
	if err := json.Unmarshal(kv.Value, &st); err != nil {
		return traffic.State{}, fmt.Errorf("control: state in the store is corrupt: %w", err)
	}
	return st, nil
}

// Fence is the proof a change is made by the current leader: its election
// key and the revision it was created at.
type Fence struct {
	Key string
	Rev int64
}

// update changes the state in one transaction that succeeds only if the
// state is still at rev and the fence's leader key still exists as created
// (the leader has not lost its lease). mutate gets the current state;
// describe, the state before and after, returns the event that records the
// change, appended to the event stream in the same transaction (the
// change and its record are one commit, one round trip).
//
// It starts from this member's copy of the state and of the stream's head
// (serializable reads, no round trip): the transaction compares their
// revisions, and when the copy was behind it reads both again through a
// quorum.
func (s *Store) update(ctx context.Context, f Fence, mutate func(*traffic.State) error, describe func(before, after traffic.State) Event) (traffic.State, error) {
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	st, err := s.tryUpdate(ctx, f, mutate, describe, clientv3.WithSerializable())
	for attempt := 0; errors.Is(err, ErrConflict) && attempt < 20; attempt++ {
		st, err = s.tryUpdate(ctx, f, mutate, describe)
	}
	return st, err
}

func (s *Store) tryUpdate(ctx context.Context, f Fence, mutate func(*traffic.State) error, describe func(before, after traffic.State) Event, read ...clientv3.OpOption) (traffic.State, error) {
	before, rev, err := s.loadState(ctx, read...)
	if err != nil {
		return before, err
	}
	seqKey := s.key("events-seq")
	head, err := s.cli.Get(ctx, seqKey, read...)
	if err != nil {
		return before, err
	}
	h, seqRev, err := headOf(head.Kvs)
	if err != nil {
		return before, fmt.Errorf("control: %s: %w", seqKey, err)
	}
	st := before
	if err := mutate(&st); err != nil {
		return st, err
	}
	e := describe(before, st)
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	_, chained := s.link(h, []Event{e})
	b, _ := json.Marshal(st)
	k := s.key("state")
	resp, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(k), "=", rev),
		clientv3.Compare(clientv3.CreateRevision(f.Key), "=", f.Rev),
		clientv3.Compare(clientv3.ModRevision(seqKey), "=", seqRev),
	).Then(
		append([]clientv3.Op{clientv3.OpPut(k, string(b))}, chained...)...,
	).Else(
		clientv3.OpGet(f.Key),
	).Commit()
	if err != nil {
		return st, err
	}
	if !resp.Succeeded {
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 0 || kvs[0].CreateRevision != f.Rev {
			return st, ErrNotLeader
		}
		return st, ErrConflict
	}
	return st, nil
}

// SwitchActive commits a new active region with a strictly larger epoch,
// and the epoch event with it. It must succeed before anything is
// promoted: the epoch is the fence.
func (s *Store) SwitchActive(ctx context.Context, f Fence, region string) (traffic.State, error) {
	return s.update(ctx, f, func(st *traffic.State) error {
		st.Active = region
		st.Epoch++
		return nil
	}, epochEvent(region))
}

// SwitchFrom is SwitchActive if the epoch is still from. If region is
// already active at a later epoch (a commit of the caller's before it
// lost and regained leadership), it returns that state and already, and
// writes nothing; if the epoch moved otherwise, it fails.
func (s *Store) SwitchFrom(ctx context.Context, f Fence, region string, from uint64) (st traffic.State, already bool, err error) {
	st, err = s.update(ctx, f, func(st *traffic.State) error {
		if st.Active == region && st.Epoch > from {
			return errAlready
		}
		if st.Epoch != from {
			return fmt.Errorf("the epoch moved from %d to %d since the run started (active %s): another change happened", from, st.Epoch, st.Active)
		}
		st.Active = region
		st.Epoch++
		return nil
	}, epochEvent(region))
	if errors.Is(err, errAlready) {
		return st, true, nil
	}
	return st, false, err
}

// errAlready: the change asked for is already there.
var errAlready = errors.New("control: already so")

func epochEvent(region string) func(before, after traffic.State) Event {
	return func(before, after traffic.State) Event {
		return Event{Type: EventEpoch, Region: region, Epoch: after.Epoch,
			Message: fmt.Sprintf("epoch %d: active region %s → %s", after.Epoch, before.Active, region)}
	}
}

// SetHold holds (or releases) new requests in the data plane, and records
// the event with it.
func (s *Store) SetHold(ctx context.Context, f Fence, held bool) (traffic.State, error) {
	return s.update(ctx, f, func(st *traffic.State) error {
		st.Held = held
		return nil
	}, func(_, after traffic.State) Event {
		msg := "data plane released"
		if held {
			msg = "data plane held for a switchover"
		}
		return Event{Type: EventHold, Epoch: after.Epoch, Message: msg}
	})
}

// Event types.
const (
	EventVerdict  = "verdict"  // an endpoint's health verdict changed
	EventElection = "election" // a node became leader or lost leadership
	EventEpoch    = "epoch"    // the active region or epoch changed
	EventHold     = "hold"     // the data plane was held or released
	// EventRegion: a region's state changed (Status: up, degraded, down).
	EventRegion = "region"
	// EventReadiness: a standby became ready or lost readiness (Status:
	// ready, not-ready).
	EventReadiness = "readiness"
	// EventExposure: a data service's exposure crossed the RPO (Status:
	// breached, ok).
	EventExposure = "exposure"
	// EventAudit: a mutating API call (Actor, Source, Action, Status: the
	// HTTP status code).
	EventAudit = "audit"
	// EventNotification: a notification was delivered or given up
	// (Status: delivered, failed; Channel).
	EventNotification = "notification"
	// EventDrill: a drill's measured outcome was attached to its run.
	EventDrill = "drill"
	// EventReport: a run's report was written.
	EventReport = "report"
)

// Event severities.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// Event is one entry of the append-only stream. The stream is a hash
// chain: Hash is the hex SHA-256 of the previous entry's Hash (Prev)
// followed by the entry's JSON without its Hash, so an entry edited,
// removed or moved breaks the chain at that entry (see Verify). Fields
// added later must be omitempty, or the JSON of older entries changes.
type Event struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Type     string    `json:"type"`
	Severity string    `json:"severity,omitempty"`
	// Status is the new state the event reports (a run's or step's
	// status, a region's state, delivered/failed).
	Status  string `json:"status,omitempty"`
	Node    string `json:"node,omitempty"`
	Service string `json:"service,omitempty"`
	Region  string `json:"region,omitempty"`
	Epoch   uint64 `json:"epoch,omitempty"`
	Run     string `json:"run,omitempty"`
	Step    string `json:"step,omitempty"`
	// Actor is who made the call (a token's name), Source where from (the
	// client's address), Action what (method and path) — audit entries.
	Actor   string `json:"actor,omitempty"`
	Source  string `json:"source,omitempty"`
	Action  string `json:"action,omitempty"`
	Channel string `json:"channel,omitempty"`
	Message string `json:"message"`
	Prev    string `json:"prev,omitempty"`
	Hash    string `json:"hash,omitempty"`
}

// Append adds an event with the next sequence number and links it into
// the hash chain: it reads the head ("<seq> <hash>" in events-seq; a plain
// "<seq>" written before the chain existed counts as hash ""), sets Seq,
// Prev (the head's hash) and Hash, and writes the event and the new head
// in one transaction that succeeds only if the head is unchanged since it
// was read; on a conflict (another appender won) it reads the head again
// and retries. It returns the event as stored.
func (s *Store) Append(ctx context.Context, e Event) (Event, error) {
	out, err := s.AppendBatch(ctx, []Event{e})
	if err != nil {
		return e, err
	}
	return out[0], nil
}

// AppendBatch appends events in order, in one transaction (as Append
// does one). The appenders of this process take turns, and each first
// reads the head from this member's copy (no round trip; the member has
// applied what this process wrote), then through a quorum after a
// conflict.
func (s *Store) AppendBatch(ctx context.Context, events []Event) ([]Event, error) {
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	now := time.Now().UTC()
	for i := range events {
		if events[i].Time.IsZero() {
			events[i].Time = now
		}
	}
	seqKey := s.key("events-seq")
	read := []clientv3.OpOption{clientv3.WithSerializable()}
	resp, err := s.cli.Get(ctx, seqKey, read...)
	if err != nil {
		return events, err
	}
	kvs := resp.Kvs
	for attempt := 0; attempt < appendAttempts; attempt++ {
		h, rev, err := headOf(kvs)
		if err != nil {
			return events, fmt.Errorf("control: append event: %s: %w", seqKey, err)
		}
		sealed, ops := s.link(h, events)
		txn, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(seqKey), "=", rev)).
			Then(ops...).
			Else(clientv3.OpGet(seqKey)).Commit()
		if err != nil {
			return events, err
		}
		if txn.Succeeded {
			return sealed, nil
		}
		kvs = txn.Responses[0].GetResponseRange().Kvs
		if attempt >= 3 {
			// Many appenders at once: spread the retries out.
			select {
			case <-ctx.Done():
				return events, ctx.Err()
			case <-time.After(time.Duration(rand.Int64N(int64(min(attempt, 50)) * int64(time.Millisecond)))):
			}
		}
	}
	return events, fmt.Errorf("control: append event: %w (%d attempts)", ErrConflict, appendAttempts)
}

// appendAttempts bounds the retries of one Append under contention (each
// waits up to 50ms at random once past the third: some seconds in all,
// unless the context ends first).
const appendAttempts = 1000

// eventKey is the key of the event with sequence number seq.
func (s *Store) eventKey(seq uint64) string { return s.key(fmt.Sprintf("events/%020d", seq)) }

// chainHead is the value of events-seq: the last sequence number and the
// last entry's hash.
type chainHead struct {
	Seq  uint64
	Hash string
}

// String is the stored form, "<seq> <hash>" (just "<seq>" with no hash).
func (h chainHead) String() string {
	if h.Hash == "" {
		return strconv.FormatUint(h.Seq, 10)
	}
	return strconv.FormatUint(h.Seq, 10) + " " + h.Hash
}

// parseHead reads "<seq> <hash>", or a plain "<seq>" (hash "").
func parseHead(v []byte) (chainHead, error) {
	seq, hash, _ := strings.Cut(string(v), " ")
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil || strings.Contains(hash, " ") {
		return chainHead{}, fmt.Errorf("the chain's head %q is not \"<seq> <hash>\"", v)
	}
	return chainHead{Seq: n, Hash: hash}, nil
}

// headOf reads the stream's head from the events-seq key as read (none:
// the empty chain) and the revision to compare it with.
func headOf(kvs []*mvccpb.KeyValue) (chainHead, int64, error) {
	if len(kvs) == 0 {
		return chainHead{}, 0, nil
	}
	h, err := parseHead(kvs[0].Value)
	return h, kvs[0].ModRevision, err
}

// link chains events after head h: the sealed events, and the puts that
// store them and the new head.
func (s *Store) link(h chainHead, events []Event) ([]Event, []clientv3.Op) {
	sealed := make([]Event, len(events))
	ops := make([]clientv3.Op, 0, len(events)+1)
	for i, e := range events {
		e.Seq, e.Prev = h.Seq+1, h.Hash
		var b []byte
		sealed[i], b = sealEvent(e)
		h = chainHead{Seq: sealed[i].Seq, Hash: sealed[i].Hash}
		ops = append(ops, clientv3.OpPut(s.eventKey(sealed[i].Seq), string(b)))
	}
	return sealed, append(ops, clientv3.OpPut(s.key("events-seq"), h.String()))
}

// sealEvent sets e's Hash from its Prev and content (see Event) and
// returns it with its stored JSON.
func sealEvent(e Event) (Event, []byte) {
	e.Hash = ChainHash(e)
	b, _ := json.Marshal(e)
	return e, b
}

// ChainHash is the hash an entry must carry: the hex SHA-256 of e.Prev
// (its hex text) followed by the JSON encoding of e with Hash empty.
func ChainHash(e Event) string {
	e.Hash = ""
	b, _ := json.Marshal(e)
	h := sha256.New()
	h.Write([]byte(e.Prev))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// Events returns up to limit events with a sequence number above after.
func (s *Store) Events(ctx context.Context, after uint64, limit int64) ([]Event, error) {
	start := s.eventKey(after + 1)
	end := clientv3.GetPrefixRangeEnd(s.key("events/"))
	resp, err := s.cli.Get(ctx, start, clientv3.WithRange(end), clientv3.WithLimit(limit))
	if err != nil {
		return nil, err
	}
	out := make([]Event, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var e Event
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return nil, fmt.Errorf("control: event %s is corrupt: %w", kv.Key, err)
		}
		out = append(out, e)
	}
	return out, nil
}
