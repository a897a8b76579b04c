// Package httpproxy is Lifeboat's HTTP front door: it routes configured
// hosts and path prefixes to a service and forwards each request to the
// region the router chooses, retrying once on the next region when that is
// safe, ejecting endpoints that fail, holding new requests during a
// switchover, and passing streams and WebSocket upgrades through.
package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
	// Transport reaches the backends; default: a tuned http.Transport.
	Transport *http.Transport
	Logger    *slog.Logger
}

// Proxy is the front door's handler and server.
type Proxy struct {
	listen string
	routes []route
	router Router
	opts   Options
	logger *slog.Logger
	rp     *httputil.ReverseProxy

	mu      sync.Mutex
	ejected map[health.Key]time.Time
	// nEjected mirrors len(ejected) so the common case takes no lock.
	nEjected atomic.Int32
	// targets are the endpoints' URLs, parsed once.
	targets map[string]*url.URL

	srv  *http.Server
	ln   net.Listener
	errc chan error
}

type route struct {
	host, prefix, service string
}

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
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Transport == nil {
		opts.Transport = &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
			ExpectContinueTimeout: time.Second,
			ForceAttemptHTTP2:     false,
		}
	}
	p := &Proxy{listen: h.Listen, router: router, opts: opts, logger: opts.Logger, ejected: map[health.Key]time.Time{}, targets: map[string]*url.URL{}, errc: make(chan error, 1)}
	for _, svc := range cfg.Services {
		for _, ep := range svc.Endpoints {
			if u, err := url.Parse(ep); err == nil && svc.Kind == config.KindHTTP {
				p.targets[ep] = u
			}
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
	p.rp = &httputil.ReverseProxy{
		Rewrite:      p.rewrite,
		BufferPool:   &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}},
		Transport:    &retrier{p: p, base: opts.Transport},
		ErrorHandler: p.errorHandler,
		ErrorLog:     slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug),
	}
	return p, nil
}

// ctxKey carries the request's plan from the handler to the transport.
type ctxKey struct{}

// plan is the endpoints one request may use, in order.
type plan struct {
	service   string
	endpoints []traffic.Endpoint
	region    string // where the request was served, for logs
}

func (p *Proxy) match(r *http.Request) (route, bool) {
	host := strings.ToLower(r.Host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	for _, rt := range p.routes {
		if rt.host != "" && rt.host != host {
			continue
		}
		if strings.HasPrefix(r.URL.Path, rt.prefix) {
			return rt, true
		}
	}
	return route{}, false
}

// ServeHTTP routes and forwards one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt, ok := p.match(r)
	if !ok {
		http.Error(w, fmt.Sprintf("no route for host %q and path %q", r.Host, r.URL.Path), http.StatusNotFound)
		return
	}
	if _, timedOut, err := traffic.WaitHold(r.Context(), p.router.Source(), p.opts.HoldMax); err != nil {
		return // the client went away while held
	} else if timedOut {
		p.logger.Warn("request held past the hold bound; forwarding", "service", rt.service, "bound", p.opts.HoldMax)
	}
	d := p.router.Decide(rt.service, config.PolicyFailover, nil)
	if len(d.Endpoints) == 0 {
		http.Error(w, fmt.Sprintf("service %q has no endpoint", rt.service), http.StatusServiceUnavailable)
		return
	}
	pl := &plan{service: rt.service, endpoints: p.orderByEjection(rt.service, d.Endpoints)}
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, pl)))
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

// target is an endpoint's parsed URL.
func (p *Proxy) target(addr string) *url.URL {
	if u, ok := p.targets[addr]; ok {
		return u
	}
	u, _ := url.Parse(addr)
	return u
}

// bufferPool recycles the buffers ReverseProxy copies bodies with (32 KiB
// each; without a pool every request allocates one).
type bufferPool struct{ pool sync.Pool }

