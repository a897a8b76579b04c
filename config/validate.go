package config

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"
)

var (
	nameRe      = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	hexSHA256Re = regexp.MustCompile(`^[0-9a-f]{64}$`)
	dnsLabelRe  = regexp.MustCompile(`^([a-z0-9_]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9_]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
	headerRe    = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// Validate checks the configuration's consistency: names, references
// between sections, values in range. It reports every problem at once,
// each with the file, line and key it is about.
func (c *Config) Validate() error {
	v := &validator{c: c}
	v.top()
	v.regions()
	v.services()
	v.traffic()
	v.policy()
	v.notify()
	v.report()
	v.drills()
	v.runbooks()
	return v.errs.err()
}

type validator struct {
	c    *Config
	errs Errors
}

func (v *validator) errorf(path string, sentinel error, format string, args ...any) {
	// A key that already failed to decode is not reported twice.
	for p := path; p != ""; p = parent(p) {
		if v.c.bad[p] {
			return
		}
	}
	v.errs = append(v.errs, &FieldError{File: v.c.file, Line: v.c.line(path), Key: path, Msg: fmt.Sprintf(format, args...), Err: sentinel})
}

// line is the line of path, or of its nearest ancestor present in the file.
func (c *Config) line(path string) int {
	for p := path; p != ""; p = parent(p) {
		if l, ok := c.pos[p]; ok {
			return l
		}
	}
	return 0
}

// parent strips the last component of a key path: "a.b[2]" → "a.b" → "a".
func parent(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

// clusterKey is the key path of a cluster field: "cluster" when it was
// written as a name alone.
func (v *validator) clusterKey(field string) string {
	if _, mapping := v.c.pos["cluster."+field]; mapping {
		return "cluster." + field
	}
	return "cluster"
}

func (v *validator) required(path, value string) bool {
	if value == "" {
		v.errorf(path, ErrMissing, "is required")
		return false
	}
	return true
}

func (v *validator) name(path, value string) {
	if v.required(path, value) && !nameRe.MatchString(value) {
		v.errorf(path, ErrInvalid, "%q is not a valid name (lower-case letters, digits and '-', at most 63)", value)
	}
}

func (v *validator) oneOf(path, value string, allowed ...string) {
	for _, a := range allowed {
		if value == a {
			return
		}
	}
	if value == "" {
		v.errorf(path, ErrMissing, "is required (one of %s)", strings.Join(allowed, ", "))
		return
	}
	v.errorf(path, ErrInvalid, "%q is not one of %s", value, strings.Join(allowed, ", "))
}

func (v *validator) listen(path, addr string) {
	if !v.required(path, addr) {
		return
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.errorf(path, ErrInvalid, "%q is not host:port", addr)
		return
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		v.errorf(path, ErrInvalid, "port %q is not a number from 0 to 65535", port)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		v.errorf(path, ErrInvalid, "listen host %q must be an IP address or localhost", host)
	}
}

func (v *validator) top() {
	c := v.c
	v.name(v.clusterKey("name"), c.Cluster.Name)
	cl := c.Cluster
	if cl.LeaseTTL.D() < time.Second || cl.LeaseTTL.D()%time.Second != 0 {
		v.errorf("cluster.lease_ttl", ErrInvalid, "%s must be whole seconds, at least 1s", cl.LeaseTTL)
	}
	if cl.Heartbeat.D() < 10*time.Millisecond || cl.Heartbeat.D() > 10*time.Second || cl.Heartbeat.D()%time.Millisecond != 0 {
		v.errorf("cluster.heartbeat", ErrInvalid, "%s must be whole milliseconds from 10ms to 10s", cl.Heartbeat)
	}
	if cl.ElectionTimeout.D() < 5*cl.Heartbeat.D() || cl.ElectionTimeout.D()%time.Millisecond != 0 {
		v.errorf("cluster.election_timeout", ErrInvalid, "%s must be whole milliseconds and at least 5 × heartbeat (%s)", cl.ElectionTimeout, cl.Heartbeat)
	} else if 2*cl.LeaseTTL.D() < 3*cl.ElectionTimeout.D() {
		v.errorf("cluster.lease_ttl", ErrInvalid, "%s must be at least 1.5 × election_timeout (%s): etcd cannot keep a shorter lease", cl.LeaseTTL, cl.ElectionTimeout)
	}
	secure := v.clusterTLS(cl.TLS)
	peers := map[string]bool{}
	for i, p := range c.Cluster.Peers {
		pp := fmt.Sprintf("cluster.peers[%d]", i)
		v.name(pp+".name", p.Name)
		if peers[p.Name] && p.Name != "" {
			v.errorf(pp+".name", ErrInvalid, "peer %q is declared twice", p.Name)
		}
		peers[p.Name] = true
		if _, ok := c.Region(p.Region); !ok {
			v.errorf(pp+".region", ErrInvalid, "region %q is not declared", p.Region)
		}
		for key, u := range map[string]string{"peer_url": p.PeerURL, "client_url": p.ClientURL} {
			if !v.required(pp+"."+key, u) {
				continue
			}
			if err := checkHTTPURL(u); err != nil {
				v.errorf(pp+"."+key, ErrInvalid, "%s", err)
				continue
			}
			v.clusterScheme(pp+"."+key, u, secure)
		}
		if p.ListenPeer != "" {
			v.listen(pp+".listen_peer", p.ListenPeer)
		}
		if p.ListenClient != "" {
			v.listen(pp+".listen_client", p.ListenClient)
		}
	}
	if n := len(c.Cluster.Peers); n == 2 || n%2 == 0 && n > 0 {
		v.errorf("cluster.peers", ErrInvalid, "%d peers cannot outvote a partition: use an odd number (3: one per region with a witness)", n)
	}
	v.listen("api.listen", c.API.Listen)
	v.tls("api.tls", c.API.TLS)
	seen := map[string]bool{}
	for i, t := range c.API.Tokens {
		p := fmt.Sprintf("api.tokens[%d]", i)
		v.name(p+".name", t.Name)
		if seen[t.Name] && t.Name != "" {
			v.errorf(p+".name", ErrInvalid, "token name %q is used twice", t.Name)
		}
		seen[t.Name] = true
		v.oneOf(p+".role", t.Role, TokenViewer, TokenOperator, TokenAdmin)
		if v.required(p+".sha256", t.SHA256) && !hexSHA256Re.MatchString(t.SHA256) {
			v.errorf(p+".sha256", ErrInvalid, "must be the 64 lower-case hex digits of the token's SHA-256 (printf %%s TOKEN | sha256sum), not the token")
		}
	}
}

func (v *validator) tls(path string, t TLS) {
	if (t.Cert == "") != (t.Key == "") {
		v.errorf(path, ErrMissing, "cert and key go together: set both or neither")
	}
	if t.CA != "" && t.Cert == "" {
		v.errorf(path+".ca", ErrInvalid, "a client CA needs cert and key too")
	}
}

// clusterTLS checks cluster.tls: cert, key and ca all set, or none; each
// file readable. It reports whether the cluster uses TLS.
func (v *validator) clusterTLS(t TLS) bool {
	if t == (TLS{}) {
		return false
	}
	for key, file := range map[string]string{"cert": t.Cert, "key": t.Key, "ca": t.CA} {
		p := "cluster.tls." + key
		if file == "" {
			v.errorf(p, ErrMissing, "is required: the control plane's mutual TLS needs cert, key and ca")
			continue
		}
		f, err := os.Open(file)
		if err != nil {
			v.errorf(p, ErrInvalid, "cannot read %s: %v", file, errors.Unwrap(err))
			continue
		}
		f.Close()
	}
	return true
}

// clusterScheme checks that a peer's URL is https:// exactly when the
// cluster uses TLS.
func (v *validator) clusterScheme(path, u string, secure bool) {
	scheme, _, _ := strings.Cut(u, "://")
	switch {
	case secure && scheme != "https":
		v.errorf(path, ErrInvalid, "%q must be https:// when cluster.tls is set", RedactURL(u))
	case !secure && scheme == "https":
		v.errorf(path, ErrInvalid, "%q is https:// but cluster.tls is not set (set cert, key and ca, or use http://)", RedactURL(u))
	}
}

func (v *validator) regions() {
	c := v.c
	if len(c.Regions) == 0 {
		v.errorf("regions", ErrMissing, "at least two regions are required")
		return
	}
	names := map[string]bool{}
	prios := map[int]string{}
	active, serving := 0, 0
	for i, r := range c.Regions {
		p := fmt.Sprintf("regions[%d]", i)
		v.name(p+".name", r.Name)
		if names[r.Name] && r.Name != "" {
			v.errorf(p+".name", ErrInvalid, "region %q is declared twice", r.Name)
		}
		names[r.Name] = true
		if r.Priority < 0 {
			v.errorf(p+".priority", ErrInvalid, "%d is negative", r.Priority)
		}
		if other, dup := prios[r.Priority]; dup && r.Role != RoleWitness {
			v.errorf(p+".priority", ErrInvalid, "priority %d is also region %q's: priorities must differ", r.Priority, other)
		}
		if r.Role != RoleWitness {
			prios[r.Priority] = r.Name
			serving++
		}
		v.oneOf(p+".role", r.Role, RoleActive, RoleStandby, RoleWitness)
		if r.Role == RoleActive {
			active++
			if active > 1 {
				v.errorf(p+".role", ErrInvalid, "only one region can be active")
			}
		}
	}
	if serving < 2 {
		v.errorf("regions", ErrInvalid, "at least two regions that are not witnesses are required, got %d", serving)
	}
}

func (v *validator) services() {
	c := v.c
	if len(c.Services) == 0 {
		v.errorf("services", ErrMissing, "at least one service is required")
		return
	}
	seen := map[string]bool{}
	for i := range c.Services {
		s := &c.Services[i]
		p := fmt.Sprintf("services[%d]", i)
		v.name(p+".name", s.Name)
		if seen[s.Name] && s.Name != "" {
			v.errorf(p+".name", ErrInvalid, "service %q is declared twice", s.Name)
		}
		seen[s.Name] = true
		v.oneOf(p+".kind", s.Kind, KindHTTP, KindTCP, KindPostgres, KindRedis, KindFiles)
		v.endpoints(p, s)
		v.health(p+".health", s)
		if s.Replication != nil {
			rp := p + ".replication"
			if s.Kind != KindPostgres && s.Kind != KindRedis {
				v.errorf(rp, ErrInvalid, "replication is for postgres and redis services, not %s", s.Kind)
			} else {
				v.oneOf(rp+".mode", s.Replication.Mode, ModeAsync, ModeSync)
				if s.Replication.MaxLagOnFailover < 0 {
					v.errorf(rp+".max_lag_on_failover", ErrInvalid, "is negative")
				}
			}
		}
		if s.Version != nil {
			vp := p + ".version"
			if s.Kind != KindHTTP {
				v.errorf(vp, ErrInvalid, "a version probe is for http services, not %s", s.Kind)
			}
			if v.required(vp+".url", s.Version.URL) && !strings.HasPrefix(s.Version.URL, "/") {
				v.httpURL(vp+".url", strings.ReplaceAll(s.Version.URL, "{region}", "region"))
			}
			if (s.Version.JSONField == "") == (s.Version.Header == "") {
				v.errorf(vp, ErrInvalid, "set exactly one of json_field and header")
			}
			if s.Version.Header != "" && !headerRe.MatchString(s.Version.Header) {
				v.errorf(vp+".header", ErrInvalid, "%q is not a header name", s.Version.Header)
			}
		}
		v.manage(p, s)
		if s.Sync != nil {
			sp := p + ".sync"
			if s.Kind != KindFiles {
				v.errorf(sp, ErrInvalid, "sync is for files services, not %s", s.Kind)
			} else if s.Sync.Concurrency < 1 || s.Sync.Concurrency > 1024 {
				v.errorf(sp+".concurrency", ErrInvalid, "%d is not from 1 to 1024", s.Sync.Concurrency)
			}
		}
	}
}

func (v *validator) endpoints(p string, s *Service) {
	ep := p + ".endpoints"
	for region, addr := range s.Endpoints {
		kp := ep + "." + region
		r, ok := v.c.Region(region)
		switch {
		case !ok:
			v.errorf(kp, ErrInvalid, "region %q is not declared", region)
			continue
		case r.Role == RoleWitness:
			v.errorf(kp, ErrInvalid, "region %q is a witness and has no endpoints", region)
			continue
		}
		if !v.required(kp, addr) {
			continue
		}
		if err := checkEndpoint(s.Kind, addr); err != nil {
			v.errorf(kp, ErrInvalid, "%s", err)
		}
	}
	for _, r := range v.c.RegionsByPriority() {
		if r.Role == RoleWitness || r.Name == "" {
			continue
		}
		if _, ok := s.Endpoints[r.Name]; !ok {
			v.errorf(ep, ErrMissing, "no endpoint for region %q", r.Name)
		}
	}
}

// checkEndpoint checks an endpoint's form for its kind. The message never
// quotes the endpoint: a DSN may hold a password.
func checkEndpoint(kind, addr string) error {
	switch kind {
	case KindHTTP:
		return checkHTTPURL(addr)
	case KindTCP:
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" || port == "" {
			return fmt.Errorf("%q is not host:port", addr)
		}
	case KindPostgres:
		if !strings.HasPrefix(addr, "postgres://") && !strings.HasPrefix(addr, "postgresql://") && !strings.Contains(addr, "host=") {
			return fmt.Errorf("not a PostgreSQL DSN (postgres://user:password@host:port/db or host=... keywords)")
		}
		if _, err := pgconn.ParseConfig(addr); err != nil {
			return fmt.Errorf("not a valid PostgreSQL DSN: %s", redactErr(err, addr))
		}
	case KindRedis:
		if _, err := redis.ParseURL(addr); err != nil {
			return fmt.Errorf("not a valid Redis URL (redis://[:password@]host:port/db): %s", redactErr(err, addr))
		}
	case KindFiles:
		if strings.HasPrefix(addr, "/") {
			return nil
		}
		u, err := url.Parse(addr)
		if err != nil {
			return fmt.Errorf("not a URL or absolute path")
		}
		switch u.Scheme {
		case "file", "s3", "azblob", "gs":
		default:
			return fmt.Errorf("scheme %q is not one of file, s3, azblob, gs", u.Scheme)
		}
		if u.Scheme == "file" && u.Path == "" {
			return fmt.Errorf("file URL has no path (file:///srv/share)")
		}
		if u.Scheme != "file" && u.Host == "" {
			return fmt.Errorf("%s URL has no bucket (%s://bucket)", u.Scheme, u.Scheme)
		}
	}
	return nil
}

// redactErr keeps a library's error message but removes the endpoint text
// from it, which may hold a password.
func redactErr(err error, addr string) string {
	msg := err.Error()
	msg = strings.ReplaceAll(msg, addr, "<dsn>")
	if u, perr := url.Parse(addr); perr == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, Redacted)
		}
	}
	return msg
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http:// or https:// URL", RedactURL(s))
	}
	return nil
}

func (v *validator) httpURL(path, s string) {
	if err := checkHTTPURL(s); err != nil {
		v.errorf(path, ErrInvalid, "%s", err)
	}
}

func (v *validator) health(p string, s *Service) {
	h := s.Health
	if h.Interval.D() < 10*time.Millisecond {
		v.errorf(p+".interval", ErrInvalid, "%s is below 10ms", h.Interval)
	}
	if h.Timeout <= 0 || h.Timeout > h.Interval {
		v.errorf(p+".timeout", ErrInvalid, "%s must be above 0 and at most the interval (%s)", h.Timeout, h.Interval)
	}
	if h.Jitter >= h.Interval {
		v.errorf(p+".jitter", ErrInvalid, "%s must be below the interval (%s)", h.Jitter, h.Interval)
	}
	if h.Fall < 1 || h.Fall > 100 {
		v.errorf(p+".fall", ErrInvalid, "%d is not from 1 to 100", h.Fall)
	}
	if h.Rise < 1 || h.Rise > 100 {
		v.errorf(p+".rise", ErrInvalid, "%d is not from 1 to 100", h.Rise)
	}
	if s.Kind != KindHTTP {
		for key, set := range map[string]bool{
			"method": h.Method != "", "path": h.Path != "", "expect_status": h.ExpectStatus != "",
			"body_contains": h.BodyContains != "", "headers": len(h.Headers) > 0,
		} {
			if set {
				v.errorf(p+"."+key, ErrInvalid, "is for http services only, not %s", s.Kind)
			}
		}
		return
	}
	if !headerRe.MatchString(h.Method) {
		v.errorf(p+".method", ErrInvalid, "%q is not an HTTP method", h.Method)
	}
	if !strings.HasPrefix(h.Path, "/") {
		v.errorf(p+".path", ErrInvalid, "%q must start with /", h.Path)
	}
	if _, _, err := ParseStatusRange(h.ExpectStatus); err != nil {
		v.errorf(p+".expect_status", ErrInvalid, "%s", err)
	}
	for name := range h.Headers {
		if !headerRe.MatchString(name) {
			v.errorf(p+".headers."+name, ErrInvalid, "%q is not a header name", name)
		}
	}
}

// ParseStatusRange reads "200-399" or "204" into an inclusive range.
func ParseStatusRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(s, "-")
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi = lo
	var err2 error
	if isRange {
		hi, err2 = strconv.Atoi(strings.TrimSpace(b))
	}
	if err1 != nil || err2 != nil || lo < 100 || hi > 599 || lo > hi {
		return 0, 0, fmt.Errorf("%q is not a status code or range from 100 to 599 (200-399)", s)
	}
	return lo, hi, nil
}

func (v *validator) traffic() {
	c := v.c
	t := c.Traffic
	v.oneOf("traffic.when_all_down", t.WhenAllDown, FailStatic, FailOpen)
	listens := map[string]string{}
	claim := func(path, addr string) {
		if addr == "" {
			return
		}
		if other, dup := listens[addr]; dup {
			v.errorf(path, ErrInvalid, "%s is also %s's listen address", addr, other)
		}
		listens[addr] = path
	}
	claim("api.listen", c.API.Listen)
	service := func(path, name string, kinds ...string) {
		if !v.required(path, name) {
			return
		}
		s, ok := c.Service(name)
		if !ok {
			v.errorf(path, ErrInvalid, "service %q is not declared", name)
			return
		}
		for _, k := range kinds {
			if s.Kind == k {
				return
			}
		}
		v.errorf(path, ErrInvalid, "service %q is %s; expected %s", name, s.Kind, strings.Join(kinds, " or "))
	}
	if d := t.DNS; d != nil {
		v.listen("traffic.dns.listen", d.Listen)
		claim("traffic.dns.listen", d.Listen)
		zone := strings.ToLower(strings.TrimSuffix(d.Zone, "."))
		if v.required("traffic.dns.zone", d.Zone) && (!dnsLabelRe.MatchString(zone) || len(zone) > 253) {
			v.errorf("traffic.dns.zone", ErrInvalid, "%q is not a domain name", d.Zone)
		}
		if d.TTL.D() < time.Second || d.TTL.D()%time.Second != 0 || d.TTL.D() > 24*time.Hour {
			v.errorf("traffic.dns.ttl", ErrInvalid, "%s must be whole seconds from 1s to 24h", d.TTL)
		}
		names := map[string]bool{}
		for i, r := range d.Records {
			p := fmt.Sprintf("traffic.dns.records[%d]", i)
			n := strings.ToLower(r.Name)
			if v.required(p+".name", r.Name) && n != "@" && !dnsLabelRe.MatchString(n) {
				v.errorf(p+".name", ErrInvalid, "%q is not a name in the zone (a label like www, or @ for the apex)", r.Name)
			}
			if names[n] {
				v.errorf(p+".name", ErrInvalid, "name %q has two records", r.Name)
			}
			names[n] = true
			service(p+".service", r.Service, KindHTTP, KindTCP, KindPostgres, KindRedis)
			v.oneOf(p+".policy", r.Policy, PolicyFailover, PolicyWeighted, PolicyMultivalue)
			if r.Policy == PolicyWeighted {
				total := 0
				for region, w := range r.Weights {
					if _, ok := c.Region(region); !ok {
						v.errorf(p+".weights."+region, ErrInvalid, "region %q is not declared", region)
					}
					if w < 0 {
						v.errorf(p+".weights."+region, ErrInvalid, "weight %d is negative", w)
					}
					total += w
				}
				if total <= 0 {
					v.errorf(p+".weights", ErrMissing, "a weighted record needs weights per region with a positive sum")
				}
			} else if len(r.Weights) > 0 {
				v.errorf(p+".weights", ErrInvalid, "weights are for the weighted policy, not %s", r.Policy)
			}
		}
	}
	if h := t.HTTP; h != nil {
		v.listen("traffic.http.listen", h.Listen)
		claim("traffic.http.listen", h.Listen)
		v.tls("traffic.http.tls", h.TLS)
		routes := map[string]bool{}
		for i, r := range h.Routes {
			p := fmt.Sprintf("traffic.http.routes[%d]", i)
			if r.Host != "" {
				host := strings.ToLower(r.Host)
				if hh, _, err := net.SplitHostPort(host); err == nil {
					host = hh
				}
				if !dnsLabelRe.MatchString(strings.TrimPrefix(host, "*.")) && net.ParseIP(host) == nil {
					v.errorf(p+".host", ErrInvalid, "%q is not a host name", r.Host)
				}
			}
			if !strings.HasPrefix(r.PathPrefix, "/") {
				v.errorf(p+".path_prefix", ErrInvalid, "%q must start with /", r.PathPrefix)
			}
			key := strings.ToLower(r.Host) + " " + r.PathPrefix
			if routes[key] {
				v.errorf(p, ErrInvalid, "host %q and path prefix %q are routed twice", r.Host, r.PathPrefix)
			}
			routes[key] = true
			service(p+".service", r.Service, KindHTTP)
		}
	}
	for i, pg := range t.Postgres {
		p := fmt.Sprintf("traffic.postgres[%d]", i)
		v.listen(p+".listen", pg.Listen)
		claim(p+".listen", pg.Listen)
		service(p+".service", pg.Service, KindPostgres)
		v.oneOf(p+".role", pg.Role, PGWriter, PGReader)
		v.oneOf(p+".relay", pg.Relay, RelayAuto, RelayUser)
	}
}

func (v *validator) policy() {
	p := v.c.Policy
	if p.RPO < 0 {
		v.errorf("policy.rpo", ErrInvalid, "is negative")
	}
	if p.RTO <= 0 {
		v.errorf("policy.rto", ErrInvalid, "must be above 0")
	}
	v.oneOf("policy.failover", p.Failover, FailoverAuto, FailoverManual)
	v.oneOf("policy.auto_severity", p.AutoSeverity, SeverityMajor, SeverityCritical)
	if p.MaxAutoFailovers < 0 {
		v.errorf("policy.max_auto_failovers", ErrInvalid, "%d is negative", p.MaxAutoFailovers)
	}
	if p.Failover == FailoverAuto && p.MaxAutoFailovers == 0 {
		v.errorf("policy.max_auto_failovers", ErrInvalid, "is 0, so failover: auto could never act; use failover: manual")
	}
	if p.FailoverWindow <= 0 {
		v.errorf("policy.failover_window", ErrInvalid, "must be above 0")
	}
}

func (v *validator) notify() {
	seen := map[string]bool{}
	for i, ch := range v.c.Notify.Channels {
		p := fmt.Sprintf("notify.channels[%d]", i)
		v.name(p+".name", ch.Name)
		if seen[ch.Name] && ch.Name != "" {
			v.errorf(p+".name", ErrInvalid, "channel %q is declared twice", ch.Name)
		}
		seen[ch.Name] = true
		v.oneOf(p+".type", ch.Type, "webhook", "slack", "teams", "email")
		if ch.Type == "email" {
			if ch.URL != "" {
				v.errorf(p+".url", ErrInvalid, "an email channel has no url; use smtp")
			}
			v.smtp(p+".smtp", ch.SMTP)
		} else if ch.Type != "" {
			if ch.SMTP != nil {
				v.errorf(p+".smtp", ErrInvalid, "only an email channel has smtp")
			}
			if v.required(p+".url", ch.URL.Value()) {
				if err := checkHTTPURL(ch.URL.Value()); err != nil {
					// The URL is a secret: say what is wrong without quoting it.
					v.errorf(p+".url", ErrInvalid, "is not an http:// or https:// URL")
				}
			}
		}
		if ch.Secret != "" && ch.Type != "webhook" {
			v.errorf(p+".secret", ErrInvalid, "only a webhook channel signs its bodies")
		}
		for j, k := range ch.Events {
			v.oneOf(fmt.Sprintf("%s.events[%d]", p, j), k, NotificationKinds()...)
		}
		v.oneOf(p+".min_severity", ch.MinSeverity, "info", "warning", "critical")
		if ch.Retries < 0 {
			v.errorf(p+".retries", ErrInvalid, "%d is negative", ch.Retries)
		}
		if ch.Timeout <= 0 {
			v.errorf(p+".timeout", ErrInvalid, "must be above 0")
		}
	}
}

func (v *validator) smtp(p string, s *SMTP) {
	if s == nil {
		v.errorf(p, ErrMissing, "an email channel needs smtp: {addr, from, to}")
		return
	}
	if v.required(p+".addr", s.Addr) {
		if _, port, err := net.SplitHostPort(s.Addr); err != nil || port == "" {
			v.errorf(p+".addr", ErrInvalid, "%q is not host:port", s.Addr)
		}
	}
	if v.required(p+".from", s.From) {
		if _, err := mail.ParseAddress(s.From); err != nil {
			v.errorf(p+".from", ErrInvalid, "%q is not a mail address", s.From)
		}
	}
	if len(s.To) == 0 {
		v.errorf(p+".to", ErrMissing, "needs at least one recipient")
	}
	for i, to := range s.To {
		if _, err := mail.ParseAddress(to); err != nil {
			v.errorf(fmt.Sprintf("%s.to[%d]", p, i), ErrInvalid, "%q is not a mail address", to)
		}
	}
}

func (v *validator) report() {
	l := v.c.Report.LLM
	if l == nil {
		return
	}
	p := "report.llm"
	v.oneOf(p+".provider", l.Provider, "openai", "azure")
	if v.required(p+".url", l.URL) {
		v.httpURL(p+".url", l.URL)
	}
	if l.Provider == "azure" {
		v.required(p+".deployment", l.Deployment)
		v.required(p+".api_version", l.APIVersion)
	} else {
		v.required(p+".model", l.Model)
	}
	if l.Timeout <= 0 {
		v.errorf(p+".timeout", ErrInvalid, "must be above 0")
	}
	if l.Retries < 0 {
		v.errorf(p+".retries", ErrInvalid, "%d is negative", l.Retries)
	}
}
