package control

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
)

// BenchmarkLeaderLoss measures, on a three-member cluster, the time from
// the leader's death (its member stopped, no resignation) to a new leader
// that may act: with the defaults (lease 1s, etcd heartbeat 100ms,
// election 600ms) and with the timing for regions 80ms apart (lease 2s,
// 80ms, 800ms). The leaders hand etcd's leadership to another member, as
// lifeboat serve does. Each iteration is one cluster and one death; it
// reports the median and the worst.
//
//	go test ./control -run '^$' -bench LeaderLoss -benchtime 7x
func BenchmarkLeaderLoss(b *testing.B) {
	def := config.DefaultConfig().Cluster
	b.Run("defaults", func(b *testing.B) {
		benchLeaderLoss(b, int(def.LeaseTTL.D()/time.Second), uint(def.Heartbeat.D().Milliseconds()), uint(def.ElectionTimeout.D().Milliseconds()))
	})
	// Regions about 80ms apart: heartbeat near the round trip, election
	// ten of them, the shortest lease etcd keeps with that.
	b.Run("wan-80ms", func(b *testing.B) { benchLeaderLoss(b, 2, 80, 800) })
}

func benchLeaderLoss(b *testing.B, ttl int, tickMs, electionMs uint) {
	var took []time.Duration
	for i := 0; i < b.N; i++ {
		took = append(took, leaderLossOnce(b, ttl, tickMs, electionMs))
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	b.ReportMetric(took[len(took)/2].Seconds(), "median-s")
	b.ReportMetric(took[len(took)-1].Seconds(), "max-s")
	b.ReportMetric(0, "ns/op")
}

func leaderLossOnce(b *testing.B, ttl int, tickMs, electionMs uint) time.Duration {
	ms := threeMembersTimed(b, tickMs, electionMs)
	defer func() {
		for _, m := range ms {
			m.stop()
		}
	}()
	ctx := context.Background()
	ms[0].store.InitState(ctx, "east")
	els := make([]*Elector, 3)
	for i, m := range ms {
		els[i] = NewElector(m.store, m.name, ttl, nil, nil)
		els[i].HandOffRaftLeadership(m.etcd) // as lifeboat serve does
		els[i].Open()
	}
	defer func() {
		for _, e := range els {
			e.Close(ctx)
		}
	}()
	leader := -1
	for leader < 0 {
		for i, e := range els {
			if _, ok := e.Leading(); ok {
				leader = i
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A leader that has led for a while: etcd's leadership is elsewhere.
	for srv := ms[leader].etcd.etcd.Server; srv.Leader() == srv.MemberID(); {
		time.Sleep(5 * time.Millisecond)
	}
	// etcd's new leader extended every lease by an election timeout when
	// it took over: wait until that is spent.
	time.Sleep(time.Duration(ttl)*time.Second + 2*time.Second)
	killed := time.Now()
	ms[leader].stop()
	els[leader].cancel()
	for {
		for i, e := range els {
			if _, ok := e.Leading(); ok && i != leader {
				return time.Since(killed)
			}
		}
		if time.Since(killed) > 30*time.Second {
			b.Fatal("no new leader in 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkStatePropagation measures the time from a committed change of
// the active region to all three members' state caches (what the data
// plane routes from) holding it.
//
//	go test ./control -run '^$' -bench StatePropagation -benchtime 50x
func BenchmarkStatePropagation(b *testing.B) {
	ms := threeMembersTB(b)
	defer func() {
		for _, m := range ms {
			m.stop()
		}
	}()
	ctx := context.Background()
	st, _ := ms[0].store.InitState(ctx, "east")
	el := NewElector(ms[0].store, ms[0].name, 3, nil, nil)
	el.Open()
	defer el.Close(ctx)
	caches := make([]*StateCache, 3)
	for i, m := range ms {
		caches[i] = NewStateCache(m.store, st, 3*time.Second, nil)
		caches[i].Open()
		defer caches[i].Close(ctx)
	}
	var f Fence
	for ok := false; !ok; f, ok = el.Leading() {
		time.Sleep(5 * time.Millisecond)
	}
	var took []time.Duration
	regions := []string{"west", "east"}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		next, err := ms[0].store.SwitchActive(ctx, f, regions[i%2])
		if err != nil {
			b.Fatal(err)
		}
		for _, c := range caches {
			for c.Current().Epoch < next.Epoch {
				time.Sleep(100 * time.Microsecond)
			}
		}
		took = append(took, time.Since(start))
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op")
}
