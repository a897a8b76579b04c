package httpproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
	"github.com/lifeboat-dr/lifeboat/traffic"
)

// backend is a real HTTP server for one region; it names its region in
// every answer.
type backend struct {
	region string
	srv    *http.Server
	url    string
	hits   atomic.Int64
	fail   atomic.Bool // answer 503
	last   atomic.Value
}

func newBackend(t testing.TB, region, ip string) *backend {
	t.Helper()
	b := &backend{region: region}
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	b.url = "http://" + l.Addr().String()
	b.srv = &http.Server{Handler: http.HandlerFunc(b.serve)}
	go b.srv.Serve(l)
	t.Cleanup(func() { b.srv.Close() })
	return b
}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	b.hits.Add(1)
	b.last.Store(r.Header.Clone())
	switch {
	case r.Header.Get("Upgrade") == "websocket":
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		io.Copy(conn, rw) // echo
	case b.fail.Load():
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	case r.URL.Path == "/stream":
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "data: token-%d\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(200 * time.Millisecond)
		}
	default:
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s host=%s body=%s", b.region, r.Method, r.URL.Path, r.Host, body)
	}
}

// verdicts is the health input of the router, set by the test.
type verdicts struct {
	mu sync.Mutex
	m  map[health.Key]health.Verdict
}

func (v *verdicts) set(service, region string, s health.State) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = map[health.Key]health.Verdict{}
	}
	v.m[health.Key{Service: service, Region: region}] = health.Verdict{State: s}
}

func (v *verdicts) Verdicts() map[health.Key]health.Verdict {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[health.Key]health.Verdict{}
	for k, s := range v.m {
		out[k] = s
	}
	return out
}

type env struct {
	east, west *backend
	state      *traffic.MemState
	router     *traffic.Router
	verdicts   *verdicts
	proxy      *Proxy
	base       string
	client     *http.Client
}

func setup(t testing.TB) *env { return setupWith(t, Options{EjectFor: time.Minute}) }

// setupWith starts the proxy with opts in front of two backends.
func setupWith(t testing.TB, opts Options) *env {
	t.Helper()
	e := &env{east: newBackend(t, "east", "127.0.0.1"), west: newBackend(t, "west", "127.0.0.2"), verdicts: &verdicts{}}
	port := testenv.FreePort(t)
	doc := fmt.Sprintf(`cluster: px
regions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
services:
  - name: web
    kind: http
    endpoints: {east: %q, west: %q}
  - name: api
    kind: http
    endpoints: {east: %q, west: %q}
traffic:
  http:
    listen: 127.0.0.1:%d
    routes:
      - {host: www.shop.example, service: web}
      - {host: www.shop.example, path_prefix: /api/, service: api}
`, e.east.url, e.west.url, e.east.url, e.west.url, port)
	cfg := testenv.Config(t, doc)
	var err error
	for _, s := range []string{"web", "api"} {
		e.verdicts.set(s, "east", health.Up)
		e.verdicts.set(s, "west", health.Up)
	}
	e.state = traffic.NewMemState("east", 1)
	e.router = traffic.NewRouter(cfg, e.state, e.verdicts, 10*time.Millisecond)
	e.router.Open()
	e.proxy, err = New(cfg, e.router, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.proxy.Open(); err != nil {
		t.Fatal(err)
	}
	e.base = "http://" + e.proxy.Addr()
	e.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.proxy.Close(ctx)
		e.router.Close(ctx)
		e.client.CloseIdleConnections()
	})
	return e
}

func (e *env) do(t testing.TB, method, path, host, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, e.base+path, strings.NewReader(body))
	req.Host = host
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRouting(t *testing.T) {
	e := setup(t)
	if code, body := e.do(t, "GET", "/index.html", "www.shop.example", ""); code != 200 || body != "east GET /index.html host=www.shop.example body=" {
		t.Errorf("web: %d %q", code, body)
	}
	if code, body := e.do(t, "POST", "/api/orders", "WWW.shop.example:443", "x=1"); code != 200 || !strings.HasPrefix(body, "east POST /api/orders") || !strings.HasSuffix(body, "body=x=1") {
		t.Errorf("api: %d %q", code, body)
	}
	// Only configured hosts: no open proxy.
	if code, body := e.do(t, "GET", "/", "evil.example", ""); code != 404 || !strings.Contains(body, `no route for host "evil.example"`) {
		t.Errorf("unknown host: %d %q", code, body)
	}
	req, _ := http.NewRequest("GET", e.base+"/h", nil)
	req.Host = "www.shop.example"
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.Header.Set("Connection", "close, X-Secret-Hop")
	req.Header.Set("X-Secret-Hop", "1")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h := e.east.last.Load().(http.Header)
	if h.Get("X-Forwarded-For") != "127.0.0.1" || h.Get("X-Forwarded-Host") != "www.shop.example" || h.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("forwarding headers: %v", h)
	}
	if h.Get("X-Secret-Hop") != "" {
		t.Error("a header named in Connection was forwarded")
	}
	// The switch of the active region applies to the next request.
	e.state.Switch("west", 2)
	if _, body := e.do(t, "GET", "/", "www.shop.example", ""); !strings.HasPrefix(body, "west ") {
		t.Errorf("after switch: %q", body)
	}
}

