package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

// within returns a context that ends after d or with the test.
func within(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// hostOf is the local Host of a test server.
func hostOf(n *testenv.PGNode) Host {
	return Host{DataDir: n.DataDir, OSUser: n.OSUser(), BinDir: n.Bin()}
}

// inRecovery reads pg_is_in_recovery() on n.
func inRecovery(t *testing.T, n *testenv.PGNode) bool {
	t.Helper()
	var b bool
	if err := n.QueryRow(t, "SELECT pg_is_in_recovery()").Scan(&b); err != nil {
		t.Fatalf("%s: pg_is_in_recovery(): %v", n.Name, err)
	}
	return b
}

// mustLSN parses an LSN or fails the test.
func mustLSN(t *testing.T, what, s string) lsn {
	t.Helper()
	l, err := parseLSN(s)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return l
}

// waitRow polls n until SELECT src FROM t WHERE id = id returns want.
func waitRow(t *testing.T, n *testenv.PGNode, id int, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got string
		err := n.QueryRow(t, "SELECT src FROM t WHERE id = $1", id).Scan(&got)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: row %d: got %q, %v; want %q", n.Name, id, got, err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestFenceUnfence(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	ctx := within(t, 2*time.Minute)
	dsn := pg.Primary.DSN()
	pg.Primary.Exec(t, "CREATE TABLE fenced (id int)")

	// A session opened before the fence, mid-transaction.
	before := pg.Primary.Conn(t)
	if _, err := before.Exec(ctx, "BEGIN; INSERT INTO fenced VALUES (1)"); err != nil {
		t.Fatalf("session before the fence: %v", err)
	}

	res, err := Fence(ctx, dsn)
	if err != nil {
		t.Fatalf("fence: %v", err)
	}
	if res.AlreadyFenced || res.Terminated < 1 {
		t.Fatalf("fence: %+v, want not already fenced and at least one session ended", res)
	}
	// The transaction never ends: the drain gives up on it and says so.
	if !strings.Contains(res.Busy, "idle in transaction") {
		t.Errorf("fence: busy sessions %q, want the one left idle in its transaction", res.Busy)
	}
	if _, err := before.Exec(ctx, "INSERT INTO fenced VALUES (2)"); err == nil {
		t.Fatal("the session opened before the fence still writes")
	}
	if fenced, err := IsFenced(ctx, dsn); err != nil || !fenced {
		t.Fatalf("IsFenced after Fence: %v, %v; want true", fenced, err)
	}
	assertWrite(t, ctx, dsn, "25006") // read_only_sql_transaction

	again, err := Fence(ctx, dsn)
	if err != nil || !again.AlreadyFenced {
		t.Fatalf("second fence: %+v, %v; want AlreadyFenced", again, err)
	}
	// The standby is still fed: replication connections are not clients.
	pg.WaitStreaming(t)

	for i := range 2 {
		if err := Unfence(ctx, dsn); err != nil {
			t.Fatalf("unfence %d: %v", i, err)
		}
	}
	if fenced, err := IsFenced(ctx, dsn); err != nil || fenced {
		t.Fatalf("IsFenced after Unfence: %v, %v; want false", fenced, err)
	}
	assertWrite(t, ctx, dsn, "")
	var n int
	if err := pg.Primary.QueryRow(t, "SELECT count(*) FROM fenced").Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows: %d, %v; want 1 (the one written after Unfence)", n, err)
	}
}

// A transaction in progress when the fence comes (here, one statement
// still running) is let finish and commits; its session is ended after.
func TestFenceLetsTransactionsFinish(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	ctx := within(t, 2*time.Minute)
	pg.Primary.Exec(t, "CREATE TABLE drained (id int)")
	busy := pg.Primary.Conn(t)
	var pid int32
	if err := busy.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := busy.Exec(ctx, "BEGIN; INSERT INTO drained VALUES (1); SELECT pg_sleep(0.5); COMMIT")
		done <- err
	}()
	for {
		var state string
		if err := pg.Primary.QueryRow(t, "SELECT coalesce(state, '') FROM pg_stat_activity WHERE pid = $1", pid).Scan(&state); err != nil {
			t.Fatal(err)
		}
		if state == "active" {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	res, err := Fence(ctx, pg.Primary.DSN())
	if err != nil {
		t.Fatalf("fence: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the transaction in progress during the fence: %v", err)
	}
	var n int
	if err := pg.Primary.QueryRow(t, "SELECT count(*) FROM drained").Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows: %d, %v; want the one the transaction committed", n, err)
	}
	if res.Terminated < 1 || res.Busy != "" {
		t.Fatalf("fence: %+v, want the finished session ended and none left busy", res)
	}
	if _, err := busy.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("the session survived the fence")
	}
}

