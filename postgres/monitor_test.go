package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/testenv"
	"github.com/lifeboat-dr/lifeboat/replication"
)

const testInterval = 200 * time.Millisecond

// openMonitor opens a monitor closed when the test ends.
func openMonitor(t *testing.T, cfg MonitorConfig) *Monitor {
	t.Helper()
	if cfg.Interval == 0 {
		cfg.Interval = testInterval
	}
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	m := NewMonitor(cfg)
	if err := m.Open(); err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return m
}

// testWriter sends the monitor's log to the test's.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// lagOf returns the region's entry of m.Lag().
func lagOf(t *testing.T, m *Monitor, region string) replication.Lag {
	t.Helper()
	for _, l := range m.Lag() {
		if l.Region == region {
			return l
		}
	}
	t.Fatalf("no lag for region %q in %+v", region, m.Lag())
	return replication.Lag{}
}

// waitLag polls the region's lag until cond returns nil, and fails the test
// with cond's last complaint if that takes longer than timeout.
func waitLag(t *testing.T, m *Monitor, region string, timeout time.Duration, cond func(replication.Lag) error) replication.Lag {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		l := lagOf(t, m, region)
		err := cond(l)
		if err == nil {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: after %s: %v\nlast lag: %+v", region, timeout, err, l)
		}
		time.Sleep(testInterval / 4)
	}
}

// healthy accepts a lag that is known, small and not broken.
func healthy(l replication.Lag) error {
	switch {
	case l.Broken:
		return fmt.Errorf("broken: %s", l.Reason)
	case !l.SecondsKnown || !l.BytesKnown:
		return fmt.Errorf("not measured: seconds known %v, bytes known %v (%s)", l.SecondsKnown, l.BytesKnown, l.Reason)
	case l.Seconds >= (2 * testInterval).Seconds():
		return fmt.Errorf("lag %.3fs, want under %s", l.Seconds, 2*testInterval)
	}
	return nil
}

func TestMonitorLagFollowsReplay(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	m := NewMonitor(MonitorConfig{
		Service:  "db",
		Observer: "node-a",
		Primary:  Endpoint{Region: "east", DSN: pg.Primary.DSN()},
		Standbys: []Endpoint{{Region: "west", DSN: pg.Standby.DSN()}},
		Interval: testInterval,
	})
	before := m.Lag()
	if len(before) != 1 || before[0].Region != "west" || before[0].Service != "db" ||
		before[0].SecondsKnown || before[0].BytesKnown || before[0].Reason != "no measurement yet" {
		t.Fatalf("before Open: %+v, want one unmeasured lag for west", before)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatalf("close before open: %v", err)
	}
	m = openMonitor(t, MonitorConfig{
		Service:  "db",
		Observer: "node-a",
		Primary:  Endpoint{Region: "east", DSN: pg.Primary.DSN()},
		Standbys: []Endpoint{{Region: "west", DSN: pg.Standby.DSN()}},
	})

	// Idle: the standby shows the last heartbeat.
	l := waitLag(t, m, "west", 10*time.Second, healthy)
	t.Logf("idle: %+v", l)
	for _, k := range []string{"primary_lsn", "receive_lsn", "replay_lsn"} {
		if l.Details[k] == "" {
			t.Errorf("idle: details lack %s: %v", k, l.Details)
		}
	}
	l = waitLag(t, m, "west", 5*time.Second, func(l replication.Lag) error {
		if l.Details["sync_state"] != "async" || l.Details["state"] != "streaming" {
			return fmt.Errorf("sync_state %q state %q, want async streaming", l.Details["sync_state"], l.Details["state"])
		}
		return healthy(l)
	})
	// It stays so over several rounds.
	for end := time.Now().Add(5 * testInterval); time.Now().Before(end); time.Sleep(testInterval / 4) {
		if err := healthy(lagOf(t, m, "west")); err != nil {
			t.Fatalf("idle standby: %v", err)
		}
	}

	// Paused replay: heartbeats and rows pile up on the standby.
	pg.Standby.Exec(t, "SELECT pg_wal_replay_pause()")
	pg.Primary.Exec(t, "CREATE TABLE pending AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 10000) g")
	l = waitLag(t, m, "west", 10*time.Second, func(l replication.Lag) error {
		switch {
		case l.Broken:
			return fmt.Errorf("broken: %s", l.Reason)
		case !l.SecondsKnown || l.Seconds <= 1:
			return fmt.Errorf("lag %.3fs (known %v), want over 1s", l.Seconds, l.SecondsKnown)
		case !l.BytesKnown || l.Bytes <= 100_000:
			return fmt.Errorf("lag %d bytes (known %v), want over 100kB", l.Bytes, l.BytesKnown)
		}
		return nil
	})
	t.Logf("paused: %+v", l)

	// Resumed: it catches up.
	pg.Standby.Exec(t, "SELECT pg_wal_replay_resume()")
	l = waitLag(t, m, "west", 10*time.Second, healthy)
	t.Logf("resumed: %+v", l)
	var n int
	if err := pg.Standby.QueryRow(t, "SELECT count(*) FROM pending").Scan(&n); err != nil || n != 10000 {
		t.Fatalf("standby after resume: %d rows, %v; want 10000", n, err)
	}
}

