package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lifeboat-dr/lifeboat/runbook"
	"github.com/lifeboat-dr/lifeboat/traffic"
)

// Keys of runs, under the cluster's prefix:
//
//	runs/<id>                the run (JSON runbook.Run)
//	run-lock                 the id of the active run: one run at a time
//	approvals/<id>/<step>    an approval (JSON runbook.Approval)
//	cancels/<id>             a request to cancel the run (JSON runbook.Approval)

// Runs is the run store on etcd. Saving a run's progress is fenced by
// the leader's election key: a node that lost leadership cannot write.
type Runs struct {
	store   *Store
	elector *Elector
	read    []clientv3.OpOption // options of every read
}

var _ runbook.Store = (*Runs)(nil)

// Runs returns the run store.
func (p *Plane) Runs() *Runs { return &Runs{store: p.store, elector: p.elector} }

// LocalRuns are the runs as this node's member has them: its reads are
// serializable (no round trip to a quorum, which costs a round trip
// between regions each), its writes as fenced as Runs'. For the leader's
// own loops: what the leader wrote through its member, its member has
// applied, and every change they make is a transaction that checks what
// it depends on (the run lock, the leader's key, the state's revision).
func (p *Plane) LocalRuns() *Runs {
	return &Runs{store: p.store, elector: p.elector, read: []clientv3.OpOption{clientv3.WithSerializable()}}
}

// CreateRun stores a new run and takes the lock, unless a run holds it.
func (r *Runs) CreateRun(ctx context.Context, run *runbook.Run) error {
	b, err := json.Marshal(run)
	if err != nil {
		return err
	}
	lock := r.store.key("run-lock")
	resp, err := r.store.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(lock), "=", 0)).
		Then(clientv3.OpPut(lock, run.ID), clientv3.OpPut(r.store.key("runs/"+run.ID), string(b))).
		Else(clientv3.OpGet(lock)).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		active := ""
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			active = string(kvs[0].Value)
		}
		return fmt.Errorf("%w: run %s", runbook.ErrBusy, active)
	}
	return nil
}

// SaveRun writes a run's progress if this node still leads; a terminal
// run releases the lock in the same transaction.
func (r *Runs) SaveRun(ctx context.Context, run *runbook.Run) error {
	f, ok := r.elector.Leading()
	if !ok {
		return runbook.ErrNotLeader
	}
	b, err := json.Marshal(run)
	if err != nil {
		return err
	}
	lock := r.store.key("run-lock")
	ops := []clientv3.Op{clientv3.OpPut(r.store.key("runs/"+run.ID), string(b))}
	conds := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(f.Key), "=", f.Rev)}
	if runbook.Terminal(run.Status) {
		conds = append(conds, clientv3.Compare(clientv3.Value(lock), "=", run.ID))
		ops = append(ops, clientv3.OpDelete(lock))
	}
	resp, err := r.store.cli.Txn(ctx).If(conds...).Then(ops...).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		if runbook.Terminal(run.Status) {
			// The lock may already be gone (a save repeated after a
			// leader change): save without it, still fenced.
			resp, err = r.store.cli.Txn(ctx).If(conds[0]).Then(ops[0]).Commit()
			if err != nil {
				return err
			}
			if resp.Succeeded {
				return nil
			}
		}
		return runbook.ErrNotLeader
	}
	return nil
}

// GetRun reads one run.
func (r *Runs) GetRun(ctx context.Context, id string) (*runbook.Run, error) {
	resp, err := r.store.cli.Get(ctx, r.store.key("runs/"+id), r.read...)
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%w: %s", runbook.ErrNotFound, id)
	}
	return decodeRun(resp.Kvs[0].Value)
}

func decodeRun(b []byte) (*runbook.Run, error) {
	var run runbook.Run
	if err := json.Unmarshal(b, &run); err != nil {
		return nil, fmt.Errorf("control: run in the store is corrupt: %w", err)
	}
	return &run, nil
}

// ListRuns returns every run, newest first (ids sort by creation time).
func (r *Runs) ListRuns(ctx context.Context) ([]*runbook.Run, error) {
	resp, err := r.store.cli.Get(ctx, r.store.key("runs/"), append([]clientv3.OpOption{clientv3.WithPrefix()}, r.read...)...)
	if err != nil {
		return nil, err
	}
	out := make([]*runbook.Run, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		run, err := decodeRun(kv.Value)
		if err != nil {
			return nil, err
		}
		out = append(out, run)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID > out[j].ID })
	return out, nil
}

// ActiveRun returns the run holding the lock, or nil.
func (r *Runs) ActiveRun(ctx context.Context) (*runbook.Run, error) {
	resp, err := r.store.cli.Get(ctx, r.store.key("run-lock"), r.read...)
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	run, err := r.GetRun(ctx, string(resp.Kvs[0].Value))
	if errors.Is(err, runbook.ErrNotFound) {
		return nil, fmt.Errorf("control: the run lock names run %s, which does not exist", resp.Kvs[0].Value)
	}
	return run, err
}

