package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

// The run commands against a serving node over real Postgres: a dry run,
// a switchover that waits for its end, the runs list and one run's JSON,
// and the refusals.
func TestRunCommands(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	port, pgPort := testenv.FreePort(t), testenv.FreePort(t)
	path := filepath.Join(t.TempDir(), "lifeboat.yaml")
	doc := fmt.Sprintf(`cluster: runs
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
    health: {interval: 100ms, timeout: 80ms, rise: 1}
    replication: {heartbeat: 100ms}
    manage:
      east: {data_dir: %s, os_user: %s, bin_dir: %s}
      west: {data_dir: %s, os_user: %s, bin_dir: %s}
traffic:
  postgres:
    - {listen: "127.0.0.1:%d", service: db, role: writer}
`, port, pg.Primary.Port, pg.Standby.Port,
		pg.Primary.DataDir, pg.Primary.OSUser(), pg.Primary.Bin(), pg.Standby.DataDir, pg.Standby.OSUser(), pg.Standby.Bin(), pgPort)
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

	_, errs, code := run(t, nil, "failover", "--to", "west", "--server", server)
	if code != 2 || !strings.Contains(errs, "add --yes to go ahead, or --dry-run") {
		t.Errorf("failover without --yes: exit %d: %s", code, errs)
	}
	_, errs, code = run(t, nil, "switchover", "--server", server)
	if code != 2 || !strings.Contains(errs, "--to: the region to make active is required") {
		t.Errorf("switchover without --to: exit %d: %s", code, errs)
	}
	_, errs, code = run(t, nil, "switchover", "--to", "mars", "--server", server)
	if code != 1 || !strings.Contains(errs, `to region "mars" is not declared`) {
		t.Errorf("switchover to mars: exit %d: %s", code, errs)
	}
	out, errs, code := run(t, nil, "failover", "--to", "west", "--dry-run", "--server", server)
	if code != 0 || !strings.Contains(out, "failover east → west") || !strings.Contains(out, "pre-checks (nothing was changed):") ||
		!strings.Contains(out, "ok   region west ready to take over") || strings.Contains(out, "FAIL") {
		t.Errorf("dry run: exit %d %s\n%s", code, errs, out)
	}
	if strings.Contains(out, pg.Primary.Password) {
		t.Error("the dry run shows the database password")
	}

	out, errs, code = run(t, nil, "drill", "--dry-run", "--server", server)
	if code != 0 || !strings.Contains(out, "standby west: ready") || !strings.Contains(out, "failover east → west") || !strings.Contains(out, "ok   region west ready to take over") {
		t.Errorf("drill --dry-run: exit %d %s\n%s", code, errs, out)
	}
	_, errs, code = run(t, nil, "drill", "--server", server)
	if code != 2 || !strings.Contains(errs, "only --dry-run drills run against a live topology") {
		t.Errorf("drill without --dry-run: exit %d %s", code, errs)
	}

	out, errs, code = run(t, nil, "switchover", "--to", "west", "--server", server)
	if code != 0 {
		t.Fatalf("switchover: exit %d: %s\n%s\nserve stderr:\n%s", code, errs, out, stderr.String())
	}
	m := regexp.MustCompile(`run (\S+): switchover east → west`).FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, "succeeded") || !strings.Contains(out, "promote-db-west") {
		t.Fatalf("switchover output:\n%s", out)
	}
	id := m[1]

	out, _, code = run(t, nil, "runs", "--server", server)
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "switchover") {
		t.Errorf("runs: exit %d\n%s", code, out)
	}
	out, _, code = run(t, nil, "runs", "show", id, "--json", "--server", server)
	if code != 0 {
		t.Fatalf("runs show --json: exit %d", code)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("runs show --json: %v\n%s", err, out)
	}
	requireKeys(t, "run", r, "id", "kind", "status", "from", "to", "epoch", "steps")
	if r["id"] != id || r["kind"] != "switchover" || r["status"] != "succeeded" || r["from"] != "east" || r["to"] != "west" || r["epoch"] != 2.0 {
		t.Errorf("run JSON: %v", r)
	}
	subSecond := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$`)
	for i, s := range r["steps"].([]any) {
		requireKeys(t, fmt.Sprintf("steps[%d]", i), s, "name", "action", "status", "started_at", "finished_at", "error")
		st := s.(map[string]any)
		for _, k := range []string{"started_at", "finished_at"} {
			if v, _ := st[k].(string); !subSecond.MatchString(v) {
				t.Errorf("steps[%d].%s = %q: not RFC 3339 with sub-second precision", i, k, v)
			}
		}
	}
	out, _, code = run(t, nil, "runs", "show", id, "--server", server)
	if code != 0 || !strings.Contains(out, "reprotect-db-east") || !strings.Contains(out, "epoch 1 → 2") {
		t.Errorf("runs show: exit %d\n%s", code, out)
	}
	_, errs, code = run(t, nil, "approve", id, "--server", server)
	if code != 1 || !strings.Contains(errs, "has no step waiting for approval") {
		t.Errorf("approve a finished run: exit %d: %s", code, errs)
	}
	_, errs, code = run(t, nil, "runs", "show", "nope", "--server", server)
	if code != 1 || !strings.Contains(errs, `no run "nope"`) {
		t.Errorf("runs show nope: exit %d: %s", code, errs)
	}
}
