package pgproxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
	"github.com/lifeboat-dr/lifeboat/netfilter"
	"github.com/lifeboat-dr/lifeboat/sockmap"
	"github.com/lifeboat-dr/lifeboat/traffic"
)

func TestMain(m *testing.M) { testenv.MainWithLeakCheck(m) }

// verdicts says every endpoint is up unless marked down: the reader's
// choice of standby needs health; the writer's does not, but the kernel
// does not carry its connections to a server known down.
type verdicts struct {
	mu   sync.Mutex
	down map[string]bool
}

func (v *verdicts) Verdicts() map[health.Key]health.Verdict {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[health.Key]health.Verdict{}
	for _, r := range []string{"east", "west"} {
		st := health.Up
		if v.down[r] {
			st = health.Down
		}
		out[health.Key{Service: "db", Region: r}] = health.Verdict{State: st}
	}
	return out
}

func (v *verdicts) markDown(region string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.down[region] = true
}

// natForwarder lets the kernel's NAT carry the writer's connections.
type natForwarder struct{ n *netfilter.NAT }

func (f natForwarder) Forward(l netip.AddrPort, r Forward) error {
	return f.n.Set(l, netfilter.Route(r))
}
func (f natForwarder) Unforward(l netip.AddrPort) error { return f.n.Delete(l) }

