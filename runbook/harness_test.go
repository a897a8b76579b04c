package runbook_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/dataplane"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
	"github.com/lifeboat-dr/lifeboat/observe"
	"github.com/lifeboat-dr/lifeboat/runbook"
	"github.com/lifeboat-dr/lifeboat/traffic"
)

func TestMain(m *testing.M) { testenv.MainWithLeakCheck(m) }

// harness is one Lifeboat node over a real Postgres pair, a real Redis
// pair and an embedded etcd: observation, control plane, executor,
// decider and the Postgres writer endpoint.
type harness struct {
	t      testing.TB
	cfg    *config.Config
	pg     *testenv.PGPair
	redis  *testenv.RedisPair
	cp     *control.Plane
	node   *observe.Node
	lags   *runbook.LagMemory
	exec   *runbook.Executor
	writer string
	shares [2]string // east, west

	mu      sync.Mutex
	notices []string
}

type harnessOptions struct {
	policy  string // auto or manual (default manual)
	decider bool
	sync    bool // synchronous replication
}

func newHarness(t testing.TB, o harnessOptions) *harness {
	t.Helper()
	pg := testenv.StartPostgres(t, testenv.PGOptions{Sync: o.sync})
	mode := "async"
	if o.sync {
		mode = "sync"
	}
	rd := testenv.StartRedis(t)
	if o.policy == "" {
		o.policy = "manual"
	}
	writer := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	shareEast, shareWest := t.TempDir(), t.TempDir()
	doc := fmt.Sprintf(`
cluster: rb
regions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
services:
  - name: db
    kind: postgres
    critical: true
    endpoints:
      east: %s
      west: %s
    health: {interval: 200ms, timeout: 150ms, fall: 2, rise: 1}
    replication: {heartbeat: 200ms, mode: %s}
    manage:
      east: {data_dir: %s, os_user: %s, bin_dir: %s}
      west: {data_dir: %s, os_user: %s, bin_dir: %s}
  - name: cache
    kind: redis
    endpoints:
      east: %s
      west: %s
    health: {interval: 200ms, timeout: 150ms, fall: 2, rise: 1}
    replication: {heartbeat: 200ms}
  - name: share
    kind: files
    endpoints:
      east: file://%s
      west: file://%s
    sync: {interval: 1h}
traffic:
  postgres:
    - {listen: %q, service: db, role: writer}
policy:
  failover: %s
  cooldown: 1m
`, pg.Primary.DSN(), pg.Standby.DSN(), mode,
		pg.Primary.DataDir, pg.Primary.OSUser(), pg.Primary.Bin(),
		pg.Standby.DataDir, pg.Standby.OSUser(), pg.Standby.Bin(),
		rd.Primary.URL(), rd.Replica.URL(), shareEast, shareWest, writer, o.policy)
	cfg := testenv.Config(t, doc)
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("LIFEBOAT_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx := t.Context()
	cp, err := control.Open(ctx, cfg, control.Options{Node: "n1", DataDir: t.TempDir(), Logger: logger, EtcdLogLevel: "fatal"})
	if err != nil {
		t.Fatal(err)
	}
	node, err := observe.New(cfg, observe.Options{Observer: "n1", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Open(); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, cfg: cfg, pg: pg, redis: rd, cp: cp, node: node, lags: runbook.NewLagMemory(), writer: writer, shares: [2]string{shareEast, shareWest}}
	leading := func() bool { _, ok := cp.Elector().Leading(); return ok }
	h.exec = runbook.NewExecutor(runbook.Options{Config: cfg, Store: cp.Runs(), Traffic: cp.Traffic(), Status: node, Lags: h.lags,
		Leading: leading, Recorder: cp, FenceDelay: cp.FenceDelay(), Logger: logger, Poll: 50 * time.Millisecond})
	h.exec.Open()
	var dec *runbook.Decider
	if o.decider {
		dec = runbook.NewDecider(runbook.DeciderOptions{Config: cfg, Store: cp.Runs(), Traffic: cp.Traffic(), Status: node, Lags: h.lags,
			Leading: leading, Started: func(*runbook.Run) { h.exec.Kick() }, Logger: logger, Every: 100 * time.Millisecond,
			Notice: func(msg string) { h.mu.Lock(); h.notices = append(h.notices, msg); h.mu.Unlock() }})
		dec.Open()
	}
	router := traffic.NewRouter(cfg, cp.State(), node, 0)
	router.Open()
	plane, err := dataplane.New(cfg, router, logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := plane.Open(); err != nil {
		t.Fatal(err)
	}
	stopFollow := follow(cp.State(), node, h.lags)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if dec != nil {
			dec.Close(ctx)
		}
		h.exec.Close(ctx)
		stopFollow()
		plane.Close(ctx)
		router.Close(ctx)
		node.Close(ctx)
		cp.Close(ctx)
	})
	h.waitFor("leadership", 15*time.Second, func() error {
		if !leading() {
			return fmt.Errorf("not leading")
		}
		return nil
	})
	return h
}

// noticed returns the decider's notices so far.
func (h *harness) noticed() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.notices...)
}

