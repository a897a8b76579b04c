package api

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/runbook"
)

// The mutating endpoints' JSON decoding, through the real router and
// handlers (on in-memory runs, without tokens: every caller is the local
// admin): whatever the body, no panic, no 5xx, and an error answer is
// the API's JSON error.

// fuzzBody posts body to path through h and checks the answer.
func fuzzBody(t *testing.T, h http.Handler, path, body string) {
	w := serve(h, "POST", path, "", body)
	if w.Code >= 500 || w.Code < 200 || (w.Code >= 300 && w.Code < 400) {
		t.Fatalf("POST %s %q: %d %s", path, body, w.Code, w.Body)
	}
	if w.Code >= 400 {
		var e Error
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
			t.Fatalf("POST %s %q: %d with a body that is not an error: %s", path, body, w.Code, w.Body)
		}
	}
}

// fuzzServer is a server for the fuzz targets, with a run (r-1) whose
// first step waits for an operator's approval.
func fuzzServer(tb testing.TB) http.Handler {
	s := fullServer(tb, false)
	rs := s.cfg.Runs
	plan, err := runbook.Generate(rs.Config, runbook.Request{Kind: runbook.KindSwitchover, From: "east", To: "west", Severity: "manual"})
	if err != nil {
		tb.Fatal(err)
	}
	run := runbook.NewRun(plan, runbook.TriggerManual, "test", "", time.Now())
	run.ID = "r-1"
	run.Steps[0].Approve, run.Steps[0].Status = config.TokenOperator, runbook.StatusWaitingApproval
	rs.Store.(*memRuns).runs[run.ID] = run
	return s.mux() // no audit: there is no control plane to record into
}

var seeds = map[string][]string{
	"/api/v1/runs": {
		`{"kind": "switchover", "to": "west", "dry_run": true}`, `{"kind": "failover", "to": "west", "force": true, "reason": "drill"}`,
		`{"kind": "failback"}`, `{"kind": "rollout", "to": "west"}`, `{"kind": 1}`, `{"to": null}`, `{"kind": "switchover", "to": "west"} x`,
		`{"kind": "switchover", "to": "west", "KIND": "failover"}`, `[]`, `null`, ``, `{"kind": "\u0000"}`, `{"dry_run": "yes"}`,
	},
	"/api/v1/runs/r-1/approve": {`{}`, `{"step": "hold"}`, `{"step": "nope"}`, `{"step": 7}`, `{"step": "hold", "by": "me"}`, `{"step": "hold"}{}`},
	"/api/v1/runs/r-1/drill": {
		`{"scenario": "kill-east", "fault_at": "2026-03-01T12:00:00Z", "detect_seconds": 1.5, "recover_seconds": 4, "writes_acked": 10, "writes_lost": 0}`,
		`{"scenario": "x", "fault_at": 5}`, `{"scenario": "x", "fault_at": "yesterday"}`, `{"scenario": "x", "fault_at": "2026-03-01T12:00:00Z", "writes_lost": -1}`,
		`{"scenario": "x", "fault_at": "2026-03-01T12:00:00Z", "detect_seconds": 1e400}`, `{"writes_acked": 1.5}`, `{"split_brain_violations": "0"}`,
	},
}

func fuzzEndpoint(f *testing.F, path string) {
	for _, s := range seeds[path] {
		f.Add(s)
	}
	h := fuzzServer(f)
	f.Fuzz(func(t *testing.T, body string) {
		fuzzBody(t, h, path, body)
	})
}

func FuzzRunRequest(f *testing.F) { fuzzEndpoint(f, "/api/v1/runs") }

func FuzzApproveRequest(f *testing.F) { fuzzEndpoint(f, "/api/v1/runs/r-1/approve") }

// FuzzDrill: the run is not found once the body is good (a drill is
// stored in the control plane, which the fuzz server has not), so this
// covers the decoding and the validation.
func FuzzDrill(f *testing.F) {
	for _, s := range seeds["/api/v1/runs/r-1/drill"] {
		f.Add(s)
	}
	h := fullServer(f, false).mux()
	f.Fuzz(func(t *testing.T, body string) {
		fuzzBody(t, h, "/api/v1/runs/r-404/drill", body)
	})
}
