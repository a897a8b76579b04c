package drill

// pgworkload.go is the drill's client outside the lab: it writes rows to
// PostgreSQL through a Lifeboat writer endpoint, each under a
// client-chosen id, and records which server acknowledged each one. It
// drives the same scheduler as the HTTP workload (ids in sequence at a
// rate, the same id again after a failure, every acknowledgement and error
// timestamped): each "request" is one INSERT, answered in-process.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lifeboat-dr/lifeboat/config"
)

const (
	// pgWorkloadConns bounds the connections the workload opens, as an
	// application's pool does: a write waits for one (within its timeout).
	pgWorkloadConns = 16
	// pgSchemaLock serialises the creation of the table between drills.
	pgSchemaLock = 0x6c6664726c6c // "lfdrll"
	pgCreate     = `CREATE SCHEMA IF NOT EXISTS lifeboat_drill;
CREATE TABLE IF NOT EXISTS lifeboat_drill.writes (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(), server text)`
	// serverIdentity names the server that runs a statement:
	// "cluster_name@address:port" ("local" for a Unix socket).
	serverIdentity = `current_setting('cluster_name') || '@' || coalesce(host(inet_server_addr()) || ':' || inet_server_port(), 'local')`
	pgInsert       = `INSERT INTO lifeboat_drill.writes (id, server) VALUES ($1, ` + serverIdentity + `) ON CONFLICT (id) DO NOTHING RETURNING server`
	pgExisting     = `SELECT coalesce(server, ''), ` + serverIdentity + ` FROM lifeboat_drill.writes WHERE id = $1`
	// pgPresentRetry is how long Present keeps trying to read back.
	pgPresentRetry = 15 * time.Second
)

// PGWorkloadConfig shapes a Postgres workload.
type PGWorkloadConfig struct {
	// DSN is where the writes go: normally the writer endpoint (see
	// WriterDSN).
	DSN string
	// Rate is writes per second (default 50).
	Rate int
	// Timeout bounds each write, connecting included (default 2s).
	Timeout time.Duration
	// RegionOf names the region of a server identity
	// ("cluster_name@address:port"); nil or "" leaves it unknown.
	RegionOf func(server string) string
	// FirstID is the first id (default: the start time in microseconds).
	FirstID int64
}

// PGWorkload is a running Postgres workload.
type PGWorkload struct {
	w   *Workload
	tr  *pgTransport
	cfg *pgx.ConnConfig
}

// StartPGWorkload creates lifeboat_drill.writes if it is missing (an
// error here means nothing can be written: nothing is started), then
// writes until Stop. An acknowledgement's Region is the region of the
// server that confirmed the write (RegionOf), its RowRegion the region of
// the server that stored the row (another one when a retry found what an
// earlier attempt wrote), its DB that server's identity.
func StartPGWorkload(ctx context.Context, cfg PGWorkloadConfig) (*PGWorkload, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = workloadDefaultTimeout
	}
	cc, err := pgx.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("drill: the workload's DSN is not a valid Postgres connection string: %w", err)
	}
	if cc.ConnectTimeout <= 0 || cc.ConnectTimeout > cfg.Timeout {
		cc.ConnectTimeout = cfg.Timeout
	}
	if cc.RuntimeParams["application_name"] == "" {
		cc.RuntimeParams["application_name"] = "lifeboat-drill"
	}
	if err := createDrillTable(ctx, cc); err != nil {
		return nil, fmt.Errorf("drill: creating lifeboat_drill.writes: %w", err)
	}
	regionOf := cfg.RegionOf
	if regionOf == nil {
		regionOf = func(string) string { return "" }
	}
	tr := &pgTransport{cfg: cc, regionOf: regionOf, idle: make(chan *pgx.Conn, pgWorkloadConns), slots: make(chan struct{}, pgWorkloadConns)}
	w := StartWorkload(WorkloadConfig{URL: "http://postgres-writer", Rate: cfg.Rate, Timeout: cfg.Timeout,
		Client: &http.Client{Transport: tr}, FirstID: cfg.FirstID})
	return &PGWorkload{w: w, tr: tr, cfg: cc}, nil
}

