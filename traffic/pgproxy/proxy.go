// Package pgproxy is Lifeboat's Postgres endpoint: clients connect to it as
// to a server and are spliced, byte for byte, to the current primary of a
// postgres service (writer) or to a healthy standby (reader). On a change of
// epoch the writer closes the connections it made to the old primary, so
// no client keeps writing to a fenced region.
//
// TLS: the endpoint answers an SSLRequest (and a GSSENCRequest) with 'N',
// so clients continue in plain text on this hop; sslmode=prefer and
// sslmode=disable work, sslmode=require is refused by the client. Put the
// endpoint on a trusted network (loopback, a private link) or terminate TLS
// in front of it.
package pgproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/lifecycle"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/traffic"
)

// Router is what the endpoint asks for decisions.
type Router interface {
	Decide(service, policy string, weights map[string]int) traffic.Decision
	Source() traffic.StateSource
	Changed() <-chan struct{}
	Health(service, region string) health.State
}

// Options tune the endpoint.
type Options struct {
	// HoldMax bounds how long a new connection waits during a hold.
	// Default 5s.
	HoldMax time.Duration
	// StartupTimeout bounds how long a client may take to send its
	// startup message. Default 10s.
	StartupTimeout time.Duration
	Logger         *slog.Logger
	// Splicer, when set and the endpoint's relay is auto, joins each
	// connection to its server in the kernel once the startup message
	// is on its way; a connection it cannot join is relayed here.
	Splicer Splicer
	// Forwarder, when set and the endpoint's relay is auto, makes the
	// kernel carry a writer's new connections straight to the primary
	// while the endpoint admits them (no hold, a confirmed quorum, a
	// primary not down); the others reach the listener.
	Forwarder Forwarder
}

// Forwarder makes the kernel carry an endpoint's connections (NAT).
type Forwarder interface {
	// Forward installs listen's route, replacing the previous one. An
	// error says the kernel does not carry new connections now.
	Forward(listen netip.AddrPort, f Forward) error
	// Unforward removes listen's route and resets what it carried.
	Unforward(listen netip.AddrPort) error
}

// Forward is where the kernel sends an endpoint's connections.
type Forward struct {
	// Target receives the endpoint's new connections while Admit is set.
	Target netip.AddrPort
	Admit  bool
	// Epoch marks the connections sent; those sent under another epoch
	// are reset, and all of them when Keep is not set.
	Epoch uint64
	Keep  bool
}

// Splicer makes the kernel carry the bytes between two connections.
type Splicer interface {
	// Join joins a and b until either closes or leave is called. The
	// caller keeps reading both (plain reads), to see either close.
	Join(a, b net.Conn) (leave func(), err error)
}

// Proxy is one Postgres endpoint.
type Proxy struct {
	listen  string
	service string
	role    string
	targets map[string]string // region → host:port
	router  Router
	opts    Options
	logger  *slog.Logger

	ln     net.Listener
	mu     sync.Mutex
	conns  map[*session]struct{}
	closed bool
	// The kernel's route (Forwarder): whether it carries new connections
	// now, else why not.
	nat     bool
	natErr  string
	wg      sync.WaitGroup
	cancel  context.CancelFunc
	watched chan struct{} // closed when watch has returned
}

type session struct {
	client, server net.Conn
	region         string
	epoch          uint64
	kernel         atomic.Bool // joined in the kernel
	once           sync.Once
}

func (s *session) close() {
	s.once.Do(func() {
		s.client.Close()
		if s.server != nil {
			s.server.Close()
		}
	})
}

// New builds the endpoint for one traffic.postgres entry.
func New(cfg *config.Config, port config.PostgresPort, router Router, opts Options) (*Proxy, error) {
	svc, ok := cfg.Service(port.Service)
	if !ok || svc.Kind != config.KindPostgres {
		return nil, fmt.Errorf("pgproxy: %q is not a postgres service", port.Service)
	}
	if opts.HoldMax <= 0 {
		opts.HoldMax = 5 * time.Second
	}
	if opts.StartupTimeout <= 0 {
		opts.StartupTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if port.Relay == config.RelayUser {
		opts.Splicer, opts.Forwarder = nil, nil
	}
	if port.Role != config.PGWriter {
		opts.Forwarder = nil
	}
	p := &Proxy{listen: port.Listen, service: port.Service, role: port.Role, targets: map[string]string{},
		router: router, opts: opts, logger: opts.Logger, conns: map[*session]struct{}{}}
	for region, dsn := range svc.Endpoints {
		c, err := pgconn.ParseConfig(dsn)
		if err != nil {
			return nil, fmt.Errorf("pgproxy: service %s, region %s: not a valid DSN", port.Service, region)
		}
		p.targets[region] = net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port)))
	}
	return p, nil
}

