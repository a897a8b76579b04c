package drill

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

// The Postgres workload against a real primary that crashes and comes
// back: ids are retried until acknowledged, every acknowledgement names
// the primary's region and server, nothing acknowledged is lost, and the
// table is where the drill says.
func TestPGWorkload(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	ctx := context.Background()
	servers, notes := ProbeServers(ctx, map[string]string{"east": pg.Primary.DSN(), "west": pg.Standby.DSN()})
	if len(notes) > 0 {
		t.Fatalf("probe: %v", notes)
	}
	primaryID := fmt.Sprintf("primary@127.0.0.1:%d", pg.Primary.Port)
	for id, want := range map[string]string{
		primaryID: "east", fmt.Sprintf("standby@127.0.0.1:%d", pg.Standby.Port): "west",
		"primary@10.9.9.9:5432":                          "east", // the same cluster_name seen at another address
		"other@127.0.0.1:" + fmt.Sprint(pg.Standby.Port): "west",
		"west@10.0.0.1:5432":                             "west", // a cluster_name that is a region's name
		"nobody@10.0.0.1:5432":                           "",
		"":                                               "",
	} {
		if got := servers.Region(id); got != want {
			t.Errorf("Region(%q) = %q, want %q", id, got, want)
		}
	}

	// A standby cannot take the drill's writes: nothing starts.
	if _, err := StartPGWorkload(ctx, PGWorkloadConfig{DSN: pg.Standby.DSN()}); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("workload on a standby: %v", err)
	}

	w, err := StartPGWorkload(ctx, PGWorkloadConfig{DSN: pg.Primary.DSN(), Rate: 100, Timeout: 2 * time.Second, RegionOf: servers.Region})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			w.Stop()
		}
	}()
	waitAcked(t, w, 20)
	pg.Primary.Stop(t, "immediate")
	time.Sleep(500 * time.Millisecond)
	pg.Primary.Start(t)
	before := w.Acked()
	waitAcked(t, w, before+30)
	res := w.Stop()
	stopped = true

	if len(res.Errors) == 0 {
		t.Error("no client error while the primary was down")
	}
	if len(res.Unacknowledged) > 0 {
		t.Errorf("ids never acknowledged: %v", res.Unacknowledged)
	}
	if int64(len(res.Acks)) != res.Attempted {
		t.Errorf("%d acks for %d ids", len(res.Acks), res.Attempted)
	}
	retried := 0
	for _, a := range res.Acks {
		if a.Region != "east" || a.RowRegion != "east" || a.DB != primaryID {
			t.Fatalf("ack %+v: want region east, server %s", a, primaryID)
		}
		if a.Attempts > 1 {
			retried++
		}
	}
	if retried == 0 {
		t.Error("no id was acknowledged after a retry")
	}
	lost, err := res.Lost(func(ids []int64) (map[int64]bool, error) { return w.Present(ctx, ids) })
	if err != nil || len(lost) != 0 {
		t.Errorf("lost %v, %v", lost, err)
	}
	var n int
	if err := pg.Primary.QueryRow(t, "SELECT count(*) FROM lifeboat_drill.writes WHERE server = $1", primaryID).Scan(&n); err != nil || n < len(res.Acks) {
		t.Errorf("lifeboat_drill.writes holds %d rows of %s (%v), want at least %d", n, primaryID, err, len(res.Acks))
	}
	// A second workload reuses the table.
	w2, err := StartPGWorkload(ctx, PGWorkloadConfig{DSN: pg.Primary.DSN(), Rate: 10})
	if err != nil {
		t.Fatal(err)
	}
	waitAcked(t, w2, 1)
	w2.Stop()
}

// A write an earlier attempt stored is acknowledged by the server that
// finds it, and the row keeps the server that stored it.
func TestPGWorkloadFindsEarlierAttempt(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	ctx := context.Background()
	w, err := StartPGWorkload(ctx, PGWorkloadConfig{DSN: pg.Primary.DSN(), Rate: 1, FirstID: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	pg.Primary.Exec(t, "INSERT INTO lifeboat_drill.writes (id, server) VALUES (42, 'old@10.0.0.1:5432')")
	server, row, err := w.tr.write(ctx, 42)
	if err != nil || row != "old@10.0.0.1:5432" || server != fmt.Sprintf("primary@127.0.0.1:%d", pg.Primary.Port) {
		t.Errorf("write(42) = %q, %q, %v", server, row, err)
	}
	// A connection whose session the server ended is replaced within the
	// same write.
	c, err := w.tr.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.tr.put(c)
	pg.Primary.Exec(t, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'lifeboat-drill'")
	if _, _, err := w.tr.write(ctx, 43); err != nil {
		t.Errorf("write on a terminated session: %v", err)
	}
}

func waitAcked(t *testing.T, w *PGWorkload, n int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for w.Acked() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d writes acknowledged (want %d); last error: %s", w.Acked(), n, w.LastError())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWriterDSN(t *testing.T) {
	cfg := func(dsn, listen, address string) *config.Config {
		return &config.Config{
			Regions:  []config.Region{{Name: "east", Role: config.RoleActive}, {Name: "west", Role: config.RoleStandby}},
			Services: []config.Service{{Name: "db", Kind: config.KindPostgres, Endpoints: map[string]string{"east": dsn, "west": "postgres://w:x@10.0.0.2:5432/db"}}},
			Traffic:  config.Traffic{Postgres: []config.PostgresPort{{Listen: listen, Service: "db", Role: config.PGWriter}}},
			Drills:   &config.Drills{Workload: config.DrillWorkload{Service: "db", Address: address}},
		}
	}
	cases := []struct {
		dsn, listen, address, want string
	}{
		{"postgres://app:s3cr%40t@10.0.0.1:5432/shop?sslmode=disable", "127.0.0.1:6432", "", "postgres://app:s3cr%40t@127.0.0.1:6432/shop?sslmode=disable"},
		{"postgresql://app@db.example/shop", "0.0.0.0:6432", "", "postgresql://app@127.0.0.1:6432/shop"},
		{"postgres://10.0.0.1:5432", ":6432", "", "postgres://127.0.0.1:6432"},
		{"postgres://a:b@10.0.0.1/x", "0.0.0.0:6432", "[::1]:7000", "postgres://a:b@[::1]:7000/x"},
		{"host=10.0.0.1 port=5432 user=app password=pw dbname=shop", "127.0.0.1:6432", "", "host=10.0.0.1 port=5432 user=app password=pw dbname=shop host=127.0.0.1 port=6432"},
		{"host=db hostaddr=10.0.0.1 user=app", "localhost:6432", "", "host=db hostaddr=10.0.0.1 user=app host=localhost port=6432 hostaddr=127.0.0.1"},
	}
	for _, c := range cases {
		got, err := WriterDSN(cfg(c.dsn, c.listen, c.address))
		if err != nil || got != c.want {
			t.Errorf("WriterDSN(%q, %q, %q) = %q, %v; want %q", c.dsn, c.listen, c.address, got, err, c.want)
		}
	}
	noWriter := cfg("postgres://a@h/x", "127.0.0.1:6432", "")
	noWriter.Traffic.Postgres[0].Role = config.PGReader
	if _, err := WriterDSN(noWriter); err == nil || !strings.Contains(err.Error(), `service "db" has no writer endpoint`) {
		t.Errorf("no writer: %v", err)
	}
}
