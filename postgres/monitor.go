package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lifeboat-dr/lifeboat/replication"
)

var _ replication.Source = (*Monitor)(nil)

// Endpoint is one PostgreSQL server of a service in one region.
type Endpoint struct {
	Region string
	// DSN is a URL or key=value connection string, as pgx accepts. Its
	// password never appears in errors, reasons or logs.
	DSN string
}

// MonitorConfig configures a Monitor.
type MonitorConfig struct {
	// Service names the data service in every Lag.
	Service string
	// Observer is this Lifeboat node's name: the key of its row in
	// lifeboat.heartbeat, so that several nodes can watch the same primary.
	Observer string
	// Primary is the server the heartbeat is written to. Its role needs
	// CREATE on the database (the first round creates schema lifeboat and
	// table lifeboat.heartbeat if missing) and pg_monitor, to see
	// pg_stat_replication in full.
	Primary Endpoint
	// Standbys are the servers whose lag is measured, one Lag each. Their
	// role needs pg_monitor to see the wal receiver's status.
	Standbys []Endpoint
	// Interval between the starts of two rounds, and so between two
	// heartbeats. Default 1s.
	Interval time.Duration
	// Timeout of each server's queries in a round. Default Interval.
	// Connecting to a server (after an error drops its connection) has a
	// budget of its own, max(Timeout, 1s), so that a slow connect does not
	// eat the queries' time and a loaded machine does not loop on
	// reconnects. The standbys are read in parallel, then the primary is
	// written, so a round with unresponsive servers can take up to
	// 2*(max(Timeout, 1s)+Timeout); the ticks it misses are skipped.
	Timeout time.Duration
	// Logger receives changes of state (a standby broken or healthy again,
	// heartbeat failing or restored). Default: discard.
	Logger *slog.Logger
}

// Validate reports the first problem of the configuration, naming its
// field. It does no I/O.
func (c MonitorConfig) Validate() error {
	switch {
	case c.Service == "":
		return errors.New("postgres monitor: Service is empty")
	case c.Observer == "":
		return errors.New("postgres monitor: Observer is empty")
	case c.Primary.DSN == "":
		return fmt.Errorf("postgres monitor %s: Primary.DSN is empty", c.Service)
	case c.Interval < 0:
		return fmt.Errorf("postgres monitor %s: Interval %s is negative", c.Service, c.Interval)
	case c.Timeout < 0:
		return fmt.Errorf("postgres monitor %s: Timeout %s is negative", c.Service, c.Timeout)
	}
	for i, s := range c.Standbys {
		if s.DSN == "" {
			return fmt.Errorf("postgres monitor %s: Standbys[%d] (region %q): DSN is empty", c.Service, i, s.Region)
		}
	}
	return nil
}

// Monitor measures the replication of one PostgreSQL service: every
// Interval it reads every standby (in parallel), then writes a heartbeat on
// the primary and reads the primary's LSN in the same statement.
//
// A standby's lag in seconds is the age of the heartbeat it shows compared
// with the last heartbeat written; both timestamps come from the primary's
// clock, so clock skew between the hosts does not matter. Reading the
// standbys before writing the next heartbeat makes a healthy standby show
// zero lag. While the heartbeat cannot be written (the primary is
// unreachable, read-only, refuses the write...) the standbys may well show
// the last heartbeat written, which proves nothing about what the primary
// took since: the lag in seconds is then at least the time since the last
// heartbeat written, on the monitor's own monotonic clock, and Reason says
// "heartbeat failing on the primary: ...".
//
// The lag in bytes compares the standby's replay LSN with the primary's LSN
// read in the same round, after the standby: an idle standby shows the few
// hundred bytes of the heartbeat's own WAL.
//
// Monitor keeps one connection per server, dropped after any error (but
// the primary's refusal of the heartbeat, which leaves it sound) and opened
// again next round.
type Monitor struct {
	cfg      MonitorConfig
	log      *slog.Logger
	interval time.Duration
	timeout  time.Duration // of each server's queries in a round
	connTO   time.Duration // of each connect: max(timeout, minConnectTimeout)

	mu   sync.Mutex
	lags []replication.Lag // one per standby, in cfg.Standbys order

	life   sync.Mutex
	opened bool
	cancel context.CancelFunc
	done   chan struct{} // closed when the loop has ended; nil before Open

	// Owned by the loop goroutine.
	primary  *endpoint
	standbys []*standby
	hb       heartbeat
}

