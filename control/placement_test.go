package control

import (
	"context"
	"testing"
	"time"
)

// The leader is the best-placed campaigning node (a leader gives way to a
// better-ranked one), and etcd's raft leadership stays off the leader's
// member: after the leader dies, its successor, which typically holds
// etcd's leadership then, hands it on.
func TestLeaderPlacement(t *testing.T) {
	ms := threeMembers(t) // east-1, west-1, witness-1
	ctx := context.Background()
	if _, err := ms[0].store.InitState(ctx, "east"); err != nil {
		t.Fatal(err)
	}
	rank := map[string]int{"west-1": 0, "witness-1": 1, "east-1": 2}
	els := make([]*Elector, 3)
	open := func(i int) {
		els[i] = NewElector(ms[i].store, ms[i].name, 2, nil, nil)
		els[i].HandOffRaftLeadership(ms[i].etcd)
		els[i].Prefer(func(node string) int { return rank[node] })
		els[i].Open()
	}
	defer func() {
		for _, m := range ms {
			m.stop()
		}
		for _, e := range els {
			if e != nil {
				e.Close(ctx)
			}
		}
	}()
	leading := func(within time.Duration, skip int) int {
		t.Helper()
		deadline := time.Now().Add(within)
		for time.Now().Before(deadline) {
			for i, e := range els {
				if e == nil || i == skip {
					continue
				}
				if _, ok := e.Leading(); ok {
					return i
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("no leader within %s", within)
		return -1
	}
	etcdLeader := func(i int) bool {
		srv := ms[i].etcd.etcd.Server
		return srv.Leader() == srv.MemberID()
	}
	// etcd's leadership starts on the worst-placed node's member, and that
	// node leads first.
	east := uint64(ms[0].etcd.etcd.Server.MemberID())
	waitFor(t, 10*time.Second, "etcd's leadership on east-1", func() bool {
		for i := 1; i < 3; i++ {
			if etcdLeader(i) {
				mctx, cancel := context.WithTimeout(ctx, time.Second)
				ms[i].etcd.etcd.Server.MoveLeader(mctx, uint64(ms[i].etcd.etcd.Server.MemberID()), east)
				cancel()
			}
		}
		return etcdLeader(0)
	})
	open(0)
	if l := leading(10*time.Second, -1); l != 0 {
		t.Fatalf("leader %s, want east-1 (the only candidate)", ms[l].name)
	}
	// It hands etcd's leadership to the best-placed other member.
	waitFor(t, 5*time.Second, "east-1 hands etcd's leadership on", func() bool { return !etcdLeader(0) })
	// (To west-1, the best-placed other member, unless a transfer to it
	// failed: the next is tried.)
	t.Logf("etcd's leadership went from east-1 to west-1: %v", etcdLeader(1))
	// Better-placed candidates arrive: the leader gives way to the best.
	open(2)
	open(1)
	waitFor(t, 15*time.Second, "west-1 leads", func() bool { _, ok := els[1].Leading(); return ok })
	waitFor(t, 10*time.Second, "etcd's leadership leaves west-1", func() bool { return !etcdLeader(1) })
	t.Logf("etcd's leadership went from west-1 to witness-1: %v", etcdLeader(2))
	// east-1 stops campaigning (its member stays): the successor is
	// witness-1, whose member holds etcd's leadership.
	els[0].Close(ctx)
	// etcd's leadership is on witness-1's member when the leader dies (a
	// raft election in between may have moved it).
	witness := uint64(ms[2].etcd.etcd.Server.MemberID())
	waitFor(t, 10*time.Second, "etcd's leadership on witness-1", func() bool {
		for _, i := range []int{0, 1} {
			if etcdLeader(i) {
				mctx, cancel := context.WithTimeout(ctx, time.Second)
				ms[i].etcd.etcd.Server.MoveLeader(mctx, uint64(ms[i].etcd.etcd.Server.MemberID()), witness)
				cancel()
			}
		}
		return etcdLeader(2)
	})
	// The leader dies (no resignation); its successor leads and hands
	// etcd's leadership on (to east-1: the dead member only times out).
	ms[1].stop() // first: its elector's resignation cannot reach the store
	els[1].cancel()
	next := leading(15*time.Second, 1)
	if ms[next].name != "witness-1" {
		t.Errorf("successor %s, want witness-1", ms[next].name)
	}
	elected := time.Now()
	waitFor(t, 10*time.Second, "etcd's leadership off the successor's member", func() bool { return etcdLeader(0) })
	t.Logf("successor's member free of etcd's leadership %s after its election", time.Since(elected).Round(time.Millisecond))
	open(0) // campaigns again, behind witness-1

	// west-1's member comes back (its node does not campaign): east-1's
	// member, which holds etcd's leadership and is worse placed, hands it
	// to west-1's, the best-placed member that is not the leader's.
	ms[1].start(t)
	waitFor(t, 15*time.Second, "etcd's leadership moves from east-1 to west-1", func() bool { return etcdLeader(1) })
	if _, ok := els[2].Leading(); !ok {
		t.Errorf("witness-1 no longer leads")
	}
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