// assertWrite inserts a row through a new session and checks that it
// fails with SQLSTATE code, or succeeds when code is empty.
func assertWrite(t *testing.T, ctx context.Context, dsn, code string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "INSERT INTO fenced VALUES (3)")
	var pgErr *pgconn.PgError
	switch {
	case code == "" && err != nil:
		t.Fatalf("write through a new session: %v", err)
	case code != "" && (!errors.As(err, &pgErr) || pgErr.Code != code):
		t.Fatalf("write through a new session: %v, want SQLSTATE %s", err, code)
	}
}

func TestFenceErrorsHideThePassword(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	const wrong = "wrong-secret-4711"
	dsn := withPassword(t, pg.Primary.DSN(), wrong)
	ctx := within(t, time.Minute)
	_, err1 := Fence(ctx, dsn)
	err2 := Unfence(ctx, dsn)
	_, err3 := IsFenced(ctx, dsn)
	_, err4 := Promote(ctx, dsn)
	for i, err := range []error{err1, err2, err3, err4} {
		if err == nil || !strings.Contains(err.Error(), "password authentication failed") || strings.Contains(err.Error(), wrong) {
			t.Errorf("error %d: %v; want a password authentication failure without the password", i, err)
		}
	}
}

func TestWaitCaughtUp(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	p, s := pg.Primary.DSN(), pg.Standby.DSN()
	pg.Primary.Exec(t, "CREATE TABLE w AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g")

	cu, err := WaitCaughtUp(within(t, 30*time.Second), p, s, 50*time.Millisecond)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	t.Logf("caught up: %+v", cu)
	if mustLSN(t, "standby", cu.StandbyLSN) < mustLSN(t, "primary", cu.PrimaryLSN) {
		t.Fatalf("caught up: %+v, standby behind the primary", cu)
	}
	var n int
	if err := pg.Standby.QueryRow(t, "SELECT count(*) FROM w").Scan(&n); err != nil || n != 50000 {
		t.Fatalf("standby has %d rows, %v; want 50000", n, err)
	}

	// Paused replay: the wait ends with the context and says how far.
	pg.Standby.Exec(t, "SELECT pg_wal_replay_pause()")
	pg.Primary.Exec(t, "INSERT INTO w SELECT g, md5(g::text) FROM generate_series(1, 10000) g")
	started := time.Now()
	_, err = WaitCaughtUp(within(t, 2*time.Second), p, s, 50*time.Millisecond)
	t.Logf("paused: %v", err)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "bytes behind") ||
		strings.Contains(err.Error(), " 0 bytes behind") {
		t.Fatalf("paused replay: %v; want a timeout saying how many bytes behind", err)
	}
	if took := time.Since(started); took > 5*time.Second {
		t.Fatalf("paused replay: returned after %s, want about 2s", took)
	}
	pg.Standby.Exec(t, "SELECT pg_wal_replay_resume()")

	// Stopped standby: the error says what failed where.
	pg.Standby.Stop(t, "fast")
	started = time.Now()
	// 5s: under load (the whole suite under -race on two cores) one
	// attempt on the primary can take seconds; the refusal must still
	// come through.
	_, err = WaitCaughtUp(within(t, 5*time.Second), p, s, 50*time.Millisecond)
	t.Logf("stopped: %v", err)
	addr := fmt.Sprintf("127.0.0.1:%d", pg.Standby.Port)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not caught up") ||
		!strings.Contains(err.Error(), "connect "+addr+": connection refused") || strings.Contains(err.Error(), pg.Standby.Password) {
		t.Fatalf("stopped standby: %v; want a timeout naming the refused connection to %s", err, addr)
	}
	if took := time.Since(started); took > 8*time.Second {
		t.Fatalf("stopped standby: returned after %s, want at most about 5s", took)
	}

	// A "standby" that is a primary ends the wait at once.
	_, err = WaitCaughtUp(within(t, 30*time.Second), p, p, 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "not in recovery") {
		t.Fatalf("primary as standby: %v; want not in recovery", err)
	}
}

