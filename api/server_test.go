package api

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifeboat-dr/lifeboat/observe"
)

type fixedStatus observe.Status

func (f fixedStatus) Status() observe.Status { return observe.Status(f) }

func TestServer(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "lifeboat_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Inc()
	s := New(Config{Listen: "127.0.0.1:0", Status: fixedStatus{Cluster: "shop", ActiveRegion: "east"}, Gatherer: reg})
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Error(err)
		}
		if err := <-s.Err(); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	base := "http://" + s.Addr()
	get := func(method, path string) (int, string, http.Header) {
		req, _ := http.NewRequest(method, base+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	code, body, hdr := get("GET", "/api/v1/status")
	var st observe.Status
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.ActiveRegion != "east" || hdr.Get("Content-Type") != "application/json" {
		t.Errorf("status: %d %s", code, body)
	}
	if code, body, _ := get("GET", "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("healthz: %d %q", code, body)
	}
	if code, body, _ := get("GET", "/metrics"); code != 200 || !strings.Contains(body, "lifeboat_test_total 1") {
		t.Errorf("metrics: %d %s", code, body)
	}
	code, body, hdr = get("POST", "/api/v1/status")
	if code != 405 || !strings.Contains(body, `"error": "POST is not allowed on /api/v1/status (allowed: GET)"`) || hdr.Get("Allow") != "GET" {
		t.Errorf("POST status: %d %s %v", code, body, hdr)
	}
	if code, body, _ := get("GET", "/api/v1/nope"); code != 404 || !strings.Contains(body, "no such endpoint: /api/v1/nope") {
		t.Errorf("404: %d %s", code, body)
	}
}
