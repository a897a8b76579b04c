// Package app is the lab's sample application: a small HTTP service that
// records transactions in Postgres, one instance per region, written to
// behave as a real regional service does during a failover. It writes
// through the Lifeboat writer endpoint, acknowledges a transaction only
// after its commit, answers 503 (never a bare 500) while the database is
// down or read-only, and recovers on its own when the database comes back
// or the endpoint closes its connections on a change of epoch.
//
// Routes:
//
//	POST /transactions       {"id": <int64>, "amount": <int64>, "note": "..."}
//	                         201 {"id", "region", "epoch_region", "db"} once committed;
//	                         the same id with the same content is 201 again (idempotent),
//	                         with other content 409; bad JSON 400; database refusing
//	                         or unreachable 503 {"error": "..."}
//	GET  /transactions/{id}  200 the row, or 404
//	GET  /healthz            200 "ok" when the database answered SELECT 1 within 1s, else 503
//
// Every answer carries the header X-Lifeboat-Region.
package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lifeboat-dr/lifeboat/internal/lifecycle"
)

// RegionHeader is the response header naming the region that served.
const RegionHeader = "X-Lifeboat-Region"

const (
	defaultTimeout = 1500 * time.Millisecond
	// maxConnectTimeout bounds one connection attempt, whatever the DSN
	// says: a dead database must cost a request a 503, not its client's
	// whole timeout.
	maxConnectTimeout = time.Second
	healthTimeout     = time.Second
	maxConns          = 8
	maxIdle           = 30 * time.Second
	maxBody           = 64 << 10
	// schemaLock is the advisory lock key that serialises the creation of
	// the table between the regions' instances.
	schemaLock = 0x6c6966656274 // "lifebt"
)

const createTable = `CREATE TABLE IF NOT EXISTS transactions (
	id         bigint PRIMARY KEY,
	amount     bigint,
	note       text,
	region     text,
	created_at timestamptz DEFAULT clock_timestamp()
)`

// Config is one instance of the application.
type Config struct {
	// Listen is host:port; port 0 picks a free port (see Server.Addr).
	Listen string
	// Region is this instance's region, reported in answers and in the
	// X-Lifeboat-Region header.
	Region string
	// DSN is the Postgres connection URL, normally the Lifeboat writer
	// endpoint: postgres://user:pass@host:port/db.
	DSN string
	// Logger receives the instance's logs; nil discards them.
	Logger *slog.Logger
	// Timeout bounds the database work of one request, retry included.
	// Default 1.5s, below a typical client timeout of 2s.
	Timeout time.Duration
}

// Server is one running instance of the application.
type Server struct {
	cfg     Config
	logger  *slog.Logger
	connCfg *pgx.ConnConfig

	pool *pool
	ln   net.Listener
	srv  *http.Server
	errc chan error

	tableReady atomic.Bool
	tableMu    sync.Mutex
	// dbDown is set from a failure to the next success, so an outage is
	// logged once when it starts and once when it ends.
	dbDown atomic.Bool

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New checks the configuration and prepares an instance; Open starts it.
func New(cfg Config) (*Server, error) {
	if cfg.Listen == "" {
		return nil, errors.New("app: no listen address (host:port)")
	}
	if cfg.Region == "" {
		return nil, errors.New("app: no region")
	}
	if cfg.DSN == "" {
		return nil, errors.New("app: no database DSN")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cc, err := pgx.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("app: the DSN is not a valid Postgres connection string: %w", err)
	}
	// A connection may wait out a switchover's hold at the writer
	// endpoint: allow it the request's time, but no more.
	if ct := cc.ConnectTimeout; ct <= 0 || ct > max(maxConnectTimeout, cfg.Timeout) {
		cc.ConnectTimeout = max(maxConnectTimeout, cfg.Timeout)
	}
	if cc.RuntimeParams["application_name"] == "" {
		cc.RuntimeParams["application_name"] = "lifeboat-lab-app-" + cfg.Region
	}
	return &Server{cfg: cfg, logger: cfg.Logger.With("region", cfg.Region), connCfg: cc, errc: make(chan error, 1)}, nil
}

// Open listens, starts serving and starts creating the table in the
// background; a database that is down delays only the table, which every
// request also creates when it is still missing.
func (s *Server) Open() error {
	if s.srv != nil {
		return errors.New("app: already open")
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("app: listen on %s: %w", s.cfg.Listen, err)
	}
	// Connections are made lazily: the database may be down at start.
	s.pool, s.ln = newPool(s.connCfg, maxConns, maxIdle), ln
	s.srv = &http.Server{
		Handler:           s.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errc <- fmt.Errorf("app: serving on %s: %w", ln.Addr(), err)
		}
	}()
	go func() {
		defer s.wg.Done()
		s.createTableLoop(ctx)
	}()
	s.logger.Info("lab app serving", "addr", ln.Addr().String())
	return nil
}

