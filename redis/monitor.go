package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"strconv"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/lifeboat-dr/lifeboat/replication"
)

var _ replication.Source = (*Monitor)(nil)

const (
	// heartbeatKeyPrefix + observer is the key the monitor writes on the
	// primary and reads on the replicas.
	heartbeatKeyPrefix = "lifeboat:heartbeat:"
	// monitorPoolSize is the connections kept per server: the loop sends
	// one pipeline at a time to each.
	monitorPoolSize = 2
	// reasonNoMeasurement is the Reason of a standby before the first round.
	reasonNoMeasurement = "no measurement yet"
)

// Endpoint is one Redis server of a service.
type Endpoint struct {
	// Region the server runs in.
	Region string
	// URL is redis://[user:password@]host:port[/db] (or rediss://), as
	// goredis.ParseURL accepts.
	URL string
}

// MonitorConfig configures a Monitor.
type MonitorConfig struct {
	// Service is the data service's name, copied into every Lag. Required.
	Service string
	// Observer is this Lifeboat node's name; the heartbeat key is
	// "lifeboat:heartbeat:<Observer>", so nodes do not overwrite each
	// other's heartbeats. Required.
	Observer string
	// Primary is the server in the active region. Required.
	Primary Endpoint
	// Standbys are the replicas of Primary, one per standby region. At
	// least one; regions must be distinct.
	Standbys []Endpoint
	// Interval is the heartbeat period, and the resolution of
	// Lag.Seconds. Required (> 0).
	Interval time.Duration
	// Timeout bounds each server's part of a round (one pipeline).
	// Default: Interval.
	Timeout time.Duration
	// Logger receives state changes (replication broken or restored,
	// heartbeat writes failing or recovered). Default: discard.
	Logger *slog.Logger
}

// Monitor measures the replication of one Redis service from its primary
// to each replica with a heartbeat: every Interval it reads each replica
// (INFO replication and the heartbeat key), then writes the current time
// to the heartbeat key on the primary and reads the primary's INFO
// replication.
//
// Lag.Seconds is the age difference between the last heartbeat written
// and the one visible on the replica; both are this monitor's own clock
// readings, so clocks of the servers do not matter. Because replicas are
// read before the next heartbeat is written, a healthy replica shows 0 and
// the figure moves in steps of Interval. While a replica is unreachable,
// or does not apply the stream, its last visible heartbeat is kept, so
// Seconds grows as long as the primary takes heartbeats.
//
// While the primary cannot be read or refuses the heartbeat (unreachable,
// OOM, ACL, read-only...), the replicas may well show the last heartbeat
// written, which proves nothing about what the primary took since: Seconds
// is then at least the time since the last heartbeat written, on the
// monitor's own monotonic clock, and Reason (unless the replica is broken)
// says "heartbeat failing on the primary: ...".
//
// Lag.Bytes is the primary's master_repl_offset minus the replica's
// slave_repl_offset, each the last one read.
//
// Call Open to start measuring and Close to stop.
type Monitor struct {
	cfg      MonitorConfig
	log      *slog.Logger
	key      string
	primary  *node
	standbys []*standby

	// Loop state: touched only by the loop goroutine.
	written            int64     // last heartbeat SET on the primary (unix ns); 0 = none yet
	writtenAt          time.Time // when written was sent, with the monotonic clock
	primaryOffset      int64     // last master_repl_offset read
	primaryOffsetKnown bool
	primaryFailing     bool // for logging changes only

	mu     sync.Mutex // guards the fields below
	lags   []replication.Lag
	cancel context.CancelFunc // set by Open
	done   chan struct{}      // closed when the loop returns; set by Open
	closed bool
}

// standby is one replica and what the loop remembers about it.
type standby struct {
	Endpoint
	node *node
	host string // of node.addr, to find the replica in the primary's INFO
	port int

	// Loop state: touched only by the loop goroutine (one reader
	// goroutine per standby during a round, then the loop).
	visible     int64 // last heartbeat seen on the replica (unix ns); 0 = none yet
	offset      int64 // last slave_repl_offset read
	offsetKnown bool
	brokenKind  string // kind of the last Reason, for logging changes only
}

