package redis

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/testenv"
	"github.com/lifeboat-dr/lifeboat/replication"
)

const testInterval = 150 * time.Millisecond

// startMonitor opens a monitor of primaryURL with one standby in region
// "us", closed when the test ends.
func startMonitor(t *testing.T, primaryURL, standbyURL string) *Monitor {
	t.Helper()
	m, err := NewMonitor(MonitorConfig{
		Service:  "cache",
		Observer: "node-a",
		Primary:  Endpoint{Region: "eu", URL: primaryURL},
		Standbys: []Endpoint{{Region: "us", URL: standbyURL}},
		Interval: testInterval,
		Logger:   slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatalf("NewMonitor: %v", err)
	}
	if err := m.Open(); err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

// onlyLag returns the monitor's one measurement.
func onlyLag(t *testing.T, m *Monitor) replication.Lag {
	t.Helper()
	lags := m.Lag()
	if len(lags) != 1 {
		t.Fatalf("Lag() has %d entries, want 1: %+v", len(lags), lags)
	}
	return lags[0]
}

// waitLag polls the monitor until cond holds, and fails the test when it
// does not within timeout.
func waitLag(t *testing.T, m *Monitor, timeout time.Duration, what string, cond func(replication.Lag) bool) replication.Lag {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		lag := onlyLag(t, m)
		if cond(lag) {
			return lag
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last measurement %+v", what, timeout, lag)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func healthy(l replication.Lag) bool {
	return !l.Broken && l.SecondsKnown && l.BytesKnown && l.Seconds < 2*testInterval.Seconds()
}

func TestMonitorIdle(t *testing.T) {
	t.Parallel()
	pair := testenv.StartRedis(t)
	m := startMonitor(t, pair.Primary.URL(), pair.Replica.URL())
	waitLag(t, m, 5*time.Second, "healthy measurement", healthy)

	// Idle for a while: every measurement stays healthy.
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		lag := onlyLag(t, m)
		if !healthy(lag) || lag.Reason != "" {
			t.Fatalf("idle measurement not healthy: %+v", lag)
		}
		if lag.Service != "cache" || lag.Region != "us" || time.Since(lag.Time) > 2*testInterval {
			t.Fatalf("measurement has wrong labels or is stale: %+v", lag)
		}
		if lag.Bytes > 1024 {
			t.Fatalf("idle replica %d bytes behind: %+v", lag.Bytes, lag)
		}
		for key, want := range map[string]string{"role": "slave", "master_link_status": "up", "connected_slaves": "1", "primary_view_state": "online"} {
			if lag.Details[key] != want {
				t.Fatalf("Details[%s] = %q, want %q: %+v", key, lag.Details[key], want, lag.Details)
			}
		}
		for _, key := range []string{"master_last_io_seconds_ago", "primary_offset", "replica_offset"} {
			if _, err := strconv.ParseInt(lag.Details[key], 10, 64); err != nil {
				t.Fatalf("Details[%s] = %q, want a number: %+v", key, lag.Details[key], lag.Details)
			}
		}
	}

	// The heartbeat on the primary is recent, in unix nanoseconds.
	v, err := pair.Primary.Client(t).Get(t.Context(), "lifeboat:heartbeat:node-a").Int64()
	if err != nil {
		t.Fatalf("GET heartbeat on the primary: %v", err)
	}
	if age := time.Since(time.Unix(0, v)); age < 0 || age > 2*testInterval {
		t.Errorf("heartbeat on the primary is %v old", age)
	}

	// Lag returns a copy.
	onlyLag(t, m).Details["role"] = "changed"
	if got := onlyLag(t, m).Details["role"]; got == "changed" {
		t.Error("Lag() shares its Details map with the monitor")
	}
}

func TestMonitorPrimaryKilled(t *testing.T) {
	t.Parallel()
	pair := testenv.StartRedis(t)
	m := startMonitor(t, pair.Primary.URL(), pair.Replica.URL())
	waitLag(t, m, 5*time.Second, "healthy measurement", healthy)

	pair.Primary.Kill(t)
	broken := waitLag(t, m, 5*time.Second, "replication reported broken", func(l replication.Lag) bool {
		return l.Broken && l.Details["primary_error"] != ""
	})
	if !strings.Contains(broken.Reason, "replication link down") {
		t.Errorf("Reason = %q, want the replication link down", broken.Reason)
	}
	if want := "dial " + pair.Primary.Addr() + ": connection refused"; broken.Details["primary_error"] != want {
		t.Errorf("primary_error = %q, want %q", broken.Details["primary_error"], want)
	}
	if broken.Details["master_link_status"] != "down" {
		t.Errorf("master_link_status = %q, want down", broken.Details["master_link_status"])
	}

	// No heartbeat reaches the primary any more: the replica shows the
	// last one, but the exposure grows with the time the primary's state
	// is unknown.
	if !broken.SecondsKnown {
		t.Errorf("Seconds unknown right after the kill: %+v", broken)
	}
	later := waitLag(t, m, 5*time.Second, "lag growing", func(l replication.Lag) bool {
		return l.SecondsKnown && l.Seconds > max(1, broken.Seconds+4*testInterval.Seconds())
	})
	if !later.Broken || !strings.Contains(later.Reason, "replication link down") {
		t.Errorf("later measurement %+v, want broken: replication link down", later)
	}
}

func TestMonitorHeartbeatRefused(t *testing.T) {
	t.Parallel()
	pair := testenv.StartRedis(t)
	m := startMonitor(t, pair.Primary.URL(), pair.Replica.URL())
	waitLag(t, m, 5*time.Second, "healthy measurement", healthy)

	// The primary answers INFO but refuses the SET (OOM): the replica
	// soon shows the last heartbeat written, yet the exposure grows.
	pc := pair.Primary.Client(t)
	for _, args := range [][]any{{"CONFIG", "SET", "maxmemory-policy", "noeviction"}, {"CONFIG", "SET", "maxmemory", "1"}} {
		if err := pc.Do(t.Context(), args...).Err(); err != nil {
			t.Fatalf("%v on the primary: %v", args, err)
		}
	}
	const prefix = "heartbeat failing on the primary: SET " // + addr: OOM ...
	failing := func(min float64) func(replication.Lag) bool {
		return func(l replication.Lag) bool {
			return !l.Broken && strings.HasPrefix(l.Reason, prefix) && l.SecondsKnown && l.Seconds > min
		}
	}
	first := waitLag(t, m, 5*time.Second, "heartbeat reported failing", failing(0))
	later := waitLag(t, m, 5*time.Second, "lag growing past 1s", failing(max(1, first.Seconds+1)))
	if want := prefix + pair.Primary.Addr() + ": OOM"; !strings.HasPrefix(later.Reason, want) {
		t.Errorf("Reason = %q, want %q...", later.Reason, want)
	}
	if !later.BytesKnown || later.Details["primary_error"] == "" {
		t.Errorf("measurement %+v, want bytes known and primary_error", later)
	}
	if strings.Contains(fmt.Sprint(later), pair.Primary.Password) {
		t.Errorf("measurement contains the password: %+v", later)
	}

	// The heartbeat is taken again: the lag is small and the reason gone.
	if err := pc.Do(t.Context(), "CONFIG", "SET", "maxmemory", "0").Err(); err != nil {
		t.Fatalf("CONFIG SET maxmemory 0 on the primary: %v", err)
	}
	waitLag(t, m, 5*time.Second, "healthy again", func(l replication.Lag) bool { return healthy(l) && l.Reason == "" })
}

func TestMonitorLagRises(t *testing.T) {
	t.Parallel()
	pair := testenv.StartRedis(t)
	m := startMonitor(t, pair.Primary.URL(), pair.Replica.URL())
	waitLag(t, m, 5*time.Second, "healthy measurement", healthy)

	// The replica stops applying the replication stream (writes are
	// paused) but still answers reads; the primary keeps taking heartbeats.
	if err := pair.Replica.Client(t).Do(t.Context(), "CLIENT", "PAUSE", "3000", "WRITE").Err(); err != nil {
		t.Fatalf("CLIENT PAUSE on the replica: %v", err)
	}
	behind := waitLag(t, m, 4*time.Second, "lag above 1s", func(l replication.Lag) bool {
		return l.SecondsKnown && l.Seconds > 1
	})
	if behind.Broken {
		t.Errorf("a paused but linked replica is reported broken: %+v", behind)
	}
	if !behind.BytesKnown || behind.Bytes <= 0 {
		t.Errorf("a paused replica is not behind in bytes: %+v", behind)
	}
	waitLag(t, m, 10*time.Second, "lag back under two intervals", healthy)
}

func TestMonitorStandbyIsPrimary(t *testing.T) {
	t.Parallel()
	pair := testenv.StartRedis(t)
	m := startMonitor(t, pair.Primary.URL(), pair.Primary.URL())
	lag := waitLag(t, m, 5*time.Second, "measurement", func(l replication.Lag) bool { return l.Reason != reasonNoMeasurement })
	if !lag.Broken || lag.Reason != "not a replica: ROLE is master" {
		t.Errorf("standby pointed at the primary: %+v, want broken, not a replica", lag)
	}
	if lag.Details["role"] != "master" {
		t.Errorf("Details[role] = %q, want master", lag.Details["role"])
	}
}

func TestMonitorReplicaKilled(t *testing.T) {
	t.Parallel()
	pair := testenv.StartRedis(t)
	m := startMonitor(t, pair.Primary.URL(), pair.Replica.URL())
	waitLag(t, m, 5*time.Second, "healthy measurement", healthy)

	pair.Replica.Kill(t)
	want := "replica unreachable: dial " + pair.Replica.Addr() + ": connection refused"
	broken := waitLag(t, m, 5*time.Second, "replica reported unreachable", func(l replication.Lag) bool {
		return l.Broken && l.Reason == want
	})
	// The primary keeps taking heartbeats that the replica does not see.
	grown := waitLag(t, m, 5*time.Second, "lag growing", func(l replication.Lag) bool {
		return l.SecondsKnown && l.Seconds > broken.Seconds+3*testInterval.Seconds()
	})
	if !grown.Broken || grown.Reason != want {
		t.Errorf("later measurement: %+v, want broken: %s", grown, want)
	}
	if strings.Contains(fmt.Sprint(grown), pair.Replica.Password) {
		t.Errorf("measurement contains the password: %+v", grown)
	}
}

func TestMonitorSilentReplica(t *testing.T) {
	t.Parallel()
	pair := testenv.StartRedis(t)
	addr := testenv.Blackhole(t)
	m, err := NewMonitor(MonitorConfig{
		Service:  "cache",
		Observer: "node-a",
		Primary:  Endpoint{Region: "eu", URL: pair.Primary.URL()},
		Standbys: []Endpoint{{Region: "us", URL: "redis://:secret-pw@" + addr}},
		Interval: testInterval,
		Timeout:  100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Open(); err != nil {
		t.Fatal(err)
	}
	lag := waitLag(t, m, 5*time.Second, "measurement", func(l replication.Lag) bool { return l.Reason != reasonNoMeasurement })
	if want := "replica unreachable: INFO " + addr + ": timed out"; !lag.Broken || lag.Reason != want {
		t.Errorf("silent replica: %+v, want broken: %s", lag, want)
	}
	if lag.SecondsKnown || lag.BytesKnown {
		t.Errorf("a replica never read has figures: %+v", lag)
	}
	start := time.Now()
	if err := m.Close(t.Context()); err != nil {
		t.Errorf("Close: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v", d)
	}
}

func TestMonitorLifecycle(t *testing.T) {
	t.Parallel()
	m, err := NewMonitor(MonitorConfig{
		Service:  "cache",
		Observer: "node-a",
		Primary:  Endpoint{Region: "eu", URL: "redis://127.0.0.1:1"},
		Standbys: []Endpoint{{Region: "us", URL: "redis://127.0.0.1:2"}, {Region: "ap", URL: "redis://127.0.0.1:3"}},
		Interval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	lags := m.Lag()
	if len(lags) != 2 {
		t.Fatalf("Lag() before Open = %+v, want 2 entries", lags)
	}
	for i, region := range []string{"us", "ap"} {
		l := lags[i]
		if l.Service != "cache" || l.Region != region || l.SecondsKnown || l.BytesKnown || l.Broken || l.Reason != "no measurement yet" {
			t.Errorf("Lag()[%d] before Open = %+v", i, l)
		}
	}
	if err := m.Close(t.Context()); err != nil {
		t.Errorf("Close without Open: %v", err)
	}
	if err := m.Close(t.Context()); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := m.Open(); err == nil {
		t.Error("Open after Close succeeded")
	}
}

func TestNewMonitorConfigErrors(t *testing.T) {
	t.Parallel()
	valid := func() MonitorConfig {
		return MonitorConfig{
			Service:  "cache",
			Observer: "node-a",
			Primary:  Endpoint{Region: "eu", URL: "redis://127.0.0.1:6379"},
			Standbys: []Endpoint{{Region: "us", URL: "redis://127.0.0.1:6380"}},
			Interval: time.Second,
		}
	}
	tests := []struct {
		name   string
		change func(*MonitorConfig)
		want   string
	}{
		{"no service", func(c *MonitorConfig) { c.Service = "" }, "Service is required"},
		{"no observer", func(c *MonitorConfig) { c.Observer = "" }, "Observer is required"},
		{"no primary", func(c *MonitorConfig) { c.Primary.URL = "" }, "Primary.URL is required"},
		{"no standby", func(c *MonitorConfig) { c.Standbys = nil }, "Standbys: at least one"},
		{"no interval", func(c *MonitorConfig) { c.Interval = 0 }, "Interval must be positive"},
		{"negative timeout", func(c *MonitorConfig) { c.Timeout = -time.Second }, "Timeout must not be negative"},
		{"no region", func(c *MonitorConfig) { c.Standbys[0].Region = "" }, "Standbys[0].Region is required"},
		{"twice the region", func(c *MonitorConfig) { c.Standbys = append(c.Standbys, c.Standbys[0]) }, `Standbys[1].Region: "us" appears twice`},
		{"no standby URL", func(c *MonitorConfig) { c.Standbys[0].URL = "" }, "Standbys[0].URL is required"},
		{"bad primary URL", func(c *MonitorConfig) { c.Primary.URL = "redis://:pw-Secret9@127.0.0.1:port" }, "Primary.URL: parse redis URL"},
		{"bad standby URL", func(c *MonitorConfig) { c.Standbys[0].URL = "tcp://:pw-Secret9@127.0.0.1:6380" }, "Standbys[0].URL: parse redis URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid()
			tt.change(&cfg)
			m, err := NewMonitor(cfg)
			if err == nil {
				m.Close(t.Context())
				t.Fatalf("NewMonitor succeeded, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "pw-Secret9") {
				t.Errorf("error %q contains the password", err)
			}
		})
	}
}
