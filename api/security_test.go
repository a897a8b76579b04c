package api

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// 401 and 403 say what is wrong: no header, a malformed one, an unknown
// token, a role too low (and which role the call needs).
func TestAuthMessages(t *testing.T) {
	h := fullServer(t, true).mux()
	for _, c := range []struct {
		method, path, auth string
		code               int
		text, challenge    string
	}{
		{"GET", "/api/v1/runs", "", 401, "this call needs a bearer token (Authorization: Bearer <token>)", `Bearer realm="lifeboat"`},
		{"GET", "/api/v1/runs", "Basic dXNlcjpwdw==", 401, `malformed Authorization header: it must be "Bearer <token>"`, `error="invalid_request"`},
		{"GET", "/api/v1/runs", "Bearer", 401, `malformed Authorization header: "Bearer" without a token`, `error="invalid_request"`},
		{"GET", "/api/v1/runs", "Bearer a b", 401, "with no space in the token", `error="invalid_request"`},
		{"GET", "/api/v1/runs", "viewer-token", 401, `malformed Authorization header`, `error="invalid_request"`},
		{"GET", "/api/v1/runs", "Bearer nope", 401, "the bearer token matches no configured token", `error="invalid_token"`},
		{"POST", "/api/v1/runs", "Bearer viewer-token", 403, `token "watcher" has role viewer; this call needs operator`, `error="insufficient_scope"`},
		{"GET", "/api/v1/audit/verify", "Bearer operator-token", 403, `token "ops" has role operator; this call needs admin`, `error="insufficient_scope"`},
	} {
		w := serve(h, c.method, c.path, "", "", "Authorization", c.auth)
		var e Error
		json.Unmarshal(w.Body.Bytes(), &e)
		if w.Code != c.code || !strings.Contains(e.Error, c.text) || !strings.Contains(w.Header().Get("WWW-Authenticate"), c.challenge) {
			t.Errorf("%s %s with %q: %d %s (WWW-Authenticate %q); want %d %q (%q)", c.method, c.path, c.auth, w.Code, w.Body, w.Header().Get("WWW-Authenticate"), c.code, c.text, c.challenge)
		}
	}
	// The scheme is case-insensitive.
	if w := serve(h, "GET", "/api/v1/runs", "", "", "Authorization", "bearer viewer-token"); w.Code != 200 {
		t.Errorf("lower-case bearer: %d %s", w.Code, w.Body)
	}
	// Config.API's tokens stand for the runs' configuration's.
	rs := topology(t, false)
	api := topology(t, true).Config.API
	s := New(Config{Status: fixedStatus{}, Runs: rs, API: api})
	if w := serve(s.Handler(), "GET", "/api/v1/runs", "", ""); w.Code != 401 {
		t.Errorf("tokens from Config.API: %d %s", w.Code, w.Body)
	}
	if w := serve(s.Handler(), "GET", "/api/v1/runs", "admin-token", ""); w.Code != 200 {
		t.Errorf("a token of Config.API: %d %s", w.Code, w.Body)
	}
}

// Without tokens, the API listens on loopback only and says so; with
// tokens, where it is told.
func TestLoopbackWithoutTokens(t *testing.T) {
	for _, c := range []struct {
		listen string
		tokens bool
		want   string
		moved  bool
	}{
		{"0.0.0.0:7480", false, "127.0.0.1:7480", true},
		{":7480", false, "127.0.0.1:7480", true},
		{"[::]:7480", false, "127.0.0.1:7480", true},
		{"192.168.1.20:7480", false, "127.0.0.1:7480", true},
		{"lifeboat.example:7480", false, "127.0.0.1:7480", true},
		{"127.0.0.1:7480", false, "127.0.0.1:7480", false},
		{"127.0.0.2:7480", false, "127.0.0.2:7480", false},
		{"[::1]:7480", false, "[::1]:7480", false},
		{"localhost:7480", false, "localhost:7480", false},
		{"0.0.0.0:7480", true, "0.0.0.0:7480", false},
		{"192.168.1.20:7480", true, "192.168.1.20:7480", false},
	} {
		if got, moved := listenAddr(c.listen, c.tokens); got != c.want || moved != c.moved {
			t.Errorf("listenAddr(%q, tokens %v) = %q, %v; want %q, %v", c.listen, c.tokens, got, moved, c.want, c.moved)
		}
	}

	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	open := func(cfg Config) *Server {
		t.Helper()
		cfg.Status, cfg.Logger = fixedStatus{}, logger
		return openServer(t, cfg)
	}
	for _, listen := range []string{"0.0.0.0:0", ":0"} {
		logs.Reset()
		s := open(Config{Listen: listen, Runs: topology(t, false)})
		host, _, _ := net.SplitHostPort(s.Addr())
		if host != "127.0.0.1" || s.URL() != "http://"+s.Addr() {
			t.Errorf("%s without tokens: listening on %s (%s)", listen, s.Addr(), s.URL())
		}
		if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, "configured="+listen) || !strings.Contains(l, "listening="+s.Addr()) ||
			!strings.Contains(l, "no API tokens configured: the API listens on loopback only") {
			t.Errorf("%s: the warning names not both addresses:\n%s", listen, l)
		}
	}
	// Already on loopback: a warning that it is open to local callers.
	logs.Reset()
	s := open(Config{API: topology(t, false).Config.API, Listen: "127.0.0.1:0"})
	if l := logs.String(); !strings.Contains(l, "every local caller is an admin") {
		t.Errorf("loopback without tokens: %s", l)
	}
	// With tokens, where it is told, and no warning.
	logs.Reset()
	s = open(Config{Listen: "0.0.0.0:0", Runs: topology(t, true)})
	if host, _, _ := net.SplitHostPort(s.Addr()); host == "127.0.0.1" || strings.Contains(logs.String(), "WARN") {
		t.Errorf("with tokens: listening on %s\n%s", s.Addr(), logs.String())
	}
}