// minConnectTimeout is the least time given to a connect.
const minConnectTimeout = time.Second

// heartbeat is what the monitor knows of the primary.
type heartbeat struct {
	ts        time.Time // last heartbeat written, primary clock
	tsKnown   bool
	writtenAt time.Time // when ts was sent, monitor's monotonic clock
	written   bool      // the latest round wrote a heartbeat
	// pg_current_wal_lsn() of the latest round that could read it: with
	// the heartbeat, or alone when the heartbeat was refused.
	lsn        lsn
	lsnKnown   bool
	inRecovery bool      // the primary endpoint answered as a standby
	schemaConn *pgx.Conn // the connection on which the table was ensured
	err        error     // of the latest round; nil when it went well
	repl       []replRow // pg_stat_replication of the latest round
	loggedErr  string    // last error logged, to log changes only
}

// replRow is one row of pg_stat_replication.
type replRow struct {
	appName, clientAddr, state, syncState string
	writeLag, flushLag, replayLag         *string
	replayLSN                             *string
}

// standby is one standby and what the monitor knows of it. Visible and
// replay positions are kept while it is unreachable, so that its lag grows
// as the primary goes on writing.
type standby struct {
	Endpoint
	ep *endpoint

	at           time.Time // of the latest read
	err          error     // of the latest read; nil when it answered
	inRecovery   bool
	walStatus    *string // nil: no wal receiver; "": hidden (no pg_monitor)
	clusterName  string
	visible      time.Time // heartbeat ts it shows, primary clock
	visibleKnown bool
	replay       lsn
	replayKnown  bool
	receive      lsn
	receiveKnown bool

	loggedReason string // last broken reason logged, to log changes only
}

// NewMonitor returns a monitor; it does no I/O until Open. Lag works at
// once and returns one entry per standby with neither SecondsKnown nor
// BytesKnown, and Reason "no measurement yet".
func NewMonitor(cfg MonitorConfig) *Monitor {
	m := &Monitor{cfg: cfg, log: cfg.Logger, interval: cfg.Interval, timeout: cfg.Timeout}
	if m.log == nil {
		m.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if m.interval <= 0 {
		m.interval = time.Second
	}
	if m.timeout <= 0 {
		m.timeout = m.interval
	}
	m.connTO = max(m.timeout, minConnectTimeout)
	m.log = m.log.With("service", cfg.Service)
	// The heartbeat must not wait for a synchronous standby that is down:
	// its lag is what we want to see then.
	m.primary = newEndpoint(cfg.Primary.DSN, map[string]string{"synchronous_commit": "local"})
	for _, s := range cfg.Standbys {
		m.standbys = append(m.standbys, &standby{Endpoint: s, ep: newEndpoint(s.DSN, nil)})
		m.lags = append(m.lags, replication.Lag{Service: cfg.Service, Region: s.Region, Reason: "no measurement yet"})
	}
	return m
}

// Open validates the configuration, including that every DSN parses, and
// starts the measuring goroutine, which runs a first round at once. It
// fails if the Monitor was opened before.
func (m *Monitor) Open() error {
	m.life.Lock()
	defer m.life.Unlock()
	if m.opened {
		return fmt.Errorf("postgres monitor %s: already opened", m.cfg.Service)
	}
	if err := m.cfg.Validate(); err != nil {
		return err
	}
	if m.primary.config == nil {
		return fmt.Errorf("postgres monitor %s: Primary.DSN: %w", m.cfg.Service, m.primary.err)
	}
	for i, s := range m.standbys {
		if s.ep.config == nil {
			return fmt.Errorf("postgres monitor %s: Standbys[%d] (region %q): DSN: %w", m.cfg.Service, i, s.Region, s.ep.err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.opened, m.cancel, m.done = true, cancel, make(chan struct{})
	go m.run(ctx)
	return nil
}

// Close stops the measuring goroutine, waits for it and closes the
// connections. It returns ctx's error if ctx ends first (the goroutine still
// ends soon: its queries are cancelled). It is idempotent and does nothing
// before Open. Lag keeps returning the last measurements.
func (m *Monitor) Close(ctx context.Context) error {
	m.life.Lock()
	cancel, done := m.cancel, m.done
	m.life.Unlock()
	if done == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("postgres monitor %s: close: %w", m.cfg.Service, ctx.Err())
	}
}

// Lag returns the latest measurement of every standby, in the order of
// MonitorConfig.Standbys, in a new slice that the caller owns (Details
// maps included). It does no I/O.
func (m *Monitor) Lag() []replication.Lag {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]replication.Lag, len(m.lags))
	for i, l := range m.lags {
		l.Details = maps.Clone(l.Details)
		out[i] = l
	}
	return out
}

func (m *Monitor) run(ctx context.Context) {
	defer close(m.done)
	defer m.closeConns()
	tick := time.NewTicker(m.interval)
	defer tick.Stop()
	for {
		m.round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (m *Monitor) closeConns() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	m.primary.close(ctx)
	for _, s := range m.standbys {
		s.ep.close(ctx)
	}
}

// round reads every standby (in parallel), writes the heartbeat and
// publishes the lags.
func (m *Monitor) round(ctx context.Context) {
	// The heartbeat the standbys should show by now.
	prev := m.hb
	var wg sync.WaitGroup
	for _, s := range m.standbys {
		wg.Go(func() { m.readStandby(ctx, s) }) // s and s.ep are its own
	}
	wg.Wait()
	m.writeHeartbeat(ctx)
	if ctx.Err() != nil {
		return // closing: the round's failures are ours, not the servers'
	}
	now := time.Now()
	lags := make([]replication.Lag, len(m.standbys))
	for i, s := range m.standbys {
		lags[i] = m.lagOf(s, prev, now)
		m.logChange(s, lags[i])
	}
	m.mu.Lock()
	m.lags = lags
	m.mu.Unlock()
}

// Queries on a standby. The heartbeat table may not exist yet (a fresh
// cluster before the first heartbeat is replayed); the second query is for
// then.
const (
	standbyQuery = `SELECT pg_is_in_recovery(),
	pg_last_wal_receive_lsn()::text,
	pg_last_wal_replay_lsn()::text,
	current_setting('cluster_name'),
	(SELECT coalesce(status, '') FROM pg_stat_wal_receiver),
	(SELECT ts FROM lifeboat.heartbeat WHERE observer = $1)`
	standbyQueryNoHeartbeat = `SELECT pg_is_in_recovery(),
	pg_last_wal_receive_lsn()::text,
	pg_last_wal_replay_lsn()::text,
	current_setting('cluster_name'),
	(SELECT coalesce(status, '') FROM pg_stat_wal_receiver),
	NULL::timestamptz`
)

// connectTo returns ep's connection, opening one within m.connTO.
func (m *Monitor) connectTo(ctx context.Context, ep *endpoint) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, m.connTO)
	defer cancel()
	return ep.connect(ctx)
}

