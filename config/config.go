// Package config holds Lifeboat's topology configuration: the one file
// (lifeboat.yaml) a user writes to describe regions, services, traffic and
// policy.
//
// The life of a configuration is DefaultConfig → Parse → Validate; Load does
// all three for a file. Every error names the file, the line and the key it is
// about, and all errors are reported at once.
package config

import (
	"sort"
	"time"
)

// Region roles.
const (
	RoleActive  = "active"
	RoleStandby = "standby"
	RoleWitness = "witness"
)

// Service kinds.
const (
	KindHTTP     = "http"
	KindTCP      = "tcp"
	KindPostgres = "postgres"
	KindRedis    = "redis"
	KindFiles    = "files"
)

// Replication modes.
const (
	ModeAsync = "async"
	ModeSync  = "sync"
)

// DNS record policies.
const (
	PolicyFailover   = "failover"
	PolicyWeighted   = "weighted"
	PolicyMultivalue = "multivalue"
)

// Failover modes.
const (
	FailoverAuto   = "auto"
	FailoverManual = "manual"
)

// What the data plane answers when every region is unhealthy.
const (
	FailOpen   = "fail-open"
	FailStatic = "fail-static"
)

// Postgres endpoint roles.
const (
	PGWriter = "writer"
	PGReader = "reader"

	// Relays of a Postgres endpoint.
	RelayAuto = "auto"
	RelayUser = "user"
)

// API token roles.
const (
	TokenViewer   = "viewer"
	TokenOperator = "operator"
	TokenAdmin    = "admin"
)

// DefaultAPIListen is where the API and dashboard listen unless configured.
const DefaultAPIListen = "127.0.0.1:7480"

// Config is the whole topology. Field comments give the defaults that
// DefaultConfig and Parse fill in.
type Config struct {
	// Cluster names this deployment (its state-store keys live under it)
	// and, optionally, the control plane's members. Required. Written as a
	// name ("cluster: shop") or as a mapping with peers.
	Cluster  Cluster   `yaml:"cluster"`
	API      API       `yaml:"api"`
	Regions  []Region  `yaml:"regions"`
	Services []Service `yaml:"services"`
	Traffic  Traffic   `yaml:"traffic"`
	Policy   Policy    `yaml:"policy"`
	Notify   Notify    `yaml:"notify,omitempty"`
	Report   Report    `yaml:"report,omitempty"`
	// Drills configures drills against this topology: how faults are
	// injected, what the drill writes through, when drills run.
	Drills *Drills `yaml:"drills,omitempty"`
	// Runbooks extend or replace the generated failover, switchover and
	// failback plans.
	Runbooks Runbooks `yaml:"runbooks,omitempty"`

	// file and pos are set by Parse: the file name used in errors and the
	// line of every key path seen in the document.
	file string
	pos  map[string]int
	// bad holds the key paths that failed to decode, so Validate does not
	// report a second, derived error for them.
	bad map[string]bool
	// secrets holds values that came from secret-looking environment
	// variables; Redact scrubs them from any text.
	secrets []string
}

// Cluster is the control plane: its name and, for a cluster of embedded
// etcd members (one per region, the witness included), its peers.
type Cluster struct {
	Name string `yaml:"name"`
	// Peers are the Lifeboat nodes that form the embedded etcd cluster;
	// each node's --node names its entry. Empty: a single node.
	Peers []Peer `yaml:"peers,omitempty"`
	// LeaseTTL is the leader's lease: a leader that cannot renew it for
	// this long stops acting (and another can take over); a node that
	// cannot confirm the state for half of it stops routing writes.
	// Default 1s (a dead leader is replaced in about 1.5s); whole
	// seconds, at least 1.5 × ElectionTimeout.
	LeaseTTL Duration `yaml:"lease_ttl"`
	// Heartbeat and ElectionTimeout are the embedded etcd's raft timing.
	// Defaults 100ms and 600ms, right for regions up to ~60ms apart
	// (election ≥ 10 round trips); farther apart: heartbeat near the
	// round trip, election_timeout ≥ 10 × it, lease_ttl ≥ 1.5 × that.
	Heartbeat       Duration `yaml:"heartbeat"`
	ElectionTimeout Duration `yaml:"election_timeout"`
	// TLS, when set, secures the embedded etcd cluster with mutual TLS:
	// its members talk to each other and serve their clients over https,
	// and every connection must present a certificate signed by CA (cert,
	// key and ca are all required). Peer and client URLs are then
	// https://. Each node's certificate must name the hosts of its URLs
	// (IP or DNS SANs) and allow both server and client authentication:
	// a node is a server to the others and their client.
	TLS TLS `yaml:"tls,omitempty"`
}