func TestMonitorStandbyDown(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	m := openMonitor(t, MonitorConfig{
		Service:  "db",
		Observer: "node-a",
		Primary:  Endpoint{Region: "east", DSN: pg.Primary.DSN()},
		Standbys: []Endpoint{{Region: "west", DSN: pg.Standby.DSN()}},
	})
	waitLag(t, m, "west", 10*time.Second, healthy)

	pg.Standby.Stop(t, "immediate")
	addr := fmt.Sprintf("127.0.0.1:%d", pg.Standby.Port)
	first := waitLag(t, m, "west", 10*time.Second, func(l replication.Lag) error {
		switch {
		case !l.Broken:
			return fmt.Errorf("not broken (lag %.3fs)", l.Seconds)
		case !strings.HasPrefix(l.Reason, "standby unreachable: ") || !strings.Contains(l.Reason, addr):
			return fmt.Errorf("reason %q, want standby unreachable naming %s", l.Reason, addr)
		case !l.SecondsKnown:
			return fmt.Errorf("seconds unknown")
		}
		return nil
	})
	t.Logf("standby down: %+v", first)
	if strings.Contains(first.Reason, pg.Standby.Password) {
		t.Fatalf("reason %q contains the password", first.Reason)
	}
	// The primary goes on writing heartbeats: the lag grows.
	l := waitLag(t, m, "west", 10*time.Second, func(l replication.Lag) error {
		switch {
		case !l.Broken:
			return fmt.Errorf("not broken")
		case !l.SecondsKnown || l.Seconds < first.Seconds+1:
			return fmt.Errorf("lag %.3fs, want it to grow past %.3fs", l.Seconds, first.Seconds+1)
		}
		return nil
	})
	t.Logf("standby down later: %+v", l)
	refused := "standby unreachable: connect " + addr + ": connection refused"
	if l.Reason != refused {
		t.Errorf("reason %q, want %q", l.Reason, refused)
	}
	if !l.BytesKnown || l.Bytes <= 0 {
		t.Errorf("bytes %d (known %v), want them to grow too", l.Bytes, l.BytesKnown)
	}
}

func TestMonitorMisconfigured(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PGOptions{})

	// A "standby" that is the primary itself.
	m := openMonitor(t, MonitorConfig{
		Service:  "db",
		Observer: "node-a",
		Primary:  Endpoint{Region: "east", DSN: pg.Primary.DSN()},
		Standbys: []Endpoint{{Region: "west", DSN: pg.Standby.DSN()}, {Region: "bogus", DSN: pg.Primary.DSN()}},
	})
	l := waitLag(t, m, "bogus", 10*time.Second, func(l replication.Lag) error {
		if l.Reason != "not a replica: pg_is_in_recovery() is false" || !l.Broken {
			return fmt.Errorf("broken %v, reason %q, want not a replica", l.Broken, l.Reason)
		}
		return nil
	})
	if l.SecondsKnown || l.BytesKnown {
		t.Errorf("not a replica: %+v, want no lag figures", l)
	}
	waitLag(t, m, "west", 10*time.Second, healthy)

	// A "primary" that is the standby.
	m2 := openMonitor(t, MonitorConfig{
		Service:  "db",
		Observer: "node-b",
		Primary:  Endpoint{Region: "east", DSN: pg.Standby.DSN()},
		Standbys: []Endpoint{{Region: "west", DSN: pg.Standby.DSN()}},
	})
	waitLag(t, m2, "west", 10*time.Second, func(l replication.Lag) error {
		if l.Reason != "primary endpoint is a standby" || !l.Broken {
			return fmt.Errorf("broken %v, reason %q, want primary endpoint is a standby", l.Broken, l.Reason)
		}
		return nil
	})
}