func TestPromote(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	ctx := within(t, time.Minute)
	res, err := Promote(ctx, pg.Standby.DSN())
	if err != nil {
		t.Fatalf("promote: %v", err)
	}
	if res.Already || res.Timeline != 2 {
		t.Fatalf("promote: %+v, want a promotion to timeline 2", res)
	}
	if inRecovery(t, pg.Standby) {
		t.Fatal("promoted standby still in recovery")
	}
	pg.Standby.Exec(t, "CREATE TABLE promoted AS SELECT 1 AS id")
	pg.Standby.Exec(t, "CHECKPOINT")
	var tl int
	if err := pg.Standby.QueryRow(t, "SELECT timeline_id FROM pg_control_checkpoint()").Scan(&tl); err != nil || tl != res.Timeline {
		t.Fatalf("control file timeline %d, %v; want %d", tl, err, res.Timeline)
	}

	again, err := Promote(ctx, pg.Standby.DSN())
	if err != nil || !again.Already || again.Timeline != 2 {
		t.Fatalf("second promote: %+v, %v; want Already on timeline 2", again, err)
	}
	// The primary was never promoted: timeline 1.
	if res, err := Promote(ctx, pg.Primary.DSN()); err != nil || !res.Already || res.Timeline != 1 {
		t.Fatalf("promote the primary: %+v, %v; want Already on timeline 1", res, err)
	}
}

// failover promotes the standby after the old primary wrote rows 1..100,
// then writes row 1000 on the old primary (which the new one never gets)
// and row 2000 on the new primary.
func failover(t *testing.T, pg *testenv.PGPair) {
	t.Helper()
	pg.Primary.Exec(t, "CREATE TABLE t (id int PRIMARY KEY, src text NOT NULL)")
	pg.Primary.Exec(t, "INSERT INTO t SELECT g, 'before' FROM generate_series(1, 100) g")
	if _, err := WaitCaughtUp(within(t, 30*time.Second), pg.Primary.DSN(), pg.Standby.DSN(), 50*time.Millisecond); err != nil {
		t.Fatalf("wait: %v", err)
	}
	if _, err := Promote(within(t, time.Minute), pg.Standby.DSN()); err != nil {
		t.Fatalf("promote: %v", err)
	}
	pg.Primary.Exec(t, "INSERT INTO t VALUES (1000, 'divergent')")
	pg.Primary.Exec(t, "CREATE TABLE divergent AS SELECT g FROM generate_series(1, 20000) g")
	pg.Standby.Exec(t, "INSERT INTO t VALUES (2000, 'new primary')")
}

// checkReprotected checks that the old primary is a standby streaming from
// the new one: it gets the new primary's rows, not its own divergent ones,
// and the new primary names it by its cluster_name.
func checkReprotected(t *testing.T, pg *testenv.PGPair) {
	t.Helper()
	if !inRecovery(t, pg.Primary) {
		t.Fatal("the old primary is not in recovery")
	}
	pg.Standby.Exec(t, "INSERT INTO t VALUES (3000, 'after reprotect')")
	if _, err := WaitCaughtUp(within(t, 30*time.Second), pg.Standby.DSN(), pg.Primary.DSN(), 50*time.Millisecond); err != nil {
		t.Fatalf("wait for the old primary: %v", err)
	}
	waitRow(t, pg.Primary, 2000, "new primary")
	waitRow(t, pg.Primary, 3000, "after reprotect")
	var n int
	if err := pg.Primary.QueryRow(t, "SELECT count(*) FROM t WHERE id = 1000").Scan(&n); err != nil || n != 0 {
		t.Fatalf("divergent row on the reprotected server: %d, %v; want 0", n, err)
	}
	var state string
	if err := pg.Standby.QueryRow(t, "SELECT coalesce(max(state), '') FROM pg_stat_replication WHERE application_name = $1", pg.Primary.Name).Scan(&state); err != nil || state != "streaming" {
		t.Fatalf("new primary's pg_stat_replication for %q: %q, %v; want streaming", pg.Primary.Name, state, err)
	}
}

