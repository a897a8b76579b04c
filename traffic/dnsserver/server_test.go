package dnsserver

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
	"github.com/lifeboat-dr/lifeboat/observe"
	"github.com/lifeboat-dr/lifeboat/traffic"
)

// backend is a real HTTP server on a loopback address of its own.
func backend(t *testing.T, ip string) (*http.Server, string) {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return srv, "http://" + l.Addr().String()
}

type stack struct {
	cfg    *config.Config
	node   *observe.Node
	state  *traffic.MemState
	router *traffic.Router
	dns    *Server
	addr   string
}

func start(t *testing.T, doc string) *stack {
	t.Helper()
	cfg := testenv.Config(t, doc)
	var err error
	s := &stack{cfg: cfg, addr: cfg.Traffic.DNS.Listen}
	s.node, err = observe.New(cfg, observe.Options{Observer: "dns-test"})
	if err != nil {
		t.Fatal(err)
	}
	s.state = traffic.NewMemState(cfg.ActiveRegion(), 1)
	s.router = traffic.NewRouter(cfg, s.state, s.node, 20*time.Millisecond)
	s.dns, err = New(cfg, s.router, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []interface{ Open() error }{s.node, s.router, s.dns} {
		if err := c.Open(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.dns.Close(ctx)
		s.router.Close(ctx)
		s.node.Close(ctx)
	})
	return s
}

// dig runs the real dig against the server.
func dig(t *testing.T, addr string, args ...string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	all := append([]string{"@" + host, "-p", port, "+time=2", "+tries=1"}, args...)
	out, err := exec.Command("dig", all...).CombinedOutput()
	if err != nil {
		if _, lerr := exec.LookPath("dig"); lerr != nil {
			t.Fatalf("dig not found (apt-get install -y dnsutils): %v", lerr)
		}
		t.Fatalf("dig %v: %v\n%s", all, err, out)
	}
	return string(out)
}

func TestDNSWithDig(t *testing.T) {
	eastSrv, east := backend(t, "127.0.0.1")
	_, west := backend(t, "127.0.0.2")
	port := testenv.FreePort(t)
	doc := fmt.Sprintf(`cluster: shop
regions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
services:
  - name: web
    kind: http
    critical: true
    endpoints: {east: %q, west: %q}
    health: {interval: 50ms, timeout: 40ms, fall: 2, rise: 1}
  - name: api
    kind: http
    endpoints: {east: "http://api-east.internal:8080", west: "http://api-west.internal:8080"}
    health: {interval: 1s, timeout: 40ms}
traffic:
  dns:
    listen: 127.0.0.1:%d
    zone: Shop.Example.
    ttl: 7s
    records:
      - {name: www, service: web, policy: failover}
      - {name: all, service: web, policy: multivalue}
      - {name: api, service: api}
`, east, west, port)
	s := start(t, doc)
	addr := s.addr

	// Cold start answers from the config's priorities at once.
	if got := strings.TrimSpace(dig(t, addr, "www.shop.example", "A", "+short")); got != "127.0.0.1" {
		t.Fatalf("cold start www = %q, want 127.0.0.1", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(dig(t, addr, "all.shop.example", "A", "+short"), "\n") != 2 || s.router.Decide("web", "multivalue", nil).Mode != traffic.ModeHealthy {
		if time.Now().After(deadline) {
			t.Fatal("both regions never healthy")
		}
		time.Sleep(20 * time.Millisecond)
	}
	out := dig(t, addr, "www.shop.example", "A", "+noall", "+answer")
	if !strings.Contains(out, "www.shop.example.\t7\tIN\tA\t127.0.0.1") {
		t.Errorf("answer with TTL 7:\n%s", out)
	}
	out = dig(t, addr, "_lifeboat.shop.example", "TXT", "+short")
	if strings.TrimSpace(out) != `"active=east epoch=1"` {
		t.Errorf("TXT = %q", out)
	}
	if out := dig(t, addr, "api.shop.example", "A", "+noall", "+answer"); !strings.Contains(out, "CNAME\tapi-east.internal.") {
		t.Errorf("hostname endpoint: want a CNAME:\n%s", out)
	}
	if out := dig(t, addr, "example.com", "A"); !strings.Contains(out, "status: REFUSED") {
		t.Errorf("outside the zone:\n%s", out)
	}
	out = dig(t, addr, "nope.shop.example", "A")
	if !strings.Contains(out, "status: NXDOMAIN") || !strings.Contains(out, "flags: qr aa") || !strings.Contains(out, "SOA") {
		t.Errorf("unknown name:\n%s", out)
	}
	if out := dig(t, addr, "www.shop.example", "AAAA"); !strings.Contains(out, "status: NOERROR") || !strings.Contains(out, "ANSWER: 0") {
		t.Errorf("NODATA:\n%s", out)
	}
	if out := dig(t, addr, "shop.example", "NS", "+short"); strings.TrimSpace(out) != "ns.shop.example." {
		t.Errorf("NS = %q", out)
	}
	if out := dig(t, addr, "shop.example", "SOA", "+short"); !strings.HasPrefix(out, "ns.shop.example. hostmaster.shop.example. 2 ") {
		t.Errorf("SOA = %q", out)
	}
	if out := dig(t, addr, "+tcp", "www.shop.example", "A", "+short"); strings.TrimSpace(out) != "127.0.0.1" {
		t.Errorf("over TCP = %q", out)
	}

	// Kill east's backend: the answer moves to west.
	killed := time.Now()
	eastSrv.Close()
	for {
		got := strings.TrimSpace(dig(t, addr, "www.shop.example", "A", "+short"))
		if got == "127.0.0.2" {
			break
		}
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("www still %q 10s after east died", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("answer moved %s after the kill", time.Since(killed).Round(time.Millisecond))
	if got := strings.TrimSpace(dig(t, addr, "all.shop.example", "A", "+short")); got != "127.0.0.2" {
		t.Errorf("multivalue after the kill = %q", got)
	}
	// A switch of the epoch shows in the TXT record at once.
	s.state.Switch("west", 2)
	time.Sleep(50 * time.Millisecond)
	if out := strings.TrimSpace(dig(t, addr, "_lifeboat.shop.example", "TXT", "+short")); out != `"active=west epoch=2"` {
		t.Errorf("TXT after switch = %q", out)
	}
}

// Many endpoints: the UDP answer is truncated and dig retries over TCP.
func TestDNSTruncationAndTCP(t *testing.T) {
	const n = 60
	var regions, endpoints strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&regions, "  - {name: r%d, priority: %d}\n", i, i)
		fmt.Fprintf(&endpoints, "      r%d: http://127.0.1.%d:80\n", i, i)
	}
	port := testenv.FreePort(t)
	doc := fmt.Sprintf(`cluster: big
regions:
%sservices:
  - name: web
    kind: http
    endpoints:
%s    health: {interval: 1h, timeout: 1s}
traffic:
  dns:
    listen: 127.0.0.1:%d
    zone: big.example.
    records:
      - {name: all, service: web, policy: multivalue}
`, regions.String(), endpoints.String(), port)
	s := start(t, doc)
	out := dig(t, s.addr, "all.big.example", "A", "+noedns")
	if !strings.Contains(out, "Truncated, retrying in TCP mode") || !strings.Contains(out, fmt.Sprintf("ANSWER: %d", n)) {
		t.Errorf("want truncation then all %d answers over TCP:\n%.600s", n, out)
	}
	// A Go client with EDNS0 and a 4096-byte buffer gets them over UDP in
	// one answer of at most 1232 bytes.
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion("all.big.example.", dns.TypeA)
	m.SetEdns0(4096, false)
	r, _, err := c.Exchange(m, s.addr)
	if err != nil {
		t.Fatal(err)
	}
	if r.Truncated {
		if len(r.Answer) >= n {
			t.Errorf("truncated answer has all %d records", len(r.Answer))
		}
	} else if len(r.Answer) != n {
		t.Errorf("EDNS answer has %d records, want %d", len(r.Answer), n)
	}
	if opt := r.IsEdns0(); opt == nil || opt.UDPSize() != maxUDP {
		t.Errorf("EDNS0 OPT in answer = %v", opt)
	}
	r.Compress = true
	packed, _ := r.Pack()
	if len(packed) > maxUDP {
		t.Errorf("UDP answer of %d bytes, over %d", len(packed), maxUDP)
	}
}

func TestDNSBadQueries(t *testing.T) {
	port := testenv.FreePort(t)
	s := start(t, fmt.Sprintf(`cluster: q
regions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
services:
  - name: web
    kind: http
    endpoints: {east: "http://127.0.0.1:1", west: "http://127.0.0.2:1"}
traffic:
  dns: {listen: "127.0.0.1:%d", zone: q.example., records: [{name: www, service: web}]}
`, port))
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	ask := func(m *dns.Msg) *dns.Msg {
		t.Helper()
		r, _, err := c.Exchange(m, s.addr)
		if err != nil {
			t.Fatalf("%v: %v", m.Question, err)
		}
		return r
	}
	m := new(dns.Msg)
	m.SetQuestion("www.q.example.", dns.TypeA)
	m.Opcode = dns.OpcodeUpdate
	if r := ask(m); r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("UPDATE: rcode %s", dns.RcodeToString[r.Rcode])
	}
	m = new(dns.Msg)
	m.SetQuestion("www.q.example.", dns.TypeA)
	m.Question = append(m.Question, m.Question[0])
	if r := ask(m); r.Rcode != dns.RcodeFormatError {
		t.Errorf("two questions: rcode %s", dns.RcodeToString[r.Rcode])
	}
	m = new(dns.Msg)
	m.SetQuestion("www.q.example.", dns.TypeA)
	m.Question[0].Qclass = dns.ClassCHAOS
	if r := ask(m); r.Rcode != dns.RcodeRefused {
		t.Errorf("CHAOS: rcode %s", dns.RcodeToString[r.Rcode])
	}
	m = new(dns.Msg)
	m.SetQuestion("www.q.example.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().SetVersion(1)
	if r := ask(m); r.Rcode != dns.RcodeBadVers {
		t.Errorf("EDNS version 1: rcode %s", dns.RcodeToString[r.Rcode])
	}
	// Garbage on the wire is dropped and the server keeps answering.
	conn, err := net.Dial("udp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte{0xde, 0xad, 0xbe, 0xef, 0x01})
	conn.Close()
	m = new(dns.Msg)
	m.SetQuestion("www.q.example.", dns.TypeA)
	if r := ask(m); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("after garbage: %v", r)
	}
}

// FuzzAnswer feeds malformed packets to the handler: it must not panic, and
// whatever it answers must pack.
func FuzzAnswer(f *testing.F) {
	cfg, err := config.Parse(strings.NewReader(`cluster: f
regions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
services:
  - name: web
    kind: http
    endpoints: {east: "http://127.0.0.1:1", west: "http://[::1]:1"}
  - name: api
    kind: http
    endpoints: {east: "http://a.internal", west: "http://b.internal"}
traffic:
  dns: {listen: "127.0.0.1:0", zone: f.example., records: [{name: www, service: web, policy: multivalue}, {name: api, service: api}, {name: "@", service: web}]}
`))
	if err != nil {
		f.Fatal(err)
	}
	router := traffic.NewRouter(cfg, traffic.NewMemState("east", 1), nil, time.Second)
	s, err := New(cfg, router, nil)
	if err != nil {
		f.Fatal(err)
	}
	for _, q := range []struct {
		name string
		t    uint16
	}{{"www.f.example.", dns.TypeA}, {"f.example.", dns.TypeANY}, {"api.f.example.", dns.TypeAAAA}, {"x.org.", dns.TypeMX}} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.t)
		m.SetEdns0(4096, true)
		b, _ := m.Pack()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, packet []byte) {
		req := new(dns.Msg)
		if err := req.Unpack(packet); err != nil {
			return // the server drops what does not unpack
		}
		resp := s.answer(req)
		if resp == nil {
			return
		}
		resp.Truncate(dns.MinMsgSize)
		if _, err := resp.Pack(); err != nil {
			t.Fatalf("answer does not pack: %v\n%v", err, resp)
		}
	})
}
