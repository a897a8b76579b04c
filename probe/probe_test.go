package probe

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

func healthCfg(mut func(*config.Health)) config.Health {
	h := config.DefaultHealth()
	h.Method, h.Path, h.ExpectStatus = "GET", "/healthz", "200-399"
	if mut != nil {
		mut(&h)
	}
	return h
}

func TestHTTPProbe(t *testing.T) {
	var gotHeader, gotPath, gotHost string
	status, body := 200, "ok: ready"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHeader, gotPath, gotHost = r.Header.Get("X-Probe"), r.URL.Path, r.Host
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	defer srv.Close()
	client := &http.Client{Transport: NewTransport()}
	p, err := NewHTTP(client, srv.URL+"/base/", healthCfg(func(h *config.Health) {
		h.BodyContains = "ready"
		h.Headers = map[string]string{"X-Probe": "lifeboat", "Host": "api.shop.example"}
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if r := p.Probe(ctx); r.Err != nil {
		t.Fatalf("healthy server: %v", r.Err)
	}
	if gotHeader != "lifeboat" || gotPath != "/base/healthz" || gotHost != "api.shop.example" {
		t.Errorf("request header %q path %q host %q", gotHeader, gotPath, gotHost)
	}
	status = 503
	if r := p.Probe(ctx); r.Err == nil || r.Err.Error() != "status 503, want 200-399" {
		t.Errorf("503: %v", r.Err)
	}
	status, body = 200, "starting"
	if r := p.Probe(ctx); r.Err == nil || !strings.Contains(r.Err.Error(), `body does not contain "ready"`) {
		t.Errorf("body: %v", r.Err)
	}
	srv.Close()
	if r := p.Probe(ctx); r.Err == nil || !strings.Contains(r.Err.Error(), "connection refused") {
		t.Errorf("closed server: %v", r.Err)
	}
}

// A server that accepts and never answers: the probe returns at the
// context's deadline.
func TestHTTPProbeDeadline(t *testing.T) {
	addr := testenv.Blackhole(t)
	p, _ := NewHTTP(&http.Client{Transport: NewTransport()}, "http://"+addr, healthCfg(nil))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	r := p.Probe(ctx)
	if r.Err == nil || time.Since(start) > time.Second {
		t.Errorf("blackhole: %v after %s", r.Err, time.Since(start))
	}
}

func TestTCPProbe(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	p := NewTCP(addr)
	if r := p.Probe(context.Background()); r.Err != nil {
		t.Fatalf("open port: %v", r.Err)
	}
	l.Close()
	if r := p.Probe(context.Background()); r.Err == nil || !strings.Contains(r.Err.Error(), "connection refused") {
		t.Errorf("closed port: %v", r.Err)
	}
}

func TestVersion(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Model-Version", "llama3-8b-q4")
		json.NewEncoder(w).Encode(map[string]any{"model": map[string]any{"version": "gpt-4o-2024-08-06", "rev": 7}, "data": []any{map[string]any{"id": "m1"}}})
	}))
	defer srv.Close()
	client := &http.Client{Transport: NewTransport()}
	cases := []struct {
		v    config.VersionProbe
		want string
	}{
		{config.VersionProbe{URL: "/v1/models", JSONField: "model.version"}, "gpt-4o-2024-08-06"},
		{config.VersionProbe{URL: "/v1/models", JSONField: "model.rev"}, "7"},
		{config.VersionProbe{URL: "/v1/models", JSONField: "data.0.id"}, "m1"},
		{config.VersionProbe{URL: srv.URL + "/{region}/info", Header: "X-Model-Version"}, "llama3-8b-q4"},
	}
	for _, c := range cases {
		vp, err := NewVersion(client, srv.URL, "east", c.v)
		if err != nil {
			t.Fatal(err)
		}
		got, err := vp.Fetch(context.Background())
		if err != nil || got != c.want {
			t.Errorf("%+v: %q, %v; want %q", c.v, got, err, c.want)
		}
	}
	vp, _ := NewVersion(client, srv.URL, "east", config.VersionProbe{URL: "/", JSONField: "model.missing"})
	if _, err := vp.Fetch(context.Background()); err == nil || !strings.Contains(err.Error(), `no field "model.missing"`) {
		t.Errorf("missing field: %v", err)
	}
}
