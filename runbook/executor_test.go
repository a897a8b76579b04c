package runbook_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
	"github.com/lifeboat-dr/lifeboat/observe"
	"github.com/lifeboat-dr/lifeboat/runbook"
)

// The executor's rules on a configured runbook, with a real control
// plane: a hook over HTTP, retries, a condition, the LIFEBOAT_*
// environment, on_failure continue, and a rollback that undoes the hold.
func TestExecutorRules(t *testing.T) {
	var mu sync.Mutex
	var hooks []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		hooks = append(hooks, fmt.Sprintf("%s %s %s run=%s", r.Method, r.URL.Path, b, r.Header.Get("X-Lifeboat-Run")))
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer hook.Close()
	mark := filepath.Join(t.TempDir(), "flaky")
	cfg := testenv.Config(t, fmt.Sprintf(`
cluster: rules
regions: [{name: east, priority: 1}, {name: west, priority: 2}]
services:
  - {name: web, kind: http, endpoints: {east: %[1]q, west: %[1]q}}
runbooks:
  switchover:
    groups:
      - name: one
        steps:
          - {name: hook, action: http.request, args: {url: "%[1]s/hook", body: '{"x":1}'}}
          - {name: flaky, action: exec, args: {command: "test -f %[2]s || { touch %[2]s; exit 1; }"}, retries: 1}
      - name: two
        steps:
          - {name: skipped, action: exec, args: {command: "exit 1"}, when: "severity=critical"}
          - {name: env, action: exec, args: {command: 'echo "$LIFEBOAT_RUN_KIND $LIFEBOAT_FROM $LIFEBOAT_TO $LIFEBOAT_STEP"'}}
          - {name: soft-fail, action: exec, args: {command: "exit 3"}, on_failure: continue}
      - name: three
        steps:
          - {name: hold, action: traffic.hold}
      - name: four
        steps:
          - {name: boom, action: exec, args: {command: "echo boom >&2; exit 1"}, on_failure: rollback}
      - name: five
        steps:
          - {name: never, action: traffic.switch, args: {region: west}}
`, hook.URL, mark))
	cp, _ := openExecutor(t, cfg)
	plan, err := runbook.Generate(cfg, runbook.Request{Kind: runbook.KindSwitchover, From: "east", To: "west", Severity: "planned"})
	if err != nil {
		t.Fatal(err)
	}
	r := runbook.NewRun(plan, runbook.TriggerManual, "test", "", time.Now())
	r.StartEpoch = 1
	if err := cp.Runs().CreateRun(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !runbook.Terminal(r.Status) {
		if time.Now().After(deadline) {
			t.Fatalf("run still %s", r.Status)
		}
		time.Sleep(50 * time.Millisecond)
		if r, err = cp.Runs().GetRun(t.Context(), r.ID); err != nil {
			t.Fatal(err)
		}
	}
	step := func(name string) *runbook.StepRun {
		s := r.Step(name)
		if s == nil {
			t.Fatalf("no step %s", name)
		}
		return s
	}
	if r.Status != runbook.StatusRolledBack || !strings.Contains(r.Error, "step boom failed") {
		t.Errorf("run %s: %s", r.Status, r.Error)
	}
	if s := step("hook"); s.Status != runbook.StatusSucceeded || !strings.HasPrefix(s.Output, "202 Accepted") {
		t.Errorf("hook: %s %q %s", s.Status, s.Output, s.Error)
	}
	mu.Lock()
	if len(hooks) != 1 || hooks[0] != `POST /hook {"x":1} run=`+r.ID {
		t.Errorf("hook calls: %q", hooks)
	}
	mu.Unlock()
	if s := step("flaky"); s.Status != runbook.StatusSucceeded || s.Attempts != 2 {
		t.Errorf("flaky: %s after %d attempts", s.Status, s.Attempts)
	}
	if s := step("skipped"); s.Status != runbook.StatusSkipped {
		t.Errorf("skipped: %s", s.Status)
	}
	if s := step("env"); s.Output != "switchover east west env" {
		t.Errorf("env: %q", s.Output)
	}
	if s := step("soft-fail"); s.Status != runbook.StatusFailed || !strings.Contains(s.Error, "exit status 3") {
		t.Errorf("soft-fail: %s %s", s.Status, s.Error)
	}
	if s := step("boom"); s.Status != runbook.StatusFailed || s.Output != "boom" {
		t.Errorf("boom: %s %q", s.Status, s.Output)
	}
	if s := step("never"); s.Status != runbook.StatusPending {
		t.Errorf("a step after the rollback ran: %s", s.Status)
	}
	if len(r.Rollback) != 1 || r.Rollback[0].Name != "undo-hold" || r.Rollback[0].Status != runbook.StatusSucceeded {
		t.Errorf("rollback: %+v", r.Rollback)
	}
	if st := cp.State().Current(); st.Held || st.Epoch != 1 || st.Active != "east" {
		t.Errorf("state after the rollback: %+v", st)
	}
	if active, _ := cp.Runs().ActiveRun(t.Context()); active != nil {
		t.Errorf("the lock is still held by %s", active.ID)
	}
}

// A cancelled run: it stops at its approval gate, undoes the hold it had
// taken and ends cancelled; the epoch never moves.
func TestExecutorCancel(t *testing.T) {
	cfg := testenv.Config(t, `
cluster: cancel
regions: [{name: east, priority: 1}, {name: west, priority: 2}]
services:
  - {name: web, kind: http, endpoints: {east: "http://127.0.0.1:1", west: "http://127.0.0.1:1"}}
runbooks:
  switchover:
    groups:
      - name: one
        steps:
          - {name: hold, action: traffic.hold}
      - name: two
        steps:
          - {name: gate, action: wait, args: {duration: 1ms}, approve: operator}
      - name: three
        steps:
          - {name: switch, action: traffic.switch, args: {region: west}}
`)
	cp, ex := openExecutor(t, cfg)
	plan, err := runbook.Generate(cfg, runbook.Request{Kind: runbook.KindSwitchover, From: "east", To: "west", Severity: "planned"})
	if err != nil {
		t.Fatal(err)
	}
	r := runbook.NewRun(plan, runbook.TriggerManual, "test", "", time.Now())
	r.StartEpoch = 1
	if err := cp.Runs().CreateRun(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	waitStatus := func(want string) *runbook.Run {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			got, err := cp.Runs().GetRun(t.Context(), r.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status == want {
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("run %s, want %s", got.Status, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitStatus(runbook.StatusWaitingApproval)
	if st := cp.State().Current(); !st.Held {
		t.Fatal("the hold step did not hold")
	}
	if err := cp.Runs().Cancel(t.Context(), r.ID, runbook.Approval{By: "ops", Role: "operator", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	ex.Kick()
	got := waitStatus(runbook.StatusCancelled)
	if !strings.Contains(got.Error, "cancelled by ops (operator)") {
		t.Errorf("error: %q", got.Error)
	}
	if s := got.Step("gate"); s.Status != runbook.StatusSkipped {
		t.Errorf("gate: %s", s.Status)
	}
	if s := got.Step("switch"); s.Status != runbook.StatusPending {
		t.Errorf("switch ran after the cancel: %s", s.Status)
	}
	if len(got.Rollback) != 1 || got.Rollback[0].Name != "undo-hold" || got.Rollback[0].Status != runbook.StatusSucceeded {
		t.Errorf("rollback: %+v", got.Rollback)
	}
	deadline := time.Now().Add(5 * time.Second)
	for st := cp.State().Current(); st.Held || st.Epoch != 1; st = cp.State().Current() {
		if time.Now().After(deadline) {
			t.Fatalf("state after the cancel: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if a, _ := cp.Runs().ActiveRun(t.Context()); a != nil {
		t.Errorf("the cancelled run still holds the lock: %s", a.ID)
	}
}

// openExecutor opens a control plane of one member and an executor on it,
// closed when the test ends.
func openExecutor(t *testing.T, cfg *config.Config) (*control.Plane, *runbook.Executor) {
	t.Helper()
	cp, err := control.Open(t.Context(), cfg, control.Options{Node: "n1", DataDir: t.TempDir(), EtcdLogLevel: "fatal"})
	if err != nil {
		t.Fatal(err)
	}
	node, err := observe.New(cfg, observe.Options{Observer: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	leading := func() bool { _, ok := cp.Elector().Leading(); return ok }
	ex := runbook.NewExecutor(runbook.Options{Config: cfg, Store: cp.Runs(), Traffic: cp.Traffic(), Status: node, Lags: runbook.NewLagMemory(),
		Leading: leading, Recorder: cp, FenceDelay: cp.FenceDelay(), Poll: 50 * time.Millisecond})
	ex.Open()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ex.Close(ctx)
		node.Close(ctx)
		cp.Close(ctx)
	})
	return cp, ex
}