// Open listens and serves.
func (p *Proxy) Open() error {
	ln, err := net.Listen("tcp", p.listen)
	if err != nil {
		return fmt.Errorf("pgproxy: listen on %s: %w", p.listen, err)
	}
	p.ln = ln
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Add(2)
	p.watched = make(chan struct{})
	go func() {
		defer p.wg.Done()
		p.accept(ctx)
	}()
	go func() {
		defer p.wg.Done()
		defer close(p.watched)
		p.watch(ctx)
	}()
	p.logger.Info("postgres endpoint serving", "addr", ln.Addr().String(), "service", p.service, "role", p.role)
	return nil
}

// Addr is the listening address after Open.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Close stops accepting, closes every connection and waits.
func (p *Proxy) Close(ctx context.Context) error {
	if p.cancel == nil {
		return nil
	}
	p.cancel()
	p.ln.Close()
	// The watch, which installs the kernel's route, has ended first.
	<-p.watched
	if p.opts.Forwarder != nil {
		if err := p.opts.Forwarder.Unforward(p.listenAddr()); err != nil {
			p.logger.Warn("postgres endpoint: removing the kernel's route failed", "service", p.service, "err", err)
		}
	}
	p.mu.Lock()
	p.closed = true
	for s := range p.conns {
		s.close()
	}
	p.mu.Unlock()
	return lifecycle.Wait(ctx, &p.wg)
}

func (p *Proxy) accept(ctx context.Context) {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			p.logger.Warn("postgres endpoint accept failed", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(ctx, c)
		}()
	}
}