// Peer is one control-plane member.
type Peer struct {
	Name   string `yaml:"name"`
	Region string `yaml:"region"`
	// PeerURL is where etcd members talk to each other; ClientURL where
	// this node's etcd serves clients.
	PeerURL   string `yaml:"peer_url"`
	ClientURL string `yaml:"client_url"`
	// ListenPeer and ListenClient (host:port), when set, are where this
	// node's member listens when that is not the address in its URLs
	// (behind a port mapping, NAT or a proxy); the URLs are what the
	// other members and clients dial.
	ListenPeer   string `yaml:"listen_peer,omitempty"`
	ListenClient string `yaml:"listen_client,omitempty"`
}

func (c *Cluster) parseScalar(s string) error {
	c.Name = s
	return nil
}

// MarshalYAML writes a cluster without peers as its name alone.
func (c Cluster) MarshalYAML() (any, error) {
	def := DefaultConfig().Cluster
	if len(c.Peers) == 0 && c.TLS == (TLS{}) && c.LeaseTTL == def.LeaseTTL && c.Heartbeat == def.Heartbeat && c.ElectionTimeout == def.ElectionTimeout {
		return c.Name, nil
	}
	type plain Cluster
	return plain(c), nil
}

// API is the control plane's HTTP API and dashboard.
type API struct {
	// Listen is host:port. Default 127.0.0.1:7480.
	Listen string  `yaml:"listen"`
	Tokens []Token `yaml:"tokens,omitempty"`
	TLS    TLS     `yaml:"tls,omitempty"`
}

// Token is an API bearer token, stored as the hex SHA-256 of its value.
type Token struct {
	Name   string `yaml:"name"`
	Role   string `yaml:"role"`
	SHA256 string `yaml:"sha256"`
}

// TLS names certificate and key files. Both or neither are set.
type TLS struct {
	Cert string `yaml:"cert,omitempty"`
	Key  string `yaml:"key,omitempty"`
	// CA, when set, requires and verifies client certificates (mTLS).
	CA string `yaml:"ca,omitempty"`
}

// Region is one failure domain.
type Region struct {
	Name string `yaml:"name"`
	// Priority orders regions for failover: lower is preferred. Unique.
	Priority int `yaml:"priority"`
	// Role is active, standby or witness. Default: the region with the
	// lowest priority is active, the others standby.
	Role string `yaml:"role"`
}

// Service is one logical thing present in several regions.
type Service struct {
	Name string `yaml:"name"`
	Kind string `yaml:"kind"`
	// Critical services decide whether their region is up.
	Critical bool `yaml:"critical"`
	// Endpoints maps a region name to this service's address there: a URL
	// (http), host:port (tcp), a DSN (postgres, redis) or a URL/path (files).
	Endpoints   map[string]string `yaml:"endpoints"`
	Health      Health            `yaml:"health"`
	Replication *Replication      `yaml:"replication,omitempty"`
	Version     *VersionProbe     `yaml:"version,omitempty"`
	Sync        *FileSync         `yaml:"sync,omitempty"`
	// Manage says, per region, how Lifeboat reaches a postgres service's
	// server to stop, start, rewind and base-backup it (reprotect).
	Manage map[string]PGManage `yaml:"manage,omitempty"`
}

// Health configures the probe of each endpoint.
type Health struct {
	// Interval between probes. Default 1s.
	Interval Duration `yaml:"interval"`
	// Timeout of one probe. Default 500ms; must be below Interval.
	Timeout Duration `yaml:"timeout"`
	// Fall consecutive failures mark an endpoint down. Default 3.
	Fall int `yaml:"fall"`
	// Rise consecutive successes mark it up again. Default 2.
	Rise int `yaml:"rise"`
	// Jitter spreads probes by up to this much. Default 10% of Interval.
	Jitter Duration `yaml:"jitter"`

	// HTTP only.
	Method string `yaml:"method,omitempty"`
	// Path is appended to the endpoint URL. Default "/".
	Path string `yaml:"path,omitempty"`
	// ExpectStatus is a status range "200-399" or a single code. Default 200-399.
	ExpectStatus string            `yaml:"expect_status,omitempty"`
	BodyContains string            `yaml:"body_contains,omitempty"`
	Headers      map[string]string `yaml:"headers,omitempty"`
}