// NewMonitor checks cfg and builds the clients of every server. It does no
// I/O; Lag returns one entry per standby, with Reason "no measurement
// yet", until Open's first round. Errors name the faulty field and never
// contain a password.
func NewMonitor(cfg MonitorConfig) (*Monitor, error) {
	if err := validate(cfg); err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = cfg.Interval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Monitor{
		cfg: cfg,
		log: log.With("service", cfg.Service),
		key: heartbeatKeyPrefix + cfg.Observer,
	}
	var err error
	if m.primary, err = newNode(cfg.Primary.URL, monitorPoolSize); err != nil {
		return nil, fmt.Errorf("redis monitor %q: Primary.URL: %w", cfg.Service, err)
	}
	for i, ep := range cfg.Standbys {
		n, err := newNode(ep.URL, monitorPoolSize)
		if err != nil {
			m.closeNodes()
			return nil, fmt.Errorf("redis monitor %q: Standbys[%d].URL: %w", cfg.Service, i, err)
		}
		sb := &standby{Endpoint: ep, node: n}
		if host, port, err := net.SplitHostPort(n.addr); err == nil {
			sb.host = host
			sb.port, _ = strconv.Atoi(port)
		}
		m.standbys = append(m.standbys, sb)
		m.lags = append(m.lags, replication.Lag{
			Service: cfg.Service,
			Region:  ep.Region,
			Reason:  reasonNoMeasurement,
		})
	}
	return m, nil
}

// validate checks the fields of cfg that need no parsing.
func validate(cfg MonitorConfig) error {
	prefix := fmt.Sprintf("redis monitor %q", cfg.Service)
	switch {
	case cfg.Service == "":
		return errors.New("redis monitor: Service is required")
	case cfg.Observer == "":
		return fmt.Errorf("%s: Observer is required", prefix)
	case cfg.Primary.URL == "":
		return fmt.Errorf("%s: Primary.URL is required", prefix)
	case len(cfg.Standbys) == 0:
		return fmt.Errorf("%s: Standbys: at least one standby is required", prefix)
	case cfg.Interval <= 0:
		return fmt.Errorf("%s: Interval must be positive, got %v", prefix, cfg.Interval)
	case cfg.Timeout < 0:
		return fmt.Errorf("%s: Timeout must not be negative, got %v", prefix, cfg.Timeout)
	}
	regions := make(map[string]bool)
	for i, ep := range cfg.Standbys {
		switch {
		case ep.Region == "":
			return fmt.Errorf("%s: Standbys[%d].Region is required", prefix, i)
		case regions[ep.Region]:
			return fmt.Errorf("%s: Standbys[%d].Region: %q appears twice", prefix, i, ep.Region)
		case ep.URL == "":
			return fmt.Errorf("%s: Standbys[%d].URL is required", prefix, i)
		}
		regions[ep.Region] = true
	}
	return nil
}

// Open starts the measuring goroutine; its first round starts at once. It
// fails if the monitor is already open or was closed.
func (m *Monitor) Open() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return fmt.Errorf("redis monitor %q: open after close", m.cfg.Service)
	case m.done != nil:
		return fmt.Errorf("redis monitor %q: already open", m.cfg.Service)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel, m.done = cancel, make(chan struct{})
	go m.run(ctx, m.done)
	return nil
}

// Close stops the measuring goroutine, waits for it (until ctx is done),
// then closes the clients. It is idempotent, and may be called without
// Open. It returns ctx's error, wrapped, when the goroutine did not end in
// time; the clients are closed anyway.
func (m *Monitor) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	cancel, done := m.cancel, m.done
	m.mu.Unlock()

	var errs []error
	if cancel != nil {
		cancel()
		select {
		case <-done:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("redis monitor %q: wait for the measuring loop: %w", m.cfg.Service, ctx.Err()))
		}
	}
	if err := m.closeNodes(); err != nil {
		errs = append(errs, fmt.Errorf("redis monitor %q: %w", m.cfg.Service, err))
	}
	return errors.Join(errs...)
}

func (m *Monitor) closeNodes() error {
	var errs []error
	if m.primary != nil {
		errs = append(errs, m.primary.close())
	}
	for _, sb := range m.standbys {
		errs = append(errs, sb.node.close())
	}
	return errors.Join(errs...)
}

