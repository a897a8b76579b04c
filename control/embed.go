// Package control is Lifeboat's control plane on etcd: the state store
// (active region, epoch, hold, events), leader election, and the epochs
// that fence the data plane. Consensus is etcd's; nothing here replaces it.
package control

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/lifeboat-dr/lifeboat/config"
)

// Peer is one member of an embedded etcd cluster.
type Peer struct {
	Name      string
	PeerURL   string
	ClientURL string
	// ListenPeer and ListenClient (host:port), when set, are where the
	// member listens instead of its URLs' addresses, which it advertises.
	ListenPeer, ListenClient string
}

// EmbedConfig starts an embedded etcd member.
type EmbedConfig struct {
	// Name of this member; with Peers, one of theirs.
	Name string
	// Dir holds the member's data; a restart with the same Dir keeps the
	// state.
	Dir string
	// ClientURL and PeerURL are where this member listens; with Peers they
	// come from this member's entry. Default for a single node: loopback
	// on free ports.
	ClientURL, PeerURL string
	// Peers, when set, form a multi-member cluster (one per region).
	Peers []Peer
	// Token names the cluster, so that members of two clusters never join.
	Token string
	// LogLevel of etcd's own log (to stderr). Default "error".
	LogLevel string
	// StartTimeout bounds the wait for the member to be ready (for a
	// cluster: for a quorum to form). Default 60s.
	StartTimeout time.Duration
	// HeartbeatMs and ElectionMs are etcd's raft timing; default etcd's
	// (100ms, 1000ms).
	HeartbeatMs, ElectionMs uint
	// TLS, when set (cert, key and ca), secures the member with mutual
	// TLS: it serves peers and clients over https and accepts only
	// connections that present a certificate signed by the CA; it
	// presents its own certificate to the other members. The URLs are
	// then https:// (free loopback ones included).
	TLS config.TLS
}

// Embedded is a running etcd member inside this process.
type Embedded struct {
	etcd      *embed.Etcd
	endpoints []string
}

// StartEmbedded starts the member and waits until it serves.
func StartEmbedded(cfg EmbedConfig) (*Embedded, error) {
	if cfg.Dir == "" {
		return nil, errors.New("control: a data directory is required")
	}
	if cfg.Name == "" {
		cfg.Name = "lifeboat"
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "error"
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = filepath.Join(cfg.Dir, "etcd")
	ec.LogLevel = cfg.LogLevel
	ec.Logger = "zap"
	ec.InitialClusterToken = cfg.Token
	if cfg.HeartbeatMs > 0 {
		ec.TickMs = cfg.HeartbeatMs
	}
	if cfg.ElectionMs > 0 {
		ec.ElectionMs = cfg.ElectionMs
	}
	scheme := "http"
	if cfg.TLS != (config.TLS{}) {
		if cfg.TLS.Cert == "" || cfg.TLS.Key == "" || cfg.TLS.CA == "" {
			return nil, errors.New("control: TLS needs cert, key and ca")
		}
		scheme = "https"
		info := transport.TLSInfo{CertFile: cfg.TLS.Cert, KeyFile: cfg.TLS.Key, TrustedCAFile: cfg.TLS.CA, ClientCertAuth: true, MinVersion: tls.VersionTLS12}
		ec.ClientTLSInfo, ec.PeerTLSInfo = info, info
	}
	clientURL, peerURL := cfg.ClientURL, cfg.PeerURL
	var listenClient, listenPeer string
	var err error
	var cu *url.URL
	var initial []string
	for _, p := range cfg.Peers {
		initial = append(initial, p.Name+"="+p.PeerURL)
		if p.Name == cfg.Name {
			clientURL, peerURL = p.ClientURL, p.PeerURL
			listenClient, listenPeer = p.ListenClient, p.ListenPeer
		}
	}
	if len(cfg.Peers) > 0 && peerURL == "" {
		return nil, fmt.Errorf("control: node %q is not one of the cluster's peers", cfg.Name)
	}
	// A single node without URLs takes free loopback ports (not port 0:
	// the member advertises its URLs, and ":0" is no address).
	if clientURL == "" {
		if clientURL, err = freeLoopbackURL(scheme); err != nil {
			return nil, err
		}
	}
	if peerURL == "" {
		if peerURL, err = freeLoopbackURL(scheme); err != nil {
			return nil, err
		}
	}
	cu, err = parseMemberURL("client", clientURL, scheme)
	if err != nil {
		return nil, err
	}
	pu, err := parseMemberURL("peer", peerURL, scheme)
	if err != nil {
		return nil, err
	}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{listenOn(*cu, listenClient)}, []url.URL{*cu}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{listenOn(*pu, listenPeer)}, []url.URL{*pu}
	if len(initial) > 0 {
		ec.InitialCluster = strings.Join(initial, ",")
	} else {
		ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	}
	ec.ClusterState = embed.ClusterStateFlagNew
	if entries, err := os.ReadDir(ec.Dir); err == nil && len(entries) > 0 {
		ec.ClusterState = embed.ClusterStateFlagExisting
	}
	// etcd ignores the token and the peers once it has data: a directory
	// left by another cluster (or by this node alone) would start as a
	// cluster of its own. A marker written at creation says which cluster
	// and which members the data belongs to; a mismatch is refused.
	if err := checkMarker(cfg, ec.ClusterState == embed.ClusterStateFlagExisting); err != nil {
		return nil, err
	}
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("control: start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Server.Stop() // Close alone hangs on a member that never got ready
		e.Close()
		return nil, fmt.Errorf("control: etcd: %w", err)
	case <-time.After(cfg.StartTimeout):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("control: etcd not ready after %s (are the other peers up?)", cfg.StartTimeout)
	}
	em := &Embedded{etcd: e}
	for _, l := range e.Clients {
		em.endpoints = append(em.endpoints, scheme+"://"+l.Addr().String())
	}
	return em, nil
}

// listenOn is u at hostport when set (where to listen), else u.
func listenOn(u url.URL, hostport string) url.URL {
	if hostport != "" {
		u.Host = hostport
	}
	return u
}

// marker is the identity of the data in a member's directory.
func marker(cfg EmbedConfig) string {
	var names []string
	for _, p := range cfg.Peers {
		names = append(names, p.Name)
	}
	sort.Strings(names)
	return fmt.Sprintf("token=%s\nmember=%s\npeers=%s\n", cfg.Token, cfg.Name, strings.Join(names, ","))
}

func checkMarker(cfg EmbedConfig, existing bool) error {
	path := filepath.Join(cfg.Dir, "cluster-identity")
	want := marker(cfg)
	have, err := os.ReadFile(path)
	switch {
	case err == nil && string(have) != want:
		return fmt.Errorf("control: %s holds the data of another control plane:\n%s\nthis node is configured as:\n%s\nuse another --data-dir, or remove the old one if it is no longer needed", cfg.Dir, have, want)
	case err == nil:
		return nil
	case !os.IsNotExist(err):
		return fmt.Errorf("control: %w", err)
	case existing:
		return fmt.Errorf("control: %s holds etcd data without a cluster identity: refusing to guess whose it is (use another --data-dir)", cfg.Dir)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("control: %w", err)
	}
	return os.WriteFile(path, []byte(want), 0o600)
}

func freeLoopbackURL(scheme string) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("control: find a free port: %w", err)
	}
	defer l.Close()
	return scheme + "://" + l.Addr().String(), nil
}

