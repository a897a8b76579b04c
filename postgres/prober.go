package postgres

import (
	"context"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/health"
)

var _ health.Prober = (*Prober)(nil)

// Prober checks that a PostgreSQL server answers queries and reports its
// role: health.RoleStandby when pg_is_in_recovery() is true, else
// health.RolePrimary.
//
// It keeps one connection open between probes, so that a probe every second
// costs one round trip rather than a TCP and SCRAM handshake; the connection
// is dropped after any error and the next probe opens a new one. Call Close
// to release it.
type Prober struct {
	mu sync.Mutex // serialises Probe and Close
	ep *endpoint
}

// NewProber returns a prober for the server of dsn (a URL or key=value
// connection string, as pgx accepts). It does no I/O; a DSN that does not
// parse makes every probe fail with "invalid DSN".
func NewProber(dsn string) *Prober {
	return &Prober{ep: newEndpoint(dsn, nil)}
}

// Probe connects if needed and runs SELECT pg_is_in_recovery(). It returns
// when ctx is done, even if the server accepts the connection and never
// answers. On failure Result.Err says what failed and where, without the
// password ("connect 127.0.0.1:5432: connection refused"), and Result.Role
// is health.RoleUnknown.
func (p *Prober) Probe(ctx context.Context) health.Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	conn, err := p.ep.connect(ctx)
	if err != nil {
		return health.Result{Err: err, Role: health.RoleUnknown}
	}
	started := time.Now()
	var inRecovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return health.Result{Err: p.ep.fail(ctx, "query", err, started), Role: health.RoleUnknown}
	}
	if inRecovery {
		return health.Result{Role: health.RoleStandby}
	}
	return health.Result{Role: health.RolePrimary}
}

// Close closes the cached connection, waiting for a probe in flight to end.
// It is idempotent, and the Prober stays usable: the next Probe connects
// again.
func (p *Prober) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	p.ep.close(ctx)
}
