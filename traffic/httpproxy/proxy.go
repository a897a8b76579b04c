// Package httpproxy is Lifeboat's HTTP front door: it routes configured
// hosts and path prefixes to a service and forwards each request to the
// region the router chooses, retrying once on the next region when that is
// safe, ejecting endpoints that fail, holding new requests during a
// switchover, and passing streams and WebSocket upgrades through.
//
// It is built on fasthttp (valyala/fasthttp), server and client: a proxy
// spends most of its time parsing and writing HTTP/1.1, and fasthttp does
// that without allocating per request and without the goroutine hand-offs
// of net/http's transport (with net/http the front door reached about half
// of HAProxy's throughput on the same machine, see BENCHMARKS.md). Request
// bodies are read whole before they are forwarded (up to MaxBodyBytes), so
// that a request that never reached a backend can be sent to the next
// region; responses stream.
package httpproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/traffic"
)

// Router is what the proxy asks for decisions.
type Router interface {
	Decide(service, policy string, weights map[string]int) traffic.Decision
	Source() traffic.StateSource
}

// Options tune the proxy; zero values take the defaults.
type Options struct {
	// HoldMax bounds how long a request waits during a hold. Default 5s.
	HoldMax time.Duration
	// EjectFor is how long an endpoint that failed (connect error or 5xx)
	// is passed over. Default 10s.
	EjectFor time.Duration
	// MaxBodyBytes bounds a request body; a larger one is answered 413.
	// Default 64 MiB.
	MaxBodyBytes int
	Logger       *slog.Logger
}

// Proxy is the front door's handler and server.
type Proxy struct {
	listen string
	routes []route
	router Router
	opts   Options
	logger *slog.Logger

	mu      sync.Mutex
	ejected map[health.Key]time.Time
	// nEjected mirrors len(ejected) so the common case takes no lock.
	nEjected atomic.Int32
	// backends are the endpoints' clients, by endpoint URL, made in New
	// and only read after.
	backends map[string]*upstream

	srv  *fasthttp.Server
	ln   net.Listener
	errc chan error
}

type route struct {
	host, prefix, service string
}

// upstream is one endpoint: its address and its connection pool.
type upstream struct {
	addr string // host:port
	hc   *fasthttp.HostClient
}

// Timeouts toward clients and backends.
const (
	dialTimeout   = 3 * time.Second
	headerTimeout = 10 * time.Second // a client's request header (slowloris)
	bodyTimeout   = 2 * time.Minute  // a client's request body, once its header is in
	idleTimeout   = 2 * time.Minute
	maxHeader     = 64 << 10
)

// New builds the proxy of cfg.Traffic.HTTP.
func New(cfg *config.Config, router Router, opts Options) (*Proxy, error) {
	h := cfg.Traffic.HTTP
	if h == nil {
		return nil, errors.New("httpproxy: no traffic.http in the configuration")
	}
	if opts.HoldMax <= 0 {
		opts.HoldMax = 5 * time.Second
	}
	if opts.EjectFor <= 0 {
		opts.EjectFor = 10 * time.Second
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 64 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{listen: h.Listen, router: router, opts: opts, logger: opts.Logger, ejected: map[health.Key]time.Time{},
		backends: map[string]*upstream{}, errc: make(chan error, 1)}
	for _, svc := range cfg.Services {
		if svc.Kind != config.KindHTTP {
			continue
		}
		for _, ep := range svc.Endpoints {
			u, err := url.Parse(ep)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return nil, fmt.Errorf("httpproxy: service %s: endpoint is not an http(s) URL", svc.Name)
			}
			p.backends[ep] = newUpstream(u)
		}
	}
	for _, r := range h.Routes {
		p.routes = append(p.routes, route{host: strings.ToLower(r.Host), prefix: r.PathPrefix, service: r.Service})
	}
	// Longest path prefix first; a route with a host before one without.
	sort.SliceStable(p.routes, func(i, j int) bool {
		if len(p.routes[i].prefix) != len(p.routes[j].prefix) {
			return len(p.routes[i].prefix) > len(p.routes[j].prefix)
		}
		return p.routes[i].host != "" && p.routes[j].host == ""
	})
	return p, nil
}

