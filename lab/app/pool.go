package app

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// pool keeps a few connections for reuse. It is deliberately small: a
// connection is checked before each use (CheckConn: one non-blocking
// read, which finds a connection the writer endpoint or the server
// closed), reset drops every connection at once, and a connection is made
// only when a request needs one, so a database that is down costs
// nothing until then.
type pool struct {
	cfg     *pgx.ConnConfig
	idleFor time.Duration
	slots   chan struct{} // one per connection checked out or being made

	mu     sync.Mutex
	idle   []idleConn
	gen    uint64 // bumped by reset: older connections are not reused
	closed bool
}

type idleConn struct {
	conn  *pgx.Conn
	gen   uint64
	since time.Time
}

// conn is a connection checked out of the pool.
type conn struct {
	*pgx.Conn
	gen uint64
}

func newPool(cfg *pgx.ConnConfig, max int, idleFor time.Duration) *pool {
	return &pool{cfg: cfg, idleFor: idleFor, slots: make(chan struct{}, max)}
}

// acquire returns a live idle connection, else a new one.
func (p *pool) acquire(ctx context.Context) (*conn, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			<-p.slots
			return nil, errPoolClosed{}
		}
		n := len(p.idle)
		if n == 0 {
			gen := p.gen
			p.mu.Unlock()
			c, err := pgx.ConnectConfig(ctx, p.cfg)
			if err != nil {
				<-p.slots
				return nil, err
			}
			return &conn{Conn: c, gen: gen}, nil
		}
		ic := p.idle[n-1] // the most recently used: the likeliest to be alive
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if time.Since(ic.since) < p.idleFor && ic.conn.PgConn().CheckConn() == nil {
			return &conn{Conn: ic.conn, gen: ic.gen}, nil
		}
		closeConn(ic.conn)
	}
}

// release returns c to the pool, or closes it when it is broken, busy in
// a transaction, or older than the last reset.
func (p *pool) release(c *conn) {
	defer func() { <-p.slots }()
	p.mu.Lock()
	keep := !p.closed && c.gen == p.gen && !c.IsClosed() && c.PgConn().TxStatus() == 'I'
	if keep {
		p.idle = append(p.idle, idleConn{conn: c.Conn, gen: c.gen, since: time.Now()})
	}
	p.mu.Unlock()
	if !keep {
		closeConn(c.Conn)
	}
}

// reset closes the idle connections and marks those checked out to be
// closed on release.
func (p *pool) reset() {
	p.mu.Lock()
	p.gen++
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, ic := range idle {
		closeConn(ic.conn)
	}
}

// close closes the idle connections and refuses new acquisitions;
// connections checked out are closed on release.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.reset()
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	c.Close(ctx)
}

type errPoolClosed struct{}

func (errPoolClosed) Error() string { return "the application is shutting down" }