// Replication describes a data service's replication to the standbys.
type Replication struct {
	// Mode is sync or async. Default async.
	Mode string `yaml:"mode"`
	// MaxLagOnFailover is the largest replication lag, in bytes, a standby
	// may have and still be promoted automatically. Default 16MiB.
	MaxLagOnFailover ByteSize `yaml:"max_lag_on_failover"`
	// Heartbeat is how often Lifeboat writes its heartbeat on the primary.
	// Default 1s.
	Heartbeat Duration `yaml:"heartbeat"`
}

// VersionProbe reads a version from every region's endpoint; readiness
// requires the values to match ("same model version").
type VersionProbe struct {
	// URL is an absolute URL template ("{region}" is replaced) or a path
	// resolved against each region's endpoint.
	URL string `yaml:"url"`
	// JSONField is a dotted path in the JSON body ("model.version").
	JSONField string `yaml:"json_field,omitempty"`
	// Header is a response header name. Exactly one of JSONField and Header.
	Header string `yaml:"header,omitempty"`
}

// FileSync configures copying a files service from the active region.
type FileSync struct {
	// Interval between syncs. Default 1m.
	Interval Duration `yaml:"interval"`
	// Delete propagates deletions. Default true.
	Delete bool `yaml:"delete"`
	// Concurrency bounds parallel copies. Default 8.
	Concurrency int `yaml:"concurrency"`
}

// Traffic is the data plane: DNS, HTTP front door, Postgres endpoints.
type Traffic struct {
	// WhenAllDown is fail-open or fail-static. Default fail-static.
	WhenAllDown string         `yaml:"when_all_down"`
	DNS         *DNS           `yaml:"dns,omitempty"`
	HTTP        *HTTPProxy     `yaml:"http,omitempty"`
	Postgres    []PostgresPort `yaml:"postgres,omitempty"`
}

// DNS is the authoritative DNS server for one zone.
type DNS struct {
	Listen string `yaml:"listen"`
	// Zone is the apex, fully qualified ("shop.example.").
	Zone string `yaml:"zone"`
	// TTL of answers, whole seconds. Default 30s.
	TTL     Duration    `yaml:"ttl"`
	Records []DNSRecord `yaml:"records"`
}

// DNSRecord maps a name in the zone to a service.
type DNSRecord struct {
	// Name relative to the zone ("www"), or "@" for the apex.
	Name    string `yaml:"name"`
	Service string `yaml:"service"`
	// Policy is failover, weighted or multivalue. Default failover.
	Policy string `yaml:"policy"`
	// Weights per region, for the weighted policy.
	Weights map[string]int `yaml:"weights,omitempty"`
}

// HTTPProxy is the HTTP front door.
type HTTPProxy struct {
	Listen string      `yaml:"listen"`
	Routes []HTTPRoute `yaml:"routes"`
	TLS    TLS         `yaml:"tls,omitempty"`
}

// HTTPRoute sends requests for a host and path prefix to a service.
type HTTPRoute struct {
	// Host to match; empty matches any host.
	Host string `yaml:"host"`
	// PathPrefix to match. Default "/".
	PathPrefix string `yaml:"path_prefix"`
	Service    string `yaml:"service"`
}

// PostgresPort is a Postgres endpoint that forwards to the current primary
// (writer) or a healthy replica (reader).
type PostgresPort struct {
	Listen  string `yaml:"listen"`
	Service string `yaml:"service"`
	// Role is writer or reader. Default writer.
	Role string `yaml:"role"`
	// Relay is how the bytes of a connection reach the server: auto
	// (default; needs root, else it falls back) has the kernel's NAT take
	// a writer's new connections straight to the primary while nothing
	// needs the endpoint (no hold, a confirmed quorum, a primary not
	// down; IPv4, listen on one address) and joins the two sockets of
	// the others in the kernel (a BPF sockhash) once the startup message
	// has passed; user copies every byte in Lifeboat.
	Relay string `yaml:"relay"`
}

// Policy is the recovery objectives and the failover decision rules.
type Policy struct {
	// RPO is the most data, in time, the business accepts to lose. Default 1m.
	RPO Duration `yaml:"rpo"`
	// RTO is the longest outage the business accepts. Default 15m.
	RTO Duration `yaml:"rto"`
	// Failover is auto or manual. Default manual.
	Failover string `yaml:"failover"`
	// Cooldown between two automatic failovers. Default 1h.
	Cooldown Duration `yaml:"cooldown"`
	// MaxAutoFailovers within FailoverWindow. Default 1 per 24h.
	MaxAutoFailovers int      `yaml:"max_auto_failovers"`
	FailoverWindow   Duration `yaml:"failover_window"`
	// AutoSeverity is the least severe outage that failover: auto acts on
	// alone: major (a critical service of the active region is down) or
	// critical (every critical service of it is down: the region is gone).
	// A less severe outage raises a failover that waits for approval.
	// Default major.
	AutoSeverity string `yaml:"auto_severity"`
}