// Addr is the listening address after Open.
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Err reports a failure to serve after Open (the listener broke).
func (s *Server) Err() <-chan error { return s.errc }

// Close stops accepting, waits for requests in flight until ctx ends,
// stops the background work and closes the database connections.
func (s *Server) Close(ctx context.Context) error {
	if s.srv == nil {
		return nil
	}
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	s.cancel()
	if werr := lifecycle.Wait(ctx, &s.wg); err == nil {
		err = werr
	}
	s.pool.close()
	return err
}

// Run serves cfg until ctx ends, then closes within five seconds.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(cfg)
	if err != nil {
		return err
	}
	if err := s.Open(); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case err = <-s.Err():
	}
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return errors.Join(err, s.Close(cctx))
}

// handler is the application's routes, behind the region header and a
// recovery that answers 500 in JSON rather than dropping the connection.
func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /transactions", s.postTransaction)
	mux.HandleFunc("GET /transactions/{id}", s.getTransaction)
	mux.HandleFunc("GET /healthz", s.healthz)
	// /livez says only that the instance serves: the health probe of a
	// standby region's app, whose database (the active region's primary,
	// through the writer endpoint) may be the very thing that failed.
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(RegionHeader, s.cfg.Region)
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v))
				s.writeError(w, http.StatusInternalServerError, "internal error")
			}
		}()
		mux.ServeHTTP(w, r)
	})
}

// transactionRequest is the body of POST /transactions. Pointers tell a
// missing field from a zero.
type transactionRequest struct {
	ID     *int64  `json:"id"`
	Amount *int64  `json:"amount"`
	Note   *string `json:"note"`
}

// created is the answer to an acknowledged POST /transactions.
type created struct {
	ID int64 `json:"id"`
	// Region is the region recorded with the row: the instance that
	// inserted it, which is another one when a retry found the row an
	// earlier attempt wrote.
	Region string `json:"region"`
	// EpochRegion is the region of the instance that served this request.
	EpochRegion string `json:"epoch_region"`
	// DB is the cluster_name of the Postgres server that confirmed the
	// write ("" when it has none).
	DB string `json:"db"`
}

// transaction is a stored row, the answer to GET /transactions/{id}.
type transaction struct {
	ID        int64     `json:"id"`
	Amount    int64     `json:"amount"`
	Note      string    `json:"note"`
	Region    string    `json:"region"`
	CreatedAt time.Time `json:"created_at"`
}

func (s *Server) postTransaction(w http.ResponseWriter, r *http.Request) {
	req, status, msg := decodeTransaction(w, r)
	if status != 0 {
		s.writeError(w, status, msg)
		return
	}
	id, amount, note := *req.ID, *req.Amount, ""
	if req.Note != nil {
		note = *req.Note
	}
	ctx, cancel := s.dbContext(r)
	defer cancel()
	var (
		out      created
		conflict string
	)
	err := s.withConn(ctx, true, func(ctx context.Context, c *conn) error {
		out, conflict = created{ID: id, EpochRegion: s.cfg.Region}, ""
		// An autocommit statement: when it returns, it has committed.
		err := c.QueryRow(ctx, `INSERT INTO transactions (id, amount, note, region) VALUES ($1, $2, $3, $4)
			ON CONFLICT (id) DO NOTHING RETURNING region, current_setting('cluster_name')`,
			id, amount, note, s.cfg.Region).Scan(&out.Region, &out.DB)
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		// The id exists: the same content is this write again.
		var have transaction
		err = c.QueryRow(ctx, `SELECT amount, coalesce(note, ''), coalesce(region, ''), current_setting('cluster_name')
			FROM transactions WHERE id = $1`, id).Scan(&have.Amount, &have.Note, &out.Region, &out.DB)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("transaction %d conflicted on insert but is not there to compare (deleted meanwhile)", id)
		}
		if err != nil {
			return err
		}
		if have.Amount != amount || have.Note != note {
			conflict = fmt.Sprintf("transaction %d exists with different content (amount %d, note %q; this request: amount %d, note %q)",
				id, have.Amount, have.Note, amount, note)
		}
		return nil
	})
	switch {
	case err != nil:
		s.unavailable(w, "insert", err)
	case conflict != "":
		s.writeError(w, http.StatusConflict, conflict)
	default:
		writeJSON(w, http.StatusCreated, out)
	}
}

