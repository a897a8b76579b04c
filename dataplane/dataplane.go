// Package dataplane runs the servers that carry users' traffic — the
// authoritative DNS server, the HTTP front door and the Postgres endpoints —
// from one topology and one router, and reports where each sends traffic
// now.
package dataplane

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/netfilter"
	"github.com/lifeboat-dr/lifeboat/sockmap"
	"github.com/lifeboat-dr/lifeboat/traffic"
	"github.com/lifeboat-dr/lifeboat/traffic/dnsserver"
	"github.com/lifeboat-dr/lifeboat/traffic/httpproxy"
	"github.com/lifeboat-dr/lifeboat/traffic/pgproxy"
)

// Plane is the set of data-plane servers of a topology.
type Plane struct {
	router *traffic.Router
	logger *slog.Logger
	dns    *dnsserver.Server
	http   *httpproxy.Proxy
	pg     []*pgproxy.Proxy
	kernel *kernelRelay // for the Postgres endpoints whose relay is auto
	nat    *kernelNAT   // for the writer endpoints whose relay is auto
	opened []interface{ Close(context.Context) error }
}

// kernelRelay gives the Postgres endpoints the kernel's splicer once Open
// has loaded it (before the endpoints accept anything).
type kernelRelay struct{ s *sockmap.Splicer }

func (k *kernelRelay) Join(a, b net.Conn) (func(), error) {
	if k.s == nil {
		return nil, errors.New("the kernel relay is not loaded")
	}
	return k.s.Join(a, b)
}

// kernelNAT gives the writer endpoints the kernel's NAT once Open has
// created its table.
type kernelNAT struct{ n *netfilter.NAT }

func (k *kernelNAT) Forward(listen netip.AddrPort, f pgproxy.Forward) error {
	if k.n == nil {
		return errors.New("the kernel's NAT is unavailable")
	}
	return k.n.Set(listen, netfilter.Route(f))
}

func (k *kernelNAT) Unforward(listen netip.AddrPort) error {
	if k.n == nil {
		return nil
	}
	return k.n.Delete(listen)
}

// New builds a server for each section of cfg.Traffic that is set.
func New(cfg *config.Config, router *traffic.Router, logger *slog.Logger) (*Plane, error) {
	p := &Plane{router: router, logger: logger}
	var err error
	if cfg.Traffic.DNS != nil {
		if p.dns, err = dnsserver.New(cfg, router, logger); err != nil {
			return nil, err
		}
	}
	if cfg.Traffic.HTTP != nil {
		if p.http, err = httpproxy.New(cfg, router, httpproxy.Options{Logger: logger}); err != nil {
			return nil, err
		}
	}
	for _, port := range cfg.Traffic.Postgres {
		opts := pgproxy.Options{Logger: logger}
		if port.Relay == config.RelayAuto {
			if p.kernel == nil {
				p.kernel = &kernelRelay{}
			}
			opts.Splicer = p.kernel
			if port.Role == config.PGWriter {
				if p.nat == nil {
					p.nat = &kernelNAT{}
				}
				opts.Forwarder = p.nat
			}
		}
		pp, err := pgproxy.New(cfg, port, router, opts)
		if err != nil {
			return nil, err
		}
		p.pg = append(p.pg, pp)
	}
	return p, nil
}

// Open starts every server; if one fails, those started are closed.
func (p *Plane) Open() error {
	type server interface {
		Open() error
		Close(context.Context) error
	}
	var all []server
	if p.kernel != nil {
		// Loaded first, closed last: the endpoints' connections are gone
		// by then.
		s, err := sockmap.Open()
		if err != nil {
			p.logger.Info("the Postgres endpoints relay in user space: the kernel relay is unavailable", "err", err)
		} else {
			p.kernel.s = s
			p.opened = append(p.opened, s)
		}
	}
	if p.nat != nil {
		n, err := netfilter.Open(p.logger)
		if err != nil {
			p.logger.Info("the Postgres writer endpoints relay every connection: the kernel's NAT is unavailable", "err", err)
		} else {
			p.nat.n = n
			p.opened = append(p.opened, n)
		}
	}
	if p.dns != nil {
		all = append(all, p.dns)
	}
	if p.http != nil {
		all = append(all, p.http)
	}
	for _, pp := range p.pg {
		all = append(all, pp)
	}
	for _, s := range all {
		if err := s.Open(); err != nil {
			p.Close(context.Background())
			return err
		}
		p.opened = append(p.opened, s)
	}
	return nil
}

// Close stops every server that was opened.
func (p *Plane) Close(ctx context.Context) error {
	var errs []error
	for i := len(p.opened) - 1; i >= 0; i-- {
		if err := p.opened[i].Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	p.opened = nil
	return errors.Join(errs...)
}

// Status is where traffic goes now.
type Status struct {
	State    traffic.State            `json:"state"`
	DNS      []dnsserver.RecordStatus `json:"dns"`
	HTTP     []httpproxy.RouteStatus  `json:"http"`
	Postgres []pgproxy.EndpointStatus `json:"postgres"`
}

// Status reports every record, route and endpoint's current target.
func (p *Plane) Status() Status {
	st := Status{State: p.router.State(), DNS: []dnsserver.RecordStatus{}, HTTP: []httpproxy.RouteStatus{}, Postgres: []pgproxy.EndpointStatus{}}
	if p.dns != nil {
		st.DNS = p.dns.Records()
	}
	if p.http != nil {
		st.HTTP = p.http.Routes()
	}
	for _, pp := range p.pg {
		st.Postgres = append(st.Postgres, pp.Status())
	}
	return st
}
