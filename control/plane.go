package control

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/lifecycle"
	"github.com/lifeboat-dr/lifeboat/traffic"
)

// Options opens a node's control plane.
type Options struct {
	// Node is this node's name: its etcd member name (with peers) and its
	// name in the election.
	Node string
	// DataDir holds the embedded etcd member's data.
	DataDir string
	// Endpoints, when set, use an existing etcd cluster instead of an
	// embedded member; TLS secures the connection to it.
	Endpoints []string
	// TLS is the etcd client's TLS; nil with cluster.tls set in the
	// configuration: the node's cluster certificate (ClientTLS).
	TLS    *tls.Config
	Logger *slog.Logger
	// EtcdLogLevel is the embedded member's own log level (to stderr).
	EtcdLogLevel string
}

// Plane is one node's part of the control plane: its etcd member (or
// client), the store, the election and the state cache the data plane
// routes from.
type Plane struct {
	node     string
	embedded *Embedded
	cli      *clientv3.Client
	store    *Store
	elector  *Elector
	cache    *StateCache
	quorum   *Quorum
	ttl      time.Duration
	logger   *slog.Logger

	stopAck context.CancelFunc
	ackWG   sync.WaitGroup

	mu     sync.Mutex // guards events against Record after Close
	events chan Event
	wg     sync.WaitGroup
}

// Open starts (or connects to) etcd, writes the initial state if there is
// none, and starts the election and the state cache.
func Open(ctx context.Context, cfg *config.Config, opts Options) (*Plane, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Plane{node: opts.Node, logger: logger, events: make(chan Event, 256)}
	clientTLS := opts.TLS
	if clientTLS == nil && cfg.Cluster.TLS != (config.TLS{}) {
		c, err := ClientTLS(cfg.Cluster.TLS)
		if err != nil {
			return nil, err
		}
		clientTLS = c
	}
	endpoints := opts.Endpoints
	if len(endpoints) == 0 {
		ec := EmbedConfig{Name: opts.Node, Dir: filepath.Join(opts.DataDir, opts.Node), Token: "lifeboat-" + cfg.Cluster.Name, LogLevel: opts.EtcdLogLevel,
			HeartbeatMs: uint(cfg.Cluster.Heartbeat.D().Milliseconds()), ElectionMs: uint(cfg.Cluster.ElectionTimeout.D().Milliseconds()),
			TLS: cfg.Cluster.TLS}
		for _, peer := range cfg.Cluster.Peers {
			ec.Peers = append(ec.Peers, Peer{Name: peer.Name, PeerURL: peer.PeerURL, ClientURL: peer.ClientURL,
				ListenPeer: peer.ListenPeer, ListenClient: peer.ListenClient})
		}
		e, err := StartEmbedded(ec)
		if err != nil {
			return nil, err
		}
		p.embedded = e
		endpoints = e.Endpoints()
	}
	// A node with its own member talks to it alone: cut off from the
	// others, it must see that it has no quorum rather than reach the
	// majority through another path. A node of an external cluster
	// follows the cluster's members.
	autoSync := 30 * time.Second
	if p.embedded != nil {
		autoSync = 0
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: endpoints, DialTimeout: 5 * time.Second, TLS: clientTLS,
		// A member cut off by a partition keeps its established
		// connection until keepalive gives up on it; requests the balancer
		// sends there hang until their deadline. Notice within ~2s.
		DialKeepAliveTime: time.Second, DialKeepAliveTimeout: time.Second,
		Logger: zap.NewNop(), AutoSyncInterval: autoSync,
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(retryDropped)},
	})
	if err != nil {
		p.Close(context.Background())
		return nil, fmt.Errorf("control: etcd client: %w", err)
	}
	p.cli = cli
	if p.embedded == nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := checkEndpoints(cctx, endpoints, clientTLS)
		cancel()
		if err != nil {
			p.Close(context.Background())
			return nil, fmt.Errorf("control: no etcd endpoint answers: %w", err)
		}
	}
	p.store = NewStore(cli, cfg.Cluster.Name)
	ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
	st, err := p.store.InitState(ictx, cfg.ActiveRegion())
	cancel()
	if err != nil {
		p.Close(context.Background())
		return nil, fmt.Errorf("control: read the state from etcd at %v: %w", endpoints, err)
	}
	ttl := cfg.Cluster.LeaseTTL.D()
	p.ttl = ttl
	p.elector = NewElector(p.store, opts.Node, int(ttl/time.Second), logger, nil)
	if p.embedded != nil {
		p.elector.HandOffRaftLeadership(p.embedded)
	}
	p.elector.Prefer(p.placement(cfg))
	// The minority side of a partition must stop routing writes before the
	// majority can elect a new leader (one lease TTL): half of it.
	p.cache = NewStateCache(p.store, st, ttl/2, logger)
	p.cache.Open()
	p.elector.Open()
	events := p.events
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.publish(events)
	}()
	actx, acancel := context.WithCancel(context.Background())
	p.stopAck = acancel
	p.ackWG.Go(func() { p.ack(actx) })
	logger.Info("control plane open", "node", opts.Node, "etcd", endpoints, "active", st.Active, "epoch", st.Epoch)
	return p, nil
}

