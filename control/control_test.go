package control

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

func TestMain(m *testing.M) { testenv.MainWithLeakCheck(m) }

// member is one embedded etcd member with a client and a store.
type member struct {
	name  string
	dir   string
	peers []Peer
	// raft timing; zero: etcd's defaults
	tickMs, electionMs uint
	etcd               *Embedded
	cli                *clientv3.Client
	store              *Store
}

func startMember(t testing.TB, name, dir string, peers []Peer) *member {
	t.Helper()
	m := &member{name: name, dir: dir, peers: peers}
	m.start(t)
	return m
}

func (m *member) start(t testing.TB) {
	t.Helper()
	e, err := StartEmbedded(EmbedConfig{Name: m.name, Dir: m.dir, Peers: m.peers, Token: "test", LogLevel: "fatal", HeartbeatMs: m.tickMs, ElectionMs: m.electionMs})
	if err != nil {
		t.Fatal(err)
	}
	m.etcd = e
	m.cli, err = clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	m.store = NewStore(m.cli, "shop")
}

func (m *member) stop() {
	if m.cli != nil {
		m.cli.Close()
		m.cli = nil
	}
	if m.etcd != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		m.etcd.Close(ctx)
		cancel()
		m.etcd = nil
	}
}

func waitLeading(t *testing.T, e *Elector, within time.Duration) Fence {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if f, ok := e.Leading(); ok {
			return f
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("not leader after %s", within)
	return Fence{}
}

func TestEpochsAndFencing(t *testing.T) {
	m := startMember(t, "east-1", t.TempDir(), nil)
	defer m.stop()
	ctx := context.Background()
	st, err := m.store.InitState(ctx, "east")
	if err != nil || st.Active != "east" || st.Epoch != 1 {
		t.Fatalf("init: %+v %v", st, err)
	}
	// A second init keeps what is there.
	if st, _ := m.store.InitState(ctx, "west"); st.Active != "east" {
		t.Errorf("second init replaced the state: %+v", st)
	}
	el := NewElector(m.store, "east-1", 2, nil, nil)
	el.Open()
	defer el.Close(ctx)
	f := waitLeading(t, el, 10*time.Second)
	st, err = m.store.SwitchActive(ctx, f, "west")
	if err != nil || st.Active != "west" || st.Epoch != 2 {
		t.Fatalf("switch: %+v %v", st, err)
	}
	// A fence from another (or an old) leadership is refused.
	if _, err := m.store.SwitchActive(ctx, Fence{Key: f.Key, Rev: f.Rev - 1}, "east"); !errors.Is(err, ErrNotLeader) {
		t.Errorf("stale fence: %v, want ErrNotLeader", err)
	}
	if _, err := m.store.SwitchActive(ctx, Fence{Key: f.Key + "x", Rev: f.Rev}, "east"); !errors.Is(err, ErrNotLeader) {
		t.Errorf("foreign fence: %v, want ErrNotLeader", err)
	}
	if st, _, _ := m.store.LoadState(ctx); st.Epoch != 2 || st.Active != "west" {
		t.Errorf("state after refused switches: %+v", st)
	}
	evs, err := m.store.Events(ctx, 0, 100)
	if err != nil || len(evs) < 3 || evs[0].Seq != 1 || evs[0].Type != EventEpoch {
		t.Fatalf("events: %+v %v", evs, err)
	}
	var switched bool
	for i, e := range evs {
		if i > 0 && e.Seq != evs[i-1].Seq+1 {
			t.Errorf("event sequence has a gap: %d after %d", e.Seq, evs[i-1].Seq)
		}
		switched = switched || (e.Type == EventEpoch && e.Message == "epoch 2: active region east → west")
	}
	if !switched {
		t.Errorf("no event for the switch: %+v", evs)
	}
	if leader, _ := el.Leader(ctx); leader != "east-1" {
		t.Errorf("leader = %q", leader)
	}
}

// The state survives a restart of the member on the same data directory.
func TestStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	m := startMember(t, "east-1", dir, nil)
	m.store.InitState(ctx, "east")
	el := NewElector(m.store, "east-1", 2, nil, nil)
	el.Open()
	f := waitLeading(t, el, 10*time.Second)
	if _, err := m.store.SwitchActive(ctx, f, "west"); err != nil {
		t.Fatal(err)
	}
	el.Close(ctx)
	m.stop()

	m2 := startMember(t, "east-1", dir, nil)
	defer m2.stop()
	st, _, err := m2.store.LoadState(ctx)
	if err != nil || st.Active != "west" || st.Epoch != 2 {
		t.Errorf("after restart: %+v %v", st, err)
	}
	if st, _ := m2.store.InitState(ctx, "east"); st.Epoch != 2 {
		t.Errorf("init after restart reset the epoch: %+v", st)
	}
	m2.stop()

	// The same directory offered to a three-member cluster is refused: etcd
	// would otherwise start it as a cluster of one beside the real one.
	_, err = StartEmbedded(EmbedConfig{Name: "east-1", Dir: dir, Token: "test", LogLevel: "fatal",
		Peers: []Peer{{Name: "east-1", PeerURL: "http://127.0.0.1:1", ClientURL: "http://127.0.0.1:2"}, {Name: "west-1"}, {Name: "tie-1"}}})
	if err == nil || !strings.Contains(err.Error(), "holds the data of another control plane") {
		t.Errorf("reused data dir: %v", err)
	}
}

