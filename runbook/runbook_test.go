package runbook_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/runbook"
)

func redisRole(t *testing.T, c *goredis.Client) string {
	t.Helper()
	info, err := c.Info(t.Context(), "replication").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "role:"); ok {
			return v
		}
	}
	return "?"
}

// A planned switchover under a concurrent writer loses no acknowledged
// write, fails no write, and leaves the old primary streaming from the
// new one.
func TestSwitchoverUnderLoad(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.ready("west")
	// A file written just before the switchover (the periodic sync runs
	// hourly here): the final sync must carry it.
	if err := os.WriteFile(filepath.Join(h.shares[0], "report.csv"), []byte("a,b\n1,2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w := h.startWorkload(10 * time.Second)
	time.Sleep(time.Second)
	r := h.run(runbook.KindSwitchover, "east", "west", false)
	time.Sleep(500 * time.Millisecond)
	w.finish()

	if r.Status != runbook.StatusSucceeded {
		t.Fatalf("run %s: %s", r.Status, r.Error)
	}
	if st := h.cp.State().Current(); st.Active != "west" || st.Epoch != 2 || r.Epoch != 2 {
		t.Errorf("state %+v, run epoch %d: want west at epoch 2", st, r.Epoch)
	}
	hold, release := r.Step("hold"), r.Step("release")
	t.Logf("switchover %s, hold %s; %d writes acknowledged, %d attempts failed",
		r.FinishedAt.Sub(r.StartedAt).Round(time.Millisecond), release.FinishedAt.Sub(hold.StartedAt).Round(time.Millisecond), len(w.acked), w.failures.Load())
	w.errs.Range(func(k, _ any) bool { t.Logf("write error: %v", k); return true })
	if len(w.acked) < 50 {
		t.Errorf("only %d writes acknowledged: the workload did not run", len(w.acked))
	}
	if n := w.gaveUp.Load(); n > 0 {
		t.Errorf("%d writes never acknowledged", n)
	}
	if n := w.failures.Load(); n > 0 {
		t.Errorf("%d write attempts failed during a planned switchover", n)
	}
	if miss := lost(t, h.pg.Standby, w.acked); len(miss) > 0 {
		t.Errorf("%d acknowledged writes lost on the new primary: %v", len(miss), miss)
	}
	if inRecovery(t, h.pg.Standby) {
		t.Error("west is still in recovery")
	}
	h.waitFor("east streams from west", 30*time.Second, func() error {
		if !inRecovery(t, h.pg.Primary) {
			return errors.New("east is not in recovery")
		}
		if s := streamingFrom(t, h.pg.Primary); !strings.HasPrefix(s, "streaming") || !strings.Contains(s, fmt.Sprint(h.pg.Standby.Port)) {
			return fmt.Errorf("east wal receiver: %s", s)
		}
		return nil
	})
	if role := redisRole(t, h.redis.Replica.Client(t)); role != "master" {
		t.Errorf("west redis role %s, want master", role)
	}
	if b, err := os.ReadFile(filepath.Join(h.shares[1], "report.csv")); err != nil || string(b) != "a,b\n1,2\n" {
		t.Errorf("the file written before the switchover is not in west: %q %v (%s)", b, err, r.Step("sync-share-west").Output)
	}
	if role := redisRole(t, h.redis.Primary.Client(t)); role != "slave" {
		t.Errorf("east redis role %s, want slave", role)
	}
	for _, s := range r.Steps {
		if s.StartedAt.IsZero() || s.FinishedAt.Before(s.StartedAt) {
			t.Errorf("step %s has no proper times: %v .. %v", s.Name, s.StartedAt, s.FinishedAt)
		}
	}
	// Events tell the story: run started, every step, run ended.
	h.waitFor("run events", 5*time.Second, func() error {
		evs, err := h.cp.Store().Events(t.Context(), 0, 1000)
		if err != nil {
			return err
		}
		steps, ends := 0, 0
		for _, e := range evs {
			if e.Run == r.ID && e.Type == control.EventStep && strings.Contains(e.Message, "succeeded in") {
				steps++
			}
			if e.Run == r.ID && e.Type == control.EventRun && strings.Contains(e.Message, "succeeded in") {
				ends++
			}
		}
		if steps != len(r.Steps) || ends != 1 {
			return fmt.Errorf("%d step events of %d, %d run end events", steps, len(r.Steps), ends)
		}
		return nil
	})
}

// An unplanned failover after the primary crashes (pg_ctl stop -m
// immediate), raised by the decider under policy manual and approved;
// the restarted old primary is fenced; failback makes it a standby, then
// the primary again.
func TestFailoverFenceAndFailback(t *testing.T) {
	h := newHarness(t, harnessOptions{decider: true})
	h.ready("west")
	w := h.startWorkload(2 * time.Second)
	time.Sleep(500 * time.Millisecond)
	w.finish()
	acked := w.acked

	h.pg.Primary.Stop(t, "immediate")
	var r *runbook.Run
	h.waitFor("a failover raised for approval", 20*time.Second, func() error {
		var err error
		r, err = h.cp.Runs().ActiveRun(t.Context())
		if err != nil {
			return err
		}
		if r == nil {
			return errors.New("no run")
		}
		if r.Status != runbook.StatusWaitingApproval {
			return fmt.Errorf("run %s is %s", r.ID, r.Status)
		}
		return nil
	})
	if r.Kind != runbook.KindFailover || r.To != "west" || r.Trigger != runbook.TriggerAuto {
		t.Fatalf("raised run %+v", r)
	}
	if st := h.cp.State().Current(); st.Epoch != 1 || st.Active != "east" {
		t.Fatalf("state changed before approval: %+v", st)
	}
	if err := h.cp.Runs().Approve(t.Context(), r.ID, "hold", runbook.Approval{By: "ops", Role: "operator", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	r = h.wait(r.ID, time.Minute)
	if r.Status != runbook.StatusSucceeded {
		t.Fatalf("failover %s: %s", r.Status, r.Error)
	}
	if s := r.Step("hold"); s.ApprovedBy != "ops (operator)" {
		t.Errorf("hold approved by %q", s.ApprovedBy)
	}
	if s := r.Step("fence-db-east"); s.Status != runbook.StatusFailed {
		t.Errorf("fencing the dead primary: %s %s", s.Status, s.Output)
	}
	if s := r.Step("promote-db-west"); !strings.Contains(s.Output, "could not be fenced: every live node routes by epoch 2") {
		t.Errorf("promotion did not wait for the epoch acknowledgements: %s", s.Output)
	}
	if st := h.cp.State().Current(); st.Active != "west" || st.Epoch != 2 {
		t.Errorf("state %+v", st)
	}
	if inRecovery(t, h.pg.Standby) {
		t.Fatal("west not promoted")
	}
	if miss := lost(t, h.pg.Standby, acked); len(miss) > 0 {
		t.Errorf("acknowledged writes lost: %v", miss)
	}
	// Writes go through the writer endpoint to west.
	w2 := h.startWorkload(5 * time.Second)
	time.Sleep(300 * time.Millisecond)
	w2.finish()
	if len(w2.acked) == 0 {
		t.Fatal("no write through the writer endpoint after the failover")
	}

	// The old primary comes back writable; the leader fences it.
	h.pg.Primary.Start(t)
	h.waitFor("the restarted old primary refuses writes", 20*time.Second, func() error {
		c := h.pg.Primary.Conn(t)
		defer c.Close(context.Background())
		_, err := c.Exec(t.Context(), `INSERT INTO acks (id) VALUES (-1)`)
		if err == nil {
			return errors.New("east accepted a write")
		}
		if !strings.Contains(err.Error(), "read-only") {
			return err
		}
		return nil
	})

	fb := h.run(runbook.KindFailback, "west", "east", false)
	if fb.Status != runbook.StatusSucceeded {
		t.Fatalf("failback %s: %s", fb.Status, fb.Error)
	}
	t.Logf("reprotect: %s", fb.Step("reprotect-db-east").Output)
	if st := h.cp.State().Current(); st.Active != "east" || st.Epoch != 3 {
		t.Errorf("state after failback %+v", st)
	}
	if inRecovery(t, h.pg.Primary) {
		t.Error("east is not the primary after failback")
	}
	c := h.pg.Primary.Conn(t)
	if _, err := c.Exec(t.Context(), `INSERT INTO acks (id) VALUES (-2)`); err != nil {
		t.Errorf("east refuses writes after failback: %v", err)
	}
	if miss := lost(t, h.pg.Primary, append(acked, w2.acked...)); len(miss) > 0 {
		t.Errorf("acknowledged writes lost across failover and failback: %v", miss)
	}
	h.waitFor("west streams from east", 30*time.Second, func() error {
		if s := streamingFrom(t, h.pg.Standby); !strings.HasPrefix(s, "streaming") {
			return fmt.Errorf("west wal receiver: %s", s)
		}
		return nil
	})
}

// killingStore makes the first node "die" right after it saved the epoch
// switch as done: its leadership ends between two steps.
type killingStore struct {
	runbook.Store
	once sync.Once
	kill func()
}

func (k *killingStore) SaveRun(ctx context.Context, r *runbook.Run) error {
	if s := r.Step("switch-west"); s != nil && s.Status == runbook.StatusSucceeded {
		err := k.Store.SaveRun(ctx, r)
		k.once.Do(k.kill)
		if err != nil {
			return err
		}
		return runbook.ErrNotLeader
	}
	return k.Store.SaveRun(ctx, r)
}

// A run interrupted by the loss of its leader between the epoch switch
// and the promotion resumes on the new leader without switching or
// promoting twice.
func TestRunResumesOnNewLeader(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.ready("west")
	// The first node's executor dies with its leadership after the switch.
	h.exec.Close(t.Context())
	ctx := t.Context()
	cp2, err := control.Open(ctx, h.cfg, control.Options{Node: "n2", Endpoints: h.cp.Endpoints(), EtcdLogLevel: "fatal"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cp2.Close(ctx)
	})
	lead1 := func() bool { _, ok := h.cp.Elector().Leading(); return ok }
	lead2 := func() bool { _, ok := cp2.Elector().Leading(); return ok }
	if !lead1() || lead2() {
		t.Fatal("n1 should lead")
	}
	ks := &killingStore{Store: h.cp.Runs(), kill: func() { go h.cp.Elector().Close(context.Background()) }}
	ex1 := runbook.NewExecutor(runbook.Options{Config: h.cfg, Store: ks, Traffic: h.cp.Traffic(), Status: h.node, Lags: h.lags,
		Leading: lead1, Recorder: h.cp, FenceDelay: h.cp.FenceDelay(), Poll: 50 * time.Millisecond})
	ex2 := runbook.NewExecutor(runbook.Options{Config: h.cfg, Store: cp2.Runs(), Traffic: cp2.Traffic(), Status: h.node, Lags: h.lags,
		Leading: lead2, Recorder: cp2, FenceDelay: cp2.FenceDelay(), Poll: 50 * time.Millisecond})
	ex1.Open()
	ex2.Open()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ex1.Close(ctx)
		ex2.Close(ctx)
	})
	r := h.start(runbook.KindSwitchover, "east", "west", false)
	ex1.Kick()
	r = h.wait(r.ID, 2*time.Minute)
	if r.Status != runbook.StatusSucceeded {
		t.Fatalf("run %s: %s", r.Status, r.Error)
	}
	if !lead2() {
		t.Error("n2 does not lead")
	}
	if r.Resumed != 1 {
		t.Errorf("resumed %d times, want 1", r.Resumed)
	}
	if st := h.cp.State().Current(); st.Epoch != 2 || st.Active != "west" {
		t.Errorf("state %+v: the epoch must move exactly once", st)
	}
	if s := r.Step("switch-west"); s.Attempts != 1 {
		t.Errorf("switch ran %d times", s.Attempts)
	}
	if s := r.Step("promote-db-west"); s.Attempts != 1 || strings.Contains(s.Output, "already") {
		t.Errorf("promotion: %d attempts, %q", s.Attempts, s.Output)
	}
	evs, err := h.cp.Store().Events(t.Context(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	resumed := false
	for _, e := range evs {
		resumed = resumed || (e.Run == r.ID && strings.Contains(e.Message, "resumed by a new leader") && e.Node == "n2")
	}
	if !resumed {
		t.Error("no event of n2 resuming the run")
	}
}

// A dry run changes nothing: the servers keep their roles and settings.
func TestDryRunChangesNothing(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.ready("west")
	before := snapshot(t, h)
	plan, err := runbook.Generate(h.cfg, runbook.Request{Kind: runbook.KindSwitchover, From: "east", To: "west"})
	if err != nil {
		t.Fatal(err)
	}
	checks := runbook.PreCheck(t.Context(), h.cfg, plan, h.node.Status(), h.lags, nil)
	ok := 0
	for _, c := range checks {
		if c.OK {
			ok++
		} else {
			t.Errorf("pre-check failed: %s: %s", c.What, c.Detail)
		}
	}
	if ok < 5 {
		t.Errorf("%d pre-checks passed, want the target check and 4 endpoints: %+v", ok, checks)
	}
	if after := snapshot(t, h); after != before {
		t.Errorf("a dry run changed the servers:\nbefore %s\nafter  %s", before, after)
	}
	if st := h.cp.State().Current(); st.Epoch != 1 || st.Held {
		t.Errorf("a dry run changed the state: %+v", st)
	}
	if runs, _ := h.cp.Runs().ListRuns(t.Context()); len(runs) != 0 {
		t.Errorf("a dry run created runs: %d", len(runs))
	}
}

func snapshot(t *testing.T, h *harness) string {
	var ro1, ro2 string
	h.pg.Primary.QueryRow(t, `SHOW default_transaction_read_only`).Scan(&ro1)
	h.pg.Standby.QueryRow(t, `SHOW default_transaction_read_only`).Scan(&ro2)
	cfg, _ := h.redis.Primary.Client(t).ConfigGet(t.Context(), "min-replicas-to-write").Result()
	return fmt.Sprintf("east recovery=%v ro=%s; west recovery=%v ro=%s; redis east %s/%v west %s",
		inRecovery(t, h.pg.Primary), ro1, inRecovery(t, h.pg.Standby), ro2,
		redisRole(t, h.redis.Primary.Client(t)), cfg, redisRole(t, h.redis.Replica.Client(t)))
}

// Under policy.failover: auto the leader fails over by itself when the
// active region goes down; it never fails over again onto a region that
// is not a replicating standby (the old primary, restarted, is fenced
// instead), and says why.
func TestAutoFailoverAndGuards(t *testing.T) {
	h := newHarness(t, harnessOptions{policy: "auto", decider: true})
	h.ready("west")
	h.pg.Primary.Stop(t, "immediate")
	var r *runbook.Run
	h.waitFor("an automatic failover", 30*time.Second, func() error {
		runs, err := h.cp.Runs().ListRuns(t.Context())
		if err != nil || len(runs) == 0 {
			return fmt.Errorf("no run yet (%v)", err)
		}
		r = runs[0]
		if !runbook.Terminal(r.Status) {
			return fmt.Errorf("run %s", r.Status)
		}
		return nil
	})
	if r.Status != runbook.StatusSucceeded || r.Trigger != runbook.TriggerAuto || r.By != "policy" || r.To != "west" || r.Severity != "critical" {
		t.Fatalf("automatic run: %s %s by %s to %s severity %s: %s", r.Status, r.Trigger, r.By, r.To, r.Severity, r.Error)
	}
	for _, s := range r.Steps {
		if s.Approve != "" {
			t.Errorf("step %s of an automatic failover waits for approval", s.Name)
		}
	}
	if !strings.Contains(r.Reason, "region east down") {
		t.Errorf("reason %q", r.Reason)
	}

	// The new primary fails too: east is no standby, nothing may move.
	h.pg.Primary.Start(t)
	h.pg.Standby.Stop(t, "immediate")
	h.waitFor("a refusal", 30*time.Second, func() error {
		for _, n := range h.noticed() {
			if strings.Contains(n, "automatic failover refused: region west is down but no standby is ready") {
				return nil
			}
		}
		return fmt.Errorf("notices: %q", h.noticed())
	})
	h.waitFor("the old primary fenced", 20*time.Second, func() error {
		for _, n := range h.noticed() {
			if strings.Contains(n, "db in east is a primary outside the active region west: fenced") {
				return nil
			}
		}
		return fmt.Errorf("notices: %q", h.noticed())
	})
	time.Sleep(time.Second)
	if runs, _ := h.cp.Runs().ListRuns(t.Context()); len(runs) != 1 {
		t.Errorf("%d runs, want the one failover", len(runs))
	}
	if st := h.cp.State().Current(); st.Active != "west" || st.Epoch != 2 {
		t.Errorf("state %+v", st)
	}
}

// With synchronous replication, the promoted standby commits alone while
// its partner is dead (a write does not hang), and failback restores
// synchronous commit once the old primary streams again.
func TestSyncFailoverCommitsAlone(t *testing.T) {
	h := newHarness(t, harnessOptions{sync: true})
	h.ready("west")
	h.startWorkload(time.Second).finish() // creates the table
	h.pg.Primary.Stop(t, "immediate")
	r := h.run(runbook.KindFailover, "east", "west", false)
	if r.Status != runbook.StatusSucceeded {
		t.Fatalf("failover %s: %s", r.Status, r.Error)
	}
	if s := r.Step("promote-db-west"); !strings.Contains(s.Output, "synchronous commit suspended") {
		t.Errorf("promote: %s", s.Output)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := insertCtx(ctx, h.writerDSN(), 1_000_000); err != nil {
		t.Fatalf("a write on the promoted standby with its synchronous partner dead: %v", err)
	}
	h.pg.Primary.Start(t)
	fb := h.run(runbook.KindFailback, "west", "east", false)
	if fb.Status != runbook.StatusSucceeded {
		t.Fatalf("failback %s: %s", fb.Status, fb.Error)
	}
	if s := fb.Step("reprotect-db-east"); !strings.Contains(s.Output, "synchronous commit restored") {
		t.Errorf("reprotect: %s", s.Output)
	}
	var names string
	h.pg.Primary.QueryRow(t, `SHOW synchronous_standby_names`).Scan(&names)
	if names == "" {
		t.Error("east runs without a synchronous standby after failback")
	}
}
