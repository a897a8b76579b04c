package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/drill"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

// Drills against a serving node over real Postgres, through its writer
// endpoint: the refusals, a planned switchover (JSON), two more (text,
// --runs 2), a scheduled one, then a database crash injected by a command
// (pg_ctl stop -m immediate of the primary of LIFEBOAT_FROM) that the
// leader fails over automatically, and its restore command (a restart of
// the crashed server, which Lifeboat then fences).
func TestDrillCommand(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	port, pgPort := testenv.FreePort(t), testenv.FreePort(t)
	dir := t.TempDir()
	marker := filepath.Join(dir, "restored")
	asUser := func(user, cmd string) string {
		if os.Geteuid() == 0 {
			return fmt.Sprintf("su -s /bin/sh %s -c %q", user, cmd)
		}
		return cmd
	}
	dataDir := fmt.Sprintf(`case "$LIFEBOAT_FROM" in east) D=%s;; west) D=%s;; *) echo "no region $LIFEBOAT_FROM"; exit 2;; esac`, pg.Primary.DataDir, pg.Standby.DataDir)
	inject := filepath.Join(dir, "inject.sh")
	restore := filepath.Join(dir, "restore.sh")
	scripts := map[string]string{
		inject: dataDir + "\necho \"crashing the database of $LIFEBOAT_FROM\"\n" + asUser(pg.Primary.OSUser(), pg.Primary.Bin()+"/pg_ctl stop -m immediate -w -D $D") + "\n",
		restore: dataDir + "\necho \"$LIFEBOAT_SCENARIO $LIFEBOAT_FROM $LIFEBOAT_TO\" > " + marker + "\n" +
			"sleep 1; rm -f $D/postmaster.pid\n" + asUser(pg.Primary.OSUser(), pg.Primary.Bin()+"/pg_ctl start -w -t 60 -D $D -l $D.log") + "\n",
	}
	for f, s := range scripts {
		if err := os.WriteFile(f, []byte(s), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "lifeboat.yaml")
	doc := fmt.Sprintf(`cluster: drills
api:
  listen: 127.0.0.1:%d
regions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
services:
  - name: db
    kind: postgres
    critical: true
    endpoints:
      east: postgres://lifeboat:${DB_PASSWORD}@127.0.0.1:%d/postgres?sslmode=disable
      west: postgres://lifeboat:${DB_PASSWORD}@127.0.0.1:%d/postgres?sslmode=disable
    # Generous enough that a slow first probe (the race detector, a busy
    # machine) does not fail over at start with failover: auto.
    health: {interval: 300ms, timeout: 250ms, rise: 1}
    replication: {heartbeat: 100ms}
    manage:
      east: {data_dir: %s, os_user: %s, bin_dir: %s}
      west: {data_dir: %s, os_user: %s, bin_dir: %s}
traffic:
  postgres:
    - {listen: "127.0.0.1:%d", service: db, role: writer}
policy:
  failover: auto
drills:
  workload: {service: db, rate: 50}
  scenarios:
    db-crash: {inject: "sh %s", restore: "sh %s", timeout: 90s}
`, port, pg.Primary.Port, pg.Standby.Port,
		pg.Primary.DataDir, pg.Primary.OSUser(), pg.Primary.Bin(), pg.Standby.DataDir, pg.Standby.OSUser(), pg.Standby.Bin(), pgPort, inject, restore)
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"DB_PASSWORD": pg.Primary.Password}
	stderr := serving(t, env, pg.Primary.Password, "-c", path, "--node", "n1", "--data-dir", t.TempDir())
	server := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _, code := run(t, nil, "status", "--server", server)
		if code == 0 && strings.Contains(out, "standby west: ready") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("west never ready:\n%s\nserve stderr:\n%s", out, stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The refusals.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"drill", "db-crash", "-c", path}, "db-crash injects a real fault into the topology (the command of drills.scenarios.db-crash.inject) and waits for a failover: add --yes to go ahead"},
		{[]string{"drill", "switchover", "--server", server}, "-c/--config is required"},
		{[]string{"drill", "region-outage", "-c", path, "--yes"}, "drills.scenarios.region-outage is not configured: add its inject and restore commands"},
		{[]string{"drill", "meteor", "-c", path}, `scenario "meteor" is not one of region-outage, db-crash`},
		{[]string{"drill", "switchover", "--dry-run", "-c", path}, "--dry-run rehearses a failover and takes no SCENARIO"},
		{[]string{"drill", "switchover", "--runs", "0", "-c", path}, "--runs 0: use 1 to 1000"},
		{[]string{"drill", "a", "b"}, `unexpected argument "b"`},
	} {
		_, errs, code := run(t, env, c.args...)
		if code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d: %s\nwant 2 and %q", c.args, code, errs, c.want)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a refused drill ran its restore command")
	}

	// A planned switchover, measured.
	out, errs, code := run(t, env, "drill", "switchover", "-c", path, "--json")
	if code != 0 {
		t.Fatalf("drill switchover: exit %d\n%s\n%s\nserve stderr:\n%s", code, out, errs, stderr.String())
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("drill switchover --json: %v\n%s", err, out)
	}
	requireKeys(t, "switchover", r, "scenario", "replication", "from", "to", "detect_seconds", "recover_seconds", "client_errors", "error_window_seconds",
		"writes_acked", "writes_lost", "predicted_loss_seconds", "split_brain_violations", "run_id", "runbook_status", "report", "steps", "fault_at", "notes")
	id, _ := r["run_id"].(string)
	if r["scenario"] != "switchover" || r["from"] != "east" || r["to"] != "west" || r["runbook_status"] != "succeeded" || id == "" ||
		r["report"] != "/api/v1/runs/"+id+"/report" {
		t.Errorf("switchover: %v", r)
	}
	if r["writes_lost"] != 0.0 || r["split_brain_violations"] != 0.0 || r["recover_seconds"] == nil || r["predicted_loss_seconds"] == nil {
		t.Errorf("switchover: lost %v (%v), split brain %v (%v), recover %v, predicted %v; notes %v", r["writes_lost"], r["lost_ids"],
			r["split_brain_violations"], r["violations"], r["recover_seconds"], r["predicted_loss_seconds"], r["notes"])
	}
	if acked, _ := r["writes_acked"].(float64); acked < 100 {
		t.Errorf("only %v writes acknowledged", acked)
	}
	// New connections wait out the hold at the writer endpoint, and a
	// session the fence ends is replaced: a planned move fails no write.
	if r["client_errors"] != 0.0 {
		t.Errorf("%v client errors in a planned move: %v", r["client_errors"], r["notes"])
	}
	t.Logf("switchover: recover %v, client errors %v (window %v), acked %v; notes %v", r["recover_seconds"], r["client_errors"], r["error_window_seconds"], r["writes_acked"], r["notes"])
	// The run's report carries the measurements.
	out, errs, code = run(t, nil, "report", id, "--server", server)
	if code != 0 || !strings.Contains(out, "drill switchover") {
		t.Errorf("report %s: exit %d %s\n%s", id, code, errs, out)
	}

	// Two more, in text: back to east, then to west again.
	out, errs, code = run(t, env, "drill", "switchover", "-c", path, "--runs", "2")
	if code != 0 {
		t.Fatalf("drill switchover --runs 2: exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"drill 1: switchover (async replication) west → east, run ", "drill 2: switchover (async replication) east → west, run ",
		"  report: lifeboat report ", "note: detection: a planned move has no fault to detect", "client errors 0 (window 0.00s)", "\n2 runs: detect not measured, recover median "} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`lost 0 \(predicted loss [0-9.]+s\), split-brain violations 0\n(.|\n)*lost 0 \(predicted loss [0-9.]+s\), split-brain violations 0\n`).MatchString(out) {
		t.Errorf("the switchovers lost writes or broke single-writer safety:\n%s", out)
	}

	// A scheduled drill, as serve runs it: on the leader, through the
	// node's own API, every start and end an event. It moves back to east.
	cfg, err := config.Load(path, config.WithLookupEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Drills.Schedule = []config.DrillSchedule{{Scenario: "switchover", Cron: "@every 1s"}}
	var mu sync.Mutex
	var evs []control.Event
	var started atomic.Bool // one drill: the node stops leading once it started
	sched := drillScheduler(cfg, "n1", server, func() bool { return !started.Load() }, func(e control.Event) {
		mu.Lock()
		evs = append(evs, e)
		mu.Unlock()
		started.Store(true)
	}, slog.New(slog.DiscardHandler))
	sched.Open()
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		mu.Lock()
		n := len(evs)
		mu.Unlock()
		if n >= 2 && sched.Running() == "" || time.Now().After(deadline) {
			break
		}
	}
	if err := sched.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(evs) != 2 || evs[0].Status != drill.ScheduledStarted || evs[1].Status != drill.ScheduledSucceeded || evs[1].Run == "" ||
		!strings.Contains(evs[1].Message, "succeeded: run "+evs[1].Run+" succeeded, recovered in") || evs[1].Type != control.EventDrill {
		t.Errorf("scheduled drill events: %+v", evs)
	}
	mu.Unlock()
	out, _, code = run(t, nil, "runs", "--server", server)
	if code != 0 || !regexp.MustCompile(`(?m)^\S+\s+switchover\s+succeeded\s+west\s+east\s`).MatchString(strings.SplitN(out, "\n", 3)[1]) {
		t.Errorf("runs after the scheduled drill: exit %d\n%s", code, out)
	}

	// An unplanned drill: east's database crashes; the leader fails over
	// to west by itself.
	out, errs, code = run(t, env, "drill", "db-crash", "-c", path, "--yes", "--json")
	if code != 0 {
		t.Fatalf("drill db-crash: exit %d\n%s\n%s\nserve stderr:\n%s", code, out, errs, stderr.String())
	}
	r = nil
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("drill db-crash --json: %v\n%s", err, out)
	}
	id, _ = r["run_id"].(string)
	t.Logf("db-crash: detect %v, recover %v, client errors %v (window %v), acked %v, lost %v, predicted %v", r["detect_seconds"], r["recover_seconds"],
		r["client_errors"], r["error_window_seconds"], r["writes_acked"], r["writes_lost"], r["predicted_loss_seconds"])
	if r["from"] != "east" || r["to"] != "west" || r["runbook_status"] != "succeeded" || id == "" || r["report"] != "/api/v1/runs/"+id+"/report" {
		t.Errorf("db-crash: %v", r)
	}
	if r["detect_seconds"] == nil || r["recover_seconds"] == nil || r["writes_lost"] == nil || r["split_brain_violations"] != 0.0 {
		t.Errorf("db-crash: detect %v, recover %v, lost %v, split brain %v (%v); notes %v", r["detect_seconds"], r["recover_seconds"], r["writes_lost"],
			r["split_brain_violations"], r["violations"], r["notes"])
	}
	if ce, _ := r["client_errors"].(float64); ce == 0 {
		t.Errorf("no client error while the primary was down: %v", r)
	}
	notes := fmt.Sprint(r["notes"])
	if !strings.Contains(notes, "inject (ok, ") || !strings.Contains(notes, "crashing the database of east") || !strings.Contains(notes, "restore (ok, ") {
		t.Errorf("db-crash notes: %s", notes)
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "db-crash east west\n" {
		t.Errorf("restore: %q %v", b, err)
	}
	steps := fmt.Sprint(r["steps"])
	if !strings.Contains(steps, "promote-db-west") {
		t.Errorf("db-crash steps: %s", steps)
	}
	out, _, code = run(t, nil, "runs", "show", id, "--server", server)
	if code != 0 || !strings.Contains(out, "failover east → west") || !strings.Contains(out, "trigger auto") {
		t.Errorf("the drill's run: exit %d\n%s", code, out)
	}

	// The failback: east, restarted and fenced, is made a standby of west
	// again, then traffic moves back; nothing acknowledged is lost.
	out, errs, code = run(t, env, "drill", "failback", "-c", path, "--json")
	if code != 0 {
		t.Fatalf("drill failback: exit %d\n%s\n%s\nserve stderr:\n%s", code, out, errs, stderr.String())
	}
	r = nil
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("drill failback --json: %v\n%s", err, out)
	}
	t.Logf("failback: recover %v, client errors %v (window %v), acked %v, lost %v", r["recover_seconds"], r["client_errors"], r["error_window_seconds"], r["writes_acked"], r["writes_lost"])
	if r["from"] != "west" || r["to"] != "east" || r["runbook_status"] != "succeeded" || r["writes_lost"] != 0.0 || r["split_brain_violations"] != 0.0 ||
		r["recover_seconds"] == nil || r["report"] == nil {
		t.Errorf("failback: %v", r)
	}
	_, errs, code = run(t, env, "drill", "failback", "-c", path)
	if code != 1 || !strings.Contains(errs, "failback: east is already active") {
		t.Errorf("a failback with nothing to move back: exit %d: %s", code, errs)
	}
}