func TestMonitorUnreachable(t *testing.T) {
	t.Parallel()
	const secret = "monitor-secret-9876"
	primaryPort, standbyPort := testenv.FreePort(t), testenv.FreePort(t)
	dsn := func(port int) string {
		return fmt.Sprintf("postgres://lifeboat:%s@127.0.0.1:%d/postgres?sslmode=disable", secret, port)
	}
	m := openMonitor(t, MonitorConfig{
		Service:  "db",
		Observer: "node-a",
		Primary:  Endpoint{Region: "east", DSN: dsn(primaryPort)},
		Standbys: []Endpoint{{Region: "west", DSN: dsn(standbyPort)}},
	})
	want := fmt.Sprintf("standby unreachable: connect 127.0.0.1:%d: connection refused", standbyPort)
	l := waitLag(t, m, "west", 5*time.Second, func(l replication.Lag) error {
		if !l.Broken || l.Reason != want {
			return fmt.Errorf("broken %v, reason %q, want %q", l.Broken, l.Reason, want)
		}
		return nil
	})
	if l.SecondsKnown || l.BytesKnown {
		t.Errorf("never measured: %+v, want no lag figures", l)
	}
	wantPrimary := fmt.Sprintf("connect 127.0.0.1:%d: connection refused", primaryPort)
	if got := l.Details["primary_error"]; got != wantPrimary {
		t.Errorf("primary_error %q, want %q", got, wantPrimary)
	}
	for k, v := range l.Details {
		if strings.Contains(v, secret) {
			t.Errorf("details[%s] = %q contains the password", k, v)
		}
	}

	// The copy is the caller's.
	l.Details["primary_error"] = "changed"
	if lagOf(t, m, "west").Details["primary_error"] == "changed" {
		t.Error("Lag returned the monitor's own Details map")
	}
}

func TestMonitorLifecycle(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  MonitorConfig
		want string
	}{
		{"no service", MonitorConfig{Observer: "a", Primary: Endpoint{DSN: "postgres://h/db"}}, "Service is empty"},
		{"no observer", MonitorConfig{Service: "db", Primary: Endpoint{DSN: "postgres://h/db"}}, "Observer is empty"},
		{"no primary", MonitorConfig{Service: "db", Observer: "a"}, "Primary.DSN is empty"},
		{"bad standby", MonitorConfig{Service: "db", Observer: "a", Primary: Endpoint{DSN: "postgres://h/db"},
			Standbys: []Endpoint{{Region: "west", DSN: "postgres://u:pw-secret@h:x/db"}}}, `Standbys[0] (region "west"): DSN: invalid DSN`},
	} {
		err := NewMonitor(tc.cfg).Open()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Open: %v, want an error containing %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "pw-secret") {
			t.Errorf("%s: Open: %v contains the password", tc.name, err)
		}
	}

	m := NewMonitor(MonitorConfig{Service: "db", Observer: "a", Primary: Endpoint{DSN: fmt.Sprintf("postgres://127.0.0.1:%d/db", testenv.FreePort(t))}})
	if err := m.Open(); err != nil {
		t.Fatal(err)
	}
	if err := m.Open(); err == nil {
		t.Error("second Open: no error")
	}
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := m.Close(ctx); err != nil {
			t.Errorf("Close %d: %v", i, err)
		}
		cancel()
	}
	if got := m.Lag(); len(got) != 0 {
		t.Errorf("Lag with no standbys: %+v", got)
	}
}

func TestParseLSN(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want lsn
	}{
		{"0/0", 0},
		{"0/3000148", 0x3000148},
		{"16/B374D848", 0x16_B374D848},
		{"FFFFFFFF/FFFFFFFF", 1<<64 - 1},
	} {
		got, err := parseLSN(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseLSN(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
		if got.String() != tc.in {
			t.Errorf("lsn(%q).String() = %q", tc.in, got)
		}
	}
	for _, in := range []string{"", "0", "x/1", "1/", "100000000/0"} {
		if _, err := parseLSN(in); err == nil {
			t.Errorf("parseLSN(%q): no error", in)
		}
	}
}
