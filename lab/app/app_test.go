package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

func TestMain(m *testing.M) { testenv.MainWithLeakCheck(m) }

// client talks to one app instance.
type client struct {
	t    *testing.T
	base string
	hc   *http.Client
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
	text   string
}

func startApp(t *testing.T, region, dsn string) (*Server, *client) {
	t.Helper()
	return startAppWith(t, Config{Listen: "127.0.0.1:0", Region: region, DSN: dsn})
}

func startAppWith(t *testing.T, cfg Config) (*Server, *client) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
		tr.CloseIdleConnections()
	})
	return s, &client{t: t, base: "http://" + s.Addr(), hc: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

func (c *client) do(method, path, body string) answer {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if d := time.Since(start); d > 3*time.Second {
		c.t.Errorf("%s %s took %s: the app must answer within its timeout", method, path, d)
	}
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, text: string(raw)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &a.body); err != nil {
			c.t.Fatalf("%s %s: answer is not JSON: %v: %s", method, path, err, raw)
		}
	}
	return a
}

func (c *client) post(body string) answer { return c.do(http.MethodPost, "/transactions", body) }

// want fails the test unless the answer has the status and, for an error,
// a message containing every one of texts.
func (a answer) want(t *testing.T, what string, status int, texts ...string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("%s: status %d, want %d: %s", what, a.status, status, a.text)
	}
	if status >= 400 {
		t.Logf("%s: %d %s", what, a.status, strings.TrimSpace(a.text))
	}
	for _, s := range texts {
		msg, _ := a.body["error"].(string)
		if !strings.Contains(msg, s) && !strings.Contains(a.text, s) {
			t.Errorf("%s: answer %q does not mention %q", what, a.text, s)
		}
	}
}

func TestTransactions(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	_, c := startApp(t, "east", pg.Primary.DSN())

	a := c.post(`{"id": 1, "amount": 250, "note": "first"}`)
	a.want(t, "create", http.StatusCreated)
	if a.body["id"] != 1.0 || a.body["region"] != "east" || a.body["epoch_region"] != "east" || a.body["db"] != "primary" {
		t.Errorf("create answered %v, want id 1, region east, epoch_region east, db primary", a.body)
	}
	if got := a.header.Get(RegionHeader); got != "east" {
		t.Errorf("%s = %q, want east", RegionHeader, got)
	}
	var amount int64
	var note, region string
	if err := pg.Primary.QueryRow(t, "SELECT amount, note, region FROM transactions WHERE id = 1").Scan(&amount, &note, &region); err != nil {
		t.Fatalf("row 1 after the acknowledgement: %v", err)
	}
	if amount != 250 || note != "first" || region != "east" {
		t.Errorf("row 1 = %d %q %q", amount, note, region)
	}

	// The same write again (a client retry) is acknowledged again, once stored.
	c.post(`{"id": 1, "amount": 250, "note": "first"}`).want(t, "same content again", http.StatusCreated)
	// A retry through another region's instance reports where the row was written.
	_, west := startApp(t, "west", pg.Primary.DSN())
	a = west.post(`{"id": 1, "amount": 250, "note": "first"}`)
	a.want(t, "same content through west", http.StatusCreated)
	if a.body["region"] != "east" || a.body["epoch_region"] != "west" || a.header.Get(RegionHeader) != "west" {
		t.Errorf("retry through west answered %v (header %q), want region east, epoch_region west", a.body, a.header.Get(RegionHeader))
	}
	c.post(`{"id": 1, "amount": 999, "note": "first"}`).want(t, "other amount", http.StatusConflict, "transaction 1 exists with different content", "amount 250")
	c.post(`{"id": 1, "amount": 250, "note": "changed"}`).want(t, "other note", http.StatusConflict, `note "first"`)
	c.post(`{"id": 2, "amount": 0}`).want(t, "no note, zero amount", http.StatusCreated)

	a = c.do(http.MethodGet, "/transactions/1", "")
	a.want(t, "get", http.StatusOK)
	if a.body["id"] != 1.0 || a.body["amount"] != 250.0 || a.body["note"] != "first" || a.body["region"] != "east" {
		t.Errorf("get answered %v", a.body)
	}
	if ts, _ := a.body["created_at"].(string); ts == "" {
		t.Errorf("get answered no created_at: %v", a.body)
	}
	c.do(http.MethodGet, "/transactions/404", "").want(t, "missing id", http.StatusNotFound, "transaction 404 not found")
	c.do(http.MethodGet, "/transactions/abc", "").want(t, "id not a number", http.StatusBadRequest, `"abc" is not a 64-bit integer`)

	for _, bad := range []struct{ body, text string }{
		{``, "request body is empty"},
		{`{"id": 3, "amount": 1`, "not valid JSON"},
		{`{"id": 3, amount: 1}`, "not valid JSON"},
		{`{"id": "3", "amount": 1}`, `field "id" must be a 64-bit integer, got string`},
		{`{"id": 3.5, "amount": 1}`, `field "id" must be a 64-bit integer`},
		{`{"id": 3, "amount": "ten"}`, `field "amount" must be a 64-bit integer`},
		{`{"id": 3, "amount": 1, "note": 7}`, `field "note" must be a string`},
		{`{"amount": 1}`, `field "id" is required`},
		{`{"id": 3}`, `field "amount" is required`},
		{`{"id": 3, "amount": 1, "amout": 2}`, `unknown field "amout"`},
		{`[1, 2]`, "must be a JSON object"},
		{`{"id": 3, "amount": 1} {"id": 4}`, "more after the JSON object"},
	} {
		c.post(bad.body).want(t, "bad body "+bad.body, http.StatusBadRequest, bad.text)
	}
	var n int
	if err := pg.Primary.QueryRow(t, "SELECT count(*) FROM transactions").Scan(&n); err != nil || n != 2 {
		t.Errorf("%d rows (%v), want 2: bad requests must not write", n, err)
	}

	h := c.do(http.MethodGet, "/healthz", "")
	if h.status != http.StatusOK || h.text != "ok\n" {
		t.Errorf("healthz = %d %q", h.status, h.text)
	}
}