// follow points the node's monitors at the active region, as serve does.
func follow(src traffic.StateSource, node *observe.Node, lags *runbook.LagMemory) func() {
	ch, unsubscribe := src.Subscribe()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			if a := src.Current().Active; a != node.Active() {
				lags.Forget()
				node.SetActive(a)
			}
			select {
			case <-done:
				return
			case <-ch:
			}
		}
	})
	return func() { unsubscribe(); close(done); wg.Wait() }
}

func (h *harness) waitFor(what string, limit time.Duration, cond func() error) {
	h.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: not within %s: %v", what, limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ready waits until west could take over (verdicts and lag measured).
func (h *harness) ready(region string) {
	h.t.Helper()
	h.waitFor("readiness of "+region, 30*time.Second, func() error {
		for _, r := range h.node.Status().Readiness {
			if r.Region == region {
				if !r.Ready {
					return fmt.Errorf("%v", r.Reasons)
				}
				h.lags.Observe(h.node.Status())
				return nil
			}
		}
		return fmt.Errorf("no readiness for %s", region)
	})
}

// start creates a run and waits for it to end.
func (h *harness) run(kind, from, to string, forced bool) *runbook.Run {
	h.t.Helper()
	r := h.start(kind, from, to, forced)
	return h.wait(r.ID, 2*time.Minute)
}

func (h *harness) start(kind, from, to string, forced bool) *runbook.Run {
	h.t.Helper()
	plan, err := runbook.Generate(h.cfg, runbook.Request{Kind: kind, From: from, To: to, Forced: forced})
	if err != nil {
		h.t.Fatal(err)
	}
	r := runbook.NewRun(plan, runbook.TriggerManual, "test", "", time.Now())
	r.StartEpoch = h.cp.State().Current().Epoch
	if err := h.cp.Runs().CreateRun(h.t.Context(), r); err != nil {
		h.t.Fatal(err)
	}
	h.exec.Kick()
	return r
}

func (h *harness) wait(id string, limit time.Duration) *runbook.Run {
	h.t.Helper()
	var r *runbook.Run
	h.waitFor("run "+id, limit, func() error {
		var err error
		r, err = h.cp.Runs().GetRun(h.t.Context(), id)
		if err != nil {
			return err
		}
		if !runbook.Terminal(r.Status) {
			return fmt.Errorf("status %s", r.Status)
		}
		return nil
	})
	for _, s := range r.Steps {
		h.t.Logf("  %-10s %-28s %-8s %s", s.Status, s.Name, s.FinishedAt.Sub(s.StartedAt).Round(time.Millisecond), s.Output+s.Error)
	}
	return r
}

// workload writes ids in sequence through the writer endpoint, one
// connection per write, retrying an unacknowledged id (an insert is
// idempotent by its id) until it is acknowledged or the write gives up.
type workload struct {
	acked    []int64
	attempts atomic.Int64
	failures atomic.Int64 // attempts that got an error
	gaveUp   atomic.Int64 // ids never acknowledged
	errs     sync.Map
	stop     chan struct{}
	done     chan struct{}
}

func (h *harness) startWorkload(maxRetry time.Duration) *workload {
	h.t.Helper()
	dsn := h.writerDSN()
	ctx, cancel := context.WithTimeout(h.t.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		h.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS acks (id bigint PRIMARY KEY, at timestamptz DEFAULT now())`); err != nil {
		h.t.Fatal(err)
	}
	w := &workload{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for id := int64(1); ; id++ {
			select {
			case <-w.stop:
				return
			default:
			}
			deadline := time.Now().Add(maxRetry)
			for {
				w.attempts.Add(1)
				err := insert(dsn, id)
				if err == nil {
					w.acked = append(w.acked, id)
					break
				}
				w.failures.Add(1)
				w.errs.Store(err.Error(), true)
				if time.Now().After(deadline) {
					w.gaveUp.Add(1)
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
	return w
}

// writerDSN connects through the Postgres writer endpoint.
func (h *harness) writerDSN() string {
	return fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable&connect_timeout=10", testenv.PGUser, h.pg.Primary.Password, h.writer)
}

func insert(dsn string, id int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return insertCtx(ctx, dsn, id)
}

func insertCtx(ctx context.Context, dsn string, id int64) error {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, `INSERT INTO acks (id) VALUES ($1) ON CONFLICT DO NOTHING`, id)
	return err
}

func (w *workload) finish() {
	close(w.stop)
	<-w.done
}

// lost returns the acknowledged ids missing from the node's table.
func lost(t testing.TB, n *testenv.PGNode, acked []int64) []int64 {
	t.Helper()
	have := map[int64]bool{}
	rows, err := n.Conn(t).Query(t.Context(), `SELECT id FROM acks`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		rows.Scan(&id)
		have[id] = true
	}
	rows.Close()
	var out []int64
	for _, id := range acked {
		if !have[id] {
			out = append(out, id)
		}
	}
	return out
}

func inRecovery(t testing.TB, n *testenv.PGNode) bool {
	t.Helper()
	var rec bool
	if err := n.QueryRow(t, `SELECT pg_is_in_recovery()`).Scan(&rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

func streamingFrom(t testing.TB, n *testenv.PGNode) string {
	t.Helper()
	var status, conninfo string
	if err := n.QueryRow(t, `SELECT status, conninfo FROM pg_stat_wal_receiver`).Scan(&status, &conninfo); err != nil {
		return "no wal receiver: " + err.Error()
	}
	return status + " " + conninfo
}