// Outage severities, least severe first.
const (
	SeverityMajor    = "major"
	SeverityCritical = "critical"
)

// Notify lists where notifications go.
type Notify struct {
	Channels []Channel `yaml:"channels,omitempty"`
}

// Channel is one notification destination.
type Channel struct {
	Name string `yaml:"name"`
	// Type is webhook, slack, teams or email.
	Type string `yaml:"type"`
	// URL of the webhook (webhook, slack, teams); treated as a secret (it
	// often embeds a token).
	URL Secret `yaml:"url,omitempty"`
	// Secret signs webhook bodies: the X-Lifeboat-Signature header is
	// "sha256=" + hex HMAC-SHA256 of the body with this key.
	Secret Secret `yaml:"secret,omitempty"`
	// SMTP is the mail server and recipients of an email channel.
	SMTP *SMTP `yaml:"smtp,omitempty"`
	// Events lists the notification kinds sent here (NotificationKinds);
	// empty means all.
	Events []string `yaml:"events,omitempty"`
	// MinSeverity drops less severe notifications: info, warning or
	// critical. Default info.
	MinSeverity string `yaml:"min_severity"`
	// Retries after a failed delivery, with exponential back-off from 1s.
	// Default 5.
	Retries int `yaml:"retries"`
	// Timeout of one delivery attempt. Default 10s.
	Timeout Duration `yaml:"timeout"`
}

func (c *Channel) setDefaults() {
	c.MinSeverity = "info"
	c.Retries = 5
	c.Timeout = Duration(10 * time.Second)
}

// SMTP is a mail server and the message's envelope.
type SMTP struct {
	// Addr is host:port of the server (STARTTLS is used when it offers it).
	Addr     string   `yaml:"addr"`
	From     string   `yaml:"from"`
	To       []string `yaml:"to"`
	Username string   `yaml:"username,omitempty"`
	Password Secret   `yaml:"password,omitempty"`
}

// Notification kinds: what a channel's events filter names.
const (
	NotifyRegionDown       = "region-down"
	NotifyApprovalNeeded   = "approval-needed"
	NotifyRunStarted       = "run-started"
	NotifyRunCompleted     = "run-completed"
	NotifyRunFailed        = "run-failed"
	NotifyReadinessLost    = "readiness-lost"
	NotifyExposureBreached = "exposure-breached"
	NotifyDrillResult      = "drill-result"
)

// NotificationKinds lists every notification kind.
func NotificationKinds() []string {
	return []string{NotifyRegionDown, NotifyApprovalNeeded, NotifyRunStarted, NotifyRunCompleted,
		NotifyRunFailed, NotifyReadinessLost, NotifyExposureBreached, NotifyDrillResult}
}

// Report configures DR reports.
type Report struct {
	LLM *LLM `yaml:"llm,omitempty"`
}

// LLM is an OpenAI-compatible chat-completions endpoint that writes the
// narrative parts of a report.
type LLM struct {
	// Provider is openai (also Ollama, llama.cpp) or azure. Default openai.
	Provider string `yaml:"provider"`
	// URL is the API base ("https://api.openai.com/v1").
	URL   string `yaml:"url"`
	Model string `yaml:"model"`
	// Deployment and APIVersion are for Azure OpenAI.
	Deployment string `yaml:"deployment,omitempty"`
	APIVersion string `yaml:"api_version,omitempty"`
	// APIKey, usually "${OPENAI_API_KEY}".
	APIKey Secret `yaml:"api_key"`
	// Timeout of one request. Default 30s.
	Timeout Duration `yaml:"timeout"`
	// Retries after a failed request (a timeout, a 429 or a 5xx), with
	// back-off. Default 2.
	Retries int `yaml:"retries"`
}

// DefaultConfig returns the settings a file starts from. Per-service and
// per-record defaults are applied by Parse, once the lists are known.
func DefaultConfig() *Config {
	return &Config{
		Cluster: Cluster{LeaseTTL: Duration(time.Second), Heartbeat: Duration(100 * time.Millisecond), ElectionTimeout: Duration(600 * time.Millisecond)},
		API:     API{Listen: DefaultAPIListen},
		Traffic: Traffic{
			WhenAllDown: FailStatic,
		},
		Policy: Policy{
			RPO:              Duration(time.Minute),
			RTO:              Duration(15 * time.Minute),
			Failover:         FailoverManual,
			Cooldown:         Duration(time.Hour),
			MaxAutoFailovers: 1,
			FailoverWindow:   Duration(24 * time.Hour),
			AutoSeverity:     SeverityMajor,
		},
	}
}