// kernel is how the kernel may carry the endpoint's connections: not at
// all, splicing them (a BPF sockhash), or translating them (NAT) with
// the splicer for those it does not.
func kernel(t *testing.T, mode string) Options {
	t.Helper()
	if mode == "user relay" {
		return Options{}
	}
	if os.Geteuid() != 0 {
		t.Fatalf("the %s needs root (CI runs as root)", mode)
	}
	s, err := sockmap.Open()
	if err != nil {
		t.Fatalf("load the kernel relay: %v", err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	if mode == "kernel relay" {
		return Options{Splicer: s}
	}
	n, err := netfilter.Open(nil)
	if err != nil {
		t.Fatalf("the kernel's NAT: %v", err)
	}
	t.Cleanup(func() { n.Close(context.Background()) })
	return Options{Splicer: s, Forwarder: natForwarder{n}}
}

var modes = []string{"user relay", "kernel relay", "kernel nat"}

type env struct {
	verdicts       *verdicts
	pg             *testenv.PGPair
	state          *traffic.MemState
	router         *traffic.Router
	writer, reader *Proxy
}

func setup(t *testing.T) *env { return setupWith(t, Options{}) }

// setupWith starts the writer and reader endpoints with opts.
func setupWith(t *testing.T, opts Options) *env {
	t.Helper()
	e := &env{pg: testenv.StartPostgres(t, testenv.PGOptions{}), verdicts: &verdicts{down: map[string]bool{}}}
	wport, rport := testenv.FreePort(t), testenv.FreePort(t)
	doc := fmt.Sprintf(`cluster: pg
regions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
services:
  - name: db
    kind: postgres
    endpoints: {east: %q, west: %q}
traffic:
  postgres:
    - {listen: "127.0.0.1:%d", service: db, role: writer}
    - {listen: "127.0.0.1:%d", service: db, role: reader}
`, e.pg.Primary.DSN(), e.pg.Standby.DSN(), wport, rport)
	cfg := testenv.Config(t, doc)
	var err error
	e.state = traffic.NewMemState("east", 1)
	e.router = traffic.NewRouter(cfg, e.state, e.verdicts, 10*time.Millisecond)
	e.router.Open()
	e.writer, err = New(cfg, cfg.Traffic.Postgres[0], e.router, opts)
	if err != nil {
		t.Fatal(err)
	}
	e.reader, err = New(cfg, cfg.Traffic.Postgres[1], e.router, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*Proxy{e.writer, e.reader} {
		if err := p.Open(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.writer.Close(ctx)
		e.reader.Close(ctx)
		e.router.Close(ctx)
	})
	return e
}

// dsn is a DSN for the endpoint at addr with the cluster's password.
func (e *env) dsn(addr, sslmode string) string {
	return fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=%s&connect_timeout=5", testenv.PGUser, e.pg.Primary.Password, addr, sslmode)
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect through the endpoint: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func role(t *testing.T, c *pgx.Conn) (inRecovery bool, port int) {
	t.Helper()
	if err := c.QueryRow(context.Background(), "SELECT pg_is_in_recovery(), current_setting('port')::int").Scan(&inRecovery, &port); err != nil {
		t.Fatal(err)
	}
	return inRecovery, port
}

// The writer follows the primary, whoever carries the bytes: Lifeboat
// copying them, the kernel splicing them, or the kernel's NAT.
func TestWriterAcrossPrimaryChange(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) { writerAcrossPrimaryChange(t, kernel(t, mode)) })
	}
}

func writerAcrossPrimaryChange(t *testing.T, opts Options) {
	e := setupWith(t, opts)
	// Counted by the endpoint: what it relays (the NAT's are not).
	relayed, kernel, nat := 1, 0, opts.Forwarder != nil
	switch {
	case nat:
		relayed = 0
	case opts.Splicer != nil:
		kernel = 1
	}
	waitNAT(t, e.writer, nat)
	old := connect(t, e.dsn(e.writer.Addr(), "prefer")) // SSLRequest answered 'N'
	if rec, port := role(t, old); rec || port != e.pg.Primary.Port {
		t.Fatalf("writer landed on recovery=%v port %d, want the primary %d", rec, port, e.pg.Primary.Port)
	}
	// A large answer crosses intact.
	var big string
	if err := old.QueryRow(context.Background(), "SELECT repeat('x', 3000000)").Scan(&big); err != nil || len(big) != 3000000 || strings.Trim(big, "x") != "" {
		t.Fatalf("a 3 MB answer through the endpoint: %d bytes, %v", len(big), err)
	}
	if st := e.writer.Status(); st.Connections != relayed || st.KernelRelayed != kernel || st.NAT != nat {
		t.Errorf("writer status = %+v, want %d relayed, %d carried by the kernel, nat %v", st, relayed, kernel, nat)
	}
	if _, err := old.Exec(context.Background(), "CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	r := connect(t, e.dsn(e.reader.Addr(), "disable"))
	if rec, port := role(t, r); !rec || port != e.pg.Standby.Port {
		t.Errorf("reader landed on recovery=%v port %d, want the standby %d", rec, port, e.pg.Standby.Port)
	}

	// The primary changes: the standby is promoted, then the epoch commits.
	e.pg.Standby.Exec(t, "SELECT pg_promote(wait => true)")
	if err := e.state.Switch("west", 2); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, err := old.Exec(context.Background(), "INSERT INTO t VALUES (1)"); err != nil {
			break // closed by the endpoint
		}
		if time.Now().After(deadline) {
			t.Fatal("a connection to the old primary still takes writes after the epoch changed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	fresh := connect(t, e.dsn(e.writer.Addr(), "disable"))
	if rec, port := role(t, fresh); rec || port != e.pg.Standby.Port {
		t.Errorf("new writer connection on recovery=%v port %d, want the new primary %d", rec, port, e.pg.Standby.Port)
	}
	if _, err := fresh.Exec(context.Background(), "INSERT INTO t VALUES (2)"); err != nil {
		t.Errorf("write on the new primary: %v", err)
	}
	if st := e.writer.Status(); st.Region != "west" || st.Epoch != 2 || st.Connections != relayed || st.KernelRelayed != kernel || st.NAT != nat {
		t.Errorf("writer status = %+v", st)
	}
}

func TestPsqlAndTLSRefusal(t *testing.T) {
	e := setup(t)
	out, err := exec.Command("psql", e.dsn(e.writer.Addr(), "prefer"), "-Atc", "SELECT 'hello from ' || current_setting('port')").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != fmt.Sprintf("hello from %d", e.pg.Primary.Port) {
		t.Errorf("psql through the writer: %v %s", err, out)
	}
	_, err = pgx.Connect(context.Background(), e.dsn(e.writer.Addr(), "require"))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("sslmode=require: %v, want the server's refusal of TLS", err)
	}
}

// waitNAT waits until the endpoint's kernel route is as wanted (it
// follows the router, which follows state and verdicts).
func waitNAT(t *testing.T, p *Proxy, want bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for p.Status().NAT != want {
		if time.Now().After(deadline) {
			t.Fatalf("the kernel's route: %+v, want nat %v", p.Status(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A hold: new connections wait (the kernel no longer takes them
// straight to the old primary) and land on the new one; a primary known
// down: a clear error, not a hang or a bare refusal.
func TestHoldAndUnreachable(t *testing.T) {
	for _, mode := range []string{"user relay", "kernel nat"} {
		t.Run(mode, func(t *testing.T) { holdAndUnreachable(t, kernel(t, mode)) })
	}
}

func holdAndUnreachable(t *testing.T, opts Options) {
	e := setupWith(t, opts)
	waitNAT(t, e.writer, opts.Forwarder != nil)
	e.state.Hold()
	waitNAT(t, e.writer, false)
	type result struct {
		port int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, e.dsn(e.writer.Addr(), "disable"))
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close(context.Background())
		var port int
		err = c.QueryRow(ctx, "SELECT current_setting('port')::int").Scan(&port)
		done <- result{port, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("connected during the hold: %+v", r)
	case <-time.After(300 * time.Millisecond):
	}
	e.pg.Standby.Exec(t, "SELECT pg_promote(wait => true)")
	e.state.Switch("west", 2)
	e.state.Release()
	r := <-done
	if r.err != nil || r.port != e.pg.Standby.Port {
		t.Errorf("held connection: port %d err %v; want the new primary %d", r.port, r.err, e.pg.Standby.Port)
	}
	// The active region's server is down: a clear error, not a hang.
	waitNAT(t, e.writer, opts.Forwarder != nil)
	e.pg.Standby.Stop(t, "immediate")
	e.verdicts.markDown("west")
	waitNAT(t, e.writer, false)
	_, err := pgx.Connect(context.Background(), e.dsn(e.writer.Addr(), "disable"))
	if err == nil || !strings.Contains(err.Error(), "lifeboat: writer of service db in region west is unreachable") {
		t.Errorf("unreachable primary: %v", err)
	}
}

func TestBadStartup(t *testing.T) {
	e := setup(t)
	for _, junk := range [][]byte{
		{0, 0, 0, 4, 0, 0, 0, 0},             // length below the minimum
		{0x7f, 0xff, 0xff, 0xff, 1, 2, 3, 4}, // 2 GB startup message
		{0, 0, 0, 8, 0, 2, 0, 0},             // protocol 2.0
		[]byte("GET / HTTP/1.1\r\n\r\n"),     // not Postgres at all
	} {
		c, err := net.Dial("tcp", e.writer.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		c.Write(junk)
		buf := make([]byte, 512)
		n, _ := io.ReadAtLeast(c, buf, 1)
		c.Close()
		if n > 0 && buf[0] != 'E' {
			t.Errorf("%q: answered %q, want an ErrorResponse or a closed connection", junk, buf[:n])
		}
	}
	// Still serving everyone else.
	c := connect(t, e.dsn(e.writer.Addr(), "disable"))
	if rec, _ := role(t, c); rec {
		t.Error("after junk: not on the primary")
	}
}

// A node that lost the control plane's quorum cannot know the current
// epoch: its writer endpoint closes what it has and refuses new
// connections (after waiting a bounded moment for the quorum to return),
// with a clear error; the reader keeps serving.
func TestNoQuorumRefusesWrites(t *testing.T) {
	for _, mode := range []string{"user relay", "kernel nat"} {
		t.Run(mode, func(t *testing.T) { noQuorumRefusesWrites(t, kernel(t, mode)) })
	}
}

func noQuorumRefusesWrites(t *testing.T, opts Options) {
	e := setupWith(t, opts)
	waitNAT(t, e.writer, opts.Forwarder != nil)
	old := connect(t, e.dsn(e.writer.Addr(), "disable"))
	reader := connect(t, e.dsn(e.reader.Addr(), "disable"))
	st := e.state.Current()
	st.NoQuorum = true
	if err := e.state.Set(st); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, err := old.Exec(context.Background(), "SELECT 1"); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a writer connection survived the loss of quorum")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, err := pgx.Connect(context.Background(), e.dsn(e.writer.Addr(), "disable"))
	if err == nil || !strings.Contains(err.Error(), "cannot reach a quorum of the control plane") {
		t.Errorf("new writer connection without quorum: %v", err)
	}
	if rec, _ := role(t, reader); !rec {
		t.Error("the reader connection should keep serving from the standby")
	}
	// A lapse shorter than the wait delays a new connection, it does not
	// fail it: it lands on the primary once the state is confirmed again.
	type result struct {
		c   *pgx.Conn
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := pgx.Connect(context.Background(), e.dsn(e.writer.Addr(), "disable"))
		got <- result{c, err}
	}()
	time.Sleep(300 * time.Millisecond)
	st.NoQuorum = false
	e.state.Set(st)
	r := <-got
	if r.err != nil {
		t.Fatalf("a connection made during a short lapse of quorum: %v", r.err)
	}
	defer r.c.Close(context.Background())
	if rec, _ := role(t, r.c); rec {
		t.Error("after quorum returned, the writer is not on the primary")
	}
}