func newUpstream(u *url.URL) *upstream {
	addr := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	return &upstream{addr: addr, hc: &fasthttp.HostClient{
		Addr:                          addr,
		IsTLS:                         u.Scheme == "https",
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
		DisablePathNormalizing:        true,
		MaxConns:                      4096,
		// Shorter than most servers' keep-alive timeouts (nginx 75s), so
		// that pooled connections are rarely found closed.
		MaxIdleConnDuration: 30 * time.Second,
		// Responses stream: server-sent events and LLM completions pass
		// through as they come.
		StreamResponseBody: true,
		// The proxy retries a failure itself, once, on the next region.
		// The one case sent again here, to the same backend on a new
		// connection: an idempotent request whose pooled connection the
		// backend had closed (no byte of an answer came back).
		MaxIdemponentCallAttempts: 2,
		RetryIfErr: func(req *fasthttp.Request, attempts int, err error) (bool, bool) {
			return false, attempts == 1 && errors.Is(err, fasthttp.ErrConnectionClosed) && idempotent(req.Header.Method())
		},
		Dial: func(addr string) (net.Conn, error) {
			return (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).Dial("tcp", addr)
		},
	}}
}

// plan is the endpoints one request may use, in order.
type plan struct {
	service   string
	endpoints []traffic.Endpoint
}

func (p *Proxy) match(host, path string) (route, bool) {
	host = strings.ToLower(host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	for _, rt := range p.routes {
		if rt.host != "" && rt.host != host {
			continue
		}
		if strings.HasPrefix(path, rt.prefix) {
			return rt, true
		}
	}
	return route{}, false
}

// serve routes and forwards one request.
func (p *Proxy) serve(ctx *fasthttp.RequestCtx) {
	host, path := string(ctx.Host()), string(ctx.Path())
	rt, ok := p.match(host, path)
	if !ok {
		ctx.Error(fmt.Sprintf("no route for host %q and path %q", host, path), fasthttp.StatusNotFound)
		return
	}
	if _, timedOut, err := traffic.WaitHold(ctx, p.router.Source(), p.opts.HoldMax); err != nil {
		ctx.Error("the front door is shutting down", fasthttp.StatusServiceUnavailable)
		return
	} else if timedOut {
		p.logger.Warn("request held past the hold bound; forwarding", "service", rt.service, "bound", p.opts.HoldMax)
	}
	d := p.router.Decide(rt.service, config.PolicyFailover, nil)
	if len(d.Endpoints) == 0 {
		ctx.Error(fmt.Sprintf("service %q has no endpoint", rt.service), fasthttp.StatusServiceUnavailable)
		return
	}
	pl := plan{service: rt.service, endpoints: p.orderByEjection(rt.service, d.Endpoints)}
	if len(pl.endpoints) > 2 {
		pl.endpoints = pl.endpoints[:2] // one retry, on the next region
	}
	setForwarded(ctx)
	if ctx.Request.Header.ConnectionUpgrade() {
		p.upgrade(ctx, pl)
		return
	}
	p.forward(ctx, pl)
}

// errNotHTTP: the router named an endpoint that is not an http service's
// (it cannot: routes name http services).
var errNotHTTP = errors.New("the endpoint is not an http service's")

// hopByHop are the headers that concern one connection, not the request
// (RFC 9110 7.6.1); the connection's own are fasthttp's to write.
var hopByHop = []string{"Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Upgrade"}

// setForwarded drops what concerns the client's connection (the headers
// named in its Connection header too) and sets fresh forwarding headers:
// incoming ones are dropped, so a client cannot forge them.
func setForwarded(ctx *fasthttp.RequestCtx) {
	h := &ctx.Request.Header
	upgrade := h.ConnectionUpgrade()
	for _, c := range h.PeekAll(fasthttp.HeaderConnection) {
		for _, name := range strings.Split(string(c), ",") {
			if name = strings.TrimSpace(name); name != "" && !strings.EqualFold(name, "upgrade") && !strings.EqualFold(name, "close") && !strings.EqualFold(name, "keep-alive") {
				h.Del(name)
			}
		}
	}
	if !upgrade {
		for _, name := range hopByHop {
			h.Del(name)
		}
	}
	h.Del("Forwarded")
	h.Set("X-Forwarded-For", ctx.RemoteIP().String())
	h.SetBytesV("X-Forwarded-Host", ctx.Host())
	proto := "http"
	if ctx.IsTLS() {
		proto = "https"
	}
	h.Set("X-Forwarded-Proto", proto)
}

// forward sends the request to the plan's first endpoint, and once to the
// next when that is safe: an idempotent request (GET, HEAD, OPTIONS) that
// failed or got a 5xx, or any request that never reached the backend.
func (p *Proxy) forward(ctx *fasthttp.RequestCtx, pl plan) {
	req, resp := &ctx.Request, &ctx.Response
	// The client's wish to close its connection is not the backend's.
	clientClose := req.Header.ConnectionClose()
	req.Header.ResetConnectionClose()
	idem := idempotent(req.Header.Method())
	for i, ep := range pl.endpoints {
		last := i+1 >= len(pl.endpoints)
		var err error
		if b := p.backends[ep.Addr]; b != nil {
			err = b.hc.Do(req, resp)
		} else {
			err = errNotHTTP
		}
		if err != nil {
			p.eject(pl.service, ep.Region, err.Error())
			resp.Reset()
			if last || (!idem && !neverSent(err)) {
				p.logger.Warn("proxy error", "service", pl.service, "err", err)
				ctx.Error(fmt.Sprintf("bad gateway: service %q: no region answered", pl.service), fasthttp.StatusBadGateway)
				break
			}
			continue
		}
		if resp.StatusCode() >= 500 {
			p.eject(pl.service, ep.Region, fmt.Sprintf("status %d", resp.StatusCode()))
			if !last && idem {
				resp.CloseBodyStream()
				resp.Reset()
				continue
			}
		}
		for _, name := range hopByHop {
			resp.Header.Del(name)
		}
		resp.Header.ResetConnectionClose()
		break
	}
	if clientClose {
		ctx.SetConnectionClose()
	}
}

// upgrade passes a WebSocket (or other Upgrade) request through: the
// request goes to the first endpoint that accepts a connection, and from
// then on the two connections are joined byte for byte.
func (p *Proxy) upgrade(ctx *fasthttp.RequestCtx, pl plan) {
	var conn net.Conn
	for _, ep := range pl.endpoints {
		b := p.backends[ep.Addr]
		if b == nil {
			continue
		}
		c, err := net.DialTimeout("tcp", b.addr, dialTimeout)
		if err != nil {
			p.eject(pl.service, ep.Region, err.Error())
			continue
		}
		conn = c
		break
	}
	if conn == nil {
		ctx.Error(fmt.Sprintf("bad gateway: service %q: no region answered", pl.service), fasthttp.StatusBadGateway)
		return
	}
	var head bytes.Buffer
	if _, err := ctx.Request.WriteTo(&head); err != nil {
		conn.Close()
		ctx.Error("bad request", fasthttp.StatusBadRequest)
		return
	}
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(client net.Conn) {
		defer conn.Close()
		if _, err := conn.Write(head.Bytes()); err != nil {
			return
		}
		done := make(chan struct{}, 2)
		go func() { io.Copy(conn, client); closeWrite(conn); done <- struct{}{} }()
		go func() { io.Copy(client, conn); closeWrite(client); done <- struct{}{} }()
		<-done
		<-done
	})
}

