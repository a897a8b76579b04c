package redis

import (
	"context"
	"fmt"
	"strings"

	"github.com/lifeboat-dr/lifeboat/health"
)

var _ health.Prober = (*Prober)(nil)

// proberPoolSize is the connections a Prober keeps: probes of one target
// never overlap, so one is used and a second absorbs a broken one.
const proberPoolSize = 2

// Prober checks that a Redis server answers and reports its role:
// health.RolePrimary for "master", health.RoleStandby for a replica,
// health.RoleUnknown for anything else (a sentinel).
//
// It keeps its connection between probes, so a probe costs one round trip
// for PING and one for ROLE. Call Close to release it.
type Prober struct {
	node *node
}

// NewProber returns a prober for the server of url
// (redis://[user:password@]host:port[/db] or rediss://, as
// goredis.ParseURL accepts). It does no I/O. The error, for a URL that does
// not parse, does not contain the password.
func NewProber(url string) (*Prober, error) {
	n, err := newNode(url, proberPoolSize)
	if err != nil {
		return nil, err
	}
	return &Prober{node: n}, nil
}

// Probe sends PING, then ROLE. It returns when ctx is done, even if the
// server accepts the connection and never answers, and never retries. On
// failure Result.Err names the command and host:port and says what went
// wrong ("dial 127.0.0.1:6379: connection refused", "PING 127.0.0.1:6379:
// WRONGPASS ..."), without the password, and Result.Role is
// health.RoleUnknown.
func (p *Prober) Probe(ctx context.Context) health.Result {
	if err := p.node.client.Ping(ctx).Err(); err != nil {
		return health.Result{Err: p.node.describe("PING", err), Role: health.RoleUnknown}
	}
	reply, err := p.node.client.Do(ctx, "ROLE").Slice()
	if err != nil {
		return health.Result{Err: p.node.describe("ROLE", err), Role: health.RoleUnknown}
	}
	if len(reply) == 0 {
		return health.Result{Err: fmt.Errorf("ROLE %s: empty reply", p.node.addr), Role: health.RoleUnknown}
	}
	name, _ := reply[0].(string)
	return health.Result{Role: roleOf(name)}
}

// Close closes the prober's connections. It is idempotent; probes after
// Close fail with "client closed".
func (p *Prober) Close() error {
	return p.node.close()
}

// roleOf maps the first element of a ROLE reply (or the role field of
// INFO replication) to a health.Role.
func roleOf(name string) health.Role {
	switch strings.ToLower(name) {
	case "master":
		return health.RolePrimary
	case "slave", "replica":
		return health.RoleStandby
	default:
		return health.RoleUnknown
	}
}
