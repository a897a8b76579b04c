package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
	"github.com/lifeboat-dr/lifeboat/runbook"
)

// The audit API on a real control plane: every mutating call, accepted or
// refused, leaves exactly one audit entry (durable before the answer)
// with its actor, source, action and status; the export and the
// verification need an admin; the export verifies on its own from its
// trailers; tampering in etcd makes verify answer 409 naming the entry.
func TestAuditAPI(t *testing.T) {
	cfg := testenv.Config(t, fmt.Sprintf(`
cluster: audittest
api:
  tokens:
    - {name: watcher, role: viewer, sha256: %s}
    - {name: ops, role: operator, sha256: %s}
    - {name: root, role: admin, sha256: %s}
regions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
services:
  - name: db
    kind: postgres
    critical: true
    endpoints:
      east: postgres://lifeboat@127.0.0.1:1/postgres
      west: postgres://lifeboat@127.0.0.1:2/postgres
`, sha("view-token"), sha("ops-token"), sha("admin-token")))
	cp, err := control.Open(t.Context(), cfg, control.Options{Node: "n1", DataDir: t.TempDir(), EtcdLogLevel: "fatal"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cp.Close(ctx)
	}()
	s := New(Config{Listen: "127.0.0.1:0", Status: fixedStatus{Cluster: "audittest", ActiveRegion: "east"}, Control: cp,
		Runs: &Runs{Config: cfg, Store: cp.Runs(), State: cp.State(), Lags: runbook.NewLagMemory()}})
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Close(ctx)
	}()
	base := "http://" + s.Addr()
	call := func(method, path, token, body string) (*http.Response, string) {
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
		return resp, string(b)
	}
	store := cp.Store()
	audits := func() []control.Event {
		t.Helper()
		var out []control.Event
		for after := uint64(0); ; {
			evs, err := store.Events(t.Context(), after, 500)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) == 0 {
				return out
			}
			for _, e := range evs {
				if e.Type == control.EventAudit {
					out = append(out, e)
				}
				after = e.Seq
			}
		}
	}

	// Every mutating call leaves one entry, there as soon as the answer is.
	type want struct {
		method, path, token, body string
		code                      int
		actor, action, run        string
		severity, message         string
	}
	for _, c := range []want{
		{"POST", "/api/v1/runs", "ops-token", `{"kind": "switchover", "to": "west", "dry_run": true, "reason": "pssst-reason"}`, 200,
			"ops", "POST /api/v1/runs", "", control.SeverityInfo, "200 OK"},
		{"POST", "/api/v1/runs", "", `{"kind": "switchover", "to": "west"}`, 401,
			"anonymous", "POST /api/v1/runs", "", control.SeverityWarning, "401 Unauthorized: this call needs a bearer token (Authorization: Bearer <token>)"},
		{"POST", "/api/v1/runs", "not-a-token", `{"kind": "switchover", "to": "west"}`, 401,
			"anonymous", "POST /api/v1/runs", "", control.SeverityWarning, "401 Unauthorized: the bearer token matches no configured token"},
		{"POST", "/api/v1/runs", "view-token", `{"kind": "switchover", "to": "west"}`, 403,
			"watcher", "POST /api/v1/runs", "", control.SeverityWarning, `403 Forbidden: token "watcher" has role viewer; this call needs operator`},
		{"POST", "/api/v1/runs", "ops-token", `{"kind": "switchover", "to": "west", "reason": "pssst-reason", "colour": "red"}`, 400,
			"ops", "POST /api/v1/runs", "", control.SeverityWarning, `400 Bad Request: request body: json: unknown field "colour"`},
		{"POST", "/api/v1/runs/r-42/approve", "ops-token", `{}`, 404,
			"ops", "POST /api/v1/runs/{id}/approve", "r-42", control.SeverityWarning, `404 Not Found: no run "r-42" (see GET /api/v1/runs)`},
		{"DELETE", "/api/v1/status", "admin-token", ``, 405,
			"anonymous", "DELETE /api/v1/status (no route)", "", control.SeverityWarning, "405 Method Not Allowed: DELETE is not allowed on /api/v1/status (allowed: GET)"},
		{"POST", "/api/v1/runs", "ops-token", `{"kind": "failover", "to": "west", "reason": "pssst-reason"}`, 201,
			"ops", "POST /api/v1/runs", "(created)", control.SeverityInfo, "201 Created"},
	} {
		before := len(audits())
		resp, body := call(c.method, c.path, c.token, c.body)
		if resp.StatusCode != c.code {
			t.Fatalf("%s %s: %d %s, want %d", c.method, c.path, resp.StatusCode, body, c.code)
		}
		if resp.Header.Get(HeaderAudit) != "" {
			t.Errorf("%s %s: %s: %s", c.method, c.path, HeaderAudit, resp.Header.Get(HeaderAudit))
		}
		all := audits()
		if len(all) != before+1 {
			t.Fatalf("%s %s (%d): %d audit entries, want one more than %d: %+v", c.method, c.path, c.code, len(all), before, all)
		}
		e := all[len(all)-1]
		if c.run == "(created)" {
			var run runbook.Run
			json.Unmarshal([]byte(body), &run)
			c.run = run.ID
			if run.ID == "" {
				t.Fatalf("created run: %s", body)
			}
		}
		if e.Actor != c.actor || e.Source != "127.0.0.1" || e.Action != c.action || e.Status != fmt.Sprint(c.code) || e.Run != c.run ||
			e.Severity != c.severity || e.Message != c.message || e.Hash == "" {
			t.Errorf("%s %s (%d): audit entry %+v\nwant actor %q, source 127.0.0.1, action %q, status %d, run %q, severity %s, message %q",
				c.method, c.path, c.code, e, c.actor, c.action, c.code, c.run, c.severity, c.message)
		}
		if strings.Contains(e.Message, "pssst") {
			t.Errorf("the audit entry holds the request body: %+v", e)
		}
	}

	// Reading the trail needs an admin, and is not itself a mutation.
	before := len(audits())
	for _, path := range []string{"/api/v1/audit", "/api/v1/audit/verify"} {
		for _, c := range []struct {
			token string
			code  int
			text  string
		}{
			{"", 401, "needs a bearer token"},
			{"view-token", 403, `token \"watcher\" has role viewer; this call needs admin`},
			{"ops-token", 403, `token \"ops\" has role operator; this call needs admin`},
		} {
			if resp, body := call("GET", path, c.token, ""); resp.StatusCode != c.code || !strings.Contains(body, c.text) {
				t.Errorf("GET %s with %q: %d %s; want %d %q", path, c.token, resp.StatusCode, body, c.code, c.text)
			}
		}
	}
	resp, body := call("GET", "/api/v1/audit/verify", "admin-token", "")
	var rep control.VerifyReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil || resp.StatusCode != 200 || !rep.Intact || rep.Checked < 8 || rep.Head == "" {
		t.Fatalf("verify: %d %s (%v)", resp.StatusCode, body, err)
	}
	if resp, body := call("GET", "/api/v1/audit?since=yesterday", "admin-token", ""); resp.StatusCode != 400 || !strings.Contains(body, `since=\"yesterday\": not an RFC 3339 time`) {
		t.Errorf("bad since: %d %s", resp.StatusCode, body)
	}

	// The export: stored lines, trailers that make it verifiable alone.
	resp, body = call("GET", "/api/v1/audit?since="+time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), "admin-token", "")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("export: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	var first, last control.Event
	json.Unmarshal([]byte(lines[0]), &first)
	json.Unmarshal([]byte(lines[len(lines)-1]), &last)
	tr := resp.Trailer
	if tr.Get(HeaderAuditCount) != fmt.Sprint(len(lines)) || tr.Get(HeaderAuditFirst) != "1" || tr.Get(HeaderAuditLast) != fmt.Sprint(last.Seq) ||
		tr.Get(HeaderAuditHead) != last.Hash || tr.Get(HeaderAuditPrev) != "" || first.Seq != 1 || tr.Get(HeaderAuditError) != "" {
		t.Errorf("export trailers %v for %d lines (last %d %s)", tr, len(lines), last.Seq, last.Hash)
	}
	if rep, err := control.VerifyExport(strings.NewReader(body), tr.Get(HeaderAuditPrev), tr.Get(HeaderAuditHead)); err != nil || !rep.Intact || rep.Checked != uint64(len(lines)) {
		t.Errorf("the export does not verify: %s %v", rep, err)
	}
	if got := len(audits()); got != before {
		t.Errorf("reading the trail added %d audit entries", got-before)
	}
	resp, body = call("GET", "/api/v1/audit?since="+time.Now().Add(time.Hour).UTC().Format(time.RFC3339), "admin-token", "")
	if resp.StatusCode != 200 || body != "" || resp.Trailer.Get(HeaderAuditCount) != "0" {
		t.Errorf("empty export: %d %q %v", resp.StatusCode, body, resp.Trailer)
	}

	// Tampering straight into etcd: verify answers 409 and names it.
	victim := audits()[3]
	victim.Actor = "someone-else"
	b, _ := json.Marshal(victim)
	if _, err := store.Client().Put(t.Context(), fmt.Sprintf("/lifeboat/audittest/events/%020d", victim.Seq), string(b)); err != nil {
		t.Fatal(err)
	}
	resp, body = call("GET", "/api/v1/audit/verify", "admin-token", "")
	rep = control.VerifyReport{}
	json.Unmarshal([]byte(body), &rep)
	if resp.StatusCode != 409 || rep.Intact || rep.Broken == nil || rep.Broken.Message != fmt.Sprintf("entry %d: edited (hash mismatch)", victim.Seq) {
		t.Errorf("verify after tampering: %d %s", resp.StatusCode, body)
	}
}