// readStandby reads one standby, keeping what it knew when it cannot. It
// touches only s, so the standbys can be read in parallel.
func (m *Monitor) readStandby(ctx context.Context, s *standby) {
	s.at = time.Now()
	conn, err := m.connectTo(ctx, s.ep)
	if err != nil {
		s.err = err
		return
	}
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	var (
		inRecovery      bool
		receive, replay *string
		clusterName     string
		walStatus       *string
		visible         *time.Time
		started         = time.Now()
	)
	err = conn.QueryRow(ctx, standbyQuery, m.cfg.Observer).Scan(&inRecovery, &receive, &replay, &clusterName, &walStatus, &visible)
	if isUndefinedTable(err) {
		err = conn.QueryRow(ctx, standbyQueryNoHeartbeat).Scan(&inRecovery, &receive, &replay, &clusterName, &walStatus, &visible)
	}
	if err != nil {
		s.err = s.ep.fail(ctx, "query", err, started)
		return
	}
	s.err = nil
	s.inRecovery = inRecovery
	s.clusterName = clusterName
	s.walStatus = walStatus
	s.visible, s.visibleKnown = time.Time{}, false
	if visible != nil && inRecovery {
		s.visible, s.visibleKnown = *visible, true
	}
	s.replay, s.replayKnown = parseOptionalLSN(replay)
	s.receive, s.receiveKnown = parseOptionalLSN(receive)
}

// isUndefinedTable reports whether err says schema lifeboat or its table
// does not exist.
func isUndefinedTable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000")
}

func parseOptionalLSN(s *string) (lsn, bool) {
	if s == nil {
		return 0, false
	}
	l, err := parseLSN(*s)
	if err != nil {
		return 0, false
	}
	return l, true
}