func TestRetryAndEject(t *testing.T) {
	e := setup(t)
	// East answers 503: a GET is retried on west, east is ejected.
	e.east.fail.Store(true)
	if code, body := e.do(t, "GET", "/", "www.shop.example", ""); code != 200 || !strings.HasPrefix(body, "west ") {
		t.Fatalf("GET on a failing east: %d %q", code, body)
	}
	eastHits := e.east.hits.Load()
	if code, body := e.do(t, "GET", "/again", "www.shop.example", ""); code != 200 || !strings.HasPrefix(body, "west ") || e.east.hits.Load() != eastHits {
		t.Errorf("ejected east still tried first: %d %q", code, body)
	}
	if r := e.proxy.Routes(); r[0].Region != "west" && r[1].Region != "west" {
		t.Errorf("routes status: %+v", r)
	}
	// A POST that reached a failing backend is not retried.
	e.east.fail.Store(false)
	e2 := setup(t)
	e2.east.fail.Store(true)
	if code, _ := e2.do(t, "POST", "/api/pay", "www.shop.example", "amount=5"); code != 503 {
		t.Errorf("POST answered 503 by east: got %d, want the 503 passed through", code)
	}
	// A POST to a dead backend never reached it: retried on west.
	e3 := setup(t)
	e3.east.srv.Close()
	if code, body := e3.do(t, "POST", "/api/pay", "www.shop.example", "amount=5"); code != 200 || !strings.HasPrefix(body, "west POST") || !strings.HasSuffix(body, "amount=5") {
		t.Errorf("POST to a dead east: %d %q", code, body)
	}
	// Both dead: a clear 502.
	e3.west.srv.Close()
	if code, body := e3.do(t, "GET", "/", "www.shop.example", ""); code != 502 || !strings.Contains(body, `bad gateway: service "web"`) {
		t.Errorf("all dead: %d %q", code, body)
	}
}

func TestStreamingPassesThrough(t *testing.T) {
	e := setup(t)
	req, _ := http.NewRequest("GET", e.base+"/stream", nil)
	req.Host = "www.shop.example"
	start := time.Now()
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: token-0\n" {
		t.Fatalf("first event: %q %v", line, err)
	}
	// The first token arrives before the backend finished (3 × 200ms).
	if took := time.Since(start); took > 350*time.Millisecond {
		t.Errorf("first event after %s: the stream was buffered", took)
	}
}

func TestWebSocketUpgrade(t *testing.T) {
	e := setup(t)
	conn, err := net.Dial("tcp", e.proxy.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: www.shop.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	conn.Write([]byte("ping"))
	buf := make([]byte, 4)
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
		t.Errorf("echo through the upgraded connection: %q %v", buf, err)
	}
}

func TestBadRequests(t *testing.T) {
	e := setup(t)
	conn, err := net.Dial("tcp", e.proxy.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: www.shop.example\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 200<<10))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("oversized header: %v %v", resp, err)
	}
	conn2, _ := net.Dial("tcp", e.proxy.Addr())
	defer conn2.Close()
	conn2.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn2, "POST / HTTP/1.1\r\nHost: www.shop.example\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")
	resp, err = http.ReadResponse(bufio.NewReader(conn2), nil)
	if err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("conflicting Content-Length (request smuggling): %v %v", resp, err)
	}
	// The server keeps serving everyone else.
	if code, _ := e.do(t, "GET", "/", "www.shop.example", ""); code != 200 {
		t.Errorf("after bad requests: %d", code)
	}
}

// A body over the bound is refused (413) without reaching a backend; a
// client that asks to close its connection has it closed after the
// answer, though the proxy keeps its own to the backend.
func TestBodyBoundAndConnectionClose(t *testing.T) {
	e := setupWith(t, Options{EjectFor: time.Minute, MaxBodyBytes: 1024})
	if code, body := e.do(t, "POST", "/api/orders", "www.shop.example", strings.Repeat("x", 1000)); code != 200 || !strings.HasSuffix(body, strings.Repeat("x", 1000)) {
		t.Errorf("a body within the bound: %d %q", code, body)
	}
	hits := e.east.hits.Load()
	if code, _ := e.do(t, "POST", "/api/orders", "www.shop.example", strings.Repeat("x", 2000)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("a body over the bound: %d, want 413", code)
	}
	if e.east.hits.Load() != hits {
		t.Error("a body over the bound reached the backend")
	}
	conn, err := net.Dial("tcp", e.proxy.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /bye HTTP/1.1\r\nHost: www.shop.example\r\nConnection: close\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("Connection: close: %v %v", resp, err)
	}
	io.ReadAll(resp.Body)
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("the connection stayed open after the answer to Connection: close: %v", err)
	}
	if h := e.east.last.Load().(http.Header); h.Get("Connection") == "close" {
		t.Error("the client's Connection: close was passed to the backend")
	}
}

// During a switchover with a hold, clients see zero failed requests: the
// requests that arrive while held wait and go to the new active region.
func TestHoldForSwitchover(t *testing.T) {
	e := setup(t)
	var ok, failed, toWest atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", e.base+"/api/orders", strings.NewReader("order"))
				req.Host = "www.shop.example"
				resp, err := e.client.Do(req)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %s", resp.StatusCode, b))
					continue
				}
				ok.Add(1)
				if strings.HasPrefix(string(b), "west") {
					toWest.Add(1)
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	// The switchover: hold, let in-flight requests finish, stop the old
	// primary, commit the switch, release.
	e.state.Hold()
	time.Sleep(100 * time.Millisecond)
	e.east.srv.Close()
	e.state.Switch("west", 2)
	e.state.Release()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed during the switchover; first: %v", failed.Load(), failed.Load()+ok.Load(), firstErr.Load())
	}
	if toWest.Load() == 0 || ok.Load() < 20 {
		t.Errorf("%d requests ok, %d to west", ok.Load(), toWest.Load())
	}
}