// endpoint stands for the Lifeboat writer endpoint: it splices
// connections to the database, can refuse them (down), and closes every
// connection it made at once, as the endpoint does on a change of epoch.
type endpoint struct {
	ln       net.Listener
	target   string
	up       atomic.Bool
	dropNext atomic.Bool
	mu       sync.Mutex
	conns    []net.Conn
	wg       sync.WaitGroup
}

func startEndpoint(t *testing.T, target string) *endpoint {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &endpoint{ln: ln, target: target}
	e.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !e.up.Load() {
				c.Close()
				continue
			}
			e.mu.Lock()
			to := e.target
			e.mu.Unlock()
			s, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			e.mu.Lock()
			e.conns = append(e.conns, c, s)
			e.mu.Unlock()
			e.wg.Go(func() { e.forward(s, c); s.Close(); c.Close() })
			e.wg.Go(func() { io.Copy(c, s); s.Close(); c.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		e.closeAll()
		e.wg.Wait()
	})
	return e
}

// forward copies what the client sends to the server; when dropNext is
// set, the next message is not forwarded: the connection is closed
// instead, as a statement in flight meets a change of epoch.
func (e *endpoint) forward(server, client net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			if e.dropNext.CompareAndSwap(true, false) {
				return
			}
			if _, werr := server.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// retarget sends new connections to addr, leaving the others be.
func (e *endpoint) retarget(addr string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.target = addr
}

func (e *endpoint) closeAll() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range e.conns {
		c.Close()
	}
	e.conns = nil
}

// withHost is dsn with its host:port replaced.
func withHost(t *testing.T, dsn, hostport string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = hostport
	return u.String()
}