// placement ranks the nodes for leadership: best a node in a standby
// region (the one a failover goes to runs its steps near), then the
// witness, last a node in the active region. The active region is the
// one whose outage needs a failover: with neither the Lifeboat leader nor
// etcd's leader there, that outage costs no election before the failover
// starts. Nodes not in cluster.peers rank as standbys.
func (p *Plane) placement(cfg *config.Config) func(node string) int {
	regionOf := map[string]string{}
	for _, peer := range cfg.Cluster.Peers {
		regionOf[peer.Name] = peer.Region
	}
	return func(node string) int {
		region := regionOf[node]
		if p.cache != nil && region != "" && region == p.cache.Current().Active {
			return 2
		}
		if r, ok := cfg.Region(region); ok && r.Role == config.RoleWitness {
			return 1
		}
		return 0
	}
}

// publish appends queued events to the store, in order.
//
// What has queued up meanwhile goes in one transaction (up to 64 events):
// a burst of verdicts during an outage costs one round trip, not one each.
func (p *Plane) publish(events <-chan Event) {
	for e := range events {
		batch := []Event{e}
	more:
		for len(batch) < 64 {
			select {
			case next, ok := <-events:
				if !ok {
					break more
				}
				batch = append(batch, next)
			default:
				break more
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := p.store.AppendBatch(ctx, batch); err != nil {
			p.logger.Warn("events not stored", "count", len(batch), "first", batch[0].Type, "err", err)
		}
		cancel()
	}
}

// Record queues an event for the store without waiting; when the queue is
// full (the store is unreachable) the event is logged and dropped.
func (p *Plane) Record(e Event) {
	if e.Node == "" {
		e.Node = p.node
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.events == nil {
		return
	}
	select {
	case p.events <- e:
	default:
		p.logger.Warn("event queue full: event dropped", "type", e.Type, "message", e.Message)
	}
}

// ShareVerdicts publishes local's verdicts to the cluster and returns the
// cluster's quorum verdicts, refreshed every interval.
func (p *Plane) ShareVerdicts(local Local, every time.Duration) *Quorum {
	p.quorum = NewQuorum(p.store, p.node, local, int(p.ttl/time.Second), every, p.logger)
	p.quorum.Open()
	return p.quorum
}

// State is where the data plane reads the routing state.
func (p *Plane) State() traffic.StateSource { return p.cache }

// Store is the state store.
func (p *Plane) Store() *Store { return p.store }

// Elector is this node's election.
func (p *Plane) Elector() *Elector { return p.elector }

// Close stops the election (resigning), the cache, the client and the
// member, in that order.
func (p *Plane) Close(ctx context.Context) error {
	var errs []error
	if p.elector != nil {
		errs = append(errs, p.elector.Close(ctx))
	}
	if p.quorum != nil {
		errs = append(errs, p.quorum.Close(ctx))
	}
	if p.stopAck != nil {
		p.stopAck()
		errs = append(errs, lifecycle.Wait(ctx, &p.ackWG))
	}
	if p.cache != nil {
		errs = append(errs, p.cache.Close(ctx))
	}
	p.mu.Lock()
	if p.events != nil {
		close(p.events)
		p.events = nil
	}
	p.mu.Unlock()
	// Queued events are flushed while ctx allows; closing the client below
	// ends a flush that takes longer.
	flushed := make(chan struct{})
	go func() { p.wg.Wait(); close(flushed) }()
	select {
	case <-flushed:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("control: events not flushed: %w", ctx.Err()))
	}
	if p.cli != nil {
		errs = append(errs, p.cli.Close())
	}
	if p.embedded != nil {
		errs = append(errs, p.embedded.Close(ctx))
	}
	return errors.Join(errs...)
}

// Member is one etcd member as this node sees it.
type Member struct {
	Name       string   `json:"name"`
	ClientURLs []string `json:"client_urls"`
	Healthy    bool     `json:"healthy"`
	// EtcdLeader: the member is etcd's raft leader, by its own answer.
	EtcdLeader bool   `json:"etcd_leader,omitempty"`
	Error      string `json:"error,omitempty"`
}

// Status is the control plane as this node sees it.
type Status struct {
	Node    string `json:"node"`
	Leader  string `json:"leader"`
	Leading bool   `json:"leading"`
	Quorum  bool   `json:"quorum"`
	// Voters are the nodes whose verdicts count now.
	Voters  []string `json:"voters"`
	Members []Member `json:"members"`
	Error   string   `json:"error,omitempty"`
}

// EtcdLeader is the name of the member that says it is etcd's raft
// leader, or "".
func (s Status) EtcdLeader() string {
	for _, m := range s.Members {
		if m.EtcdLeader {
			return m.Name
		}
	}
	return ""
}

// Status asks etcd for the leader and each member's health, each within a
// short timeout.
func (p *Plane) Status(ctx context.Context) Status {
	_, leading := p.elector.Leading()
	st := Status{Node: p.node, Leading: leading, Quorum: !p.cache.Current().NoQuorum, Members: []Member{}, Voters: []string{}}
	if p.quorum != nil {
		st.Voters = p.quorum.Voters()
		sort.Strings(st.Voters)
	}
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if leader, err := p.elector.Leader(qctx); err == nil {
		st.Leader = leader
	} else {
		st.Error = err.Error()
	}
	ml, err := p.cli.MemberList(qctx)
	if err != nil {
		if st.Error == "" {
			st.Error = err.Error()
		}
		return st
	}
	st.Members = make([]Member, len(ml.Members))
	var wg sync.WaitGroup
	for i, m := range ml.Members {
		st.Members[i] = Member{Name: m.Name, ClientURLs: m.ClientURLs}
		if len(m.ClientURLs) == 0 {
			continue
		}
		wg.Go(func() {
			sctx, scancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer scancel()
			// A member whose port refuses is down: say so at once (the
			// etcd client would wait out the timeout).
			conn, _, _, err := dialEndpoint(sctx, m.ClientURLs[0], false)
			if err != nil {
				st.Members[i].Error = err.Error()
				return
			}
			if conn != nil {
				conn.Close()
			}
			resp, err := p.cli.Status(sctx, m.ClientURLs[0])
			st.Members[i].Healthy = err == nil
			st.Members[i].EtcdLeader = err == nil && resp.Leader == m.ID
			if err != nil {
				st.Members[i].Error = err.Error()
			}
		})
	}
	wg.Wait()
	return st
}
