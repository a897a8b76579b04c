package files

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/replication"
)

// openReplicator opens a replicator closed at the end of the test.
func openReplicator(t testing.TB, cfg ReplicatorConfig) *Replicator {
	t.Helper()
	r, err := NewReplicator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return r
}

func lagOf(r *Replicator, region string) replication.Lag {
	for _, l := range r.Lag() {
		if l.Region == region {
			return l
		}
	}
	return replication.Lag{}
}

// TestReplicatorLag stops copying (Active false: the replicator only
// measures) while the primary takes writes: pending objects, bytes and
// seconds grow, the standby gets nothing; then copying resumes and the
// lag falls to 0.
func TestReplicatorLag(t *testing.T) {
	primary, west := t.TempDir(), t.TempDir()
	var active atomic.Bool
	r := openReplicator(t, ReplicatorConfig{
		Service:  "notebooks",
		Primary:  Endpoint{Region: "east", URL: fileURL(primary)},
		Standbys: []Endpoint{{Region: "west", URL: fileURL(west)}},
		Interval: 50 * time.Millisecond,
		Active:   active.Load,
	})
	if l := lagOf(r, "west"); l.SecondsKnown && l.Objects != 0 {
		t.Fatalf("before any write: %+v", l)
	}
	waitUntil(t, "first measurement", 5*time.Second, func() bool { return lagOf(r, "west").SecondsKnown })
	if l := lagOf(r, "west"); l.Seconds != 0 || l.Objects != 0 || l.Broken || l.Details["mode"] != "measure" {
		t.Fatalf("empty primary: %+v", l)
	}

	writeFile(t, primary, "a.ipynb", "first notebook")
	writeFile(t, primary, "dir/b.ipynb", "second notebook")
	waitUntil(t, "two objects pending", 5*time.Second, func() bool { return lagOf(r, "west").Objects == 2 })
	first := lagOf(r, "west")
	if first.Bytes != int64(len("first notebook")+len("second notebook")) || !first.BytesKnown || first.Broken {
		t.Errorf("pending: %+v", first)
	}
	time.Sleep(300 * time.Millisecond)
	writeFile(t, primary, "c.ipynb", "third")
	waitUntil(t, "three objects pending", 5*time.Second, func() bool { return lagOf(r, "west").Objects == 3 })
	second := lagOf(r, "west")
	if second.Seconds <= first.Seconds || second.Seconds < 0.3 || second.Bytes <= first.Bytes || !second.Time.After(first.Time) {
		t.Errorf("lag did not grow: first %+v, then %+v", first, second)
	}
	if got := tree(t, west); len(got) != 0 {
		t.Errorf("the standby got copies while not active: %v", got)
	}
	if e := replication.Evaluate("notebooks", r.Lag(), 100*time.Millisecond); e.Status != replication.Breached || e.Objects != 3 {
		t.Errorf("exposure while stopped: %+v", e)
	}

	active.Store(true)
	waitUntil(t, "caught up", 5*time.Second, func() bool {
		l := lagOf(r, "west")
		return l.Objects == 0 && l.Seconds == 0 && l.Details["mode"] == "copy"
	})
	l := lagOf(r, "west")
	if l.Bytes != 0 || l.Details["last_success"] == "" || l.Broken || l.Reason != "" {
		t.Errorf("caught up: %+v", l)
	}
	if _, err := time.Parse(time.RFC3339, l.Details["last_success"]); err != nil {
		t.Errorf("last_success: %v", err)
	}
	sameTree(t, west, map[string]string{"a.ipynb": "first notebook", "dir/b.ipynb": "second notebook", "c.ipynb": "third"})
	if e := replication.Evaluate("notebooks", r.Lag(), time.Minute); e.Status != replication.OK {
		t.Errorf("exposure caught up: %+v", e)
	}
}

// TestReplicatorWatch checks that with Watch a new file reaches the
// standby well before the (long) Interval.
func TestReplicatorWatch(t *testing.T) {
	primary, west := t.TempDir(), t.TempDir()
	r := openReplicator(t, ReplicatorConfig{
		Service:  "notebooks",
		Primary:  Endpoint{Region: "east", URL: fileURL(primary)},
		Standbys: []Endpoint{{Region: "west", URL: fileURL(west)}},
		Interval: time.Hour,
		Watch:    true,
	})
	waitUntil(t, "first pass", 5*time.Second, func() bool { return lagOf(r, "west").SecondsKnown })
	for _, rel := range []string{"new.ipynb", "fresh/dir/deep.ipynb"} {
		start := time.Now()
		writeFile(t, primary, rel, "written after the first pass")
		waitUntil(t, rel+" on the standby", 3*time.Second, func() bool {
			b, err := os.ReadFile(filepath.Join(west, rel))
			return err == nil && string(b) == "written after the first pass"
		})
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s took %s to reach the standby", rel, d)
		} else {
			t.Logf("%s reached the standby after %s", rel, d.Round(time.Millisecond))
		}
	}
}