func TestOutages(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	ep := startEndpoint(t, fmt.Sprintf("127.0.0.1:%d", pg.Primary.Port))
	var logs logBuffer
	s, c := startAppWith(t, Config{Listen: "127.0.0.1:0", Region: "east", DSN: withHost(t, pg.Primary.DSN(), ep.ln.Addr().String()),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})

	// The database is unreachable when the app starts: it serves anyway,
	// answers 503 with the reason, and is healthy again once it can reach
	// the database, without a restart.
	c.post(`{"id": 1, "amount": 1}`).want(t, "database unreachable at start", http.StatusServiceUnavailable, "database unreachable")
	if h := c.do(http.MethodGet, "/healthz", ""); h.status != http.StatusServiceUnavailable || !strings.HasPrefix(h.text, "database: ") {
		t.Errorf("healthz with the database unreachable = %d %q", h.status, h.text)
	}
	ep.up.Store(true)
	c.post(`{"id": 1, "amount": 1}`).want(t, "database reachable", http.StatusCreated)
	if !s.tableReady.Load() {
		t.Error("table not marked created after a write")
	}

	// Several pooled connections, then the endpoint closes them all (a
	// change of epoch): the next requests get fresh connections, no 503.
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := range 6 {
		wg.Go(func() {
			if code := c.post(fmt.Sprintf(`{"id": %d, "amount": 2}`, 2+i)).status; code != http.StatusCreated {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d concurrent writes failed", failed.Load())
	}
	for round := range 3 {
		ep.closeAll()
		time.Sleep(20 * time.Millisecond) // the close reaches the app's sockets
		c.post(`{"id": 100, "amount": 100}`).want(t, "write after the endpoint closed every connection", http.StatusCreated)
		if h := c.do(http.MethodGet, "/healthz", ""); h.status != http.StatusOK {
			t.Errorf("round %d: healthz after the endpoint closed every connection = %d %q", round, h.status, h.text)
		}
	}

	// The endpoint closes a connection with a statement on its way (a
	// change of epoch, a lapse of its quorum): the write, which carries
	// its id, is written again on a fresh connection.
	for i, path := range []string{"/transactions", "/transactions/100"} {
		ep.dropNext.Store(true)
		if path == "/transactions" {
			c.post(`{"id": 101, "amount": 101}`).want(t, "write whose connection closed in flight", http.StatusCreated)
		} else {
			c.do(http.MethodGet, path, "").want(t, "read whose connection closed in flight", http.StatusOK)
		}
		if ep.dropNext.Load() {
			t.Errorf("case %d: no statement met the closing connection", i)
		}
	}

	// The database stops: 503 on writes, reads and health; it starts
	// again: the same app works at once.
	pg.Primary.Stop(t, "fast")
	c.post(`{"id": 200, "amount": 1}`).want(t, "database stopped", http.StatusServiceUnavailable, "database")
	c.do(http.MethodGet, "/transactions/1", "").want(t, "read with the database stopped", http.StatusServiceUnavailable)
	h := c.do(http.MethodGet, "/healthz", "")
	if h.status != http.StatusServiceUnavailable || !strings.HasPrefix(h.text, "database: ") {
		t.Errorf("healthz with the database stopped = %d %q", h.status, h.text)
	}
	a := c.post(`{"id": 200, "amount": 1}`)
	if a.header.Get("Retry-After") == "" || a.body["region"] != "east" {
		t.Errorf("503 answer lacks Retry-After or region: %v %v", a.header, a.body)
	}
	pg.Primary.Start(t)
	c.post(`{"id": 200, "amount": 1}`).want(t, "database started again", http.StatusCreated)
	c.do(http.MethodGet, "/transactions/200", "").want(t, "read after the restart", http.StatusOK)
	if h := c.do(http.MethodGet, "/healthz", ""); h.status != http.StatusOK {
		t.Errorf("healthz after the restart = %d %q", h.status, h.text)
	}

	// A fenced primary (read-only): writes are refused with 503 and the
	// reason; reads and health still answer.
	pg.Primary.Exec(t, "ALTER SYSTEM SET default_transaction_read_only = on")
	pg.Primary.Exec(t, "SELECT pg_reload_conf()")
	a = pollStatus(t, c, `{"id": 300, "amount": 3}`, http.StatusServiceUnavailable)
	a.want(t, "read-only primary", http.StatusServiceUnavailable, "read-only", "25006")
	c.do(http.MethodGet, "/transactions/200", "").want(t, "read from the read-only primary", http.StatusOK)
	pg.Primary.Exec(t, "ALTER SYSTEM RESET default_transaction_read_only")
	pg.Primary.Exec(t, "SELECT pg_reload_conf()")
	pollStatus(t, c, `{"id": 300, "amount": 3}`, http.StatusCreated)

	// A switchover: the old primary is fenced but its sessions stay
	// open, and new connections reach the promoted standby. A write on a
	// pooled connection is refused as read-only, which proves nothing
	// committed: the app writes again on a fresh connection, no 503.
	pg.WaitStreaming(t)
	for i := range 4 {
		c.post(fmt.Sprintf(`{"id": %d, "amount": 4}`, 400+i)).want(t, "write before the switchover", http.StatusCreated)
	}
	pg.Primary.Exec(t, "ALTER SYSTEM SET default_transaction_read_only = on")
	pg.Primary.Exec(t, "SELECT pg_reload_conf()")
	pg.Standby.Exec(t, "SELECT pg_promote()")
	ep.retarget(fmt.Sprintf("127.0.0.1:%d", pg.Standby.Port))
	time.Sleep(200 * time.Millisecond) // the reload reaches the pooled sessions
	a = c.post(`{"id": 500, "amount": 5}`)
	a.want(t, "write after the switchover", http.StatusCreated)
	if a.body["db"] != pg.Standby.Name {
		t.Errorf("write after the switchover confirmed by %v, want the promoted %s", a.body["db"], pg.Standby.Name)
	}

	// An outage is logged when it starts and when it ends, not per request.
	text := logs.String()
	if down, up := strings.Count(text, "database unavailable"), strings.Count(text, "database available again"); down < 3 || down > 6 || up < 3 {
		t.Errorf("logged %d outages and %d recoveries for 3 outages:\n%s", down, up, text)
	}
	if !strings.Contains(text, "created table transactions") {
		t.Errorf("table creation not logged:\n%s", text)
	}

	// A database that hangs (accepts, never answers) costs a request its
	// timeout, not more, and a 503.
	_, hc := startApp(t, "east", withHost(t, pg.Primary.DSN(), testenv.Blackhole(t)))
	start := time.Now()
	hc.post(`{"id": 1, "amount": 1}`).want(t, "hung database", http.StatusServiceUnavailable, "database")
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("a hung database took %s to answer, want about the 1.5s timeout", d)
	}
}

// logBuffer collects an app's logs.
type logBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// pollStatus posts body until it gets status (a reload reaches the
// server's sessions within moments), for at most 10s.
func pollStatus(t *testing.T, c *client, body string, status int) answer {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		a := c.post(body)
		if a.status == status || time.Now().After(deadline) {
			return a
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestConfigAndRun(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		text string
	}{
		{Config{Region: "east", DSN: "postgres://u@h/db"}, "no listen address"},
		{Config{Listen: "127.0.0.1:0", DSN: "postgres://u@h/db"}, "no region"},
		{Config{Listen: "127.0.0.1:0", Region: "east"}, "no database DSN"},
		{Config{Listen: "127.0.0.1:0", Region: "east", DSN: "postgres://u@h:notaport/db"}, "not a valid Postgres connection string"},
	} {
		if _, err := New(c.cfg); err == nil || !strings.Contains(err.Error(), c.text) {
			t.Errorf("New(%+v) = %v, want an error mentioning %q", c.cfg, err, c.text)
		}
	}
	// Run serves until its context ends; the database need not be up.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Listen: "127.0.0.1:0", Region: "east", DSN: "postgres://u:p@127.0.0.1:1/db?connect_timeout=1"})
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after its context ended: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	// A busy address is an error from Open.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = Run(context.Background(), Config{Listen: ln.Addr().String(), Region: "east", DSN: "postgres://u@127.0.0.1:1/db"})
	if err == nil || !strings.Contains(err.Error(), "listen on") {
		t.Errorf("Run on a busy address = %v", err)
	}
}

// /livez answers while the database is unreachable: it is the probe of a
// standby region's app.
func TestLivezWithoutDatabase(t *testing.T) {
	s, err := New(Config{Listen: "127.0.0.1:0", Region: "west", DSN: "postgres://u:p@127.0.0.1:1/db?connect_timeout=1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Close(ctx)
	}()
	for path, want := range map[string]int{"/livez": 200, "/healthz": 503} {
		resp, err := http.Get("http://" + s.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want || resp.Header.Get(RegionHeader) != "west" {
			t.Errorf("%s: %d (region %q), want %d", path, resp.StatusCode, resp.Header.Get(RegionHeader), want)
		}
	}
}