// Lag returns the latest measurement of every standby, in the order of
// MonitorConfig.Standbys, in a new slice that the caller owns (Details
// maps included). It does no I/O.
func (m *Monitor) Lag() []replication.Lag {
	m.mu.Lock()
	defer m.mu.Unlock()
	lags := make([]replication.Lag, len(m.lags))
	for i, l := range m.lags {
		l.Details = maps.Clone(l.Details)
		lags[i] = l
	}
	return lags
}

// run measures every Interval until ctx is done, then closes done.
func (m *Monitor) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	ticker := time.NewTicker(m.cfg.Interval)
	defer ticker.Stop()
	for {
		m.round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// replicaReading is what one round read from one replica.
type replicaReading struct {
	err       error             // the replica could not be read; nothing else is set
	info      map[string]string // INFO replication
	heartbeat int64             // heartbeat value; 0 when missing or garbled
}

// primaryReading is what one round did on the primary.
type primaryReading struct {
	err  error             // first failure of INFO or SET
	info map[string]string // INFO replication; nil when it failed
}

// round reads every replica (at once), then writes the heartbeat on the
// primary, then publishes one Lag per standby. A round cut short by Close
// publishes nothing.
func (m *Monitor) round(ctx context.Context) {
	now := time.Now()
	writtenBefore := m.written // the heartbeat each replica should show by now

	readings := make([]replicaReading, len(m.standbys))
	var wg sync.WaitGroup
	for i, sb := range m.standbys {
		wg.Go(func() { readings[i] = m.readReplica(ctx, sb) })
	}
	wg.Wait()
	primary := m.heartbeat(ctx)
	if ctx.Err() != nil {
		return
	}

	after := time.Now()
	lags := make([]replication.Lag, len(m.standbys))
	for i, sb := range m.standbys {
		lags[i] = m.measure(sb, readings[i], primary, writtenBefore, now, after)
	}
	m.mu.Lock()
	m.lags = lags
	m.mu.Unlock()
}

// readReplica sends INFO replication and GET <heartbeat key> to sb in one
// pipeline.
func (m *Monitor) readReplica(ctx context.Context, sb *standby) replicaReading {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	var info, get *goredis.StringCmd
	// Errors are per command, below.
	_, _ = sb.node.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		info = p.Info(ctx, "replication")
		get = p.Get(ctx, m.key)
		return nil
	})
	if err := info.Err(); err != nil {
		return replicaReading{err: sb.node.describe("INFO", err)}
	}
	r := replicaReading{info: parseInfo(info.Val())}
	value, err := get.Result()
	switch {
	case errors.Is(err, goredis.Nil):
	case err != nil:
		return replicaReading{err: sb.node.describe("GET", err)}
	default:
		if v, perr := strconv.ParseInt(value, 10, 64); perr == nil && v > 0 {
			r.heartbeat = v
		} else {
			m.log.Debug("redis heartbeat value garbled", "region", sb.Region, "key", m.key)
		}
	}
	return r
}

// heartbeat sends INFO replication, then SET <heartbeat key> <now>, to the
// primary in one pipeline, and remembers the offset and the value written
// when they succeed. INFO goes first so that, when the application is
// idle, the primary's offset matches what the replicas, read just before,
// have applied.
func (m *Monitor) heartbeat(ctx context.Context) primaryReading {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	sent := time.Now()
	value := sent.UnixNano()
	var info *goredis.StringCmd
	var set *goredis.StatusCmd
	_, _ = m.primary.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		info = p.Info(ctx, "replication")
		set = p.Set(ctx, m.key, strconv.FormatInt(value, 10), 0)
		return nil
	})
	var r primaryReading
	if err := info.Err(); err != nil {
		r.err = m.primary.describe("INFO", err)
	} else {
		r.info = parseInfo(info.Val())
		if off, ok := intField(r.info, "master_repl_offset"); ok {
			m.primaryOffset, m.primaryOffsetKnown = off, true
		}
	}
	if err := set.Err(); err != nil {
		if r.err == nil {
			r.err = m.primary.describe("SET", err)
		}
	} else {
		m.written, m.writtenAt = value, sent
	}

	switch failing := r.err != nil; {
	case failing && !m.primaryFailing && ctx.Err() == nil:
		m.log.Warn("redis heartbeat failed on the primary", "region", m.cfg.Primary.Region, "error", r.err.Error())
	case !failing && m.primaryFailing:
		m.log.Info("redis heartbeat recovered on the primary", "region", m.cfg.Primary.Region)
	}
	m.primaryFailing = r.err != nil
	return r
}