func (s *Server) getTransaction(w http.ResponseWriter, r *http.Request) {
	raw := r.PathValue("id")
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		s.writeError(w, http.StatusBadRequest, fmt.Sprintf("transaction id %q is not a 64-bit integer", raw))
		return
	}
	ctx, cancel := s.dbContext(r)
	defer cancel()
	var t transaction
	found := false
	err = s.withConn(ctx, true, func(ctx context.Context, c *conn) error {
		err := c.QueryRow(ctx, `SELECT id, coalesce(amount, 0), coalesce(note, ''), coalesce(region, ''), created_at
			FROM transactions WHERE id = $1`, id).Scan(&t.ID, &t.Amount, &t.Note, &t.Region, &t.CreatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		found = err == nil
		return err
	})
	switch {
	case err != nil:
		s.unavailable(w, "read", err)
	case !found:
		s.writeError(w, http.StatusNotFound, fmt.Sprintf("transaction %d not found", id))
	default:
		writeJSON(w, http.StatusOK, t)
	}
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), healthTimeout)
	defer cancel()
	err := s.withConn(ctx, false, func(ctx context.Context, c *conn) error {
		var one int
		return c.QueryRow(ctx, "SELECT 1").Scan(&one)
	})
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "database: %s\n", s.describe(err, healthTimeout))
		return
	}
	io.WriteString(w, "ok\n")
}

// dbContext bounds a request's database work. It does not end when the
// client leaves: a statement cut off midway costs a connection and leaves
// its outcome unknown, where letting it finish costs at most Timeout.
func (s *Server) dbContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), s.cfg.Timeout)
}

// withConn runs fn on a pooled connection. A failure after which fn may
// safely run again (see retryable: a broken connection, a missing table,
// a fenced server) is retried once on a fresh connection; any other
// failure is returned.
func (s *Server) withConn(ctx context.Context, needTable bool, fn func(context.Context, *conn) error) error {
	err := s.attempt(ctx, needTable, fn)
	if err != nil && ctx.Err() == nil && retryable(err) {
		s.logger.Debug("database attempt failed before sending; retrying on a fresh connection", "err", err)
		err = s.attempt(ctx, needTable, fn)
	}
	switch {
	case err == nil:
		if s.dbDown.CompareAndSwap(true, false) {
			s.logger.Info("database available again")
		}
	case errors.As(err, new(errPoolClosed)):
	default:
		if s.dbDown.CompareAndSwap(false, true) {
			s.logger.Warn("database unavailable: answering 503 until it is back", "err", s.describe(err, s.cfg.Timeout))
		}
	}
	return err
}

func (s *Server) attempt(ctx context.Context, needTable bool, fn func(context.Context, *conn) error) error {
	c, err := s.pool.acquire(ctx)
	if err != nil {
		return s.afterFailure(err)
	}
	if needTable && !s.tableReady.Load() {
		err = s.ensureTable(ctx, c.Conn)
	}
	if err == nil {
		err = fn(ctx, c)
	}
	s.pool.release(c)
	return s.afterFailure(err)
}

// afterFailure drops what a failure shows to be stale: every pooled
// connection after a broken one (the writer endpoint closes them all at
// once on a change of epoch), the table's readiness when it is missing.
func (s *Server) afterFailure(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr):
		switch pgErr.Code {
		case "42P01": // undefined_table: a new, empty database
			s.tableReady.Store(false)
		default:
			if connectionLost(pgErr) {
				// The other pooled sessions are as stale; a new connection
				// goes where the writer endpoint sends it now (held during
				// a switchover).
				s.pool.reset()
			}
		}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), errors.As(err, new(errPoolClosed)):
	default:
		s.pool.reset()
	}
	return err
}

// retryable reports whether fn may run again on a fresh connection after
// err. Every statement of the app may: the reads and the health check
// change nothing, and a write carries the client's id, so that running it
// again after it committed finds the row and compares it (ON CONFLICT DO
// NOTHING, then a read). So a connection that broke (refused, closed by
// the writer endpoint on a change of epoch or a lapse of its quorum,
// ended by a fence or an operator: see connectionLost) is worth one more
// attempt; a missing table is too. Another refusal by the server, or the
// request's time spent, is final.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr):
		return pgErr.Code == "42P01" || connectionLost(pgErr)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), pgconn.Timeout(err), errors.As(err, new(errPoolClosed)):
		return false
	default:
		return true
	}
}

// connectionLost reports whether the server's refusal is about the
// connection rather than the statement: a fenced server (25006
// read_only_sql_transaction), a session ended by an operator or a fence
// (class 57, e.g. 57P01 admin_shutdown), a connection failure (class 08).
func connectionLost(e *pgconn.PgError) bool {
	return e.Code == "25006" || strings.HasPrefix(e.Code, "57P") || strings.HasPrefix(e.Code, "08")
}