func TestReprotectRewind(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	failover(t, pg)
	// Split brain: the old primary was never fenced and still runs.
	h := hostOf(pg.Primary)
	res, err := Reprotect(within(t, 2*time.Minute), h, pg.Primary.DSN(), pg.Standby.ReplicationConnInfo())
	t.Logf("output:\n%s", res.Output)
	if err != nil {
		t.Fatalf("reprotect: %v", err)
	}
	t.Logf("method %s, diverged at %s on timeline %d, old end %s, kept at %s", res.Method, res.DivergedAt, res.Timeline, res.OldEnd, res.KeptAt)
	if res.Method != "rewind" || res.Timeline != 1 || res.DivergedAt == "" || res.OldEnd == "" {
		t.Fatalf("reprotect: %+v, want a rewind with where it diverged on timeline 1 and the old end", res)
	}
	if mustLSN(t, "OldEnd", res.OldEnd) <= mustLSN(t, "DivergedAt", res.DivergedAt) {
		t.Fatalf("OldEnd %s not after DivergedAt %s: the divergent writes are not counted", res.OldEnd, res.DivergedAt)
	}
	if !strings.HasPrefix(res.KeptAt, h.DataDir+".rewind-") {
		t.Fatalf("KeptAt %q, want %s.rewind-<time>", res.KeptAt, h.DataDir)
	}
	segs, err := os.ReadDir(filepath.Join(res.KeptAt, "pg_wal"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("kept WAL: %v, %v; want segments", segs, err)
	}
	if strings.Contains(res.Output, pg.Standby.Password) {
		t.Fatal("the output contains the password")
	}
	checkReprotected(t, pg)

	again, err := Reprotect(within(t, time.Minute), h, pg.Primary.DSN(), pg.Standby.ReplicationConnInfo())
	if err != nil || again.Method != "none" {
		t.Fatalf("second reprotect: %+v, %v; want Method none", again, err)
	}
}

// A switchover: the old primary is fenced and stopped cleanly before the
// promotion, so nothing diverges and pg_rewind has nothing to rewind; the
// host is reached through a Command template (pg_rewind then reads the
// password from its standard input).
func TestReprotectAfterSwitchover(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	ctx := within(t, 2*time.Minute)
	pg.Primary.Exec(t, "CREATE TABLE t (id int PRIMARY KEY, src text NOT NULL)")
	pg.Primary.Exec(t, "INSERT INTO t VALUES (1, 'before')")
	if _, err := Fence(ctx, pg.Primary.DSN()); err != nil {
		t.Fatalf("fence: %v", err)
	}
	if _, err := WaitCaughtUp(ctx, pg.Primary.DSN(), pg.Standby.DSN(), 50*time.Millisecond); err != nil {
		t.Fatalf("wait: %v", err)
	}
	h := Host{DataDir: pg.Primary.DataDir, BinDir: pg.Primary.Bin(), Command: viaShell(pg.Primary)}
	if err := h.Stop(ctx, "fast"); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := Promote(ctx, pg.Standby.DSN()); err != nil {
		t.Fatalf("promote: %v", err)
	}
	pg.Standby.Exec(t, "INSERT INTO t VALUES (2000, 'new primary')")

	res, err := Reprotect(ctx, h, pg.Primary.DSN(), pg.Standby.ReplicationConnInfo())
	t.Logf("output:\n%s", res.Output)
	if err != nil {
		t.Fatalf("reprotect: %v", err)
	}
	t.Logf("method %s, diverged at %s on timeline %d, old end %s, kept at %s", res.Method, res.DivergedAt, res.Timeline, res.OldEnd, res.KeptAt)
	if res.Method != "rewind" || res.DivergedAt == "" || res.OldEnd == "" || res.KeptAt != "" ||
		mustLSN(t, "OldEnd", res.OldEnd) > mustLSN(t, "DivergedAt", res.DivergedAt) {
		t.Fatalf("reprotect: %+v, want pg_rewind with nothing diverged and nothing kept", res)
	}
	if !strings.Contains(res.Output, "no rewind required") || strings.Contains(res.Output, pg.Standby.Password) {
		t.Fatal("output: want pg_rewind's no rewind required, without the password")
	}
	checkReprotected(t, pg)
}

func TestReprotectFallsBackToBaseBackup(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	failover(t, pg)
	pg.Primary.Stop(t, "immediate") // it crashed

	// pg_basebackup fails too: the old data directory goes back.
	h := Host{DataDir: pg.Primary.DataDir, OSUser: pg.Primary.OSUser(), BinDir: failingBin(t, pg.Primary.Bin(), "pg_rewind", "pg_basebackup")}
	res, err := Reprotect(within(t, 2*time.Minute), h, pg.Primary.DSN(), pg.Standby.ReplicationConnInfo())
	t.Logf("both fail: %v", err)
	if err == nil || !strings.Contains(err.Error(), "simulated failure") || res.KeptAt != "" || strings.Contains(err.Error(), pg.Standby.Password) {
		t.Fatalf("pg_rewind and pg_basebackup failing: %+v, %v; want an error, nothing kept aside, no password", res, err)
	}
	if _, err := os.Stat(filepath.Join(h.DataDir, "PG_VERSION")); err != nil {
		t.Fatalf("the old data directory is not back: %v", err)
	}
	if running, err := h.Running(within(t, 30*time.Second)); err != nil || running {
		t.Fatalf("after the failed reprotect: running %v, %v; want stopped", running, err)
	}

	// Only pg_rewind fails.
	h.BinDir = failingBin(t, pg.Primary.Bin(), "pg_rewind")
	res, err = Reprotect(within(t, 2*time.Minute), h, pg.Primary.DSN(), pg.Standby.ReplicationConnInfo())
	t.Logf("output:\n%s", res.Output)
	if err != nil {
		t.Fatalf("reprotect: %v", err)
	}
	t.Logf("method %s, old end %s, kept at %s", res.Method, res.OldEnd, res.KeptAt)
	if res.Method != "basebackup" || res.OldEnd == "" || !strings.HasPrefix(res.KeptAt, h.DataDir+".divergent-") {
		t.Fatalf("reprotect: %+v, want a base backup with the old end and the old directory kept", res)
	}
	// Why pg_rewind failed is told, not only that it did.
	if !strings.HasPrefix(res.RewindError, "simulated failure") || !strings.Contains(res.Output, "pg_rewind failed (simulated failure") ||
		strings.Contains(res.RewindError, pg.Standby.Password) {
		t.Fatalf("RewindError %q, output without pg_rewind's error; want its error line, without the password", res.RewindError)
	}
	if _, err := os.Stat(filepath.Join(res.KeptAt, "PG_VERSION")); err != nil {
		t.Fatalf("the old data directory is not at %s: %v", res.KeptAt, err)
	}
	// pg_rewind got the password in its environment, not its arguments;
	// neither shows.
	if !strings.Contains(res.Output, "password: xxxxx") || strings.Contains(res.Output, pg.Standby.Password) {
		t.Fatalf("output: want the password given through PGPASSWORD and scrubbed")
	}
	checkReprotected(t, pg)

	again, err := Reprotect(within(t, time.Minute), h, pg.Primary.DSN(), pg.Standby.ReplicationConnInfo())
	if err != nil || again.Method != "none" {
		t.Fatalf("second reprotect: %+v, %v; want Method none", again, err)
	}
}

// failingBin is a directory with the programs of bin, but those named
// fail, printing their arguments and PGPASSWORD.
func failingBin(t *testing.T, bin string, fail ...string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lifeboat-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !slices.Contains(fail, e.Name()) {
			if err := os.Symlink(filepath.Join(bin, e.Name()), filepath.Join(dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, name := range fail {
		fake := "#!/bin/sh\necho \"" + name + ": error: simulated failure; args: $*; password: $PGPASSWORD\" >&2\nexit 1\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(fake), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestReprotectRefusals(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	h := hostOf(pg.Primary)
	const secret = "s3cret-Passw0rd-99"
	port := testenv.FreePort(t)
	cases := []struct {
		name, conninfo, want string
	}{
		{"unreachable", fmt.Sprintf("host=127.0.0.1 port=%d user=lifeboat password=%s dbname=postgres sslmode=disable connect_timeout=2", port, secret),
			fmt.Sprintf("connect 127.0.0.1:%d: connection refused", port)},
		{"wrong password", fmt.Sprintf("postgres://lifeboat:%s@127.0.0.1:%d/postgres?sslmode=disable", secret, pg.Standby.Port),
			"password authentication failed"},
		{"does not parse", "host=127.0.0.1 port=notaport password=" + secret, "does not parse"},
		// Before a failover the standby is in recovery: rewinding the
		// primary onto it would leave no primary at all.
		{"not promoted", pg.Standby.ReplicationConnInfo(), "is in recovery: promote it first"},
		{"same server", pg.Primary.ReplicationConnInfo(), "reach the same server"},
	}
	for _, c := range cases {
		res, err := Reprotect(within(t, time.Minute), h, pg.Primary.DSN(), c.conninfo)
		t.Logf("%s: %v", c.name, err)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error saying %q", c.name, err, c.want)
			continue
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), pg.Primary.Password) || strings.Contains(res.Output, secret) {
			t.Errorf("%s: the error or output shows a password: %v", c.name, err)
		}
	}

	// After the promotion, a Host that names the new primary's data
	// directory for the old primary's DSN must not stop the new primary.
	if _, err := Promote(within(t, time.Minute), pg.Standby.DSN()); err != nil {
		t.Fatalf("promote: %v", err)
	}
	_, err := Reprotect(within(t, time.Minute), hostOf(pg.Standby), pg.Primary.DSN(), pg.Standby.ReplicationConnInfo())
	if err == nil || !strings.Contains(err.Error(), "runs on data directory "+pg.Primary.DataDir+", not on the host's "+pg.Standby.DataDir) {
		t.Errorf("wrong DataDir: %v; want a refusal naming both directories", err)
	}
	// The old server's DSN down while a server runs on DataDir.
	down := fmt.Sprintf("postgres://lifeboat:%s@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", secret, port)
	_, err = Reprotect(within(t, time.Minute), h, down, pg.Standby.ReplicationConnInfo())
	if err == nil || !strings.Contains(err.Error(), "the old server runs but does not answer at its DSN") || strings.Contains(err.Error(), secret) {
		t.Errorf("old DSN down, server up: %v; want a refusal without the password", err)
	}

	// Nothing was touched: both still run as primaries.
	for _, n := range []*testenv.PGNode{pg.Primary, pg.Standby} {
		if running, err := hostOf(n).Running(within(t, 30*time.Second)); err != nil || !running || inRecovery(t, n) {
			t.Fatalf("%s after refusals: running %v, %v; in recovery %v", n.Name, running, err, inRecovery(t, n))
		}
	}
}

func TestRewriteConninfo(t *testing.T) {
	cases := []struct{ in, app, want string }{
		{"host=h port=5432 user=u password=secret dbname=postgres", "east", "host=h port=5432 user=u dbname=postgres application_name=east"},
		{`host = h  password = 'it\'s' dbname='my db' application_name=mine`, "east", "host=h dbname='my db' application_name=mine"},
		{`host=h password='a\'b c' user=o\'k`, "", `host=h user='o\'k'`},
		{"postgres://u:secret@h1:5432,h2:5433/db?sslmode=disable&password=x", "a b", "postgres://u@h1:5432,h2:5433/db?sslmode=disable&application_name=a%20b"},
		{"postgresql://u@h/db", "east", "postgresql://u@h/db?application_name=east"},
		{"postgresql://h/db?application_name=x", "east", "postgresql://h/db?application_name=x"},
	}
	for _, c := range cases {
		add := map[string]string{}
		if c.app != "" {
			add["application_name"] = c.app
		}
		got, err := rewriteConninfo(c.in, []string{"password"}, add)
		if err != nil || got != c.want {
			t.Errorf("rewrite %q: %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	if _, err := rewriteConninfo("host=h password='unterminated", nil, nil); err == nil || strings.Contains(err.Error(), "unterminated") {
		t.Errorf("unterminated quote: %v, want an error that does not show the string", err)
	}
	// The rewritten key=value string means the same to libpq's parser
	// (pgx's follows it).
	out, err := rewriteConninfo(`host=h user='o\'k' dbname='my db'`, []string{"password"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(out)
	if err != nil || cfg.User != "o'k" || cfg.Database != "my db" {
		t.Fatalf("reparse %q: %+v, %v", out, cfg, err)
	}
}

func TestDivergentSegments(t *testing.T) {
	const seg = 16 << 20
	names := []string{
		"000000010000000000000002", "000000010000000000000003", "000000010000000000000004",
		"000000010000000000000005", "000000020000000000000003", "00000002.history", "archive_status",
	}
	from := lsn(3*seg + 100) // 0/3000064
	to := lsn(4*seg + 5)
	got := divergentSegments(names, from, to, 1, 1, seg)
	want := []string{"000000010000000000000003", "000000010000000000000004"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("segments %v, want %v", got, want)
	}
}

// noWALKept is a pair whose servers keep no WAL beyond what a checkpoint
// needs (wal_keep_size 0, PostgreSQL's default, as in the lab and most
// installations), with a checkpoint followed by a segment switch before
// the rows of the test: the old primary's latest checkpoint lies in an
// earlier WAL segment than where the servers diverge, as after a base
// backup (pg_backup_stop switches segments) or minutes of traffic.
func noWALKept(t *testing.T, sync bool) *testenv.PGPair {
	t.Helper()
	pg := testenv.StartPostgres(t, testenv.PGOptions{Sync: sync, Settings: map[string]string{"wal_keep_size": "0"}})
	pg.Primary.Exec(t, "CREATE TABLE t (id int PRIMARY KEY, src text NOT NULL)")
	pg.Primary.Exec(t, "CHECKPOINT")
	pg.Primary.Exec(t, "SELECT pg_switch_wal()")
	pg.Primary.Exec(t, "INSERT INTO t SELECT g, 'before' FROM generate_series(1, 100) g")
	return pg
}

// The lab's switchover, in Lifeboat's order: the old primary is fenced,
// the standby catches up and is promoted while the old primary still runs
// (fenced), then Reprotect stops it (its shutdown checkpoint is written
// after the point where the new primary's timeline forks off, so pg_rewind
// has to rewind) and rewinds it. Its fast stop must not recycle the WAL
// pg_rewind reads back to the last checkpoint before the fork.
func TestReprotectRewindsAfterSwitchoverWithoutWALKept(t *testing.T) {
	t.Parallel()
	pg := noWALKept(t, true)
	ctx := within(t, 2*time.Minute)
	if _, err := Fence(ctx, pg.Primary.DSN()); err != nil {
		t.Fatalf("fence: %v", err)
	}
	if _, err := WaitCaughtUp(ctx, pg.Primary.DSN(), pg.Standby.DSN(), 50*time.Millisecond); err != nil {
		t.Fatalf("wait: %v", err)
	}
	if _, err := Promote(ctx, pg.Standby.DSN()); err != nil {
		t.Fatalf("promote: %v", err)
	}
	if err := SetSynchronous(ctx, pg.Standby.DSN(), false); err != nil {
		t.Fatalf("suspend synchronous commit: %v", err)
	}
	pg.Standby.Exec(t, "INSERT INTO t VALUES (2000, 'new primary')")

	h := hostOf(pg.Primary)
	res, err := Reprotect(ctx, h, pg.Primary.DSN(), pg.Standby.ReplicationConnInfo())
	t.Logf("output:\n%s", res.Output)
	if err != nil {
		t.Fatalf("reprotect: %v", err)
	}
	t.Logf("method %s, diverged at %s on timeline %d, old end %s, kept at %s", res.Method, res.DivergedAt, res.Timeline, res.OldEnd, res.KeptAt)
	if res.Method != "rewind" || res.DivergedAt == "" || res.Timeline != 1 || res.OldEnd == "" {
		t.Fatalf("reprotect: method %s, diverged at %q on timeline %d, old end %q; want a rewind that says where it diverged", res.Method, res.DivergedAt, res.Timeline, res.OldEnd)
	}
	checkReprotected(t, pg)
	checkWALKeepSizeReset(t, pg.Primary)
}

// A failover: the old primary crashed (immediate stop) after writing what
// the new primary never got. pg_rewind needs a cleanly shut down target:
// the crash recovery Reprotect runs first must not recycle the WAL
// pg_rewind then reads.
func TestReprotectRewindsAfterCrashWithoutWALKept(t *testing.T) {
	t.Parallel()
	pg := noWALKept(t, false)
	ctx := within(t, 2*time.Minute)
	if _, err := WaitCaughtUp(ctx, pg.Primary.DSN(), pg.Standby.DSN(), 50*time.Millisecond); err != nil {
		t.Fatalf("wait: %v", err)
	}
	if _, err := Promote(ctx, pg.Standby.DSN()); err != nil {
		t.Fatalf("promote: %v", err)
	}
	pg.Primary.Exec(t, "INSERT INTO t VALUES (1000, 'divergent')")
	pg.Standby.Exec(t, "INSERT INTO t VALUES (2000, 'new primary')")
	pg.Primary.Stop(t, "immediate")

	h := hostOf(pg.Primary)
	res, err := Reprotect(ctx, h, pg.Primary.DSN(), pg.Standby.ReplicationConnInfo())
	t.Logf("output:\n%s", res.Output)
	if err != nil {
		t.Fatalf("reprotect: %v", err)
	}
	t.Logf("method %s, diverged at %s on timeline %d, old end %s, kept at %s", res.Method, res.DivergedAt, res.Timeline, res.OldEnd, res.KeptAt)
	if res.Method != "rewind" || res.DivergedAt == "" || res.Timeline != 1 {
		t.Fatalf("reprotect: method %s, diverged at %q on timeline %d; want a rewind that says where it diverged", res.Method, res.DivergedAt, res.Timeline)
	}
	checkReprotected(t, pg)
	checkWALKeepSizeReset(t, pg.Primary)
}

// checkWALKeepSizeReset checks that the reprotected server's wal_keep_size
// is its own again (0, as configured), not what Reprotect set to keep WAL.
func checkWALKeepSizeReset(t *testing.T, n *testenv.PGNode) {
	t.Helper()
	var v string
	if err := n.QueryRow(t, "SHOW wal_keep_size").Scan(&v); err != nil || v != "0" {
		t.Fatalf("%s: wal_keep_size %q, %v; want 0 (its own setting)", n.Name, v, err)
	}
}

// When pg_rewind finds nothing to rewind, the data directory keeps its
// postgresql.auto.conf: the wal_keep_size Reprotect set for the stop must
// go. The old primary here stopped cleanly before the promotion and runs
// again in recovery, connected to no primary: a standby left behind on
// the old timeline.
func TestReprotectPutsWALKeepSizeBack(t *testing.T) {
	t.Parallel()
	pg := noWALKept(t, false)
	ctx := within(t, 2*time.Minute)
	if _, err := WaitCaughtUp(ctx, pg.Primary.DSN(), pg.Standby.DSN(), 50*time.Millisecond); err != nil {
		t.Fatalf("wait: %v", err)
	}
	h := hostOf(pg.Primary)
	pg.Primary.Stop(t, "fast")
	if _, err := Promote(ctx, pg.Standby.DSN()); err != nil {
		t.Fatalf("promote: %v", err)
	}
	pg.Standby.Exec(t, "INSERT INTO t VALUES (2000, 'new primary')")
	if _, err := h.run(ctx, hostCmd{argv: []string{"touch", h.DataDir + "/standby.signal"}}); err != nil {
		t.Fatal(err)
	}
	pg.Primary.Start(t)
	if !inRecovery(t, pg.Primary) {
		t.Fatal("the old primary did not start in recovery")
	}

	res, err := Reprotect(ctx, h, pg.Primary.DSN(), pg.Standby.ReplicationConnInfo())
	t.Logf("output:\n%s", res.Output)
	if err != nil {
		t.Fatalf("reprotect: %v", err)
	}
	if res.Method != "rewind" || !strings.Contains(res.Output, "no rewind required") {
		t.Fatalf("reprotect: method %s; want pg_rewind finding no rewind required", res.Method)
	}
	if !strings.Contains(res.Output, "wal_keep_size = ") || !strings.Contains(res.Output, "ALTER SYSTEM RESET wal_keep_size") {
		t.Fatal("output: want wal_keep_size raised for the stop, then reset")
	}
	checkReprotected(t, pg)
	checkWALKeepSizeReset(t, pg.Primary)
}
