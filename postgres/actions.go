package postgres

import (
	"context"
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Runbook actions: each does one step of a failover or switchover, checks
// that it took, and does nothing when it was done already, so that a
// runbook can run it again after any failure.

// closeEndpoint closes ep's connection within a second, whatever the
// caller's context has become.
func closeEndpoint(ep *endpoint) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ep.close(ctx)
}

// scanRow runs a query on ep's connection (opening it if needed) and scans
// its one row. Failures are described without the password; a failed
// query drops the connection.
func scanRow(ctx context.Context, ep *endpoint, sql string, args []any, dest ...any) error {
	conn, err := ep.connect(ctx)
	if err != nil {
		return err
	}
	started := time.Now()
	if err := conn.QueryRow(ctx, sql, args...).Scan(dest...); err != nil {
		return ep.fail(ctx, "query", err, started)
	}
	return nil
}

// execSQL runs a statement on ep's connection, as scanRow does.
func execSQL(ctx context.Context, ep *endpoint, sql string, args ...any) error {
	conn, err := ep.connect(ctx)
	if err != nil {
		return err
	}
	started := time.Now()
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return ep.fail(ctx, "query", err, started)
	}
	return nil
}

// FenceResult is what Fence did.
type FenceResult struct {
	// AlreadyFenced says new sessions were read-only before the call.
	AlreadyFenced bool
	// Terminated is the number of other client sessions ended.
	Terminated int
	// Busy names the sessions still inside a transaction when the drain
	// gave up waiting (pid, application_name, state, wait event), or is
	// empty when every transaction in progress finished.
	Busy string
}

// confirmWait bounds the wait for a reloaded setting to reach new
// sessions (the postmaster applies a reload asynchronously).
const confirmWait = 10 * time.Second

// Fence makes the server at dsn refuse writes: ALTER SYSTEM SET
// default_transaction_read_only = on and pg_reload_conf(), then, once a new
// session confirms that it starts read-only, it lets the transactions in
// progress finish (up to drainWait) and then ends every other client
// session (pg_terminate_backend, waiting up to 5s for each), so that no
// session opened before the fence goes on writing. Replication
// connections are left alone: the standbys must still catch up.
//
// It is idempotent: on a fenced server it reports AlreadyFenced and still
// ends the client sessions it finds (a session may have turned read-only
// off for itself). The role needs superuser (or ALTER SYSTEM and
// pg_signal_backend on non-superuser sessions). A session that cannot be
// ended is an error: the fence holds for new sessions, not for it.
func Fence(ctx context.Context, dsn string) (FenceResult, error) {
	var res FenceResult
	before, err := readOnlyDefault(ctx, dsn)
	if err != nil {
		return res, fmt.Errorf("fence: %w", err)
	}
	res.AlreadyFenced = before
	// Our own session writes: read-only must not apply to it.
	// Named apart: a fence's drain does not wait for another's.
	ep := newEndpoint(dsn, map[string]string{"default_transaction_read_only": "off", "application_name": fenceApplicationName})
	defer closeEndpoint(ep)
	if ep.config != nil {
		ep.config.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
			if busy, ok := strings.CutPrefix(n.Message, drainNotice); ok {
				res.Busy = busy
			}
		}
	}
	if err := execSQL(ctx, ep, "ALTER SYSTEM SET default_transaction_read_only = on"); err != nil {
		return res, fmt.Errorf("fence: ALTER SYSTEM SET default_transaction_read_only = on: %w", err)
	}
	if err := execSQL(ctx, ep, "SELECT pg_reload_conf()"); err != nil {
		return res, fmt.Errorf("fence: pg_reload_conf(): %w", err)
	}
	// Confirm before ending sessions, so that a client that reconnects at
	// once gets a read-only session.
	if err := waitReadOnly(ctx, dsn, true); err != nil {
		return res, fmt.Errorf("fence: %w", err)
	}
	n, err := terminateClients(ctx, ep)
	res.Terminated = n
	if err != nil {
		return res, fmt.Errorf("fence: new sessions are read-only, but %w", err)
	}
	return res, nil
}

// terminateClients ends every client backend but ep's own and returns how
// many it ended. It asks for all of them in one statement (one round trip,
// however many sessions there are: the server may be a region away); if
// that statement fails on one backend (a superuser's, for a role that may
// not end it), it goes one by one to say which.
func terminateClients(ctx context.Context, ep *endpoint) (int, error) {
	conn, err := ep.connect(ctx)
	if err != nil {
		return 0, err
	}
	started := time.Now()
	// The drain and the termination go in one round trip.
	batch := &pgx.Batch{}
	batch.Queue(drainSQL(drainWait))
	batch.Queue(`SELECT pid, backend_start, pg_terminate_backend(pid, 5000) FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`)
	br := conn.SendBatch(ctx, batch)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return 0, ep.fail(ctx, "query", err, started)
	}
	rows, err := br.Query()
	if err != nil {
		return 0, ep.fail(ctx, "query", err, started)
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (backend, error) {
		var b backend
		err := r.Scan(&b.pid, &b.start, &b.ended)
		return b, err
	})
	if cerr := br.Close(); err == nil && cerr != nil {
		return 0, ep.fail(ctx, "query", cerr, started)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return terminateEach(ctx, ep)
	}
	if err != nil {
		return 0, ep.fail(ctx, "query", err, started)
	}
	n := 0
	for _, b := range all {
		if b.ended {
			n++
		}
	}
	return n, stillThere(ctx, ep, all, nil)
}

// drainWait bounds how long a fence lets the transactions in progress
// finish before it ends their sessions.
const drainWait = time.Second

// drainSQL waits, on the server (one round trip), until no other client
// session is inside a transaction or running a statement, at most max.
// Once a fence's reload has reached them, sessions start every new
// transaction read-only; what they had begun before may still commit. A
// statement ended midway leaves its client unsure whether it committed
// (with synchronous replication, a COMMIT waiting for the standby is one
// such statement); one allowed to finish gives a clear answer, and the
// standby has it before the catch-up step compares positions.
// pg_stat_clear_snapshot makes each look see the sessions as they are now.
// When it gives up, it names the sessions still busy in a notice.
func drainSQL(max time.Duration) string {
	return fmt.Sprintf(`DO $$
DECLARE
	deadline timestamptz := clock_timestamp() + interval '%d milliseconds';
	busy text;
BEGIN
	LOOP
		PERFORM pg_stat_clear_snapshot();
		SELECT string_agg(format('%%s %%s (%%s%%s)', pid, coalesce(nullif(application_name, ''), '-'), state,
			coalesce(', waiting on ' || wait_event, '')), ', ') INTO busy
		FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name <> %s
			AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)', 'fastpath function call');
		EXIT WHEN busy IS NULL;
		IF clock_timestamp() > deadline THEN
			RAISE NOTICE '%%', %s || busy;
			EXIT;
		END IF;
		PERFORM pg_sleep(0.005);
	END LOOP;
END $$`, max.Milliseconds(), quoteLiteral(fenceApplicationName), quoteLiteral(drainNotice))
}

// fenceApplicationName names a fence's session in pg_stat_activity.
const fenceApplicationName = "lifeboat-fence"

// drainNotice starts the notice of a drain that gave up.
const drainNotice = "lifeboat drain gave up on: "

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// backend is a client session of the server.
type backend struct {
	pid   int32
	start time.Time
	ended bool
}

