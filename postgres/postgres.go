// Package postgres watches PostgreSQL for Lifeboat: a health.Prober that
// reports whether an endpoint is up and whether it is a primary or a
// standby, and a replication.Source that measures each standby's lag behind
// the primary with a heartbeat table, so that the figure is right even when
// the application writes nothing.
//
// Errors never contain the password of a DSN: they name the endpoint by
// host:port and say what went wrong ("connect 127.0.0.1:5432: connection
// refused").
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// applicationName is what Lifeboat's sessions show in pg_stat_activity.
const applicationName = "lifeboat"

// endpoint is one server and at most one cached connection to it. It is not
// safe for concurrent use; its owner serialises calls.
type endpoint struct {
	addr     string          // host:port, for messages
	password string          // only to scrub it from messages
	config   *pgx.ConnConfig // nil when the DSN does not parse
	err      error           // why config is nil
	conn     *pgx.Conn       // cached; nil when not connected
}

// newEndpoint parses dsn; params are extra session settings. A DSN that
// does not parse is reported by every later call, not here.
func newEndpoint(dsn string, params map[string]string) *endpoint {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgconn redacts passwords from its parse errors on a best-effort
		// basis only, so its text is not shown.
		return &endpoint{addr: "(invalid DSN)", err: errors.New("invalid DSN: the connection string does not parse (not shown: it may hold a password)")}
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = applicationName
	}
	for k, v := range params {
		cfg.RuntimeParams[k] = v
	}
	return &endpoint{
		addr:     net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))),
		password: cfg.Password,
		config:   cfg,
	}
}

// connect returns the cached connection, or opens one. On failure nothing
// is cached and the error is described (see describe).
func (e *endpoint) connect(ctx context.Context) (*pgx.Conn, error) {
	if e.config == nil {
		return nil, e.err
	}
	if e.conn != nil && !e.conn.IsClosed() {
		return e.conn, nil
	}
	e.conn = nil
	started := time.Now()
	conn, err := pgx.ConnectConfig(ctx, e.config)
	if err != nil {
		return nil, e.describe(ctx, "connect", err, started)
	}
	e.conn = conn
	return conn, nil
}

// fail drops the cached connection after err, from operation op ("query",
// "write heartbeat on") that began at started, and returns err described;
// a connection in an unknown state is never reused.
func (e *endpoint) fail(ctx context.Context, op string, err error, started time.Time) error {
	e.close(ctx)
	return e.describe(ctx, op, err, started)
}

// close closes the cached connection, if any. It returns within ctx (a done
// ctx closes the socket at once, without a goodbye). Idempotent.
func (e *endpoint) close(ctx context.Context) {
	if e.conn == nil {
		return
	}
	_ = e.conn.Close(ctx) // the socket is closed whatever Close returns
	e.conn = nil
}

// endpointError is an error of one operation on one endpoint. Its text is
// safe to show: it never contains the DSN's password.
type endpointError struct {
	op   string // connect, query, ...
	addr string
	msg  string
	err  error
}

func (e *endpointError) Error() string { return e.op + " " + e.addr + ": " + e.msg }

// Unwrap returns the driver's error, for errors.Is and errors.As; its text
// may be less careful than Error's.
func (e *endpointError) Unwrap() error { return e.err }

// describe turns a driver error into a short message an operator can act on
// ("connection refused", "password authentication failed for user ...",
// "timed out after 300ms"), without the password.
// started is when the operation began, to state the time it was given.
func (e *endpoint) describe(ctx context.Context, op string, err error, started time.Time) error {
	var already *endpointError
	if errors.As(err, &already) {
		return err
	}
	msg := describeCause(ctx, err, started)
	if len(e.password) >= 4 { // belt and braces; a shorter one would mangle the text
		msg = strings.ReplaceAll(msg, e.password, "xxxxx")
	}
	return &endpointError{op: op, addr: e.addr, msg: msg, err: err}
}

func describeCause(ctx context.Context, err error, started time.Time) string {
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr):
		return pgErr.Message + " (SQLSTATE " + pgErr.Code + ")"
	case errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err):
		if deadline, ok := ctx.Deadline(); ok && !started.IsZero() {
			return "timed out: no answer within " + deadline.Sub(started).Round(time.Millisecond).String()
		}
		return "timed out"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error() // connection refused, no route to host, ...
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return dnsErr.Error()
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "the server closed the connection"
	}
	msg := err.Error()
	// pgconn prefixes "failed to connect to `user=... database=...`: ".
	if i := strings.Index(msg, "`: "); strings.HasPrefix(msg, "failed to connect to `") && i > 0 {
		msg = msg[i+len("`: "):]
	}
	return msg
}

// lsn is a PostgreSQL write-ahead log position.
type lsn uint64

// parseLSN parses the text form of pg_lsn, "X/Y" with X and Y in hex.
func parseLSN(s string) (lsn, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("parse LSN %q: no slash", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("parse LSN %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("parse LSN %q: %w", s, err)
	}
	return lsn(h<<32 | l), nil
}

func (l lsn) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint64(l)&0xFFFFFFFF) }