// ensureTable creates the table when it is missing, under an advisory lock
// so that concurrent instances do not collide in the catalog. A table that
// exists is found with a read, which a read-only server answers too.
func (s *Server) ensureTable(ctx context.Context, c *pgx.Conn) error {
	s.tableMu.Lock()
	defer s.tableMu.Unlock()
	if s.tableReady.Load() {
		return nil
	}
	var exists bool
	if err := c.QueryRow(ctx, "SELECT to_regclass('transactions') IS NOT NULL").Scan(&exists); err != nil {
		return err
	}
	if !exists {
		err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(schemaLock)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, createTable)
			return err
		})
		if err != nil {
			return err
		}
		s.logger.Info("created table transactions")
	}
	s.tableReady.Store(true)
	return nil
}

// createTableLoop creates the table as soon as the database answers, so
// that it exists before the first request; it tries again every second.
func (s *Server) createTableLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for !s.tableReady.Load() {
		actx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		err := s.withConn(actx, true, func(context.Context, *conn) error { return nil })
		cancel()
		if err == nil {
			return
		}
		s.logger.Debug("table not created yet", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// unavailable answers 503 for a database failure, saying why.
func (s *Server) unavailable(w http.ResponseWriter, what string, err error) {
	why := s.describe(err, s.cfg.Timeout)
	s.logger.Debug("answered 503", "op", what, "err", why)
	w.Header().Set("Retry-After", "1")
	s.writeError(w, http.StatusServiceUnavailable, why)
}

// describe turns a database failure into a sentence for the client.
func (s *Server) describe(err error, budget time.Duration) string {
	var pgErr *pgconn.PgError
	var ce *pgconn.ConnectError
	switch {
	case errors.As(err, &ce):
		return "database unreachable: " + err.Error()
	case errors.As(err, &pgErr):
		return fmt.Sprintf("database refused: %s (SQLSTATE %s)", pgErr.Message, pgErr.Code)
	case errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err):
		return fmt.Sprintf("database did not answer within %s", budget)
	default:
		return "database connection failed: " + err.Error()
	}
}

func (s *Server) writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg, "region": s.cfg.Region})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // messages quote <int64> and the like
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"encoding the answer failed"}` + "\n")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// decodeTransaction reads a POST body; a status other than 0 is the answer
// to give, with msg naming what is wrong.
func decodeTransaction(w http.ResponseWriter, r *http.Request) (transactionRequest, int, string) {
	const want = `want {"id": <int64>, "amount": <int64>, "note": "<text>"}`
	var req transactionRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(&req)
	var (
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
		sizeErr   *http.MaxBytesError
	)
	switch {
	case err == nil:
	case errors.As(err, &sizeErr):
		return req, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", sizeErr.Limit)
	case errors.Is(err, io.EOF):
		return req, http.StatusBadRequest, "request body is empty: " + want
	case errors.Is(err, io.ErrUnexpectedEOF):
		return req, http.StatusBadRequest, "request body is not valid JSON: it ends in the middle of a value"
	case errors.As(err, &syntaxErr):
		return req, http.StatusBadRequest, fmt.Sprintf("request body is not valid JSON: %v (at byte %d)", err, syntaxErr.Offset)
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return req, http.StatusBadRequest, fmt.Sprintf("request body must be a JSON object, got %s: %s", typeErr.Value, want)
		}
		return req, http.StatusBadRequest, fmt.Sprintf("field %q must be %s, got %s", typeErr.Field, jsonKind(typeErr.Type.String()), typeErr.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return req, http.StatusBadRequest, fmt.Sprintf("unknown field %s: %s", strings.TrimPrefix(err.Error(), "json: unknown field "), want)
	default:
		return req, http.StatusBadRequest, fmt.Sprintf("request body is not valid JSON: %v", err)
	}
	if dec.More() {
		return req, http.StatusBadRequest, "request body has more after the JSON object: send one object"
	}
	if req.ID == nil {
		return req, http.StatusBadRequest, `field "id" is required (an int64 chosen by the client; retries reuse it)`
	}
	if req.Amount == nil {
		return req, http.StatusBadRequest, `field "amount" is required (an int64)`
	}
	return req, 0, ""
}

// jsonKind names a Go type of the request as the JSON it takes.
func jsonKind(goType string) string {
	switch strings.TrimPrefix(goType, "*") {
	case "int64":
		return "a 64-bit integer"
	case "string":
		return "a string"
	default:
		return goType
	}
}
