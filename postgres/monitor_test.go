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

// idleBytes bounds the lag in bytes of an idle standby: the heartbeat's own
// WAL, read from the primary after the standby.
const idleBytes = 64 << 10

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
	// It stays so over several rounds, behind by no more than the
	// heartbeat's own WAL.
	for end := time.Now().Add(5 * testInterval); time.Now().Before(end); time.Sleep(testInterval / 4) {
		l := lagOf(t, m, "west")
		if err := healthy(l); err != nil {
			t.Fatalf("idle standby: %v", err)
		}
		if l.Bytes >= idleBytes || l.Reason != "" {
			t.Fatalf("idle standby: %d bytes behind (want under %d), reason %q", l.Bytes, idleBytes, l.Reason)
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

// heartbeatFailing accepts a lag that is not broken, says the heartbeat
// fails, and is over min seconds.
func heartbeatFailing(min float64) func(replication.Lag) error {
	return func(l replication.Lag) error {
		switch {
		case l.Broken:
			return fmt.Errorf("broken: %s", l.Reason)
		case !strings.HasPrefix(l.Reason, "heartbeat failing on the primary: "):
			return fmt.Errorf("reason %q, want heartbeat failing on the primary", l.Reason)
		case !l.SecondsKnown || l.Seconds <= min:
			return fmt.Errorf("lag %.3fs (known %v), want over %.3fs", l.Seconds, l.SecondsKnown, min)
		}
		return nil
	}
}

func TestMonitorHeartbeatRefused(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	m := openMonitor(t, MonitorConfig{
		Service:  "db",
		Observer: "node-a",
		Primary:  Endpoint{Region: "east", DSN: pg.Primary.DSN()},
		Standbys: []Endpoint{{Region: "west", DSN: pg.Standby.DSN()}},
	})
	waitLag(t, m, "west", 10*time.Second, healthy)

	// The primary answers but refuses the heartbeat: the standby soon
	// shows the last one written, yet the exposure grows.
	pg.Primary.Exec(t, "ALTER TABLE lifeboat.heartbeat ADD CONSTRAINT no_writes CHECK (false) NOT VALID")
	first := waitLag(t, m, "west", 10*time.Second, heartbeatFailing(0))
	t.Logf("refused: %+v", first)
	l := waitLag(t, m, "west", 10*time.Second, heartbeatFailing(max(1, first.Seconds+1)))
	t.Logf("refused later: %+v", l)
	if want := fmt.Sprintf("write heartbeat on 127.0.0.1:%d: ", pg.Primary.Port); !strings.Contains(l.Reason, want) || !strings.Contains(l.Reason, "no_writes") {
		t.Errorf("reason %q, want it to name %q and the constraint", l.Reason, want)
	}
	if strings.Contains(fmt.Sprint(l), pg.Primary.Password) {
		t.Errorf("lag %+v contains the password", l)
	}

	// The primary's LSN is still read: a standby that stops replaying is
	// seen behind in bytes.
	pg.Standby.Exec(t, "SELECT pg_wal_replay_pause()")
	pg.Primary.Exec(t, "CREATE TABLE pending AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 10000) g")
	l = waitLag(t, m, "west", 10*time.Second, func(l replication.Lag) error {
		if err := heartbeatFailing(1)(l); err != nil {
			return err
		}
		if !l.BytesKnown || l.Bytes <= 100_000 {
			return fmt.Errorf("lag %d bytes (known %v), want over 100kB", l.Bytes, l.BytesKnown)
		}
		return nil
	})
	t.Logf("refused, replay paused: %+v", l)
	pg.Standby.Exec(t, "SELECT pg_wal_replay_resume()")

	// The heartbeat is taken again: the lag is small and the reason gone.
	pg.Primary.Exec(t, "ALTER TABLE lifeboat.heartbeat DROP CONSTRAINT no_writes")
	waitLag(t, m, "west", 10*time.Second, func(l replication.Lag) error {
		if l.Reason != "" {
			return fmt.Errorf("reason %q, want none", l.Reason)
		}
		return healthy(l)
	})
}

func TestMonitorPrimaryDown(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	m := openMonitor(t, MonitorConfig{
		Service:  "db",
		Observer: "node-a",
		Primary:  Endpoint{Region: "east", DSN: pg.Primary.DSN()},
		Standbys: []Endpoint{{Region: "west", DSN: pg.Standby.DSN()}},
	})
	waitLag(t, m, "west", 10*time.Second, healthy)

	// No heartbeat can be written: the standby shows the last one, and
	// the exposure grows with the time the primary's state is unknown.
	pg.Primary.Stop(t, "immediate")
	l := waitLag(t, m, "west", 10*time.Second, func(l replication.Lag) error {
		switch {
		case !l.SecondsKnown || l.Seconds <= 1:
			return fmt.Errorf("lag %.3fs (known %v), want over 1s", l.Seconds, l.SecondsKnown)
		case !l.Broken && !strings.HasPrefix(l.Reason, "heartbeat failing on the primary: "):
			return fmt.Errorf("reason %q, want heartbeat failing or broken", l.Reason)
		}
		return nil
	})
	t.Logf("primary down: %+v", l)
	want := fmt.Sprintf("connect 127.0.0.1:%d: connection refused", pg.Primary.Port)
	if got := l.Details["primary_error"]; got != want {
		t.Errorf("primary_error %q, want %q", got, want)
	}
	if strings.Contains(fmt.Sprint(l), pg.Primary.Password) {
		t.Errorf("lag %+v contains the password", l)
	}
}

// TestMonitorBytesSameRound checks that the primary's LSN is read in the
// round that reads the standby, after it: a standby is never shown less
// behind than it is.
func TestMonitorBytesSameRound(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	m := openMonitor(t, MonitorConfig{
		Service:  "db",
		Observer: "node-a",
		Primary:  Endpoint{Region: "east", DSN: pg.Primary.DSN()},
		Standbys: []Endpoint{{Region: "west", DSN: pg.Standby.DSN()}},
	})
	waitLag(t, m, "west", 10*time.Second, healthy)

	pg.Standby.Exec(t, "SELECT pg_wal_replay_pause()")
	waitFor := time.Now().Add(10 * time.Second)
	for {
		var state string
		if err := pg.Standby.QueryRow(t, "SELECT pg_get_wal_replay_pause_state()").Scan(&state); err != nil {
			t.Fatal(err)
		}
		if state == "paused" {
			break
		}
		if time.Now().After(waitFor) {
			t.Fatalf("replay pause state %q", state)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var replay, current string
	if err := pg.Standby.QueryRow(t, "SELECT pg_last_wal_replay_lsn()::text").Scan(&replay); err != nil {
		t.Fatal(err)
	}
	pg.Primary.Exec(t, "CREATE TABLE pending AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 10000) g")
	if err := pg.Primary.QueryRow(t, "SELECT pg_current_wal_lsn()::text").Scan(&current); err != nil {
		t.Fatal(err)
	}
	written := time.Now()
	r, err := parseLSN(replay)
	if err != nil {
		t.Fatal(err)
	}
	c, err := parseLSN(current)
	if err != nil {
		t.Fatal(err)
	}

	// The first round that reads the standby after the writes sees them.
	var l replication.Lag
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		if l = lagOf(t, m, "west"); l.Time.After(written) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no measurement after the writes: %+v", l)
		}
	}
	t.Logf("replay paused at %s, primary at %s: %+v", replay, current, l)
	if want := int64(c - r); !l.BytesKnown || l.Bytes < want {
		t.Errorf("lag %d bytes (known %v), want at least %d", l.Bytes, l.BytesKnown, want)
	}
	if p, err := parseLSN(l.Details["primary_lsn"]); err != nil || p < c {
		t.Errorf("primary_lsn %q (%v), want at least %s", l.Details["primary_lsn"], err, current)
	}
	pg.Standby.Exec(t, "SELECT pg_wal_replay_resume()")
}

// TestMonitorParallelStandbys checks that hung standbys are waited for at
// once, not one after another, and that a connect has a budget of its own.
func TestMonitorParallelStandbys(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	standbys := []Endpoint{{Region: "west", DSN: pg.Standby.DSN()}}
	var holes []string
	for i := range 3 {
		addr := testenv.Blackhole(t)
		holes = append(holes, addr)
		standbys = append(standbys, Endpoint{Region: fmt.Sprintf("hung%d", i), DSN: "postgres://lifeboat:pw@" + addr + "/postgres?sslmode=disable"})
	}
	m := openMonitor(t, MonitorConfig{
		Service:  "db",
		Observer: "node-a",
		Primary:  Endpoint{Region: "east", DSN: pg.Primary.DSN()},
		Standbys: standbys,
		Timeout:  100 * time.Millisecond,
	})
	for i, addr := range holes {
		want := "standby unreachable: connect " + addr + ": timed out: no answer within "
		l := waitLag(t, m, fmt.Sprintf("hung%d", i), 10*time.Second, func(l replication.Lag) error {
			if !l.Broken || !strings.HasPrefix(l.Reason, want) {
				return fmt.Errorf("broken %v, reason %q, want %q...", l.Broken, l.Reason, want)
			}
			return nil
		})
		// The connect had its own second, not the queries' 100ms.
		if d, err := time.ParseDuration(strings.TrimPrefix(l.Reason, want)); err != nil || d < 900*time.Millisecond {
			t.Errorf("reason %q: want a connect timeout of about 1s", l.Reason)
		}
	}
	waitLag(t, m, "west", 10*time.Second, healthy)

	// A round lasts about one connect timeout (1s), not three.
	first := lagOf(t, m, "west").Time
	var times []time.Time
	for deadline := time.Now().Add(15 * time.Second); len(times) < 3; time.Sleep(10 * time.Millisecond) {
		if l := lagOf(t, m, "west"); !l.Time.Equal(first) && (len(times) == 0 || !l.Time.Equal(times[len(times)-1])) {
			times = append(times, l.Time)
		}
		if time.Now().After(deadline) {
			t.Fatalf("rounds at %v: too slow", times)
		}
	}
	for i := 1; i < len(times); i++ {
		if d := times[i].Sub(times[i-1]); d > 2500*time.Millisecond {
			t.Errorf("round %d took %v, want about 1s: the standbys are not read in parallel", i, d)
		}
	}
}