const (
	ensureHeartbeatTable = `CREATE SCHEMA IF NOT EXISTS lifeboat;
CREATE TABLE IF NOT EXISTS lifeboat.heartbeat (observer text PRIMARY KEY, ts timestamptz NOT NULL, seq bigint NOT NULL)`
	// The primary's LSN is read in the same statement, so that it is as
	// recent as the heartbeat and later than the standbys' reads.
	upsertHeartbeat = `WITH h AS (
	INSERT INTO lifeboat.heartbeat AS hb (observer, ts, seq) VALUES ($1, clock_timestamp(), 1)
	ON CONFLICT (observer) DO UPDATE SET ts = excluded.ts, seq = hb.seq + 1
	RETURNING ts)
SELECT h.ts, pg_current_wal_lsn()::text FROM h`
	replicationQuery = `SELECT coalesce(application_name, ''), coalesce(host(client_addr), ''),
	coalesce(state, ''), coalesce(sync_state, ''),
	write_lag::text, flush_lag::text, replay_lag::text, replay_lsn::text
FROM pg_stat_replication`
)

// writeHeartbeat writes the heartbeat on the primary with its LSN, then
// reads pg_stat_replication. Its outcome is in m.hb; on failure the last
// heartbeat is kept, and so is the LSN unless it could be read alone.
func (m *Monitor) writeHeartbeat(ctx context.Context) {
	m.hb.repl = nil
	m.hb.written = false
	m.hb.err = m.heartbeatRound(ctx)
	if ctx.Err() != nil {
		return // closing
	}
	switch msg := errText(m.hb.err); {
	case msg == m.hb.loggedErr:
	case msg == "":
		m.log.Info("postgres heartbeat restored", "region", m.cfg.Primary.Region)
	default:
		m.log.Warn("postgres heartbeat failed", "region", m.cfg.Primary.Region, "error", msg)
	}
	m.hb.loggedErr = errText(m.hb.err)
}

func (m *Monitor) heartbeatRound(ctx context.Context) error {
	conn, err := m.connectTo(ctx, m.primary)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	started := time.Now()
	var inRecovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return m.primary.fail(ctx, "query", err, started)
	}
	m.hb.inRecovery = inRecovery
	if inRecovery {
		return nil // nothing can be written; the standbys are reported broken
	}
	if m.hb.schemaConn != conn {
		if _, err := conn.Exec(ctx, ensureHeartbeatTable); err != nil {
			return m.writeFailed(ctx, conn, "create lifeboat.heartbeat on", err, started)
		}
		m.hb.schemaConn = conn
	}
	var (
		ts   time.Time
		cur  string
		sent = time.Now()
	)
	if err := conn.QueryRow(ctx, upsertHeartbeat, m.cfg.Observer).Scan(&ts, &cur); err != nil {
		return m.writeFailed(ctx, conn, "write heartbeat on", err, started)
	}
	l, err := parseLSN(cur)
	if err != nil {
		return m.primary.fail(ctx, "query", err, started)
	}
	m.hb.ts, m.hb.tsKnown, m.hb.writtenAt, m.hb.written = ts, true, sent, true
	m.hb.lsn, m.hb.lsnKnown = l, true
	rows, err := conn.Query(ctx, replicationQuery)
	if err != nil {
		return m.primary.fail(ctx, "query", err, started)
	}
	repl, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (replRow, error) {
		var row replRow
		err := r.Scan(&row.appName, &row.clientAddr, &row.state, &row.syncState, &row.writeLag, &row.flushLag, &row.replayLag, &row.replayLSN)
		return row, err
	})
	if err != nil {
		return m.primary.fail(ctx, "query", err, started)
	}
	m.hb.repl = repl
	return nil
}

// writeFailed returns err, from writing op on the primary, described.
// When the server refused the write (permission, read-only, constraint,
// disk full...), the connection is sound and kept, and the primary's LSN
// is read alone: it still tells how far the standbys are behind. Any other
// error drops the connection.
func (m *Monitor) writeFailed(ctx context.Context, conn *pgx.Conn, op string, err error, started time.Time) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || conn.IsClosed() {
		return m.primary.fail(ctx, op, err, started)
	}
	m.hb.schemaConn = nil // the table may have gone: ensure it again
	var cur string
	lerr := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&cur)
	if lerr != nil {
		if !errors.As(lerr, &pgErr) {
			m.primary.close(ctx)
		}
	} else if l, perr := parseLSN(cur); perr == nil {
		m.hb.lsn, m.hb.lsnKnown = l, true
	}
	return m.primary.describe(ctx, op, err, started)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// lagOf is standby s's measurement: its heartbeat against the one written