func (bp *bufferPool) Get() []byte  { return *bp.pool.Get().(*[]byte) }
func (bp *bufferPool) Put(b []byte) { bp.pool.Put(&b) }

// rewrite points the outbound request at the plan's first endpoint, keeps
// the client's Host and sets fresh X-Forwarded-* headers (incoming ones are
// dropped, so a client cannot forge them).
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	pl := pr.In.Context().Value(ctxKey{}).(*plan)
	pr.SetURL(p.target(pl.endpoints[0].Addr))
	pr.Out.Host = pr.In.Host
	pr.SetXForwarded()
}

func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	pl, _ := r.Context().Value(ctxKey{}).(*plan)
	service := ""
	if pl != nil {
		service = pl.service
	}
	if errors.Is(err, context.Canceled) {
		return // the client left
	}
	p.logger.Warn("proxy error", "service", service, "err", err)
	http.Error(w, fmt.Sprintf("bad gateway: service %q: no region answered", service), http.StatusBadGateway)
}

// retrier sends a request to the plan's endpoints: the first, then once the
// next one when that is safe.
type retrier struct {
	p    *Proxy
	base http.RoundTripper
}

func idempotent(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

// RoundTrip implements http.RoundTripper.
func (t *retrier) RoundTrip(req *http.Request) (*http.Response, error) {
	pl, _ := req.Context().Value(ctxKey{}).(*plan)
	if pl == nil {
		return t.base.RoundTrip(req)
	}
	var body *trackedBody
	if req.Body != nil && req.Body != http.NoBody {
		body = &trackedBody{rc: req.Body}
		req.Body = body
		defer body.closeReally()
	}
	upgrade := req.Header.Get("Upgrade") != ""
	for i, ep := range pl.endpoints {
		if i > 1 {
			break // one retry, on the next region
		}
		out := req
		if i > 0 {
			target := t.p.target(ep.Addr)
			out = req.Clone(req.Context())
			out.URL.Scheme, out.URL.Host = target.Scheme, target.Host
		}
		pl.region = ep.Region
		resp, err := t.base.RoundTrip(out)
		last := i+1 >= len(pl.endpoints) || i >= 1
		if err != nil {
			t.p.eject(pl.service, ep.Region, err.Error())
			// Retry what never reached the backend (its body unread), or
			// an idempotent request.
			if last || (body != nil && body.read) || (!idempotent(req.Method) && !neverSent(err)) {
				return nil, err
			}
			continue
		}
		if resp.StatusCode >= 500 && !upgrade {
			t.p.eject(pl.service, ep.Region, resp.Status)
			if !last && idempotent(req.Method) && (body == nil || !body.read) {
				io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
				continue
			}
		}
		return resp, nil
	}
	return nil, errors.New("no endpoint")
}

// neverSent reports whether err happened before the request left: a
// failure to connect.
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// trackedBody remembers whether the backend read any of the request body,
// and survives the transport's Close so a request that never left can be
// sent again.
type trackedBody struct {
	rc   io.ReadCloser
	read bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.read = true
	}
	return n, err
}

func (b *trackedBody) Close() error { return nil }

func (b *trackedBody) closeReally() { b.rc.Close() }

// Open listens and serves.
func (p *Proxy) Open() error {
	ln, err := net.Listen("tcp", p.listen)
	if err != nil {
		return fmt.Errorf("httpproxy: listen on %s: %w", p.listen, err)
	}
	p.ln = ln
	p.srv = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second, // slow clients (slowloris) are cut off
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(p.logger.Handler(), slog.LevelDebug),
	}
	go func() {
		err := p.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		p.errc <- err
		close(p.errc)
	}()
	p.logger.Info("http proxy serving", "addr", ln.Addr().String(), "routes", len(p.routes))
	return nil
}

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
	err := p.srv.Shutdown(ctx)
	if err != nil {
		p.srv.Close()
	}
	p.opts.Transport.CloseIdleConnections()
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
