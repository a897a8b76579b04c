package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/testenv"
	"github.com/lifeboat-dr/lifeboat/notify"
)

// The run commands against a serving node over real Postgres: a dry run,
// a switchover that waits for its end, the runs list and one run's JSON,
// and the refusals.
func TestRunCommands(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	port, pgPort := testenv.FreePort(t), testenv.FreePort(t)
	hooks := startHookReceiver(t, "hook-secret")
	model := startModel(t)
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
notify:
  channels:
    - {name: ops, type: webhook, url: "%s", secret: hook-secret, events: [run-started, run-completed, run-failed]}
report:
  llm: {url: "%s", model: test-model, api_key: "${LLM_KEY}", timeout: 5s, retries: 0}
`, port, pg.Primary.Port, pg.Standby.Port,
		pg.Primary.DataDir, pg.Primary.OSUser(), pg.Primary.Bin(), pg.Standby.DataDir, pg.Standby.OSUser(), pg.Standby.Bin(), pgPort,
		hooks.URL, model.URL)
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"DB_PASSWORD": pg.Primary.Password, "LLM_KEY": "sk-test-key-123"}
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
	if r["report"] != "/api/v1/runs/"+id+"/report" {
		t.Errorf("run JSON links no report: %v", r["report"])
	}

	// The leader writes the run's report once it has ended.
	deadline = time.Now().Add(15 * time.Second)
	for {
		out, _, code = run(t, nil, "events", "--server", server)
		if code == 0 && strings.Contains(out, "report of switchover east → west written") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no report written within 15s:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	out, errs, code = run(t, nil, "report", id, "--server", server)
	if code != 0 {
		t.Fatalf("report: exit %d: %s", code, errs)
	}
	for _, want := range []string{"# DR report: switchover east → west", "## 1. Executive summary", "## 2. Timeline of events", "## 3. Current service status",
		"## 4. Data integrity assessment", "## 5. Impact analysis", "## 6. Recommended next steps", "## 7. Estimated recovery timeline",
		"| promote-db-west | promote | postgres.promote | succeeded |", "| RTO | 900 s |", "new primary caught up"} {
		if !strings.Contains(out, want) {
			t.Errorf("report does not contain %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`\| #\d+ \| .* \| epoch \| epoch 2: active region east → west \|`).MatchString(out) {
		t.Errorf("report timeline does not cite the epoch event:\n%s", out)
	}
	if strings.Contains(out, pg.Primary.Password) {
		t.Error("the report shows the database password")
	}
	htmlFile := filepath.Join(t.TempDir(), "report.html")
	_, errs, code = run(t, nil, "report", id, "--format", "html", "-o", htmlFile, "--server", server)
	page, _ := os.ReadFile(htmlFile)
	if code != 0 || !strings.Contains(string(page), "<h2>4. Data integrity assessment</h2>") || strings.Contains(string(page), "<script") {
		t.Errorf("report --format html: exit %d: %s\n%s", code, errs, page)
	}
	out, _, code = run(t, nil, "report", id, "--format", "json", "--server", server)
	var rep struct {
		Facts struct {
			Run struct{ ID, Status string }
		}
	}
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Facts.Run.ID != id || rep.Facts.Run.Status != "succeeded" {
		t.Errorf("report --format json: exit %d\n%s", code, out)
	}
	_, errs, code = run(t, nil, "report", id, "--format", "xml", "--server", server)
	if code != 2 || !strings.Contains(errs, `--format "xml": use md, json or html`) {
		t.Errorf("report --format xml: exit %d: %s", code, errs)
	}
	_, errs, code = run(t, nil, "report", "nope", "--server", server)
	if code != 1 || !strings.Contains(errs, `no run "nope"`) {
		t.Errorf("report nope: exit %d: %s", code, errs)
	}

	// The model invents a figure: its text is rejected, the report keeps
	// the template and says so; no secret reached the model.
	if !strings.Contains(out, `"source": "template"`) || !strings.Contains(out, "rejected") || !strings.Contains(out, "9999") {
		t.Errorf("the report used a narrative with an invented figure:\n%s", out)
	}
	for _, body := range model.bodies() {
		if strings.Contains(body, pg.Primary.Password) || strings.Contains(body, "sk-test-key-123") {
			t.Errorf("a secret was sent to the model:\n%s", body)
		}
	}
	if len(model.bodies()) == 0 {
		t.Error("the model was never asked")
	}

	// The control plane's metrics follow the switch.
	resp, err := http.Get(server + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`lifeboat_leader{node="n1"} 1`, `lifeboat_quorum{node="n1"} 1`, `lifeboat_epoch{active="west",node="n1"} 2`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics has no %s", want)
		}
	}

	// The webhook got the run's start and end, signed.
	got := hooks.wait(t, 10*time.Second, "run-started", "run-completed")
	for _, h := range got {
		if h.run != id {
			t.Errorf("notification %s is about run %q, want %s", h.kind, h.run, id)
		}
	}
}

// hookReceiver is a webhook endpoint that checks each body's signature.
type hookReceiver struct {
	URL    string
	secret string
	mu     sync.Mutex
	got    []hook
	bad    int
}

type hook struct{ kind, run string }

func startHookReceiver(t *testing.T, secret string) *hookReceiver {
	h := &hookReceiver{secret: secret}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		defer h.mu.Unlock()
		if r.Header.Get(notify.HeaderSignature) != notify.Sign([]byte(h.secret), body) {
			h.bad++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var n struct {
			Kind  string `json:"kind"`
			Event struct {
				Run string `json:"run"`
			} `json:"event"`
		}
		json.Unmarshal(body, &n)
		h.got = append(h.got, hook{kind: n.Kind, run: n.Event.Run})
	}))
	t.Cleanup(srv.Close)
	h.URL = srv.URL + "/hook"
	return h
}

// wait returns the notifications received once every kind has come.
func (h *hookReceiver) wait(t *testing.T, limit time.Duration, kinds ...string) []hook {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		h.mu.Lock()
		got, bad := append([]hook(nil), h.got...), h.bad
		h.mu.Unlock()
		seen := map[string]bool{}
		for _, g := range got {
			seen[g.kind] = true
		}
		all := true
		for _, k := range kinds {
			all = all && seen[k]
		}
		if bad > 0 {
			t.Fatalf("%d webhook bodies with a bad signature", bad)
		}
		if all {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook got %+v, want %v", got, kinds)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// model is a chat-completions server whose narrative invents a figure.
type model struct {
	URL string
	mu  sync.Mutex
	got []string
}

func (m *model) bodies() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.got...)
}

func startModel(t *testing.T) *model {
	m := &model{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		m.mu.Lock()
		m.got = append(m.got, string(body))
		m.mu.Unlock()
		content, _ := json.Marshal(map[string]string{"summary": "The switchover finished in 9999 seconds.", "impact": "None.", "next_steps": "None."})
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"id": "c1", "object": "chat.completion", "created": 1, "model": "test-model",
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop", "message": map[string]any{"role": "assistant", "content": string(content)}}}})
	}))
	t.Cleanup(srv.Close)
	m.URL = srv.URL + "/v1"
	return m
}