// DefaultHealth is the probe configuration of a service that sets none.
func DefaultHealth() Health {
	return Health{
		Interval: Duration(time.Second),
		Timeout:  Duration(500 * time.Millisecond),
		Fall:     3,
		Rise:     2,
	}
}

// defaulter is implemented by the types whose defaults are set when the
// decoder creates them (a list entry, an optional section), before the
// user's keys are read: a value the user writes, even 0, is kept.
type defaulter interface{ setDefaults() }

func (h *Health) setDefaults() {
	*h = DefaultHealth()
	h.Jitter = jitterUnset
}

// jitterUnset marks a jitter the user did not give; it becomes a tenth of
// the interval once the interval is known.
const jitterUnset = Duration(-1)

func (r *Replication) setDefaults() {
	*r = Replication{Mode: ModeAsync, MaxLagOnFailover: 16 << 20, Heartbeat: Duration(time.Second)}
}

func (f *FileSync) setDefaults() {
	*f = FileSync{Interval: Duration(time.Minute), Delete: true, Concurrency: 8}
}

func (s *Service) setDefaults() { s.Health.setDefaults() }

func (d *DNS) setDefaults() { d.TTL = Duration(30 * time.Second) }

func (r *DNSRecord) setDefaults() { r.Policy = PolicyFailover }

func (r *HTTPRoute) setDefaults() { r.PathPrefix = "/" }

func (p *PostgresPort) setDefaults() { p.Role, p.Relay = PGWriter, RelayAuto }

func (l *LLM) setDefaults() {
	l.Provider = "openai"
	l.Timeout = Duration(30 * time.Second)
	l.Retries = 2
}

// applyDefaults fills the defaults that depend on other keys: region roles
// (from priorities) and per-kind service settings.
func (c *Config) applyDefaults() {
	hasActive := false
	for _, r := range c.Regions {
		hasActive = hasActive || r.Role == RoleActive
	}
	for _, r := range c.RegionsByPriority() {
		i := c.regionIndex(r.Name)
		if c.Regions[i].Role != "" {
			continue
		}
		if !hasActive {
			c.Regions[i].Role = RoleActive
			hasActive = true
		} else {
			c.Regions[i].Role = RoleStandby
		}
	}
	for i := range c.Services {
		s := &c.Services[i]
		h := &s.Health
		if h.Jitter == jitterUnset {
			h.Jitter = h.Interval / 10
		}
		if s.Kind == KindHTTP {
			if h.Method == "" {
				h.Method = "GET"
			}
			if h.Path == "" {
				h.Path = "/"
			}
			if h.ExpectStatus == "" {
				h.ExpectStatus = "200-399"
			}
		}
		if (s.Kind == KindPostgres || s.Kind == KindRedis) && s.Replication == nil {
			s.Replication = &Replication{}
			s.Replication.setDefaults()
		}
		if s.Kind == KindFiles && s.Sync == nil {
			s.Sync = &FileSync{}
			s.Sync.setDefaults()
		}
	}
}

// IsData reports whether the service holds data that replicates.
func (s *Service) IsData() bool {
	switch s.Kind {
	case KindPostgres, KindRedis, KindFiles:
		return true
	}
	return false
}

// RegionsByPriority returns the regions, most preferred first.
func (c *Config) RegionsByPriority() []Region {
	out := append([]Region(nil), c.Regions...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Priority < out[j].Priority })
	return out
}

// ActiveRegion is the region that starts active.
func (c *Config) ActiveRegion() string {
	for _, r := range c.Regions {
		if r.Role == RoleActive {
			return r.Name
		}
	}
	return ""
}

// Region returns the named region.
func (c *Config) Region(name string) (Region, bool) {
	if i := c.regionIndex(name); i >= 0 {
		return c.Regions[i], true
	}
	return Region{}, false
}

// Service returns the named service.
func (c *Config) Service(name string) (*Service, bool) {
	for i := range c.Services {
		if c.Services[i].Name == name {
			return &c.Services[i], true
		}
	}
	return nil, false
}

func (c *Config) regionIndex(name string) int {
	for i, r := range c.Regions {
		if r.Name == name {
			return i
		}
	}
	return -1
}

// File is the name of the file the configuration was parsed from.
func (c *Config) File() string { return c.file }