// closeWrite half-closes c when it can, else closes it.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// orderByEjection moves endpoints ejected by passive detection to the end,
// keeping them as a last resort.
func (p *Proxy) orderByEjection(service string, eps []traffic.Endpoint) []traffic.Endpoint {
	if p.nEjected.Load() == 0 {
		return eps
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, until := range p.ejected {
		if now.After(until) {
			delete(p.ejected, k)
		}
	}
	p.nEjected.Store(int32(len(p.ejected)))
	var ok, out []traffic.Endpoint
	for _, e := range eps {
		if until, bad := p.ejected[health.Key{Service: service, Region: e.Region}]; bad && now.Before(until) {
			out = append(out, e)
		} else {
			ok = append(ok, e)
		}
	}
	return append(ok, out...)
}

func (p *Proxy) eject(service, region string, why string) {
	p.mu.Lock()
	p.ejected[health.Key{Service: service, Region: region}] = time.Now().Add(p.opts.EjectFor)
	p.nEjected.Store(int32(len(p.ejected)))
	p.mu.Unlock()
	p.logger.Info("endpoint ejected", "service", service, "region", region, "for", p.opts.EjectFor, "reason", why)
}

func idempotent(method []byte) bool {
	switch string(method) {
	case fasthttp.MethodGet, fasthttp.MethodHead, fasthttp.MethodOptions:
		return true
	}
	return false
}

// neverSent reports whether err happened before the request left: a
// failure to connect.
func neverSent(err error) bool {
	var op *net.OpError
	return errors.Is(err, fasthttp.ErrDialTimeout) || errors.Is(err, fasthttp.ErrNoFreeConns) || (errors.As(err, &op) && op.Op == "dial")
}

// Open listens and serves.
func (p *Proxy) Open() error {
	ln, err := net.Listen("tcp", p.listen)
	if err != nil {
		return fmt.Errorf("httpproxy: listen on %s: %w", p.listen, err)
	}
	p.ln = ln
	p.srv = &fasthttp.Server{
		Handler:                       p.serve,
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		NoDefaultDate:                 true,
		DisableHeaderNamesNormalizing: true,
		DisablePreParseMultipartForm:  true,
		ReadBufferSize:                maxHeader, // the largest request header: 431 beyond
		ReadTimeout:                   headerTimeout,
		HeaderReceived: func(*fasthttp.RequestHeader) fasthttp.RequestConfig {
			return fasthttp.RequestConfig{ReadTimeout: bodyTimeout}
		},
		IdleTimeout:        idleTimeout,
		MaxRequestBodySize: p.opts.MaxBodyBytes,
		CloseOnShutdown:    true,
		ErrorHandler:       p.badRequest,
		Logger:             logAdapter{p.logger},
	}
	go func() {
		err := p.srv.Serve(ln)
		p.errc <- err
		close(p.errc)
	}()
	p.logger.Info("http proxy serving", "addr", ln.Addr().String(), "routes", len(p.routes))
	return nil
}

// badRequest answers a request that could not be read, saying why.
func (p *Proxy) badRequest(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.As(err, &small):
		ctx.Error(fmt.Sprintf("request header larger than %d bytes", maxHeader), fasthttp.StatusRequestHeaderFieldsTooLarge)
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		ctx.Error(fmt.Sprintf("request body larger than %d bytes", p.opts.MaxBodyBytes), fasthttp.StatusRequestEntityTooLarge)
	case errors.As(err, &netErr) && netErr.Timeout():
		ctx.Error("request not received in time", fasthttp.StatusRequestTimeout)
	default:
		ctx.Error("malformed request: "+err.Error(), fasthttp.StatusBadRequest)
	}
}

