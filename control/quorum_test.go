package control

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/health"
)

// opinion is one node's own verdicts, set by the test (the quorum's input,
// not an external system).
type opinion struct {
	mu sync.Mutex
	m  map[health.Key]health.Verdict
}

var webEast = health.Key{Service: "web", Region: "east"}

func (o *opinion) set(s health.State) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.m = map[health.Key]health.Verdict{webEast: {State: s, Since: time.Now()}}
}

func (o *opinion) Verdicts() map[health.Key]health.Verdict {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.m
}

func waitQuorum(t *testing.T, q *Quorum, want health.State, voters int, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if q.Verdicts()[webEast].State == want && len(q.Voters()) == voters {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: quorum verdict %s with voters %v, want %s with %d voters", what, q.Verdicts()[webEast].State, q.Voters(), want, voters)
}

// A node cut off from a region is one vote, not the truth: east is down
// only when a majority of the live nodes say so.
func TestQuorumVerdicts(t *testing.T) {
	ms := threeMembers(t)
	ops := []*opinion{{}, {}, {}}
	qs := make([]*Quorum, 3)
	for i, m := range ms {
		ops[i].set(health.Up)
		qs[i] = NewQuorum(m.store, m.name, ops[i], 2, 50*time.Millisecond, nil)
		qs[i].Open()
	}
	defer func() {
		for _, m := range ms {
			m.stop()
		}
		for _, q := range qs {
			q.Close(context.Background())
		}
	}()
	waitQuorum(t, qs[0], health.Up, 3, "all up")

	ops[0].set(health.Down) // east-1 alone cannot see east
	time.Sleep(300 * time.Millisecond)
	for i, q := range qs {
		if s := q.Verdicts()[webEast].State; s != health.Up {
			t.Errorf("node %d: one vote of three made east %s", i, s)
		}
	}
	ops[1].set(health.Down) // a majority now
	for _, q := range qs {
		waitQuorum(t, q, health.Down, 3, "two of three down")
	}

	// A node that dies stops voting within its lease: two voters remain,
	// and one down and one up is no majority.
	ops[1].set(health.Up)
	qs[2].cancel()
	ms[2].stop()
	waitQuorum(t, qs[0], health.Unknown, 2, "one of two")
	ops[1].set(health.Down)
	waitQuorum(t, qs[0], health.Down, 2, "two of two down")
}