// Without tokens, only requests to a loopback name are answered: a page
// cannot reach the API by rebinding its own name to 127.0.0.1.
func TestHostWithoutTokens(t *testing.T) {
	h := fullServer(t, false).mux()
	for host, want := range map[string]int{"127.0.0.1:7480": 200, "localhost:7480": 200, "[::1]:7480": 200, "app.localhost": 200,
		"evil.example:7480": 403, "192.168.1.20:7480": 403, "": 403} {
		w := serveHost(h, host)
		if w.Code != want {
			t.Errorf("Host %q: %d %s, want %d", host, w.Code, w.Body, want)
		}
	}
	if w := serveHost(h, "evil.example"); !strings.Contains(w.Body.String(), `Host \"evil.example\" refused: without API tokens`) {
		t.Errorf("refusal: %s", w.Body)
	}
	// With tokens, the token decides.
	if w := serveHost(fullServer(t, true).mux(), "lifeboat.example"); w.Code != 401 {
		t.Errorf("with tokens: %d %s", w.Code, w.Body)
	}
}

func serveHost(h http.Handler, host string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", "/api/v1/runs", nil)
	r.Host = host
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// Mutating calls must be same-origin and JSON; body-less calls need no
// Content-Type; no CORS header is ever sent.
func TestCrossOrigin(t *testing.T) {
	h := fullServer(t, false).mux()
	const sw = `{"kind": "switchover", "to": "west", "dry_run": true}`
	for _, c := range []struct {
		name, path, body string
		header           []string
		code             int
		text             string
	}{
		{"same origin", "/api/v1/runs", sw, []string{"Origin", "http://127.0.0.1:7480", "Sec-Fetch-Site", "same-origin"}, 200, "switchover east → west"},
		{"localhost is another origin than 127.0.0.1", "/api/v1/runs", sw, []string{"Origin", "http://localhost:7480"}, 403, "cross-origin request refused"},
		{"other origin", "/api/v1/runs", sw, []string{"Origin", "https://evil.example"}, 403, `cross-origin request refused: Origin \"https://evil.example\" is not this server (127.0.0.1:7480)`},
		{"other port", "/api/v1/runs", sw, []string{"Origin", "http://127.0.0.1:8080"}, 403, "cross-origin request refused"},
		{"other scheme", "/api/v1/runs", sw, []string{"Origin", "https://127.0.0.1"}, 403, "cross-origin request refused"},
		{"null origin", "/api/v1/runs", sw, []string{"Origin", "null"}, 403, "cross-origin request refused"},
		{"cross-site fetch", "/api/v1/runs", sw, []string{"Sec-Fetch-Site", "cross-site"}, 403, "cross-origin request refused (Sec-Fetch-Site: cross-site)"},
		{"Sec-Fetch-Site same-origin", "/api/v1/runs", sw, []string{"Sec-Fetch-Site", "same-origin"}, 200, "plan"},
		{"cross-origin cancel without a body", "/api/v1/runs/r-1/cancel", "", []string{"Origin", "http://evil.example"}, 403, "cross-origin request refused"},
		{"form post", "/api/v1/runs", "kind=switchover&to=west", []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, `Content-Type \"application/x-www-form-urlencoded\": a request body must be JSON`},
		{"text/plain", "/api/v1/runs", sw, []string{"Content-Type", "text/plain"}, 415, "a request body must be JSON"},
		{"no content type", "/api/v1/runs", sw, []string{"Content-Type", ""}, 415, "the request has a body but no Content-Type"},
		{"json with charset", "/api/v1/runs", sw, []string{"Content-Type", "application/json; charset=utf-8"}, 200, "plan"},
		{"cancel without a body or content type", "/api/v1/runs/r-1/cancel", "", nil, 404, `no run \"r-1\"`},
		{"cancel with {}", "/api/v1/runs/r-1/cancel", "{}", nil, 404, `no run \"r-1\"`},
	} {
		w := serve(h, "POST", c.path, "", c.body, c.header...)
		if w.Code != c.code || !strings.Contains(w.Body.String(), c.text) {
			t.Errorf("%s: %d %s; want %d %q", c.name, w.Code, w.Body, c.code, c.text)
		}
		for k := range w.Header() {
			if strings.HasPrefix(k, "Access-Control-") {
				t.Errorf("%s: CORS header %s", c.name, k)
			}
		}
	}
	// A preflight finds no CORS either.
	w := serve(h, "OPTIONS", "/api/v1/runs", "", "", "Origin", "https://evil.example", "Access-Control-Request-Method", "POST")
	for k := range w.Header() {
		if strings.HasPrefix(k, "Access-Control-") {
			t.Errorf("preflight: CORS header %s", k)
		}
	}
	if w.Code != 405 {
		t.Errorf("preflight: %d", w.Code)
	}
	// Reads are not refused for their origin (a page may embed nothing
	// of them anyway: JSON, no CORS).
	if w := serve(h, "GET", "/api/v1/status", "", "", "Origin", "https://evil.example"); w.Code != 200 {
		t.Errorf("cross-origin read: %d", w.Code)
	}
}

// Mutating calls are limited per caller: its token, else its address;
// reads are not.
func TestRateLimit(t *testing.T) {
	rs := topology(t, true)
	s := New(Config{Status: fixedStatus{}, Runs: rs, RateLimit: RateLimit{PerMinute: 6, Burst: 2}})
	h := s.Handler()
	approve := func(token, addr string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "http://127.0.0.1:7480/api/v1/runs/r-1/approve", strings.NewReader(`{}`))
		r.RemoteAddr = addr + ":1234"
		r.Header.Set("Content-Type", "application/json")
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for i := range 2 {
		if w := approve("operator-token", "10.0.0.1"); w.Code != 404 {
			t.Fatalf("call %d: %d %s", i+1, w.Code, w.Body)
		}
	}
	w := approve("operator-token", "10.0.0.2") // the same token from elsewhere
	if w.Code != 429 || w.Header().Get("Retry-After") != "10" ||
		!strings.Contains(w.Body.String(), `too many calls: token \"ops\" may make 6 mutating calls a minute, 2 at once; retry in 10 s`) {
		t.Errorf("third call: %d %v %s", w.Code, w.Header(), w.Body)
	}
	if w := approve("admin-token", "10.0.0.1"); w.Code != 404 {
		t.Errorf("another token: %d %s", w.Code, w.Body)
	}
	// Without a known token: by address.
	for i := range 2 {
		if w := approve("nope", "10.0.0.3"); w.Code != 401 {
			t.Fatalf("unknown token, call %d: %d %s", i+1, w.Code, w.Body)
		}
	}
	if w := approve("", "10.0.0.3"); w.Code != 429 || !strings.Contains(w.Body.String(), "address 10.0.0.3") {
		t.Errorf("third call from 10.0.0.3: %d %s", w.Code, w.Body)
	}
	if w := approve("", "10.0.0.4"); w.Code != 401 {
		t.Errorf("another address: %d %s", w.Code, w.Body)
	}
	// Calls that match no route count too (they are audited).
	for i, want := range []int{405, 405, 429} {
		r := httptest.NewRequest("DELETE", "http://127.0.0.1:7480/api/v1/status", nil)
		r.RemoteAddr = "10.0.0.5:1234"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("DELETE %d: %d %s, want %d", i+1, w.Code, w.Body, want)
		}
	}
	// Reads are not limited.
	for i := range 20 {
		if w := serve(h, "GET", "/api/v1/runs", "viewer-token", ""); w.Code != 200 {
			t.Fatalf("read %d: %d %s", i+1, w.Code, w.Body)
		}
	}

	// The bucket refills at the rate, and is forgotten once full.
	l := newLimiter(RateLimit{PerMinute: 60, Burst: 2})
	now := time.Now()
	if l.reserve("a", now) != 0 || l.reserve("a", now) != 0 {
		t.Fatal("the burst is refused")
	}
	if d := l.reserve("a", now); d != time.Second {
		t.Errorf("wait = %s, want 1s", d)
	}
	if d := l.reserve("a", now.Add(time.Second)); d != 0 {
		t.Errorf("after a second: wait %s", d)
	}
	l.reserve("b", now.Add(time.Second))
	l.reserve("c", now.Add(4*time.Second))
	if len(l.callers) != 1 || l.callers["c"] == nil {
		t.Errorf("callers kept: %v", l.callers)
	}
	if newLimiter(RateLimit{PerMinute: -1}) != nil {
		t.Error("a negative rate limits")
	}
	if d := newLimiter(RateLimit{}); d.perMinute != DefaultRatePerMinute || d.burst != DefaultRateBurst {
		t.Errorf("defaults: %+v", d)
	}
}