func threeMembers(t *testing.T) []*member {
	t.Helper()
	ms := threeMembersTB(t)
	t.Cleanup(func() {
		for _, m := range ms {
			m.stop()
		}
	})
	return ms
}

// threeMembersTB starts a three-member cluster with etcd's timing; the
// caller stops it.
func threeMembersTB(t testing.TB) []*member { return threeMembersTimed(t, 0, 0) }

// threeMembersTimed starts a three-member cluster with the given raft
// timing; the caller stops it.
func threeMembersTimed(t testing.TB, tickMs, electionMs uint) []*member {
	t.Helper()
	var peers []Peer
	for _, name := range []string{"east-1", "west-1", "witness-1"} {
		peers = append(peers, Peer{Name: name,
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))})
	}
	ms := make([]*member, 3)
	var wg sync.WaitGroup
	for i, p := range peers {
		dir := t.TempDir()
		wg.Go(func() {
			m := &member{name: p.Name, dir: dir, peers: peers, tickMs: tickMs, electionMs: electionMs}
			m.start(t)
			ms[i] = m
		})
	}
	wg.Wait()
	return ms
}

// Three members: the leader dies, another takes over; the epoch never goes
// back; the survivors' caches follow; a member cut off from the others
// marks its state NoQuorum within the lease TTL.
func TestThreeMembers(t *testing.T) {
	ms := threeMembers(t)
	ctx := context.Background()
	if _, err := ms[0].store.InitState(ctx, "east"); err != nil {
		t.Fatal(err)
	}
	electors := make([]*Elector, 3)
	caches := make([]*StateCache, 3)
	for i, m := range ms {
		electors[i] = NewElector(m.store, m.name, 2, nil, nil)
		electors[i].Open()
		st, _, err := m.store.LoadState(ctx)
		if err != nil {
			t.Fatal(err)
		}
		caches[i] = NewStateCache(m.store, st, 2*time.Second, nil)
		caches[i].Open()
	}
	defer func() {
		// Clients first: an elector without quorum may be blocked in an
		// etcd call that only a closed client ends.
		for _, m := range ms {
			m.stop()
		}
		for i := range ms {
			caches[i].Close(ctx)
			electors[i].Close(ctx)
		}
	}()
	leaderIdx := func() int {
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			n := -1
			for i, e := range electors {
				if _, ok := e.Leading(); ok {
					if n >= 0 {
						t.Fatalf("two leaders at once: %d and %d", n, i)
					}
					n = i
				}
			}
			if n >= 0 {
				return n
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatal("no leader")
		return -1
	}
	l := leaderIdx()
	f, _ := electors[l].Leading()
	st, err := ms[l].store.SwitchActive(ctx, f, "west")
	if err != nil || st.Epoch != 2 {
		t.Fatalf("switch: %+v %v", st, err)
	}
	// Every cache sees the new epoch quickly.
	for i, c := range caches {
		deadline := time.Now().Add(time.Second)
		for c.Current().Epoch != 2 {
			if time.Now().After(deadline) {
				t.Fatalf("member %d's cache still at %+v", i, c.Current())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// The leader dies: its elector and member stop.
	killed := time.Now()
	ms[l].stop() // first: no resignation reaches the store, as if the process died
	electors[l].cancel()
	var next int
	for {
		next = -1
		for i, e := range electors {
			if _, ok := e.Leading(); ok && i != l {
				next = i
			}
		}
		if next >= 0 {
			break
		}
		if time.Since(killed) > 15*time.Second {
			t.Fatal("no new leader 15s after the leader died")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("new leader %s after %s", ms[next].name, time.Since(killed).Round(time.Millisecond))
	f, _ = electors[next].Leading()
	st, err = ms[next].store.SwitchActive(ctx, f, "east")
	if err != nil || st.Epoch != 3 {
		t.Fatalf("switch by the new leader: %+v %v", st, err)
	}

	// Cut the last follower off: stop the new leader's member too. The
	// remaining member has no quorum and must say so within the TTL.
	remaining := 3 - l - next
	ms[next].stop() // dies first: no resignation reaches the store
	electors[next].cancel()
	lost := time.Now()
	for !caches[remaining].Current().NoQuorum {
		if time.Since(lost) > 5*time.Second {
			t.Fatalf("member %s kept claiming a quorum 5s after losing it", ms[remaining].name)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cur := caches[remaining].Current()
	if cur.Epoch != 3 || cur.Active != "east" {
		t.Errorf("without quorum the last known state is kept: %+v", cur)
	}
	// Whatever it held, a member without quorum stops claiming leadership
	// once its lease may have expired.
	for {
		if _, ok := electors[remaining].Leading(); !ok {
			break
		}
		if time.Since(lost) > 3*time.Second {
			t.Fatal("a member without quorum claims leadership past its lease")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("no quorum noticed after %s", time.Since(lost).Round(time.Millisecond))
}