// logAdapter takes fasthttp's log lines (bad requests, mostly) at debug.
type logAdapter struct{ l *slog.Logger }

func (a logAdapter) Printf(format string, args ...any) { a.l.Debug(fmt.Sprintf(format, args...)) }

// Addr is the listening address after Open.
func (p *Proxy) Addr() string {
	if p.ln == nil {
		return ""
	}
	return p.ln.Addr().String()
}

// Err reports a serving failure; closed when the server stops.
func (p *Proxy) Err() <-chan error { return p.errc }

// Close stops accepting and waits for requests in flight until ctx ends.
func (p *Proxy) Close(ctx context.Context) error {
	if p.srv == nil {
		return nil
	}
	err := p.srv.ShutdownWithContext(ctx)
	for _, b := range p.backends {
		b.hc.CloseIdleConnections()
	}
	return err
}

// RouteStatus is where one route sends requests now.
type RouteStatus struct {
	Host       string   `json:"host"`
	PathPrefix string   `json:"path_prefix"`
	Service    string   `json:"service"`
	Region     string   `json:"region"`
	Fallbacks  []string `json:"fallbacks"`
	Mode       string   `json:"mode"`
}

// Routes lists every route with its current target.
func (p *Proxy) Routes() []RouteStatus {
	out := make([]RouteStatus, 0, len(p.routes))
	for _, rt := range p.routes {
		d := p.router.Decide(rt.service, config.PolicyFailover, nil)
		eps := p.orderByEjection(rt.service, d.Endpoints)
		rs := RouteStatus{Host: rt.host, PathPrefix: rt.prefix, Service: rt.service, Mode: d.Mode, Fallbacks: []string{}}
		for i, e := range eps {
			if i == 0 {
				rs.Region = e.Region
			} else {
				rs.Fallbacks = append(rs.Fallbacks, e.Region)
			}
		}
		out = append(out, rs)
	}
	return out
}