// watch closes connections that the routing state no longer allows: a
// writer's connections to a region that is no longer active (new epoch);
// a reader's connections to a region that became the primary.
func (p *Proxy) watch(ctx context.Context) {
	for {
		ch := p.router.Changed()
		p.enforce()
		p.forward()
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

func (p *Proxy) enforce() {
	st := p.router.Source().Current()
	p.mu.Lock()
	defer p.mu.Unlock()
	for s := range p.conns {
		stale := s.region == st.Active // a reader on what is now the primary
		if p.role == config.PGWriter {
			// Made under an older epoch, or the node lost the quorum and
			// cannot know whether a newer epoch exists.
			stale = s.epoch < st.Epoch || st.NoQuorum
		}
		if stale {
			p.logger.Info("closing connection after a change of primary", "service", p.service, "region", s.region, "epoch", s.epoch, "current_epoch", st.Epoch)
			s.close()
			delete(p.conns, s)
		}
	}
}

// listenAddr is the address the endpoint listens on.
func (p *Proxy) listenAddr() netip.AddrPort {
	a, _ := p.ln.Addr().(*net.TCPAddr)
	if a == nil {
		return netip.AddrPort{}
	}
	ap := a.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// forward gives the kernel the writer's route: new connections go
// straight to the active region's server while nothing needs the
// endpoint's judgement (a hold to wait out, a quorum to wait for, a
// server known down whose failure the endpoint explains); connections of
// an older epoch, or all without a quorum, are reset as enforce closes
// the relayed ones.
func (p *Proxy) forward() {
	if p.opts.Forwarder == nil {
		return
	}
	st := p.router.Source().Current()
	f := Forward{Epoch: st.Epoch, Keep: !st.NoQuorum}
	if addr, ok := p.targets[st.Active]; ok {
		f.Target, _ = netip.ParseAddrPort(addr)
	}
	why := ""
	switch {
	case st.Held:
		why = "a switchover holds new connections"
	case st.NoQuorum:
		why = "no quorum"
	case !f.Target.IsValid():
		why = fmt.Sprintf("region %s's server is not an IP address", st.Active)
	case p.router.Health(p.service, st.Active) == health.Down:
		why = fmt.Sprintf("region %s's server is down", st.Active)
	default:
		f.Admit = true
	}
	if err := p.opts.Forwarder.Forward(p.listenAddr(), f); err != nil && f.Admit {
		f.Admit, why = false, err.Error()
	} else if err != nil {
		why = err.Error()
	}
	p.mu.Lock()
	changed := p.natErr != why
	p.nat, p.natErr = f.Admit, why
	p.mu.Unlock()
	if changed && f.Admit {
		p.logger.Info("postgres endpoint: the kernel carries new connections", "service", p.service, "region", st.Active, "epoch", st.Epoch)
	} else if changed {
		p.logger.Info("postgres endpoint: new connections reach the endpoint", "service", p.service, "reason", why)
	}
}

// Protocol codes of the first message.
const (
	codeSSLRequest    = 80877103
	codeGSSENCRequest = 80877104
	codeCancelRequest = 80877102
	protocolV3        = 196608
	maxStartupLen     = 10000
)

// readStartup reads one startup-phase message: its raw bytes and code.
func readStartup(c net.Conn) ([]byte, uint32, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return nil, 0, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 8 || n > maxStartupLen {
		return nil, 0, fmt.Errorf("startup message length %d out of range", n)
	}
	msg := make([]byte, n)
	copy(msg, hdr[:])
	if _, err := io.ReadFull(c, msg[8:]); err != nil {
		return nil, 0, err
	}
	return msg, binary.BigEndian.Uint32(hdr[4:8]), nil
}

func (p *Proxy) serve(ctx context.Context, client net.Conn) {
	defer client.Close()
	client.SetDeadline(time.Now().Add(p.opts.StartupTimeout))
	var startup []byte
	for startup == nil {
		msg, code, err := readStartup(client)
		if err != nil {
			p.logger.Debug("bad startup from client", "remote", client.RemoteAddr().String(), "err", err)
			return
		}
		switch {
		case code == codeSSLRequest || code == codeGSSENCRequest:
			if _, err := client.Write([]byte{'N'}); err != nil {
				return
			}
		case code == codeCancelRequest:
			p.forwardCancel(msg)
			return
		case code == protocolV3:
			startup = msg
		default:
			sendError(client, "08P01", fmt.Sprintf("lifeboat: unsupported protocol version %d.%d", code>>16, code&0xffff))
			return
		}
	}
	if _, timedOut, err := traffic.WaitHold(ctx, p.router.Source(), p.opts.HoldMax); err != nil {
		return
	} else if timedOut {
		p.logger.Warn("connection held past the hold bound; connecting", "service", p.service)
	}
	if p.role == config.PGWriter && !waitQuorum(ctx, p.router.Source(), quorumWait) {
		sendError(client, "08006", "lifeboat: this node cannot reach a quorum of the control plane, so it cannot know the current primary; writes are refused to avoid a split brain (connect through another region's endpoint)")
		return
	}
	region, epoch := p.target()
	addr, ok := p.targets[region]
	if !ok {
		sendError(client, "08006", fmt.Sprintf("lifeboat: service %s has no %s endpoint", p.service, p.role))
		return
	}
	server, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		sendError(client, "08006", fmt.Sprintf("lifeboat: %s of service %s in region %s is unreachable: %v", p.role, p.service, region, err))
		return
	}
	client.SetDeadline(time.Time{})
	s := &session{client: client, server: server, region: region, epoch: epoch}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		s.close()
		return
	}
	p.conns[s] = struct{}{}
	p.mu.Unlock()
	// A switch may have committed between the decision and registration.
	p.enforce()
	defer func() {
		p.mu.Lock()
		delete(p.conns, s)
		p.mu.Unlock()
		s.close()
	}()
	// Joined before the startup message is sent: neither socket has
	// anything unread yet (the server speaks after it, the client waits
	// for the server), so the kernel carries every byte that follows.
	if p.opts.Splicer != nil {
		if leave, err := p.opts.Splicer.Join(client, server); err != nil {
			p.logger.Debug("connection relayed in user space", "service", p.service, "err", err)
		} else {
			s.kernel.Store(true)
			defer leave()
		}
	}
	if _, err := server.Write(startup); err != nil {
		return
	}
	kernel := s.kernel.Load()
	done := make(chan struct{}, 2)
	go func() { relay(server, client, kernel); s.close(); done <- struct{}{} }()
	go func() { relay(client, server, kernel); s.close(); done <- struct{}{} }()
	<-done
	<-done
}

// relay copies src to dst until src ends. With splice(2) (io.Copy between
// TCP connections) unless the kernel carries the bytes: then the copy
// uses plain reads, which see the end of the stream and the rare segment
// the kernel left with its socket (splice(2) would not see that one).
func relay(dst, src net.Conn, kernel bool) {
	if !kernel {
		io.Copy(dst, src)
		return
	}
	buf := make([]byte, 4096)
	io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf)
}