// Cancel records a request to cancel a run; the first one stands.
func (r *Runs) Cancel(ctx context.Context, runID string, c runbook.Approval) error {
	return r.putOnce(ctx, "cancels/"+runID, c)
}

// Cancellation reads a run's cancel request, or nil.
//
// It reads this member's copy (a serializable read, no round trip to the
// others): the executor asks before each group of steps, and a
// cancellation a moment old is seen at the next group.
func (r *Runs) Cancellation(ctx context.Context, runID string) (*runbook.Approval, error) {
	return r.getApproval(ctx, "cancels/"+runID, clientv3.WithSerializable())
}

// Approve records an approval; the first one stands.
func (r *Runs) Approve(ctx context.Context, runID, step string, a runbook.Approval) error {
	return r.putOnce(ctx, "approvals/"+runID+"/"+step, a)
}

// Approval reads a step's approval, or nil.
func (r *Runs) Approval(ctx context.Context, runID, step string) (*runbook.Approval, error) {
	return r.getApproval(ctx, "approvals/"+runID+"/"+step)
}

// putOnce writes a consent under k unless one is there.
func (r *Runs) putOnce(ctx context.Context, k string, a runbook.Approval) error {
	b, _ := json.Marshal(a)
	k = r.store.key(k)
	_, err := r.store.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).Then(clientv3.OpPut(k, string(b))).Commit()
	return err
}

func (r *Runs) getApproval(ctx context.Context, k string, opts ...clientv3.OpOption) (*runbook.Approval, error) {
	resp, err := r.store.cli.Get(ctx, r.store.key(k), opts...)
	if err != nil || len(resp.Kvs) == 0 {
		return nil, err
	}
	var a runbook.Approval
	if err := json.Unmarshal(resp.Kvs[0].Value, &a); err != nil {
		return nil, fmt.Errorf("control: %s is corrupt: %w", k, err)
	}
	return &a, nil
}

// Traffic is the routing state as the runbook actions change it, fenced
// by this node's leadership.
type Traffic struct {
	p     *Plane
	local bool
}

var _ runbook.Traffic = Traffic{}

// Traffic returns the routing-state changer for runbooks.
func (p *Plane) Traffic() Traffic { return Traffic{p: p} }

// LocalTraffic is Traffic whose State reads this member's copy (see
// LocalRuns): for the decider, whose run checks the epoch it started from
// when it switches.
func (p *Plane) LocalTraffic() Traffic { return Traffic{p: p, local: true} }

// State reads the state from the store (linearizable, unless local).
func (t Traffic) State(ctx context.Context) (traffic.State, error) {
	if t.local {
		st, _, err := t.p.store.loadState(ctx, clientv3.WithSerializable())
		return st, err
	}
	st, _, err := t.p.store.LoadState(ctx)
	return st, err
}

// SetHold holds or releases the data plane.
func (t Traffic) SetHold(ctx context.Context, held bool) (traffic.State, error) {
	f, ok := t.p.elector.Leading()
	if !ok {
		return traffic.State{}, ErrNotLeader
	}
	return t.p.store.SetHold(ctx, f, held)
}

// Switch commits region as active with a new epoch.
func (t Traffic) Switch(ctx context.Context, region string, from uint64) (traffic.State, bool, error) {
	f, ok := t.p.elector.Leading()
	if !ok {
		return traffic.State{}, false, ErrNotLeader
	}
	return t.p.store.SwitchFrom(ctx, f, region, from)
}

// Event types of runs.
const (
	EventRun  = "run"  // a run started, ended, was resumed
	EventStep = "step" // a step started or ended, was approved
	// EventDecision: the automatic decision declined to act, and why.
	EventDecision = "decision"
)

// FenceDelay is how long after an epoch commits every data-plane node
// either routes by it or has stopped routing writes: half the lease
// (after which a node that cannot confirm the state refuses writes) plus
// a margin.
func (p *Plane) FenceDelay() time.Duration { return p.ttl/2 + 250*time.Millisecond }

// RunEvent records a run's event in the stream.
func (p *Plane) RunEvent(r *runbook.Run, s *runbook.StepRun, msg string) {
	e := Event{Type: EventRun, Run: r.ID, Message: msg, Epoch: r.Epoch, Status: r.Status, Severity: runSeverity(r.Status)}
	if s != nil {
		e.Type, e.Step, e.Status, e.Severity = EventStep, s.Name, s.Status, runSeverity(s.Status)
		e.Service, e.Region = s.Args["service"], s.Args["region"]
	}
	p.Record(e)
}

// Endpoints are the etcd client URLs of this node's embedded member (nil
// when the node uses an external cluster).
func (p *Plane) Endpoints() []string {
	if p.embedded == nil {
		return nil
	}
	return p.embedded.Endpoints()
}

// runSeverity grades a run's or step's status: a failure is critical, a
// wait for a human a warning.
func runSeverity(status string) string {
	switch status {
	case runbook.StatusFailed, runbook.StatusRolledBack:
		return SeverityCritical
	case runbook.StatusWaitingApproval:
		return SeverityWarning
	}
	return SeverityInfo
}