func createDrillTable(ctx context.Context, cc *pgx.ConnConfig) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(pgSchemaLock)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, pgCreate)
		return err
	})
}

// Acked is how many writes were acknowledged so far.
func (p *PGWorkload) Acked() int64 { return p.tr.acked.Load() }

// LastError is the last write error so far, "" if none.
func (p *PGWorkload) LastError() string {
	if e := p.tr.lastErr.Load(); e != nil {
		return *e
	}
	return ""
}

// Stop stops writing, waits for the writes in flight and closes the
// connections. Calling it again returns the same result.
func (p *PGWorkload) Stop() Result {
	r := p.w.Stop()
	p.tr.close()
	return r
}

// Present reports which of ids are stored where the workload writes (the
// current primary, through the writer endpoint); it tries for a while
// when the endpoint does not answer. It fits Result.Lost.
func (p *PGWorkload) Present(ctx context.Context, ids []int64) (map[int64]bool, error) {
	deadline := time.Now().Add(pgPresentRetry)
	for {
		out, err := p.present(ctx, ids)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return out, err
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (p *PGWorkload) present(ctx context.Context, ids []int64) (map[int64]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, p.cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close(context.WithoutCancel(ctx))
	rows, err := c.Query(ctx, `SELECT id FROM lifeboat_drill.writes WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, err
	}
	out := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		out[id] = true
	}
	return out, rows.Err()
}

// pgTransport answers the workload's requests by writing to Postgres: a
// 201 names the servers, a 503 carries the database's error, and a write
// that ran out of time is the request's deadline.
type pgTransport struct {
	cfg      *pgx.ConnConfig
	regionOf func(string) string
	acked    atomic.Int64
	lastErr  atomic.Pointer[string]

	mu     sync.Mutex
	closed bool
	idle   chan *pgx.Conn // open connections not in use
	slots  chan struct{}  // one per open connection
}

func (t *pgTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var in struct {
		ID *int64 `json:"id"`
	}
	if req.Body != nil {
		err := json.NewDecoder(io.LimitReader(req.Body, 4096)).Decode(&in)
		req.Body.Close()
		if err != nil || in.ID == nil {
			return answer(req, http.StatusBadRequest, map[string]string{"error": "no id"}), nil
		}
	}
	ctx := req.Context()
	server, row, err := t.write(ctx, *in.ID)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		msg := err.Error()
		t.lastErr.Store(&msg)
		return answer(req, http.StatusServiceUnavailable, map[string]string{"error": msg}), nil
	}
	t.acked.Add(1)
	return answer(req, http.StatusCreated, map[string]any{"id": *in.ID, "epoch_region": t.regionOf(server), "region": t.regionOf(row), "db": server}), nil
}

// write inserts id; an id an earlier attempt stored is acknowledged by the
// server that finds it (a server that is not writable refuses the INSERT
// before it looks). A failure that says the connection is stale (broken,
// its session ended, its server no longer writable) drops every pooled
// connection, as a pool that reconnects does, and is tried once more on a
// fresh connection: the write is idempotent. It returns the identities of
// the server that confirmed and of the one that stored the row.
func (t *pgTransport) write(ctx context.Context, id int64) (server, row string, err error) {
	server, row, err = t.attempt(ctx, id)
	if err != nil && ctx.Err() == nil && stale(err) {
		t.reset()
		server, row, err = t.attempt(ctx, id)
	}
	return server, row, err
}

func (t *pgTransport) attempt(ctx context.Context, id int64) (server, row string, err error) {
	c, err := t.get(ctx)
	if err != nil {
		return "", "", fmt.Errorf("connect: %w", err)
	}
	err = c.QueryRow(ctx, pgInsert, id).Scan(&server)
	row = server
	if errors.Is(err, pgx.ErrNoRows) {
		err = c.QueryRow(ctx, pgExisting, id).Scan(&row, &server)
	}
	t.put(c)
	return server, row, err
}

// stale reports whether err says the connection, not the write, is at
// fault: it broke, its session was ended (57P*, 08*), or its server is no
// longer writable (25006: a fenced or demoted primary).
func stale(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return !strings.HasPrefix(err.Error(), "connect: ")
	}
	return strings.HasPrefix(pe.Code, "57P") || strings.HasPrefix(pe.Code, "08") || pe.Code == "25006"
}

// get takes an idle connection, else opens one when fewer than
// pgWorkloadConns are open, else waits for either.
func (t *pgTransport) get(ctx context.Context) (*pgx.Conn, error) {
	for {
		var c *pgx.Conn
		select {
		case c = <-t.idle:
		default:
			select {
			case c = <-t.idle:
			case t.slots <- struct{}{}:
				c, err := pgx.ConnectConfig(ctx, t.cfg)
				if err != nil {
					<-t.slots
				}
				return c, err
			case <-ctx.Done():
				return nil, fmt.Errorf("waiting for one of the workload's %d connections: %w", pgWorkloadConns, ctx.Err())
			}
		}
		if !c.IsClosed() {
			return c, nil
		}
		t.drop(c)
	}
}

// put keeps a connection that is still open for the next write; one the
// write broke (a network error, a cancelled statement) is closed by pgx
// already.
func (t *pgTransport) put(c *pgx.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || c.IsClosed() {
		t.drop(c)
		return
	}
	t.idle <- c // never blocks: at most pgWorkloadConns are open
}

// drop closes a connection and frees its slot.
func (t *pgTransport) drop(c *pgx.Conn) {
	closeConn(c)
	<-t.slots
}

// reset closes the idle connections: the writer endpoint closes them all
// at once on a change of epoch.
func (t *pgTransport) reset() {
	for {
		select {
		case c := <-t.idle:
			t.drop(c)
		default:
			return
		}
	}
}

func (t *pgTransport) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	t.reset()
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c.Close(ctx)
}

func answer(req *http.Request, code int, v any) *http.Response {
	b, _ := json.Marshal(v)
	return &http.Response{StatusCode: code, Status: fmt.Sprintf("%d %s", code, http.StatusText(code)), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(b)), ContentLength: int64(len(b)), Request: req}
}

// WriterDSN is the DSN a drill's workload connects with: the credentials,
// database and options of the workload service's endpoint DSN (the
// configured active region's), at the address of the service's writer
// endpoint (drills.workload.address, else the endpoint's listen address,
// an unspecified host meaning this host).
func WriterDSN(cfg *config.Config) (string, error) {
	d := cfg.Drills
	if d == nil {
		return "", errors.New("drill: the configuration has no drills section")
	}
	svc, ok := cfg.Service(d.Workload.Service)
	if !ok {
		return "", fmt.Errorf("drill: drills.workload.service %q is not declared", d.Workload.Service)
	}
	addr := d.Workload.Address
	if addr == "" {
		w, ok := cfg.DrillWriter(svc.Name)
		if !ok {
			return "", fmt.Errorf("drill: service %q has no writer endpoint in traffic.postgres", svc.Name)
		}
		addr = w.Listen
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("drill: writer address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	dsn := svc.Endpoints[cfg.ActiveRegion()]
	if dsn == "" {
		regions := make([]string, 0, len(svc.Endpoints))
		for r := range svc.Endpoints {
			regions = append(regions, r)
		}
		sort.Strings(regions)
		if len(regions) == 0 {
			return "", fmt.Errorf("drill: service %q has no endpoints", svc.Name)
		}
		dsn = svc.Endpoints[regions[0]]
	}
	return withAddress(dsn, host, port), nil
}

// withAddress points a DSN (URL or keyword/value form) at host:port,
// keeping its user, password, database and options.
func withAddress(dsn, host, port string) string {
	for _, scheme := range []string{"postgres://", "postgresql://"} {
		rest, ok := strings.CutPrefix(dsn, scheme)
		if !ok {
			continue
		}
		end := strings.IndexAny(rest, "/?")
		if end < 0 {
			end = len(rest)
		}
		user := ""
		if at := strings.LastIndex(rest[:end], "@"); at >= 0 {
			user = rest[:at+1]
		}
		return scheme + user + net.JoinHostPort(host, port) + rest[end:]
	}
	// Keyword/value: later keywords win.
	out := dsn + " host=" + host + " port=" + port
	if strings.Contains(dsn, "hostaddr=") {
		if host == "localhost" {
			host = "127.0.0.1"
		}
		out += " hostaddr=" + host
	}
	return out
}

// ServerMap names the region of each Postgres server a workload may reach,
// from what each region's server says about itself (ProbeServers).
type ServerMap struct {
	exact  map[string]string // identity → region
	names  map[string]string // cluster_name → region, when unique
	addrs  map[string]string // address:port → region
	region map[string]bool
}

// ProbeServers asks the server behind each region's DSN who it is. A
// server that cannot be reached is named by its DSN's host:port only (a
// note says so).
func ProbeServers(ctx context.Context, dsns map[string]string) (*ServerMap, []string) {
	m := &ServerMap{exact: map[string]string{}, names: map[string]string{}, addrs: map[string]string{}, region: map[string]bool{}}
	var notes []string
	dupNames := map[string]bool{}
	regions := make([]string, 0, len(dsns))
	for r := range dsns {
		regions = append(regions, r)
	}
	sort.Strings(regions)
	for _, region := range regions {
		m.region[region] = true
		dsn := dsns[region]
		if cc, err := pgconn.ParseConfig(dsn); err == nil {
			m.addrs[net.JoinHostPort(cc.Host, fmt.Sprint(cc.Port))] = region
		}
		id, err := probeServer(ctx, dsn)
		if err != nil {
			notes = append(notes, fmt.Sprintf("server of %s: not reached directly (%v); its writes are recognised by the address in its DSN", region, err))
			continue
		}
		m.exact[id] = region
		name, addr := splitIdentity(id)
		m.addrs[addr] = region
		if other, ok := m.names[name]; ok && other != region {
			dupNames[name] = true
		}
		m.names[name] = region
	}
	for n := range dupNames {
		delete(m.names, n)
	}
	delete(m.names, "")
	return m, notes
}

func probeServer(ctx context.Context, dsn string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return "", errors.New("the DSN does not parse")
	}
	c, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			return "", fmt.Errorf("%s (SQLSTATE %s)", pe.Message, pe.Code)
		}
		return "", errors.New("cannot connect")
	}
	defer c.Close(context.WithoutCancel(ctx))
	var id string
	err = c.QueryRow(ctx, "SELECT "+serverIdentity).Scan(&id)
	return id, err
}

func splitIdentity(id string) (name, addr string) {
	i := strings.LastIndex(id, "@")
	if i < 0 {
		return id, ""
	}
	return id[:i], id[i+1:]
}

// Region is the region of the server identity ("cluster_name@address:port"),
// "" when no region's server matches: the identity itself, else its
// cluster_name (when no two regions share it), else its address, else a
// cluster_name that is a region's name.
func (m *ServerMap) Region(id string) string {
	if id == "" {
		return ""
	}
	if r, ok := m.exact[id]; ok {
		return r
	}
	name, addr := splitIdentity(id)
	if r, ok := m.names[name]; ok {
		return r
	}
	if r, ok := m.addrs[addr]; ok {
		return r
	}
	if m.region[name] {
		return name
	}
	return ""
}