// before this round (prev), its replay LSN against the primary's LSN of
// this round (m.hb), at time now (after this round's heartbeat).
func (m *Monitor) lagOf(s *standby, prev heartbeat, now time.Time) replication.Lag {
	l := replication.Lag{Service: m.cfg.Service, Region: s.Region, Time: s.at, Details: map[string]string{}}
	// An unreachable standby keeps its last positions, so its lag grows;
	// a server that is not a replica has no lag to speak of.
	measurable := s.err != nil || s.inRecovery
	if measurable && prev.tsKnown && s.visibleKnown {
		l.Seconds = max(0, prev.ts.Sub(s.visible).Seconds())
		l.SecondsKnown = true
		if !m.hb.written {
			// What the primary took since its last heartbeat is unknown:
			// the standby may miss all of it.
			l.Seconds = max(l.Seconds, now.Sub(m.hb.writtenAt).Seconds())
		}
	}
	if measurable && m.hb.lsnKnown && s.replayKnown {
		if m.hb.lsn > s.replay {
			l.Bytes = int64(m.hb.lsn - s.replay)
		}
		l.BytesKnown = true
	}

	switch {
	case s.err != nil:
		l.Broken, l.Reason = true, "standby unreachable: "+s.err.Error()
	case !s.inRecovery:
		l.Broken, l.Reason = true, "not a replica: pg_is_in_recovery() is false"
	case m.hb.err == nil && m.hb.inRecovery:
		l.Broken, l.Reason = true, "primary endpoint is a standby"
	case s.walStatus == nil:
		l.Broken, l.Reason = true, "replication not streaming: no wal receiver"
	case *s.walStatus == "":
		// Hidden from a role without pg_monitor: unknown, not broken.
		l.Details["wal_receiver_status"] = "hidden (grant pg_monitor)"
	case *s.walStatus != "streaming":
		l.Broken, l.Reason = true, "replication not streaming: wal receiver status "+*s.walStatus
	}
	if !l.Broken && m.hb.err != nil && !m.hb.written {
		l.Reason = "heartbeat failing on the primary: " + m.hb.err.Error()
	}

	if s.err == nil && s.walStatus != nil && *s.walStatus != "" {
		l.Details["wal_receiver_status"] = *s.walStatus
	}
	if m.hb.lsnKnown {
		l.Details["primary_lsn"] = m.hb.lsn.String()
	}
	if s.receiveKnown {
		l.Details["receive_lsn"] = s.receive.String()
	}
	if s.replayKnown {
		l.Details["replay_lsn"] = s.replay.String()
	}
	if m.hb.err != nil {
		l.Details["primary_error"] = m.hb.err.Error()
	}
	if row, ok := findRepl(m.hb.repl, s.clusterName); ok {
		l.Details["state"] = row.state
		l.Details["sync_state"] = row.syncState
		l.Details["client_addr"] = row.clientAddr
		setIf(l.Details, "write_lag", row.writeLag)
		setIf(l.Details, "flush_lag", row.flushLag)
		setIf(l.Details, "replay_lag", row.replayLag)
		setIf(l.Details, "reported_replay_lsn", row.replayLSN)
	}
	return l
}

// findRepl finds the pg_stat_replication row of a standby: its
// application_name is the standby's cluster_name, or "walreceiver" when
// that is empty. A streaming row wins over others of the same name.
func findRepl(rows []replRow, clusterName string) (replRow, bool) {
	name := clusterName
	if name == "" {
		name = "walreceiver"
	}
	var found replRow
	ok := false
	for _, r := range rows {
		if r.appName != name {
			continue
		}
		if !ok || r.state == "streaming" {
			found, ok = r, true
		}
	}
	return found, ok
}

func setIf(d map[string]string, k string, v *string) {
	if v != nil {
		d[k] = *v
	}
}

// logChange logs when a standby becomes broken, changes reason, or is
// healthy again. A failing heartbeat is logged once, by writeHeartbeat.
func (m *Monitor) logChange(s *standby, l replication.Lag) {
	reason := ""
	if l.Broken {
		reason = l.Reason
	}
	if reason == s.loggedReason {
		return
	}
	if l.Broken {
		m.log.Warn("postgres standby replication broken", "region", s.Region, "reason", l.Reason)
	} else {
		m.log.Info("postgres standby replication healthy", "region", s.Region)
	}
	s.loggedReason = reason
}