// target is where a new connection goes now: the active region for the
// writer; a healthy standby (else the primary) for the reader.
func (p *Proxy) target() (string, uint64) {
	st := p.router.Source().Current()
	if p.role == config.PGWriter {
		return st.Active, st.Epoch
	}
	d := p.router.Decide(p.service, config.PolicyFailover, nil)
	for _, e := range d.Endpoints {
		if e.Region != st.Active && e.Healthy {
			return e.Region, st.Epoch
		}
	}
	return st.Active, st.Epoch
}

// forwardCancel passes a CancelRequest to the writer's current target;
// the backend ignores keys it does not know.
func (p *Proxy) forwardCancel(msg []byte) {
	region, _ := p.target()
	addr, ok := p.targets[region]
	if !ok {
		return
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return
	}
	defer c.Close()
	c.Write(msg)
}

// sendError writes a FATAL ErrorResponse, so psql and drivers show why.
func sendError(c net.Conn, code, msg string) {
	var body []byte
	for _, f := range []struct {
		t byte
		v string
	}{{'S', "FATAL"}, {'V', "FATAL"}, {'C', code}, {'M', msg}} {
		body = append(body, f.t)
		body = append(body, f.v...)
		body = append(body, 0)
	}
	body = append(body, 0)
	out := make([]byte, 5, 5+len(body))
	out[0] = 'E'
	binary.BigEndian.PutUint32(out[1:], uint32(4+len(body)))
	c.Write(append(out, body...))
}

// EndpointStatus is where one Postgres endpoint sends connections now.
type EndpointStatus struct {
	Listen      string `json:"listen"`
	Service     string `json:"service"`
	Role        string `json:"role"`
	Region      string `json:"region"`
	Epoch       uint64 `json:"epoch"`
	Connections int    `json:"connections"`
	// KernelRelayed is how many of them the kernel carries (relay auto,
	// as root); the others are copied by Lifeboat.
	KernelRelayed int `json:"kernel_relayed"`
	// NAT says the kernel's NAT takes new connections straight to the
	// server (a writer, relay auto, as root): those are not counted in
	// Connections. NATOff says why it does not, when it could.
	NAT    bool   `json:"nat"`
	NATOff string `json:"nat_off,omitempty"`
}

// Status reports the endpoint's current target.
func (p *Proxy) Status() EndpointStatus {
	region, epoch := p.target()
	p.mu.Lock()
	n, k := len(p.conns), 0
	for s := range p.conns {
		if s.kernel.Load() {
			k++
		}
	}
	nat, off := p.nat, p.natErr
	p.mu.Unlock()
	return EndpointStatus{Listen: p.listen, Service: p.service, Role: p.role, Region: region, Epoch: epoch, Connections: n, KernelRelayed: k, NAT: nat, NATOff: off}
}

// quorumWait bounds how long a new writer connection waits for its node to
// confirm the state again: a confirmation that lapses for a moment (a slow
// quorum read, a raft leadership transfer) delays a client instead of
// failing it; a node really cut off refuses it after this.
const quorumWait = 2 * time.Second

// waitQuorum returns true at once when the state is confirmed, else when it
// is again within max; false if it is not (or ctx ends). Nothing is routed
// while it waits.
func waitQuorum(ctx context.Context, src traffic.StateSource, max time.Duration) bool {
	if !src.Current().NoQuorum {
		return true
	}
	changes, stop := src.Subscribe()
	defer stop()
	timer := time.NewTimer(max)
	defer timer.Stop()
	for {
		if !src.Current().NoQuorum {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return !src.Current().NoQuorum
		case <-changes:
		}
	}
}
