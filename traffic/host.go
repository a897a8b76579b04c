package traffic

import (
	"net"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lifeboat-dr/lifeboat/config"
)

// EndpointHost returns the host an endpoint points at (an IP address or a
// name), for DNS answers: the URL's host, the host of host:port, or the
// host of a DSN.
func EndpointHost(kind, addr string) string {
	switch kind {
	case config.KindTCP:
		if h, _, err := net.SplitHostPort(addr); err == nil {
			return h
		}
		return addr
	case config.KindPostgres:
		if !strings.Contains(addr, "://") {
			if c, err := pgconn.ParseConfig(addr); err == nil {
				return c.Host
			}
			return ""
		}
	}
	u, err := url.Parse(addr)
	if err != nil {
		return ""
	}
	return u.Hostname()
}