// TestReplicatorSyncNow runs the runbook's final sync: forward while the
// loop only measures, then back from the standby (failback).
func TestReplicatorSyncNow(t *testing.T) {
	primary, west, north := t.TempDir(), t.TempDir(), t.TempDir()
	writeFile(t, primary, "a.txt", "alpha")
	r := openReplicator(t, ReplicatorConfig{
		Service:  "shares",
		Primary:  Endpoint{Region: "east", URL: fileURL(primary)},
		Standbys: []Endpoint{{Region: "west", URL: fileURL(west)}, {Region: "north", URL: fileURL(north)}},
		Interval: time.Hour,
		Active:   func() bool { return false },
		Options:  Options{Delete: true},
	})
	ctx := context.Background()
	rep, err := r.SyncNow(ctx, "west", false)
	if err != nil || rep.Copied != 1 {
		t.Fatalf("SyncNow west: %+v, %v", rep, err)
	}
	sameTree(t, west, map[string]string{"a.txt": "alpha"})
	if l := lagOf(r, "west"); l.Objects != 0 || !l.SecondsKnown || l.Broken {
		t.Errorf("lag after SyncNow: %+v", l)
	}
	if len(tree(t, north)) != 0 {
		t.Error("SyncNow west copied to north")
	}

	// West took writes during a failover; failback copies them home.
	writeFile(t, west, "b.txt", "written in west")
	rep, err = r.SyncNow(ctx, "west", true)
	if err != nil || rep.Copied != 1 || rep.Unchanged != 1 {
		t.Fatalf("SyncNow west reverse: %+v, %v", rep, err)
	}
	sameTree(t, primary, map[string]string{"a.txt": "alpha", "b.txt": "written in west"})

	if _, err := r.SyncNow(ctx, "south", false); err == nil || !strings.Contains(err.Error(), `"south"`) {
		t.Errorf("unknown region: %v", err)
	}
}

// TestReplicatorBroken checks that a standby that cannot be reached is
// reported broken, naming it, and restored when it is back.
func TestReplicatorBroken(t *testing.T) {
	primary, parent := t.TempDir(), t.TempDir()
	west := filepath.Join(parent, "west")
	writeFile(t, primary, "a.txt", "alpha")
	r := openReplicator(t, ReplicatorConfig{
		Service:  "shares",
		Primary:  Endpoint{Region: "east", URL: fileURL(primary)},
		Standbys: []Endpoint{{Region: "west", URL: fileURL(west)}},
		Interval: 50 * time.Millisecond,
	})
	waitUntil(t, "broken", 5*time.Second, func() bool { return lagOf(r, "west").Broken })
	l := lagOf(r, "west")
	if !strings.Contains(l.Reason, west) || l.SecondsKnown {
		t.Errorf("broken standby: %+v", l)
	}
	if err := os.Mkdir(west, 0o755); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "restored", 5*time.Second, func() bool { l := lagOf(r, "west"); return !l.Broken && l.SecondsKnown && l.Objects == 0 })
	sameTree(t, west, map[string]string{"a.txt": "alpha"})

	// The primary's share goes away: broken, and the lag keeps counting
	// from the last pass that ran.
	if err := os.RemoveAll(primary); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "broken again", 5*time.Second, func() bool { return lagOf(r, "west").Broken })
	time.Sleep(100 * time.Millisecond)
	l = lagOf(r, "west")
	if !l.SecondsKnown || l.Seconds < 0.1 || !strings.Contains(l.Reason, primary) {
		t.Errorf("primary gone: %+v", l)
	}
	if len(tree(t, west)) != 1 {
		t.Error("the standby lost files when the primary went away")
	}
}

func TestNewReplicatorErrors(t *testing.T) {
	ok := ReplicatorConfig{Service: "s", Primary: Endpoint{Region: "east", URL: "/p"}, Standbys: []Endpoint{{Region: "west", URL: "/w"}}, Interval: time.Second}
	cases := map[string]func(c *ReplicatorConfig){
		"Service is required":     func(c *ReplicatorConfig) { c.Service = "" },
		"Primary.URL is required": func(c *ReplicatorConfig) { c.Primary.URL = "" },
		"at least one standby":    func(c *ReplicatorConfig) { c.Standbys = nil },
		"Interval must be":        func(c *ReplicatorConfig) { c.Interval = 0 },
		"has two standbys":        func(c *ReplicatorConfig) { c.Standbys = append(c.Standbys, Endpoint{Region: "west", URL: "/x"}) },
		"is the primary's store":  func(c *ReplicatorConfig) { c.Standbys[0].URL = "file:///p" },
	}
	for want, change := range cases {
		c := ok
		c.Standbys = append([]Endpoint(nil), ok.Standbys...)
		change(&c)
		if _, err := NewReplicator(c); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", want, err)
		}
	}
	r, err := NewReplicator(ok)
	if err != nil {
		t.Fatal(err)
	}
	if l := r.Lag(); len(l) != 1 || l[0].Reason != reasonNoMeasurement || l[0].SecondsKnown {
		t.Errorf("before Open: %+v", l)
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.Open(); err == nil {
		t.Error("Open after Close")
	}
}
