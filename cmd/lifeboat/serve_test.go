package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

// syncBuffer is a bytes.Buffer safe for the serving goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestServeAndStatus(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	east := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer east.Close()
	west := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer west.Close()
	port := testenv.FreePort(t)
	dnsPort, httpPort, pgPort := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	path := filepath.Join(t.TempDir(), "lifeboat.yaml")
	doc := fmt.Sprintf(`cluster: shop
api:
  listen: 127.0.0.1:%d
regions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
services:
  - name: web
    kind: http
    critical: true
    endpoints: {east: %q, west: %q}
    health: {interval: 100ms, timeout: 80ms, rise: 1}
  - name: db
    kind: postgres
    critical: true
    endpoints:
      east: postgres://lifeboat:${DB_PASSWORD}@127.0.0.1:%d/postgres?sslmode=disable
      west: postgres://lifeboat:${DB_PASSWORD}@127.0.0.1:%d/postgres?sslmode=disable
    health: {interval: 100ms, timeout: 80ms, rise: 1}
    replication: {heartbeat: 100ms}
traffic:
  dns:
    listen: 127.0.0.1:%d
    zone: shop.example.
    records: [{name: www, service: web}]
  http:
    listen: 127.0.0.1:%d
    routes: [{host: www.shop.example, service: web}]
  postgres:
    - {listen: "127.0.0.1:%d", service: db, role: writer}
`, port, east.URL, west.URL, pg.Primary.Port, pg.Standby.Port, dnsPort, httpPort, pgPort)
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"DB_PASSWORD": pg.Primary.Password}

	stderr := serving(t, env, pg.Primary.Password, "-c", path, "--node", "east-1", "--data-dir", t.TempDir())

	server := fmt.Sprintf("http://127.0.0.1:%d", port)
	var table string
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, errs, code := run(t, nil, "status", "--server", server)
		table = out
		if code == 0 && strings.Contains(out, "standby west: ready") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed west ready: exit %d\n%s\n%s\nserve stderr:\n%s", code, out, errs, stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("status:\n%s", table)
	if strings.Contains(table, "UNHEALTHY") {
		t.Error("the single etcd member is reported unhealthy")
	}
	if !strings.Contains(table, "healthy, etcd leader") {
		t.Errorf("the single etcd member is not shown as etcd's leader:\n%s", table)
	}
	for _, want := range []string{"cluster shop, active region east, seen by east-1", "REGION", "control plane: leader east-1, quorum (this node: east-1)", "  member east-1 http://127.0.0.1:", "east    active   up", "db*", "primary", "standby", "EXPOSURE",
		"traffic: active east, epoch 1", "dns www.shop.example. (failover, ttl 30s)", "http www.shop.example/", fmt.Sprintf("postgres writer 127.0.0.1:%d", pgPort)} {
		if !strings.Contains(table, want) {
			t.Errorf("status table lacks %q:\n%s", want, table)
		}
	}

	out, _, code := run(t, nil, "status", "--server", server, "--json")
	if code != 0 {
		t.Fatalf("status --json: exit %d", code)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json is not JSON: %v", err)
	}
	if st["active_region"] != "east" {
		t.Errorf("active_region = %v", st["active_region"])
	}
	requireKeys(t, "regions[0]", st["regions"].([]any)[0], "name", "role", "state", "reason", "since")
	svc := st["services"].([]any)[1]
	requireKeys(t, "services[1]", svc, "name", "kind", "endpoints")
	requireKeys(t, "services[1].endpoints[0]", svc.(map[string]any)["endpoints"].([]any)[0], "region", "health", "role", "latency_ms", "error")
	requireKeys(t, "exposure[0]", st["exposure"].([]any)[0], "service", "lag_seconds", "lag_bytes", "status")
	requireKeys(t, "readiness[0]", st["readiness"].([]any)[0], "region", "ready", "reasons")
	if strings.Contains(out, pg.Primary.Password) {
		t.Error("status JSON shows the database password")
	}
	tr, _ := st["traffic"].(map[string]any)
	if tr == nil {
		t.Fatalf("status JSON has no traffic section")
	}
	if pgs := tr["postgres"].([]any); len(pgs) != 1 || pgs[0].(map[string]any)["region"] != "east" {
		t.Errorf("traffic.postgres = %v", tr["postgres"])
	}
	if recs := tr["dns"].([]any); len(recs) != 1 || fmt.Sprint(recs[0].(map[string]any)["answers"]) != "[127.0.0.1]" {
		t.Errorf("traffic.dns = %v", tr["dns"])
	}
	// The data plane serves: the writer endpoint reaches the primary.
	c, err := pgx.Connect(context.Background(), fmt.Sprintf("postgres://lifeboat:%s@127.0.0.1:%d/postgres?sslmode=disable", pg.Primary.Password, pgPort))
	if err != nil {
		t.Fatalf("writer endpoint: %v", err)
	}
	var inRecovery bool
	c.QueryRow(context.Background(), "SELECT pg_is_in_recovery()").Scan(&inRecovery)
	c.Close(context.Background())
	if inRecovery {
		t.Error("the writer endpoint reached a standby")
	}

	// The event stream has the initial epoch and the verdicts.
	out, errs, code := run(t, nil, "events", "--server", server)
	if code != 0 || !strings.Contains(out, "initial state: active east, epoch 1") || !strings.Contains(out, "web in east: unknown → up") {
		t.Errorf("events: exit %d %s\n%s", code, errs, out)
	}

	// The same node through -c.
	if _, errs, code := run(t, env, "status", "-c", path); code != 0 {
		t.Errorf("status -c: exit %d: %s", code, errs)
	}
}

// serving runs lifeboat serve in-process with args until the test ends,
// then checks it stopped cleanly and never logged secret. It returns its
// stderr.
func serving(t *testing.T, env map[string]string, secret string, args ...string) *syncBuffer {
	t.Helper()
	var stdout, stderr syncBuffer
	a := newApp(&stdout, &stderr)
	a.lookupEnv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.run(ctx, append([]string{"serve"}, args...)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("serve did not stop within 15s of its context")
		}
		if secret != "" && strings.Contains(stderr.String(), secret) {
			t.Error("serve logged a secret")
		}
	})
	return &stderr
}

func requireKeys(t *testing.T, where string, v any, keys ...string) {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Errorf("%s is not an object: %v", where, v)
		return
	}
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Errorf("%s lacks %q: %v", where, k, m)
		}
	}
}

func TestStatusNoServer(t *testing.T) {
	port := testenv.FreePort(t)
	_, errs, code := run(t, nil, "status", "--server", fmt.Sprintf("http://127.0.0.1:%d", port))
	if code != 1 || !strings.Contains(errs, "is lifeboat serve running?") {
		t.Errorf("exit %d: %s", code, errs)
	}
	_, errs, code = run(t, nil, "status", "--server", "ftp://x")
	if code != 2 || !strings.Contains(errs, `--server "ftp://x" is not an http:// or https:// URL`) {
		t.Errorf("bad --server: exit %d: %s", code, errs)
	}
	_, errs, code = run(t, nil, "serve", "-c", "../../examples/minimal.yaml", "--log-level", "loud")
	if code != 2 || !strings.Contains(errs, `--log-level "loud"`) {
		t.Errorf("bad --log-level: exit %d: %s", code, errs)
	}
}