// terminateEach ends the client backends one by one, naming those it may
// not end.
func terminateEach(ctx context.Context, ep *endpoint) (int, error) {
	conn, err := ep.connect(ctx)
	if err != nil {
		return 0, err
	}
	started := time.Now()
	rows, err := conn.Query(ctx, `SELECT pid, backend_start FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`)
	if err != nil {
		return 0, ep.fail(ctx, "query", err, started)
	}
	backends, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (backend, error) {
		var b backend
		err := r.Scan(&b.pid, &b.start)
		return b, err
	})
	if err != nil {
		return 0, ep.fail(ctx, "query", err, started)
	}
	n := 0
	var bad []string
	refused := map[int32]bool{}
	for i, b := range backends {
		started := time.Now()
		err := conn.QueryRow(ctx, "SELECT pg_terminate_backend($1, 5000)", b.pid).Scan(&backends[i].ended)
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr):
			refused[b.pid] = true
			bad = append(bad, fmt.Sprintf("%d (%s)", b.pid, pgErr.Message))
		case err != nil:
			return n, ep.fail(ctx, "query", err, started)
		case backends[i].ended:
			n++
		}
	}
	var left []backend
	for _, b := range backends {
		if !refused[b.pid] {
			left = append(left, b)
		}
	}
	return n, stillThere(ctx, ep, left, bad)
}

// stillThere looks, in one query, for the sessions that were not ended
// (false means gone already or still there after 5s), and reports them
// with bad, the sessions already known not to have been ended.
func stillThere(ctx context.Context, ep *endpoint, backends []backend, bad []string) error {
	var pids []int32
	var starts []time.Time
	for _, b := range backends {
		if !b.ended {
			pids, starts = append(pids, b.pid), append(starts, b.start)
		}
	}
	if len(pids) > 0 {
		conn, err := ep.connect(ctx)
		if err != nil {
			return err
		}
		started := time.Now()
		rows, err := conn.Query(ctx, `SELECT s.pid FROM pg_stat_activity s
JOIN unnest($1::int4[], $2::timestamptz[]) AS t(pid, start) ON s.pid = t.pid AND s.backend_start = t.start`, pids, starts)
		if err != nil {
			return ep.fail(ctx, "query", err, started)
		}
		still, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return ep.fail(ctx, "query", err, started)
		}
		for _, pid := range still {
			bad = append(bad, fmt.Sprintf("%d (still there after 5s)", pid))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%d session(s) could not be ended on %s: %s", len(bad), ep.addr, strings.Join(bad, ", "))
	}
	return nil
}

// Unfence lets the server at dsn take writes again: ALTER SYSTEM RESET
// default_transaction_read_only and pg_reload_conf(), then it confirms
// that a new session starts read-write. It is idempotent. If read-only is
// also set elsewhere (postgresql.conf, ALTER DATABASE or ALTER ROLE ...
// SET), the confirmation fails and says so.
func Unfence(ctx context.Context, dsn string) error {
	ep := newEndpoint(dsn, map[string]string{"default_transaction_read_only": "off"})
	defer closeEndpoint(ep)
	if err := execSQL(ctx, ep, "ALTER SYSTEM RESET default_transaction_read_only"); err != nil {
		return fmt.Errorf("unfence: ALTER SYSTEM RESET default_transaction_read_only: %w", err)
	}
	if err := execSQL(ctx, ep, "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("unfence: pg_reload_conf(): %w", err)
	}
	if err := waitReadOnly(ctx, dsn, false); err != nil {
		return fmt.Errorf("unfence: %w (is it also set in postgresql.conf, or by ALTER DATABASE or ALTER ROLE?)", err)
	}
	return nil
}

// IsFenced reports whether new sessions on the server at dsn default to
// read-only (SHOW default_transaction_read_only in a new session).
func IsFenced(ctx context.Context, dsn string) (bool, error) {
	on, err := readOnlyDefault(ctx, dsn)
	if err != nil {
		return false, fmt.Errorf("is fenced: %w", err)
	}
	return on, nil
}

// readOnlyDefault opens a new session and reads its
// default_transaction_read_only.
func readOnlyDefault(ctx context.Context, dsn string) (bool, error) {
	ep := newEndpoint(dsn, nil)
	defer closeEndpoint(ep)
	var v string
	if err := scanRow(ctx, ep, "SHOW default_transaction_read_only", nil, &v); err != nil {
		return false, err
	}
	return v == "on", nil
}

