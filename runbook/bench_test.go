package runbook_test

import (
	"slices"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/runbook"
)

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func reportMedians(b *testing.B, m map[string][]time.Duration) {
	for name, d := range m {
		b.ReportMetric(float64(median(d).Microseconds())/1000, name+"-median-ms")
		b.ReportMetric(float64(slices.Max(d).Microseconds())/1000, name+"-max-ms")
	}
}

// BenchmarkSwitchover: planned switchovers back and forth (Postgres,
// Redis, traffic, on loopback) under a writer. Reports the hold (new
// requests waiting), the time until traffic is released to the new
// primary, and the whole run (with the old primary made a standby).
//
//	go test ./runbook -run '^$' -bench Switchover -benchtime 5x
func BenchmarkSwitchover(b *testing.B) {
	h := newHarness(b, harnessOptions{})
	h.ready("west")
	w := h.startWorkload(10 * time.Second)
	defer w.finish()
	m := map[string][]time.Duration{}
	from, to := "east", "west"
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.ready(to)
		r := h.run(runbook.KindSwitchover, from, to, false)
		if r.Status != runbook.StatusSucceeded {
			b.Fatalf("switchover %s → %s: %s %s", from, to, r.Status, r.Error)
		}
		hold, release := r.Step("hold"), r.Step("release")
		m["hold"] = append(m["hold"], release.FinishedAt.Sub(hold.StartedAt))
		m["released"] = append(m["released"], release.FinishedAt.Sub(r.StartedAt))
		m["run"] = append(m["run"], r.FinishedAt.Sub(r.StartedAt))
		from, to = to, from
	}
	b.StopTimer()
	if w.gaveUp.Load() > 0 {
		b.Errorf("%d writes never acknowledged", w.gaveUp.Load())
	}
	reportMedians(b, m)
}

// BenchmarkFailover: the primary crashes (pg_ctl stop -m immediate); from
// the decision (the run created) to the first write acknowledged through
// the writer endpoint by the promoted standby, with Redis promoted too.
// Each round is undone by a failback (not timed).
//
//	go test ./runbook -run '^$' -bench Failover -benchtime 5x
func BenchmarkFailover(b *testing.B) {
	h := newHarness(b, harnessOptions{})
	dsn := h.writerDSN()
	h.startWorkload(time.Second).finish() // creates the table
	m := map[string][]time.Duration{}
	id := int64(0)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		h.ready("west")
		h.pg.Primary.Stop(b, "immediate")
		b.StartTimer()
		decided := time.Now()
		r := h.start(runbook.KindFailover, "east", "west", false)
		var acked time.Time
		for {
			id++
			if err := insert(dsn, id); err == nil {
				acked = time.Now()
				break
			}
			if time.Since(decided) > time.Minute {
				b.Fatal("no write accepted within a minute of the decision")
			}
			time.Sleep(5 * time.Millisecond)
		}
		b.StopTimer()
		r = h.wait(r.ID, time.Minute)
		if r.Status != runbook.StatusSucceeded {
			b.Fatalf("failover: %s %s", r.Status, r.Error)
		}
		m["write-accepted"] = append(m["write-accepted"], acked.Sub(decided))
		m["run"] = append(m["run"], r.FinishedAt.Sub(r.StartedAt))
		h.pg.Primary.Start(b)
		fb := h.run(runbook.KindFailback, "west", "east", false)
		if fb.Status != runbook.StatusSucceeded {
			b.Fatalf("failback: %s %s", fb.Status, fb.Error)
		}
		b.StartTimer()
	}
	b.StopTimer()
	reportMedians(b, m)
}
