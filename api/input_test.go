package api

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/runbook"
)

// Every mutating endpoint, on a real control plane, with every role and
// every kind of bad input: who may call it, and what a bad body is told.
func TestMutatingInput(t *testing.T) {
	rs := topology(t, true)
	cfg := rs.Config
	cp := openControl(t, cfg)
	rs.Store, rs.State = cp.Runs(), cp.State()
	s := openServer(t, Config{Status: fixedStatus{Cluster: "apitest", ActiveRegion: "east"}, Control: cp, Runs: rs,
		Reports: noReports{}, RateLimit: RateLimit{PerMinute: -1}})
	// One run to approve, cancel and attach drills to.
	plan, err := runbook.Generate(cfg, runbook.Request{Kind: runbook.KindSwitchover, From: "east", To: "west", Severity: "manual"})
	if err != nil {
		t.Fatal(err)
	}
	run := runbook.NewRun(plan, runbook.TriggerManual, "test", "", time.Now())
	if err := cp.Runs().CreateRun(t.Context(), run); err != nil {
		t.Fatal(err)
	}

	call := func(method, path string, header map[string]string, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, s.URL()+path, strings.NewReader(body))
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	const drill = `{"scenario": "kill-east", "fault_at": "2026-03-01T12:00:00Z", "writes_acked": 10, "writes_lost": 0}`
	endpoints := []struct {
		path, good string
		// wantCode and wantText: the answer to a good call by an operator
		// or an admin.
		wantCode int
		wantText string
		// bodyless: the call takes no body.
		bodyless bool
		// wrongType is a body with a value of the wrong type, and the
		// field it names.
		wrongType, field string
	}{
		{"/api/v1/runs", `{"kind": "switchover", "to": "west", "dry_run": true}`, 200, "switchover east → west", false, `{"kind": "switchover", "to": 2}`, `field \"to\": a number where a string is expected`},
		{"/api/v1/runs/" + run.ID + "/approve", `{"step": "hold"}`, 409, "step hold needs no approval", false, `{"step": ["hold"]}`, `field \"step\": an array where a string is expected`},
		{"/api/v1/runs/" + run.ID + "/cancel", ``, 202, `"status": "cancelling"`, true, `{"reason": 1}`, `unknown field \"reason\"`},
		{"/api/v1/runs/" + run.ID + "/drill", drill, 202, `"report": "/api/v1/runs/` + run.ID + `/report"`, false, `{"scenario": "kill-east", "fault_at": 1700000000}`, `field \"fault_at\": `},
	}
	type tc struct {
		name   string
		header map[string]string
		body   string
		code   int
		text   string
	}
	const jsonType = "application/json"
	for _, ep := range endpoints {
		withBody := func(body string) string {
			if ep.bodyless {
				return ""
			}
			return body
		}
		ct := map[string]string{"Content-Type": jsonType}
		if ep.bodyless {
			ct = map[string]string{}
		}
		auth := func(token string) map[string]string {
			h := map[string]string{"Authorization": token}
			for k, v := range ct {
				h[k] = v
			}
			return h
		}
		op := func(extra ...string) map[string]string {
			h := map[string]string{"Authorization": "Bearer operator-token", "Content-Type": jsonType}
			for i := 0; i+1 < len(extra); i += 2 {
				h[extra[i]] = extra[i+1]
			}
			return h
		}
		trailing := ep.good + " {}"
		if ep.bodyless {
			trailing = "{} {}"
		}
		cases := []tc{
			// Roles.
			{"no token", ct, withBody(ep.good), 401, "this call needs a bearer token"},
			{"basic auth", auth("Basic b3BzOnB3"), withBody(ep.good), 401, "malformed Authorization header"},
			{"bearer without a token", auth("Bearer "), withBody(ep.good), 401, "malformed Authorization header"},
			{"unknown token", auth("Bearer guess"), withBody(ep.good), 401, "matches no configured token"},
			{"viewer", auth("Bearer viewer-token"), withBody(ep.good), 403, `token \"watcher\" has role viewer; this call needs operator`},
			{"operator", auth("Bearer operator-token"), withBody(ep.good), ep.wantCode, ep.wantText},
			{"admin", auth("Bearer admin-token"), withBody(ep.good), ep.wantCode, ep.wantText},
			// Bad input.
			{"unknown field", op(), `{"colour": "red"}`, 400, `request body: json: unknown field \"colour\"`},
			{"wrong type", op(), ep.wrongType, 400, ep.field},
			{"trailing data", op(), trailing, 400, "request body: unexpected data after the JSON object"},
			{"trailing garbage", op(), `{} x`, 400, "request body: unexpected data after the JSON object"},
			{"two objects", op(), `{}{}`, 400, "request body: unexpected data after the JSON object"},
			{"too large", op(), `{"reason": "` + strings.Repeat("x", 64<<10) + `"}`, 413, "request body: larger than 64 KiB"},
			{"not an object", op(), `["kind"]`, 400, "request body: must be a JSON object"},
			{"null", op(), `null`, 400, "request body: must be a JSON object"},
			{"cut short", op(), `{"kind": "switch`, 400, "request body: invalid JSON: the object is cut short"},
			{"syntax", op(), `{"kind" "x"}`, 400, "request body: invalid JSON at byte 9: invalid character '\\\"' after object key"},
			{"text/plain", op("Content-Type", "text/plain"), `{}`, 415, "a request body must be JSON"},
			{"form", op("Content-Type", "application/x-www-form-urlencoded"), `a=b`, 415, "a request body must be JSON"},
			{"no content type", map[string]string{"Authorization": "Bearer operator-token"}, `{}`, 415, "the request has a body but no Content-Type"},
			{"cross-origin", op("Origin", "https://evil.example"), withBody(ep.good), 403, "cross-origin request refused"},
			{"cross-site", op("Sec-Fetch-Site", "cross-site"), withBody(ep.good), 403, "cross-origin request refused"},
			{"same origin", op("Origin", s.URL(), "Sec-Fetch-Site", "same-origin"), withBody(ep.good), ep.wantCode, ep.wantText},
		}
		if ep.bodyless {
			cases = append(cases, tc{"empty object", op(), `{}`, ep.wantCode, ep.wantText})
		} else {
			cases = append(cases,
				tc{"empty body", op(), ``, 400, "request body: empty; this call needs a JSON object"},
				tc{"blank body", op(), " \n", 400, "request body: empty; this call needs a JSON object"})
		}
		for _, c := range cases {
			code, body := call("POST", ep.path, c.header, c.body)
			if code != c.code || !strings.Contains(body, c.text) {
				t.Errorf("POST %s, %s: %d %s; want %d %q", ep.path, c.name, code, body, c.code, c.text)
			}
			if code >= 500 {
				t.Errorf("POST %s, %s: %d", ep.path, c.name, code)
			}
		}
	}
	// Nothing refused reached the store: the one run has no drill but the
	// good ones, and no other run was made.
	if runs, _ := cp.Runs().ListRuns(t.Context()); len(runs) != 1 {
		t.Errorf("%d runs", len(runs))
	}
}
