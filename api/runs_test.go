package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/internal/testenv"
	"github.com/lifeboat-dr/lifeboat/runbook"
)

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// The runs API on a real control plane (embedded etcd): authentication
// and roles, validation of requests, the one-run lock, dry runs,
// approvals, and no secret in any answer.
func TestRunsAPI(t *testing.T) {
	t.Setenv("DB_PASSWORD", "pg-secret-789")
	cfg := testenv.Config(t, fmt.Sprintf(`
cluster: apitest
api:
  tokens:
    - {name: watcher, role: viewer, sha256: %s}
    - {name: ops, role: operator, sha256: %s}
regions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
services:
  - name: db
    kind: postgres
    critical: true
    endpoints:
      east: postgres://lifeboat:${DB_PASSWORD}@127.0.0.1:1/postgres
      west: postgres://lifeboat:${DB_PASSWORD}@127.0.0.1:2/postgres
`, sha("view-token"), sha("ops-token")))
	cp := openControl(t, cfg)
	started := 0
	s := openServer(t, Config{Status: fixedStatus{Cluster: "apitest", ActiveRegion: "east"}, RateLimit: RateLimit{PerMinute: -1},
		Runs: &Runs{Config: cfg, Store: cp.Runs(), State: cp.State(), Lags: runbook.NewLagMemory(), Started: func(*runbook.Run) { started++ }}})
	base := s.URL()
	call := func(method, path, token, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if bytes.Contains(b, []byte("pg-secret-789")) {
			t.Errorf("%s %s shows the database password: %s", method, path, b)
		}
		return resp.StatusCode, string(b)
	}
	expect := func(what string, code int, body string, wantCode int, wantText string) {
		t.Helper()
		if code != wantCode || !strings.Contains(body, wantText) {
			t.Errorf("%s: %d %s; want %d with %q", what, code, body, wantCode, wantText)
		}
	}
	sw := `{"kind": "switchover", "to": "west"}`
	c, b := call("POST", "/api/v1/runs", "", sw)
	expect("no token", c, b, 401, "needs a bearer token")
	c, b = call("POST", "/api/v1/runs", "wrong", sw)
	expect("unknown token", c, b, 401, "matches no configured token")
	c, b = call("POST", "/api/v1/runs", "view-token", sw)
	expect("viewer", c, b, 403, `token \"watcher\" has role viewer; this call needs operator`)
	c, b = call("POST", "/api/v1/runs", "ops-token", `{"kind": "switchover", "to": "west", "colour": "red"}`)
	expect("unknown field", c, b, 400, `unknown field \"colour\"`)
	c, b = call("POST", "/api/v1/runs", "ops-token", `{"kind": "rollout", "to": "west"}`)
	expect("bad kind", c, b, 400, `kind \"rollout\" is not failover, switchover or failback`)
	c, b = call("POST", "/api/v1/runs", "ops-token", `{"kind": "failover", "to": "mars"}`)
	expect("bad region", c, b, 400, `to region \"mars\" is not declared`)
	c, b = call("POST", "/api/v1/runs", "ops-token", `{"kind": "failover"}`)
	expect("no region", c, b, 400, "to: the region to make active is required")
	c, b = call("POST", "/api/v1/runs", "ops-token", `{"kind": "switchover", "to": "west"`)
	expect("truncated JSON", c, b, 400, "request body")

	// A dry run plans and checks, and stores nothing.
	c, b = call("POST", "/api/v1/runs", "ops-token", `{"kind": "switchover", "to": "west", "dry_run": true}`)
	expect("dry run", c, b, 200, "switchover east → west")
	var dr DryRunResponse
	json.Unmarshal([]byte(b), &dr)
	if len(dr.Checks) == 0 || dr.Plan == nil || len(dr.Plan.Steps) == 0 {
		t.Errorf("dry run answer: %s", b)
	}
	if runs, _ := cp.Runs().ListRuns(t.Context()); len(runs) != 0 || started != 0 {
		t.Errorf("a dry run stored %d runs", len(runs))
	}

	c, b = call("POST", "/api/v1/runs", "ops-token", `{"kind": "failover", "to": "west", "reason": "drill"}`)
	expect("create", c, b, 201, `"status": "pending"`)
	var run runbook.Run
	json.Unmarshal([]byte(b), &run)
	if run.By != "ops" || run.From != "east" || run.To != "west" || run.StartEpoch != 1 || started != 1 {
		t.Errorf("created run %+v (started %d)", run, started)
	}
	c, b = call("POST", "/api/v1/runs", "ops-token", sw)
	expect("second run", c, b, 409, "another run is active: run "+run.ID)

	c, b = call("GET", "/api/v1/runs", "", "")
	expect("list without a token", c, b, 401, "needs a bearer token")
	c, b = call("GET", "/api/v1/runs", "ops-token", "")
	expect("list", c, b, 200, run.ID)
	c, b = call("GET", "/api/v1/runs/"+run.ID, "ops-token", "")
	expect("show", c, b, 200, `"kind": "failover"`)
	c, b = call("GET", "/api/v1/runs/nope", "ops-token", "")
	expect("show unknown", c, b, 404, `no run \"nope\"`)

	c, b = call("POST", "/api/v1/runs/"+run.ID+"/approve", "ops-token", `{}`)
	expect("approve with nothing waiting", c, b, 409, "has no step waiting for approval")
	c, b = call("POST", "/api/v1/runs/"+run.ID+"/approve", "ops-token", `{"step": "hold"}`)
	expect("approve an ungated step", c, b, 409, "step hold needs no approval")
	c, b = call("POST", "/api/v1/runs/"+run.ID+"/approve", "ops-token", `{"step": "nope"}`)
	expect("approve an unknown step", c, b, 404, `has no step \"nope\"`)
	c, b = call("POST", "/api/v1/runs/"+run.ID+"/approve", "view-token", `{"step": "hold"}`)
	expect("viewer approves", c, b, 403, "needs operator")
}