// parseMemberURL parses one of the member's URLs, which must use scheme:
// https with TLS, http without.
func parseMemberURL(which, s, scheme string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("control: %s URL %q: %w", which, s, err)
	}
	if u.Scheme != scheme {
		if scheme == "https" {
			return nil, fmt.Errorf("control: %s URL %q must be https:// when the cluster uses TLS", which, s)
		}
		return nil, fmt.Errorf("control: %s URL %q is %s:// but the cluster has no TLS (cert, key and ca)", which, s, u.Scheme)
	}
	return u, nil
}

// ClientTLS is the TLS configuration of a client of a cluster secured
// with t (EmbedConfig.TLS): it presents t's certificate and trusts
// servers signed by t's CA.
func ClientTLS(t config.TLS) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("control: cluster TLS certificate: %w", err)
	}
	pem, err := os.ReadFile(t.CA)
	if err != nil {
		return nil, fmt.Errorf("control: cluster TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("control: cluster TLS CA: %s holds no PEM certificate", t.CA)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// HoldsLeadership says whether this member is etcd's raft leader.
func (e *Embedded) HoldsLeadership() bool {
	return e.etcd.Server.Leader() == e.etcd.Server.MemberID()
}

// HandOffLeadership moves etcd's raft leadership to another voting member
// when this member holds it. Every node calls it, so that one
// region's outage takes down either the Lifeboat leader or etcd's leader,
// not both: a new raft leader costs an election, and it extends every
// lease by an election timeout when it takes over, which would delay the
// Lifeboat leader's successor by both.
//
// rank orders the members by name (lower first): the first that takes the
// leadership keeps it. leader is the Lifeboat leader's member: never the
// target. When this member is the Lifeboat leader's, the leadership goes
// to the best-ranked other; else only to a member ranked better than this
// one (a raft leader left where it should not be, say in the region that
// became active, moves; one in the right place stays).
func (e *Embedded) HandOffLeadership(ctx context.Context, rank func(member string) int, leader string) error {
	s := e.etcd.Server
	self := s.MemberID()
	if s.Leader() != self {
		return nil
	}
	var selfName string
	if m := s.Cluster().Member(self); m != nil {
		selfName = m.Name
	}
	members := s.Cluster().Members()
	sort.SliceStable(members, func(i, j int) bool { return rank(members[i].Name) < rank(members[j].Name) })
	var errs []error
	for _, m := range members {
		if m.ID == self || m.IsLearner || m.Name == leader {
			continue
		}
		if selfName != leader && rank(m.Name) >= rank(selfName) {
			break // the rest are no better placed than this member
		}
		// A member whose port does not answer at once is down (or far):
		// a transfer to it would only time out.
		if len(m.ClientURLs) > 0 {
			dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			conn, _, _, err := dialEndpoint(dctx, m.ClientURLs[0], false)
			cancel()
			if err != nil {
				errs = append(errs, fmt.Errorf("to %s: %w", m.Name, err))
				continue
			}
			if conn != nil {
				conn.Close()
			}
		}
		mctx, cancel := context.WithTimeout(ctx, time.Second)
		err := s.MoveLeader(mctx, uint64(self), uint64(m.ID))
		cancel()
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("to %s: %w", m.Name, err))
	}
	if len(errs) == 0 {
		return nil // a single member: nothing to hand off to
	}
	return fmt.Errorf("control: hand off etcd leadership: %w", errors.Join(errs...))
}

// Endpoints are the client URLs the member serves.
func (e *Embedded) Endpoints() []string { return e.endpoints }

// Err reports a fatal error of the member.
func (e *Embedded) Err() <-chan error { return e.etcd.Err() }

// Close stops the member.
func (e *Embedded) Close(ctx context.Context) error {
	done := make(chan struct{})
	go func() { e.etcd.Close(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