// waitReadOnly polls new sessions until their default_transaction_read_only
// is want, for up to confirmWait.
func waitReadOnly(ctx context.Context, dsn string, want bool) error {
	ctx, cancel := context.WithTimeout(ctx, confirmWait)
	defer cancel()
	started := time.Now()
	for {
		got, err := readOnlyDefault(ctx, dsn)
		if err == nil && got == want {
			return nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("confirm default_transaction_read_only = %s: %w", onOff(want), err)
			}
			return fmt.Errorf("a new session still has default_transaction_read_only = %s after %s", onOff(got), time.Since(started).Round(time.Millisecond))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// CaughtUp is where a primary and its standby stood when WaitCaughtUp
// returned, as LSNs in PostgreSQL's X/Y text form.
type CaughtUp struct {
	// PrimaryLSN is the primary's pg_current_wal_flush_lsn().
	PrimaryLSN string
	// StandbyLSN is the standby's pg_last_wal_replay_lsn(), read after
	// the primary's.
	StandbyLSN string
}

// WaitCaughtUp waits until the standby has replayed all the WAL the primary
// has flushed: every poll (default 100ms) it reads the primary's
// pg_current_wal_flush_lsn(), then the standby's pg_last_wal_replay_lsn(),
// and returns once the standby's is at least the primary's. Reading the
// primary first makes it end even while the primary takes writes.
//
// Connection failures are retried until ctx ends; the error then says how
// many bytes behind the standby was when last seen, and the last failure.
// A primary in recovery, a standby that is not, or a refused query end the
// wait at once.
func WaitCaughtUp(ctx context.Context, primaryDSN, standbyDSN string, poll time.Duration) (CaughtUp, error) {
	if poll <= 0 {
		poll = 100 * time.Millisecond
	}
	p := newEndpoint(primaryDSN, nil)
	defer closeEndpoint(p)
	s := newEndpoint(standbyDSN, nil)
	defer closeEndpoint(s)
	var (
		res              CaughtUp
		pLSN, sLSN       lsn
		pKnown, sKnown   bool
		lastErr          error
		started          = time.Now()
		tick             = time.NewTicker(poll)
		primary, standby = p.addr, s.addr
	)
	defer tick.Stop()
	for {
		err := func() error {
			var cur string
			if err := scanRow(ctx, p, "SELECT pg_current_wal_flush_lsn()::text", nil, &cur); err != nil {
				return fmt.Errorf("primary: %w", err)
			}
			l, err := parseLSN(cur)
			if err != nil {
				return fmt.Errorf("primary %s: %w", primary, err)
			}
			pLSN, pKnown, res.PrimaryLSN = l, true, cur
			var (
				inRecovery bool
				replay     *string
			)
			if err := scanRow(ctx, s, "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text", nil, &inRecovery, &replay); err != nil {
				return fmt.Errorf("standby: %w", err)
			}
			if !inRecovery {
				return &permanentError{fmt.Errorf("standby %s is not in recovery (promoted?): it follows no primary", standby)}
			}
			if replay == nil {
				return fmt.Errorf("standby %s has replayed nothing yet", standby)
			}
			if l, err = parseLSN(*replay); err != nil {
				return fmt.Errorf("standby %s: %w", standby, err)
			}
			sLSN, sKnown, res.StandbyLSN = l, true, *replay
			return nil
		}()
		if err == nil && sLSN >= pLSN {
			return res, nil
		}
		if err != nil && ctx.Err() == nil && (isPermanent(err) || isRefusal(err)) {
			return res, fmt.Errorf("wait caught up: %w", err)
		}
		if ctx.Err() == nil || lastErr == nil {
			lastErr = err // not the failure of an attempt cut short by ctx
		}
		select {
		case <-ctx.Done():
			var where string
			switch {
			case pKnown && sKnown:
				behind := int64(0)
				if pLSN > sLSN {
					behind = int64(pLSN - sLSN)
				}
				where = fmt.Sprintf("%d bytes behind when last seen (standby replayed %s, primary flushed %s)", behind, sLSN, pLSN)
			case pKnown:
				where = fmt.Sprintf("standby position never read (primary flushed %s)", pLSN)
			default:
				where = "positions never read"
			}
			msg := fmt.Sprintf("wait caught up: standby %s not caught up with primary %s after %s: %s", standby, primary, time.Since(started).Round(time.Millisecond), where)
			if lastErr != nil && !errors.Is(lastErr, ctx.Err()) {
				msg += "; last error: " + lastErr.Error()
			}
			return res, fmt.Errorf("%s: %w", msg, ctx.Err())
		case <-tick.C:
		}
	}
}

// permanentError is a failure that waiting will not cure.
type permanentError struct{ error }

func (e *permanentError) Unwrap() error { return e.error }

func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// isRefusal reports whether the server answered err with an error that a
// retry will not change: anything but connection trouble (SQLSTATE class
// 08), operator intervention (57: shutting down, starting up), lack of
// resources (53: too many connections) and a transaction rollback (40).
func isRefusal(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || len(pgErr.Code) < 2 {
		return false
	}
	switch pgErr.Code[:2] {
	case "08", "57", "53", "40":
		return false
	}
	return true
}

// PromoteResult is what Promote did.
type PromoteResult struct {
	// Already says the server was not in recovery: nothing was done.
	Already bool
	// Timeline is the server's timeline after the call.
	Timeline int
}

// Promote makes the standby at dsn a primary: SELECT pg_promote(true, n)
// with n the seconds left in ctx (60 without a deadline), then it confirms
// that pg_is_in_recovery() is false. A server not in recovery is left
// alone (Already). Timeline is read from the name of the current WAL file,
// which follows the new timeline as soon as promotion ends (the control
// file waits for the next checkpoint).
func Promote(ctx context.Context, dsn string) (PromoteResult, error) {
	var res PromoteResult
	ep := newEndpoint(dsn, nil)
	defer closeEndpoint(ep)
	var inRecovery bool
	if err := scanRow(ctx, ep, "SELECT pg_is_in_recovery()", nil, &inRecovery); err != nil {
		return res, fmt.Errorf("promote: %w", err)
	}
	if !inRecovery {
		res.Already = true
	} else {
		secs := waitSeconds(ctx)
		var promoted bool
		if err := scanRow(ctx, ep, "SELECT pg_promote(true, $1)", []any{int32(secs)}, &promoted); err != nil {
			return res, fmt.Errorf("promote: pg_promote: %w", err)
		}
		if !promoted {
			return res, fmt.Errorf("promote %s: pg_promote: still in recovery after %ds", ep.addr, secs)
		}
		if err := scanRow(ctx, ep, "SELECT pg_is_in_recovery()", nil, &inRecovery); err != nil {
			return res, fmt.Errorf("promote: confirm: %w", err)
		}
		if inRecovery {
			return res, fmt.Errorf("promote %s: pg_promote returned true but pg_is_in_recovery() is still true", ep.addr)
		}
	}
	tl, err := timeline(ctx, ep)
	if err != nil {
		return res, fmt.Errorf("promote: %w", err)
	}
	res.Timeline = tl
	return res, nil
}

// timeline is a primary's current timeline, from its current WAL file's
// name (its first 8 hex digits).
func timeline(ctx context.Context, ep *endpoint) (int, error) {
	var name string
	if err := scanRow(ctx, ep, "SELECT pg_walfile_name(pg_current_wal_lsn())", nil, &name); err != nil {
		return 0, err
	}
	if len(name) < 8 {
		return 0, fmt.Errorf("timeline of %s: WAL file name %q is too short", ep.addr, name)
	}
	tl, err := strconv.ParseUint(name[:8], 16, 32)
	if err != nil {
		return 0, fmt.Errorf("timeline of %s: WAL file name %q: %w", ep.addr, name, err)
	}
	return int(tl), nil
}

// ReprotectResult is what Reprotect did, and what the old primary had that
// the new one never got.
type ReprotectResult struct {
	// Method is "none" (it already streamed from the new primary),
	// "rewind" (pg_rewind) or "basebackup" (pg_basebackup into a fresh
	// data directory, pg_rewind having failed).
	Method string
	// DivergedAt is where the old primary's history left the new
	// primary's, from pg_rewind ("servers diverged at WAL location X on
	// timeline N"); empty when pg_rewind did not get that far.
	DivergedAt string
	// OldEnd is the old primary's end of WAL as far as it is known: its
	// pg_current_wal_lsn() before the stop, or its latest checkpoint
	// (pg_controldata) when later. WAL from DivergedAt to OldEnd is what
	// the new primary never got. For a server that crashed, WAL after its
	// latest checkpoint is not counted.
	OldEnd string
	// Timeline is the timeline on which the servers diverged (pg_rewind's
	// report); 0 when unknown.
	Timeline int
	// KeptAt is the directory on the host that keeps the divergent data:
	// the whole old data directory (basebackup), or a copy of the old
	// primary's WAL segments from DivergedAt to OldEnd, in its pg_wal
	// (rewind). Empty when nothing diverged. Lifeboat never deletes it.
	KeptAt string
	// RewindError is why pg_rewind failed when Method is "basebackup":
	// its error lines ("could not find previous WAL record at ..."), else
	// how it ended.
	RewindError string
	// Output is a log of the steps and what the programs printed, without
	// passwords.
	Output string
}

// Reprotect makes the old primary, on Host h and reachable at oldDSN when
// it runs, a streaming standby of the new primary at newPrimaryConnInfo (a
// libpq connection string with dbname, for a superuser that may also
// replicate; it must be reachable from Lifeboat and from the host):
//
//  1. It checks that the new primary answers and is not in recovery, and
//     that the old server is of the same system, is not the new primary
//     itself and, when it runs, reports DataDir as its data_directory. If the old server already streams from the new
//     primary, it does nothing (Method "none").
//  2. It records the old primary's end of WAL, stops it (fast) and saves
//     its postgresql.conf, pg_hba.conf and pg_ident.conf in
//     DataDir.rewind-<UTC time>/conf: pg_rewind and pg_basebackup copy the
//     new primary's, which name another port and cluster_name. pg_rewind
//     reads the old primary's WAL back from where the servers diverged to
//     the last checkpoint before that point, which may lie segments
//     earlier; the checkpoint of the stop would remove those segments
//     (unless wal_keep_size, a slot or archiving keeps them), so before
//     the stop Reprotect raises the old server's wal_keep_size (ALTER
//     SYSTEM, reload) to keep every segment in its pg_wal. A server that
//     was not shut down cleanly (it crashed) goes through crash recovery
//     in single-user mode with such a wal_keep_size, rather than in
//     pg_rewind's own, which would remove them (and which pg_rewind
//     --dry-run skips, failing).
//  3. pg_rewind --dry-run finds where the servers diverged; the old
//     primary's WAL segments from there to its end are copied to
//     DataDir.rewind-<time>/pg_wal before pg_rewind -R rewinds the data
//     directory and writes standby.signal and primary_conninfo. "No rewind
//     required" is fine: the standby configuration is still written.
//  4. If pg_rewind fails, the data directory is moved (never deleted) to
//     DataDir.divergent-<time> and pg_basebackup -R copies the new primary
//     into a fresh one; if that fails too, the old directory is moved
//     back. pg_rewind's error is in RewindError and the Output.
//  5. The saved configuration files are put back, the server is started
//     and Reprotect waits, within ctx, until it streams from the new
//     primary. pg_rewind and pg_basebackup replace postgresql.auto.conf
//     with the new primary's; when pg_rewind rewrote nothing, the
//     wal_keep_size of step 2 is put back as it was.
//
// primary_conninfo gets application_name = the old server's cluster_name
// (unless newPrimaryConnInfo has one), so that the new primary's
// pg_stat_replication names it as the monitor expects. The password of
// newPrimaryConnInfo reaches pg_rewind and pg_basebackup through
// PGPASSWORD, never their command line; it is written in primary_conninfo,
// as pg_basebackup -R does. A fence (Fence) set on the old primary stays in
// its postgresql.auto.conf when pg_rewind finds nothing to rewind; a
// standby does not mind, but after a later promotion call Unfence. On
// error the result says what was done so far.
func Reprotect(ctx context.Context, h Host, oldDSN, newPrimaryConnInfo string) (ReprotectResult, error) {
	r := &reprotect{h: h, oldDSN: oldDSN}
	err := r.run(ctx, newPrimaryConnInfo)
	if err != nil && r.keep.set != "" && !r.keep.restored && !r.rewrote {
		r.note("wal_keep_size = %s stays in %s/postgresql.auto.conf: once the server runs, ALTER SYSTEM %s and SELECT pg_reload_conf()", r.keep.set, h.DataDir, r.keep.undo())
	}
	r.res.Output = scrub(r.out.String(), r.secrets...)
	if err != nil {
		return r.res, fmt.Errorf("reprotect %s: %w", h.DataDir, err)
	}
	return r.res, nil
}

// reprotect is one run of Reprotect.
type reprotect struct {
	h       Host
	oldDSN  string
	src     source
	newTLI  int      // the new primary's timeline
	secrets []string // scrubbed from everything shown
	res     ReprotectResult
	out     strings.Builder
	// keep is what keepWAL changed of the old server's wal_keep_size.
	keep walKeep
	// rewrote says pg_rewind rewound the data directory or pg_basebackup
	// replaced it: its postgresql.auto.conf is the new primary's.
	rewrote bool
}

// walKeep is a wal_keep_size that Reprotect set with ALTER SYSTEM.
type walKeep struct {
	set      string // the value set; "" when Reprotect set none
	prev     string // postgresql.auto.conf's value before; "" for none
	restored bool
}

// note adds a line to the result's Output.
func (r *reprotect) note(format string, args ...any) {
	fmt.Fprintf(&r.out, "lifeboat: "+format+"\n", args...)
}

// cmd runs a program on the host, recording its command line and output.
func (r *reprotect) cmd(ctx context.Context, c hostCmd) (string, error) {
	c.secrets = r.secrets
	out, err := r.h.run(ctx, c)
	fmt.Fprintf(&r.out, "$ %s\n%s", c.scrub(c.line()), out)
	if out != "" && !strings.HasSuffix(out, "\n") {
		r.out.WriteString("\n")
	}
	return out, err
}

// serverInfo is what Reprotect reads of a running server.
type serverInfo struct {
	inRecovery  bool
	sysID       string
	startTime   string
	clusterName string
	dataDir     string
	currentLSN  *string // nil in recovery
	walStatus   string  // "" without a wal receiver
	receivedTLI int32   // the timeline the wal receiver streams
	senderHost  string
	senderPort  int32
}

const serverInfoQuery = `SELECT pg_is_in_recovery(),
	(SELECT system_identifier FROM pg_control_system())::text,
	pg_postmaster_start_time()::text,
	current_setting('cluster_name'),
	current_setting('data_directory'),
	CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
	coalesce((SELECT status FROM pg_stat_wal_receiver), ''),
	coalesce((SELECT received_tli FROM pg_stat_wal_receiver), 0),
	coalesce((SELECT sender_host FROM pg_stat_wal_receiver), ''),
	coalesce((SELECT sender_port FROM pg_stat_wal_receiver), 0)`

func readServerInfo(ctx context.Context, ep *endpoint) (serverInfo, error) {
	var s serverInfo
	err := scanRow(ctx, ep, serverInfoQuery, nil, &s.inRecovery, &s.sysID, &s.startTime, &s.clusterName,
		&s.dataDir, &s.currentLSN, &s.walStatus, &s.receivedTLI, &s.senderHost, &s.senderPort)
	return s, err
}

// saveConfigScript copies the files named after its first two arguments
// that exist in the directory $1 into the directory $2 (created), saying
// "saved <name>" for each.
const saveConfigScript = `d=$1; s=$2; shift 2; mkdir -p "$s" || exit 1
for f; do if [ -f "$d/$f" ]; then cp -p "$d/$f" "$s/$f" || exit 1; echo "saved $f"; fi; done`

// moveScript renames $1 to $2 unless $2 exists (mv would move $1 into it).
const moveScript = `if [ -e "$2" ]; then echo "$2 exists" >&2; exit 1; fi; mv "$1" "$2"`

// configFiles are the old server's own files, put back after pg_rewind or
// pg_basebackup copied the new primary's.
var configFiles = []string{"postgresql.conf", "pg_hba.conf", "pg_ident.conf"}

var divergedRE = regexp.MustCompile(`servers diverged at WAL location ([0-9A-Fa-f]+/[0-9A-Fa-f]+) on timeline (\d+)`)

func (r *reprotect) run(ctx context.Context, newPrimaryConnInfo string) error {
	h := r.h
	if err := h.check(); err != nil {
		return err
	}
	if r.oldDSN == "" {
		return errors.New("the old primary's DSN is empty")
	}
	src, err := parseSource(newPrimaryConnInfo)
	if err != nil {
		return err
	}
	r.src = src
	r.secrets = []string{src.password}
	oldEP := newEndpoint(r.oldDSN, nil)
	defer closeEndpoint(oldEP)
	if oldEP.config != nil {
		r.secrets = append(r.secrets, oldEP.config.Password)
	}
	newEP := newEndpoint(newPrimaryConnInfo, nil)
	defer closeEndpoint(newEP)

	// 1. Who is who.
	var np serverInfo
	if err := scanRow(ctx, newEP, "SELECT pg_is_in_recovery(), system_identifier::text, pg_postmaster_start_time()::text FROM pg_control_system()", nil,
		&np.inRecovery, &np.sysID, &np.startTime); err != nil {
		return fmt.Errorf("new primary: %w", err)
	}
	if np.inRecovery {
		return fmt.Errorf("new primary %s is in recovery: promote it first", newEP.addr)
	}
	if r.newTLI, err = timeline(ctx, newEP); err != nil {
		return fmt.Errorf("new primary: %w", err)
	}
	old, oldErr := readServerInfo(ctx, oldEP)
	running, err := h.Running(ctx)
	if err != nil {
		return err
	}
	switch {
	case oldErr == nil && !running:
		return fmt.Errorf("a server answers at %s, but pg_ctl status finds none on %s: wrong DataDir or host?", oldEP.addr, h.DataDir)
	case oldErr != nil && running:
		return fmt.Errorf("the old server runs but does not answer at its DSN: %w", oldErr)
	case oldErr != nil && !oldEP.connectFailed(oldErr):
		return fmt.Errorf("old server: %w", oldErr)
	}
	var preEnd lsn
	if running {
		if old.sysID != np.sysID {
			return fmt.Errorf("the old server (%s, system %s) and the new primary (%s, system %s) are not copies of one cluster", oldEP.addr, old.sysID, newEP.addr, np.sysID)
		}
		if old.startTime == np.startTime {
			return fmt.Errorf("the old server's DSN and the new primary's conninfo reach the same server (%s, %s)", oldEP.addr, newEP.addr)
		}
		if path.Clean(old.dataDir) != path.Clean(h.DataDir) {
			return fmt.Errorf("the server at %s runs on data directory %s, not on the host's %s", oldEP.addr, old.dataDir, h.DataDir)
		}
		if old.inRecovery {
			ok, why, err := r.streamsFrom(ctx, old, newEP)
			if err != nil {
				return err
			}
			if ok {
				r.res.Method = "none"
				r.note("already a standby streaming from the new primary (%s): nothing to do", why)
				return nil
			}
		}
		if old.currentLSN != nil {
			if preEnd, err = parseLSN(*old.currentLSN); err != nil {
				return fmt.Errorf("old primary %s: %w", oldEP.addr, err)
			}
			r.note("old primary's WAL ends at %s before the stop", preEnd)
		}
		closeEndpoint(oldEP)
		r.keepWAL(ctx)
	} else {
		r.note("the old server does not run (%v)", oldErr)
	}

	// pg_rewind reads the new primary's timeline in its control file,
	// which a promotion updates only at its next checkpoint: until then
	// pg_rewind finds the servers "on the same timeline" and rewinds
	// nothing.
	var ctlTLI int32
	if err := scanRow(ctx, newEP, "SELECT timeline_id FROM pg_control_checkpoint()", nil, &ctlTLI); err != nil {
		return fmt.Errorf("new primary: %w", err)
	}
	if int(ctlTLI) != r.newTLI {
		if err := execSQL(ctx, newEP, "CHECKPOINT"); err != nil {
			return fmt.Errorf("new primary: CHECKPOINT: %w", err)
		}
		r.note("CHECKPOINT on the new primary: its control file showed timeline %d, it runs on %d", ctlTLI, r.newTLI)
	}

	// 2. Stop, read the control file, save the configuration.
	if err := h.Stop(ctx, "fast"); err != nil {
		return err
	}
	if running {
		r.note("stopped %s (fast)", h.DataDir)
	}
	ctl, err := r.controlData(ctx)
	if err != nil {
		return err
	}
	if !ctl.cleanShutdown() && ctl.sysID == np.sysID {
		if ctl, err = r.recoverKeepingWAL(ctx, ctl); err != nil {
			return err
		}
	}
	if ctl.sysID != np.sysID {
		return fmt.Errorf("%s belongs to system %s, the new primary %s to system %s: not copies of one cluster", h.DataDir, ctl.sysID, newEP.addr, np.sysID)
	}
	r.setOldEnd(max(preEnd, ctl.checkpoint))
	appName := ""
	if !src.hasAppName {
		out, err := r.cmd(ctx, hostCmd{argv: []string{h.bin("postgres"), "-D", h.DataDir, "-C", "cluster_name"}, env: []string{"LC_ALL=C"}})
		if err == nil {
			appName = strings.TrimSpace(out)
		} else {
			r.note("cluster_name unknown (%v): primary_conninfo gets no application_name", err)
		}
	}
	srcInfo, err := src.forPrograms(appName)
	if err != nil {
		return err
	}
	stamp := time.Now().UTC().Format("20060102T150405Z")
	saved := h.DataDir + ".rewind-" + stamp
	out, err := r.cmd(ctx, hostCmd{argv: append([]string{"sh", "-c", saveConfigScript, "sh", h.DataDir, saved + "/conf"}, configFiles...)})
	if err != nil {
		return err
	}
	var savedFiles []string
	for _, line := range strings.Split(out, "\n") {
		if f, ok := strings.CutPrefix(line, "saved "); ok {
			savedFiles = append(savedFiles, f)
		}
	}

	// 3. Rewind.
	rewind := func(extra ...string) (string, error) {
		argv := append([]string{h.bin("pg_rewind"), "--target-pgdata=" + h.DataDir, "--source-server=" + srcInfo}, extra...)
		return r.cmd(ctx, hostCmd{argv: argv, env: []string{"LC_ALL=C"}, password: src.password})
	}
	var rerr error
	out, rerr = rewind("--dry-run")
	if rerr == nil {
		r.parseRewind(out)
		// The end as the control file tells it now (pg_rewind --dry-run
		// leaves the target as it was; recoverKeepingWAL ran any recovery).
		if ctl2, err := r.controlData(ctx); err == nil {
			r.setOldEnd(max(ctl.checkpoint, ctl2.checkpoint, preEnd))
		}
		if err := r.keepDivergentWAL(ctx, ctl, saved); err != nil {
			return err // before anything is rewritten: nothing lost
		}
		out, rerr = rewind("-R")
		if rerr == nil {
			r.parseRewind(out)
			r.res.Method = "rewind"
			r.rewrote = !strings.Contains(out, "no rewind required")
		}
	}

	// 4. Or copy the new primary afresh.
	if rerr != nil {
		r.res.RewindError = rewindError(out, rerr)
		r.note("pg_rewind failed (%s): falling back to pg_basebackup", r.res.RewindError)
		if err := r.baseBackup(ctx, srcInfo, stamp); err != nil {
			return fmt.Errorf("pg_rewind failed (%v), then %w", rerr, err)
		}
		r.res.Method = "basebackup"
		r.rewrote = true
	}

	// 5. Own configuration back, start, stream.
	for _, f := range savedFiles {
		if _, err := r.cmd(ctx, hostCmd{argv: []string{"cp", saved + "/conf/" + f, h.DataDir + "/" + f}}); err != nil {
			return err
		}
	}
	r.note("restored %s from %s/conf", strings.Join(savedFiles, ", "), saved)
	if err := h.Start(ctx); err != nil {
		return err
	}
	r.note("started %s", h.DataDir)
	if err := r.waitStreaming(ctx, oldEP, newEP); err != nil {
		return err
	}
	r.restoreWALKeep(ctx)
	return nil
}

// rewindError is what pg_rewind said of its failure: its error lines, or
// else how it ended.
func rewindError(out string, err error) string {
	var lines []string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if _, msg, ok := strings.Cut(line, "error: "); ok && strings.HasPrefix(line, "pg_rewind: ") {
			lines = append(lines, msg)
		}
	}
	if len(lines) == 0 {
		var he *hostError
		if errors.As(err, &he) && he.err != nil {
			if he.ctxErr != nil {
				return "timed out or canceled after " + he.took.Round(time.Millisecond).String()
			}
			if tail := strings.TrimSpace(lastLines(strings.TrimSpace(he.out), 1)); tail != "" {
				return he.err.Error() + ": " + tail
			}
			return he.err.Error()
		}
		return err.Error()
	}
	msg := strings.Join(lines, "; ")
	if len(msg) > 500 {
		msg = msg[:500] + "..."
	}
	return msg
}

// walSpan is the size of the WAL segments in the old server's pg_wal,
// from the oldest to the newest, on any timeline, plus two segments for
// what is written until the stop's checkpoint; 0 when there are none.
func (r *reprotect) walSpan(ctx context.Context, segSize uint64) (uint64, int, error) {
	if segSize == 0 {
		return 0, 0, errors.New("WAL segment size unknown")
	}
	out, err := r.h.run(ctx, hostCmd{argv: []string{"ls", "-1", r.h.DataDir + "/pg_wal"}, secrets: r.secrets})
	if err != nil {
		return 0, 0, err
	}
	perID := uint64(0x100000000) / segSize
	var first, last uint64
	n := 0
	for _, name := range strings.Fields(out) {
		if len(name) != 24 {
			continue
		}
		_, err1 := strconv.ParseUint(name[:8], 16, 32)
		hi, err2 := strconv.ParseUint(name[8:16], 16, 32)
		lo, err3 := strconv.ParseUint(name[16:], 16, 32)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		seg := hi*perID + lo
		if n == 0 || seg < first {
			first = seg
		}
		if n == 0 || seg > last {
			last = seg
		}
		n++
	}
	if n == 0 {
		return 0, 0, nil
	}
	return (last - first + 3) * segSize, n, nil
}

// keepWAL raises the running old server's wal_keep_size so that the
// checkpoint of its stop keeps every WAL segment in its pg_wal (see
// Reprotect). It only notes what fails: pg_rewind may not need it.
func (r *reprotect) keepWAL(ctx context.Context) {
	ep := newEndpoint(r.oldDSN, map[string]string{"default_transaction_read_only": "off"})
	defer closeEndpoint(ep)
	var segSize, keepNow int64
	if err := scanRow(ctx, ep, "SELECT pg_size_bytes(current_setting('wal_segment_size')), pg_size_bytes(current_setting('wal_keep_size'))", nil, &segSize, &keepNow); err != nil {
		r.note("wal_keep_size not raised before the stop (%v): pg_rewind may miss WAL the stop removes", err)
		return
	}
	need, n, err := r.walSpan(ctx, uint64(segSize))
	if err != nil {
		r.note("wal_keep_size not raised before the stop (%v): pg_rewind may miss WAL the stop removes", err)
		return
	}
	if need == 0 || uint64(keepNow) >= need {
		r.note("wal_keep_size (%d MB) keeps the %d WAL segment(s) in pg_wal across the stop", keepNow>>20, n)
		return
	}
	// What postgresql.auto.conf says now, to put it back later.
	var prev string
	if err := scanRow(ctx, ep, `SELECT coalesce((SELECT setting FROM pg_file_settings
WHERE name = 'wal_keep_size' AND sourcefile LIKE '%/postgresql.auto.conf' ORDER BY seqno DESC LIMIT 1), '')`, nil, &prev); err != nil {
		r.note("postgresql.auto.conf's wal_keep_size unknown (%v): taken as unset", err)
		prev = ""
	}
	value := fmt.Sprintf("%dMB", need>>20)
	if err := execSQL(ctx, ep, "ALTER SYSTEM SET wal_keep_size = '"+value+"'"); err != nil {
		r.note("wal_keep_size not raised before the stop (ALTER SYSTEM: %v): pg_rewind may miss WAL the stop removes", err)
		return
	}
	r.keep = walKeep{set: value, prev: prev}
	if err := execSQL(ctx, ep, "SELECT pg_reload_conf()"); err != nil {
		r.note("wal_keep_size = %s set, but pg_reload_conf(): %v", value, err)
		return
	}
	// The reload reaches the checkpointer through the postmaster: once a
	// new session has the value, the stop's checkpoint uses it.
	cctx, cancel := context.WithTimeout(ctx, confirmWait)
	defer cancel()
	for {
		probe := newEndpoint(r.oldDSN, nil)
		var got int64
		err := scanRow(cctx, probe, "SELECT pg_size_bytes(current_setting('wal_keep_size'))", nil, &got)
		closeEndpoint(probe)
		if err == nil && uint64(got) >= need {
			break
		}
		select {
		case <-cctx.Done():
			r.note("wal_keep_size = %s set, but a new session does not show it yet (%v)", value, err)
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	r.note("wal_keep_size = %s (was %d MB) on the old server, so that its stop keeps the %d WAL segment(s) pg_rewind reads back to the last checkpoint before the fork", value, keepNow>>20, n)
}

// undo is the ALTER SYSTEM command that puts wal_keep_size back.
func (k walKeep) undo() string {
	if k.prev == "" {
		return "RESET wal_keep_size"
	}
	return "SET wal_keep_size = '" + strings.ReplaceAll(k.prev, "'", "''") + "'"
}

// restoreWALKeep puts back the wal_keep_size keepWAL set, when it is still
// in the data directory (pg_rewind rewrote nothing). It only notes what
// fails.
func (r *reprotect) restoreWALKeep(ctx context.Context) {
	if r.keep.set == "" || r.rewrote {
		return
	}
	ep := newEndpoint(r.oldDSN, map[string]string{"default_transaction_read_only": "off"})
	defer closeEndpoint(ep)
	undo := r.keep.undo()
	if err := execSQL(ctx, ep, "ALTER SYSTEM "+undo); err != nil {
		r.note("wal_keep_size = %s stays in postgresql.auto.conf (ALTER SYSTEM %s: %v)", r.keep.set, undo, err)
		return
	}
	r.keep.restored = true
	if err := execSQL(ctx, ep, "SELECT pg_reload_conf()"); err != nil {
		r.note("ALTER SYSTEM %s done, but pg_reload_conf(): %v", undo, err)
		return
	}
	r.note("ALTER SYSTEM %s: wal_keep_size as before the stop", undo)
}

// recoverKeepingWAL runs crash recovery on the stopped old server, as
// pg_rewind would (postgres --single), but with a wal_keep_size that keeps
// every WAL segment in its pg_wal: the checkpoints at the end of recovery
// would otherwise remove those before the latest checkpoint, which
// pg_rewind may need. A failure is noted and pg_rewind left to try.
func (r *reprotect) recoverKeepingWAL(ctx context.Context, ctl controlFile) (controlFile, error) {
	h := r.h
	argv := []string{"sh", "-c", `p=$1; shift; exec "$p" "$@" </dev/null`, "sh", h.bin("postgres"), "--single", "-D", h.DataDir}
	need, n, err := r.walSpan(ctx, ctl.segSize)
	switch {
	case err != nil:
		r.note("WAL segments in pg_wal unknown (%v): crash recovery with the server's own wal_keep_size", err)
	case need > 0:
		argv = append(argv, "-c", fmt.Sprintf("wal_keep_size=%dMB", need>>20))
	}
	argv = append(argv, "template1")
	r.note("not shut down cleanly (%s): crash recovery in single-user mode, keeping the %d WAL segment(s) in pg_wal", ctl.state, n)
	if _, err := r.cmd(ctx, hostCmd{argv: argv, env: []string{"LC_ALL=C"}}); err != nil {
		r.note("crash recovery failed (%v): pg_rewind will try its own", err)
		return ctl, nil
	}
	return r.controlData(ctx)
}

// setOldEnd records the old primary's end of WAL.
func (r *reprotect) setOldEnd(l lsn) {
	if l != 0 {
		r.res.OldEnd = l.String()
	}
}

// parseRewind reads pg_rewind's report of where the servers diverged.
func (r *reprotect) parseRewind(out string) {
	m := divergedRE.FindStringSubmatch(out)
	if m == nil {
		return
	}
	r.res.DivergedAt = strings.ToUpper(m[1])
	r.res.Timeline, _ = strconv.Atoi(m[2])
}

// controlFile is what Reprotect reads of pg_controldata.
type controlFile struct {
	sysID      string
	checkpoint lsn
	timeline   int
	segSize    uint64
	state      string // "shut down", "in production", ...
}

// cleanShutdown says the server was shut down cleanly, as pg_rewind
// requires of its target.
func (c controlFile) cleanShutdown() bool {
	return c.state == "shut down" || c.state == "shut down in recovery"
}

func (r *reprotect) controlData(ctx context.Context) (controlFile, error) {
	var c controlFile
	out, err := r.h.run(ctx, hostCmd{argv: []string{r.h.bin("pg_controldata"), "-D", r.h.DataDir}, env: []string{"LC_ALL=C"}, secrets: r.secrets})
	if err != nil {
		return c, err
	}
	fields := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	c.sysID = fields["Database system identifier"]
	c.checkpoint, err = parseLSN(fields["Latest checkpoint location"])
	if err != nil {
		return c, fmt.Errorf("pg_controldata -D %s: latest checkpoint location: %w", r.h.DataDir, err)
	}
	c.timeline, _ = strconv.Atoi(fields["Latest checkpoint's TimeLineID"])
	c.segSize, _ = strconv.ParseUint(fields["Bytes per WAL segment"], 10, 64)
	c.state = fields["Database cluster state"]
	if c.sysID == "" || c.segSize == 0 || c.timeline == 0 {
		return c, fmt.Errorf("pg_controldata -D %s: unexpected output:\n%s", r.h.DataDir, lastLines(out, 20))
	}
	r.note("control file: system %s, timeline %d, latest checkpoint %s, state %s", c.sysID, c.timeline, c.checkpoint, c.state)
	return c, nil
}

// keepDivergentWAL copies the old primary's WAL segments from DivergedAt to
// OldEnd into saved/pg_wal, before pg_rewind replaces them.
func (r *reprotect) keepDivergentWAL(ctx context.Context, ctl controlFile, saved string) error {
	if r.res.DivergedAt == "" || r.res.OldEnd == "" {
		return nil
	}
	from, err1 := parseLSN(r.res.DivergedAt)
	to, err2 := parseLSN(r.res.OldEnd)
	if err1 != nil || err2 != nil || to <= from {
		r.note("nothing written after the divergence point: no WAL to keep")
		return nil
	}
	out, err := r.h.run(ctx, hostCmd{argv: []string{"ls", "-1", r.h.DataDir + "/pg_wal"}, secrets: r.secrets})
	if err != nil {
		return err
	}
	names := divergentSegments(strings.Fields(out), from, to, r.res.Timeline, ctl.timeline, ctl.segSize)
	if len(names) == 0 {
		r.note("no WAL segment of %s..%s left in pg_wal (recycled): the divergent WAL is lost", from, to)
		return nil
	}
	dir := saved + "/pg_wal"
	if _, err := r.cmd(ctx, hostCmd{argv: []string{"mkdir", "-p", dir}}); err != nil {
		return err
	}
	argv := []string{"cp", "-p"}
	for _, n := range names {
		argv = append(argv, r.h.DataDir+"/pg_wal/"+n)
	}
	if _, err := r.cmd(ctx, hostCmd{argv: append(argv, dir+"/")}); err != nil {
		return err
	}
	r.res.KeptAt = saved
	r.note("kept the divergent WAL %s..%s: %d segment(s) in %s", from, to, len(names), dir)
	return nil
}

// divergentSegments picks from the names in pg_wal the segments of
// timelines fromTLI..toTLI that hold WAL between from and to.
func divergentSegments(names []string, from, to lsn, fromTLI, toTLI int, segSize uint64) []string {
	if segSize == 0 {
		return nil
	}
	perID := uint64(0x100000000) / segSize
	first, last := uint64(from)/segSize, uint64(to)/segSize
	var out []string
	for _, n := range names {
		if len(n) != 24 {
			continue
		}
		tli, err1 := strconv.ParseUint(n[:8], 16, 32)
		hi, err2 := strconv.ParseUint(n[8:16], 16, 32)
		lo, err3 := strconv.ParseUint(n[16:], 16, 32)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		seg := hi*perID + lo
		if int(tli) >= fromTLI && int(tli) <= max(fromTLI, toTLI) && seg >= first && seg <= last {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// baseBackup moves the data directory aside and copies the new primary
// into a fresh one; if the copy fails, it moves the old one back.
func (r *reprotect) baseBackup(ctx context.Context, srcInfo, stamp string) error {
	h := r.h
	kept := h.DataDir + ".divergent-" + stamp
	if _, err := r.cmd(ctx, hostCmd{argv: []string{"sh", "-c", moveScript, "sh", h.DataDir, kept}}); err != nil {
		return err
	}
	r.res.KeptAt = kept
	r.note("moved the old data directory to %s", kept)
	_, err := r.cmd(ctx, hostCmd{
		argv:     []string{h.bin("pg_basebackup"), "-D", h.DataDir, "-d", srcInfo, "-R", "-X", "stream", "-c", "fast", "-w"},
		env:      []string{"LC_ALL=C"},
		password: r.src.password,
	})
	if err == nil {
		return nil
	}
	// pg_basebackup removes what it created when it fails.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, merr := r.cmd(bctx, hostCmd{argv: []string{"sh", "-c", moveScript, "sh", kept, h.DataDir}}); merr != nil {
		return fmt.Errorf("%w; the old data directory stays at %s: moving it back failed: %v", err, kept, merr)
	}
	r.res.KeptAt = ""
	r.note("moved the old data directory back to %s", h.DataDir)
	return err
}

// streamsFrom reports whether the old server, a standby, streams from the
// new primary: its wal receiver streams the new primary's timeline, and
// its sender is the conninfo's host and port, or the new primary has a
// streaming walsender named after the old server's cluster_name. (A
// standby that cannot follow the new timeline streams the old one for a
// moment, again and again.)
func (r *reprotect) streamsFrom(ctx context.Context, old serverInfo, newEP *endpoint) (bool, string, error) {
	if old.walStatus != "streaming" || int(old.receivedTLI) != r.newTLI {
		return false, "", nil
	}
	if r.src.hasHost(old.senderHost, int(old.senderPort)) {
		return true, fmt.Sprintf("wal receiver connected to %s:%d", old.senderHost, old.senderPort), nil
	}
	if old.clusterName == "" {
		return false, "", nil
	}
	var n int
	if err := scanRow(ctx, newEP, "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'", []any{old.clusterName}, &n); err != nil {
		return false, "", fmt.Errorf("new primary: %w", err)
	}
	if n == 1 {
		return true, fmt.Sprintf("the new primary streams to %q", old.clusterName), nil
	}
	return false, "", nil
}

// waitStreaming waits, within ctx, until the restarted server streams
// from the new primary.
func (r *reprotect) waitStreaming(ctx context.Context, oldEP, newEP *endpoint) error {
	started := time.Now()
	var (
		last    string
		lastErr error
	)
	for {
		old, err := readServerInfo(ctx, oldEP)
		lastErr = err
		if err == nil {
			switch {
			case !old.inRecovery:
				return fmt.Errorf("started, but %s is not in recovery: standby.signal missing?", oldEP.addr)
			case old.walStatus != "streaming":
				last = fmt.Sprintf("wal receiver status %q", old.walStatus)
			default:
				ok, why, err := r.streamsFrom(ctx, old, newEP)
				if err == nil && ok {
					r.note("streaming from the new primary (%s) after %s", why, time.Since(started).Round(time.Millisecond))
					return nil
				}
				lastErr = err
				last = fmt.Sprintf("streaming timeline %d (the new primary's is %d) from %s:%d", old.receivedTLI, r.newTLI, old.senderHost, old.senderPort)
			}
		}
		select {
		case <-ctx.Done():
			msg := fmt.Sprintf("started, but not streaming from the new primary after %s", time.Since(started).Round(time.Millisecond))
			if last != "" {
				msg += ": " + last
			}
			if lastErr != nil && !errors.Is(lastErr, ctx.Err()) {
				msg += "; last error: " + lastErr.Error()
			}
			return fmt.Errorf("%s: %w", msg, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// connectFailed reports whether err is ep's failure to connect (the server
// is down or unreachable), rather than a refused query.
func (e *endpoint) connectFailed(err error) bool {
	var ee *endpointError
	return errors.As(err, &ee) && ee.op == "connect"
}

// source is the new primary's connection string, taken apart.
type source struct {
	conninfo   string
	password   string
	hasAppName bool
	hosts      []string // host:port
}

// parseSource parses a libpq connection string (URL or key=value). Its
// text never appears in errors.
func parseSource(conninfo string) (source, error) {
	cfg, err := pgx.ParseConfig(conninfo)
	if err != nil {
		return source{}, errors.New("new primary's conninfo does not parse (not shown: it may hold a password)")
	}
	s := source{conninfo: conninfo, password: cfg.Password}
	s.hosts = append(s.hosts, fmt.Sprintf("%s:%d", cfg.Host, cfg.Port))
	for _, f := range cfg.Fallbacks {
		s.hosts = append(s.hosts, fmt.Sprintf("%s:%d", f.Host, f.Port))
	}
	params, err := conninfoParams(conninfo)
	if err != nil {
		return source{}, err
	}
	_, s.hasAppName = params["application_name"]
	return s, nil
}

func (s source) hasHost(host string, port int) bool {
	return slices.Contains(s.hosts, fmt.Sprintf("%s:%d", host, port))
}

// forPrograms is the connection string for pg_rewind and pg_basebackup:
// without its password (they get it from PGPASSWORD) and with
// application_name appName when not empty.
func (s source) forPrograms(appName string) (string, error) {
	add := map[string]string{}
	if appName != "" {
		add["application_name"] = appName
	}
	return rewriteConninfo(s.conninfo, []string{"password"}, add)
}

// conninfoParams returns the parameters of a libpq connection string, URL
// or key=value; for a URL, only those of its query.
func conninfoParams(conninfo string) (map[string]string, error) {
	if isURL(conninfo) {
		_, _, query := splitURL(conninfo)
		params := map[string]string{}
		for _, kv := range strings.Split(query, "&") {
			if kv == "" {
				continue
			}
			k, v, _ := strings.Cut(kv, "=")
			params[k] = v
		}
		return params, nil
	}
	pairs, err := parseKeyValues(conninfo)
	if err != nil {
		return nil, err
	}
	params := map[string]string{}
	for _, p := range pairs {
		params[p[0]] = p[1]
	}
	return params, nil
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// splitURL cuts a libpq URL into scheme://, what lies between it and the
// query (user information, hosts, database) and the query.
func splitURL(s string) (scheme, rest, query string) {
	i := strings.Index(s, "://") + 3
	scheme, rest = s[:i], s[i:]
	rest, query, _ = strings.Cut(rest, "?")
	return scheme, rest, query
}

// rewriteConninfo drops the parameters in drop (and, for "password", a
// URL's password) and adds those of add that are not set already.
func rewriteConninfo(conninfo string, drop []string, add map[string]string) (string, error) {
	if isURL(conninfo) {
		scheme, rest, query := splitURL(conninfo)
		// libpq: the user information ends at the first @ before any /.
		if i := strings.IndexAny(rest, "@/"); i >= 0 && rest[i] == '@' && slices.Contains(drop, "password") {
			user, _, _ := strings.Cut(rest[:i], ":")
			rest = user + rest[i:]
		}
		var kept []string
		seen := map[string]bool{}
		for _, kv := range strings.Split(query, "&") {
			k, _, _ := strings.Cut(kv, "=")
			if kv == "" || slices.Contains(drop, k) {
				continue
			}
			seen[k] = true
			kept = append(kept, kv)
		}
		for _, k := range sortedKeys(add) {
			if !seen[k] {
				kept = append(kept, k+"="+urlQueryEscape(add[k]))
			}
		}
		if len(kept) == 0 {
			return scheme + rest, nil
		}
		return scheme + rest + "?" + strings.Join(kept, "&"), nil
	}
	pairs, err := parseKeyValues(conninfo)
	if err != nil {
		return "", err
	}
	var words []string
	seen := map[string]bool{}
	for _, p := range pairs {
		if slices.Contains(drop, p[0]) {
			continue
		}
		seen[p[0]] = true
		words = append(words, p[0]+"="+quoteConninfoValue(p[1]))
	}
	for _, k := range sortedKeys(add) {
		if !seen[k] {
			words = append(words, k+"="+quoteConninfoValue(add[k]))
		}
	}
	return strings.Join(words, " "), nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func urlQueryEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// parseKeyValues parses a libpq key=value connection string: keywords,
// optional spaces around =, values bare or in single quotes, with
// backslash escapes in both.
func parseKeyValues(s string) ([][2]string, error) {
	var pairs [][2]string
	i := 0
	skip := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f' || s[i] == '\v') {
			i++
		}
	}
	bad := errors.New("new primary's conninfo: not a valid key=value connection string (not shown: it may hold a password)")
	for {
		skip()
		if i >= len(s) {
			return pairs, nil
		}
		start := i
		for i < len(s) && s[i] != '=' && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' {
			i++
		}
		key := s[start:i]
		skip()
		if key == "" || i >= len(s) || s[i] != '=' {
			return nil, bad
		}
		i++
		skip()
		var v strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				if c == '\\' && i+1 < len(s) {
					v.WriteByte(s[i+1])
					i += 2
					continue
				}
				i++
				if c == '\'' {
					closed = true
					break
				}
				v.WriteByte(c)
			}
			if !closed {
				return nil, bad
			}
		} else {
			for i < len(s) && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r' {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				v.WriteByte(s[i])
				i++
			}
		}
		pairs = append(pairs, [2]string{key, v.String()})
	}
}

// quoteConninfoValue quotes a value for a key=value connection string.
func quoteConninfoValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n\r\f\v'\\") {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}