// measure updates what is remembered of sb from this round's readings and
// returns its Lag. writtenBefore is the last heartbeat written before the
// replicas were read at now; after is when the primary's part of the round
// ended.
func (m *Monitor) measure(sb *standby, rd replicaReading, pr primaryReading, writtenBefore int64, now, after time.Time) replication.Lag {
	lag := replication.Lag{
		Service: m.cfg.Service,
		Region:  sb.Region,
		Time:    now,
		Details: make(map[string]string),
	}
	if rd.err == nil {
		if rd.heartbeat > 0 {
			sb.visible = rd.heartbeat
		}
		sb.offset, sb.offsetKnown = intField(rd.info, "slave_repl_offset")
		for _, key := range []string{"role", "master_link_status", "master_last_io_seconds_ago", "master_sync_in_progress", "master_link_down_since_seconds"} {
			if v, ok := rd.info[key]; ok {
				lag.Details[key] = v
			}
		}
	}

	if writtenBefore > 0 && sb.visible > 0 {
		lag.Seconds = max(0, float64(writtenBefore-sb.visible)/float64(time.Second))
		lag.SecondsKnown = true
		if pr.err != nil {
			// What the primary took since its last heartbeat is unknown:
			// the replica may miss all of it.
			lag.Seconds = max(lag.Seconds, after.Sub(m.writtenAt).Seconds())
		}
	}
	if m.primaryOffsetKnown && sb.offsetKnown {
		lag.Bytes = max(0, m.primaryOffset-sb.offset)
		lag.BytesKnown = true
	}
	if m.primaryOffsetKnown {
		lag.Details["primary_offset"] = strconv.FormatInt(m.primaryOffset, 10)
	}
	if sb.offsetKnown {
		lag.Details["replica_offset"] = strconv.FormatInt(sb.offset, 10)
	}
	if pr.info != nil {
		if v, ok := pr.info["connected_slaves"]; ok {
			lag.Details["connected_slaves"] = v
		}
		for _, e := range replicaEntries(pr.info) {
			if e.Port == sb.port && e.IP == sb.host {
				lag.Details["primary_view_state"] = e.State
				lag.Details["primary_view_offset"] = strconv.FormatInt(e.Offset, 10)
				lag.Details["primary_view_lag"] = strconv.FormatInt(e.Lag, 10)
				break
			}
		}
	}
	if pr.err != nil {
		lag.Details["primary_error"] = pr.err.Error()
	}

	kind, reason := brokenReason(rd)
	lag.Broken, lag.Reason = reason != "", reason
	if !lag.Broken && pr.err != nil {
		lag.Reason = "heartbeat failing on the primary: " + pr.err.Error()
	}
	if kind != sb.brokenKind {
		if kind != "" {
			m.log.Warn("redis replication broken", "region", sb.Region, "reason", reason)
		} else {
			m.log.Info("redis replication restored", "region", sb.Region)
		}
		sb.brokenKind = kind
	}
	return lag
}

// brokenReason says why a replica does not replicate from the primary, or
// returns "" when it does. kind is a stable name of the reason, for
// logging changes only.
func brokenReason(rd replicaReading) (kind, reason string) {
	if rd.err != nil {
		return "unreachable", "replica unreachable: " + rd.err.Error()
	}
	role := rd.info["role"]
	if role == "" {
		role = "unknown"
	}
	switch {
	case role != "slave" && role != "replica":
		return "not-replica", "not a replica: ROLE is " + role
	case rd.info["master_sync_in_progress"] == "1":
		return "sync", "initial sync from the primary in progress"
	case rd.info["master_link_status"] != "up":
		return "link-down", linkDownReason(rd.info)
	}
	return "", ""
}

// linkDownReason describes a replica whose link to the primary is down,
// with how long for when the replica says.
func linkDownReason(info map[string]string) string {
	for _, key := range []string{"master_link_down_since_seconds", "master_last_io_seconds_ago"} {
		if s, ok := intField(info, key); ok && s >= 0 {
			return fmt.Sprintf("replication link down for %ds (%s)", s, key)
		}
	}
	return "replication link down (master_link_status:" + info["master_link_status"] + ")"
}
