// Package dnsserver is Lifeboat's authoritative DNS server for one zone,
// over UDP and TCP: each configured record answers with the endpoints the
// router chooses now, so a failed region leaves the answers within one TTL.
package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"

	"github.com/miekg/dns"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/traffic"
)

// Router is what the server asks for decisions.
type Router interface {
	Decide(service, policy string, weights map[string]int) traffic.Decision
	State() traffic.State
}

// Server answers for the zone.
type Server struct {
	zone    string
	ttl     uint32
	listen  string
	records map[string]config.DNSRecord // by fully qualified lower-case name
	order   []string
	kinds   map[string]string // service → kind
	router  Router
	logger  *slog.Logger
	nsName  string
	nsIP    net.IP

	udp, tcp *dns.Server
	wg       sync.WaitGroup
	errc     chan error
}

// New builds the server of cfg.Traffic.DNS, which must be set.
func New(cfg *config.Config, router Router, logger *slog.Logger) (*Server, error) {
	d := cfg.Traffic.DNS
	if d == nil {
		return nil, errors.New("dnsserver: no traffic.dns in the configuration")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	zone := dns.Fqdn(strings.ToLower(d.Zone))
	s := &Server{
		zone: zone, ttl: uint32(d.TTL.D().Seconds()), listen: d.Listen,
		records: map[string]config.DNSRecord{}, kinds: map[string]string{},
		router: router, logger: logger, nsName: "ns." + zone, errc: make(chan error, 2),
	}
	host, _, _ := net.SplitHostPort(d.Listen)
	s.nsIP = net.ParseIP(host)
	if s.nsIP == nil || s.nsIP.IsUnspecified() {
		s.nsIP = net.IPv4(127, 0, 0, 1)
	}
	for _, svc := range cfg.Services {
		s.kinds[svc.Name] = svc.Kind
	}
	for _, r := range d.Records {
		name := zone
		if r.Name != "@" {
			name = dns.Fqdn(strings.ToLower(r.Name)) + zone
		}
		s.records[name] = r
		s.order = append(s.order, name)
	}
	return s, nil
}

// Open listens on UDP and TCP and returns once both serve.
func (s *Server) Open() error {
	mux := dns.NewServeMux()
	mux.Handle(".", s)
	started := make(chan struct{}, 2)
	s.udp = &dns.Server{Addr: s.listen, Net: "udp", Handler: mux, NotifyStartedFunc: func() { started <- struct{}{} }}
	s.tcp = &dns.Server{Addr: s.listen, Net: "tcp", Handler: mux, NotifyStartedFunc: func() { started <- struct{}{} }}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.ListenAndServe(); err != nil {
				s.errc <- fmt.Errorf("dnsserver: %s %s: %w", srv.Net, s.listen, err)
			}
		}()
	}
	for i := 0; i < 2; i++ {
		select {
		case <-started:
		case err := <-s.errc:
			s.Close(context.Background())
			return err
		}
	}
	s.logger.Info("dns serving", "zone", s.zone, "addr", s.listen)
	return nil
}

// Err reports a failure to serve after Open.
func (s *Server) Err() <-chan error { return s.errc }

// Close stops both listeners.
func (s *Server) Close(ctx context.Context) error {
	var errs []error
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		if srv != nil {
			if err := srv.ShutdownContext(ctx); err != nil && !strings.Contains(err.Error(), "server not started") {
				errs = append(errs, err)
			}
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// maxUDP is the largest UDP answer whatever the client advertises (the
// DNS Flag Day 2020 size, safe from fragmentation).
const maxUDP = 1232

// ServeDNS answers one query.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := s.answer(req)
	if m == nil {
		return
	}
	size := dns.MaxMsgSize
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size = dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(int(opt.UDPSize()), dns.MinMsgSize)
			size = min(size, maxUDP)
		}
	}
	m.Truncate(size)
	if err := w.WriteMsg(m); err != nil {
		s.logger.Debug("dns write failed", "err", err)
	}
}

// answer builds the response to req, or nil to drop it.
func (s *Server) answer(req *dns.Msg) *dns.Msg {
	if req.Response {
		return nil // never answer answers
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = false
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(maxUDP, false)
		if opt.Version() != 0 {
			m.Rcode = dns.RcodeBadVers
			m.Authoritative = false
			return m
		}
	}
	if req.Opcode != dns.OpcodeQuery {
		m.Rcode = dns.RcodeNotImplemented
		return m
	}
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		m.Rcode = dns.RcodeRefused
		m.Authoritative = false
		return m
	}
	if !dns.IsSubDomain(s.zone, name) {
		m.Rcode = dns.RcodeRefused
		m.Authoritative = false
		return m
	}
	exists := false
	if name == s.zone {
		exists = true
		if q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, s.soa())
		}
		if q.Qtype == dns.TypeNS || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, &dns.NS{Hdr: s.hdr(s.zone, dns.TypeNS), Ns: s.nsName})
			m.Extra = append(m.Extra, s.nsGlue())
		}
	}
	if name == s.nsName {
		exists = true
		if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, s.nsGlue())
		}
	}
	if name == "_lifeboat."+s.zone {
		exists = true
		if q.Qtype == dns.TypeTXT || q.Qtype == dns.TypeANY {
			st := s.router.State()
			m.Answer = append(m.Answer, &dns.TXT{Hdr: s.hdr(name, dns.TypeTXT),
				Txt: []string{fmt.Sprintf("active=%s epoch=%d", st.Active, st.Epoch)}})
		}
	}
	if rec, ok := s.records[name]; ok {
		exists = true
		m.Answer = append(m.Answer, s.recordAnswers(name, rec, q.Qtype)...)
	}
	switch {
	case !exists:
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{s.soa()}
	case len(m.Answer) == 0:
		m.Ns = []dns.RR{s.soa()} // NODATA
	}
	return m
}

func (s *Server) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: s.ttl}
}

func (s *Server) soa() dns.RR {
	return &dns.SOA{
		Hdr: s.hdr(s.zone, dns.TypeSOA), Ns: s.nsName, Mbox: "hostmaster." + s.zone,
		Serial: uint32(s.router.State().Epoch) + 1, Refresh: 3600, Retry: 600, Expire: 604800, Minttl: s.ttl,
	}
}

func (s *Server) nsGlue() dns.RR {
	if ip4 := s.nsIP.To4(); ip4 != nil {
		return &dns.A{Hdr: s.hdr(s.nsName, dns.TypeA), A: ip4}
	}
	return &dns.AAAA{Hdr: s.hdr(s.nsName, dns.TypeAAAA), AAAA: s.nsIP}
}

// recordAnswers turns the router's decision into resource records: A and
// AAAA for endpoints given by address, a CNAME for one given by name.
// failover and weighted answer with the first endpoint, multivalue with all.
func (s *Server) recordAnswers(name string, rec config.DNSRecord, qtype uint16) []dns.RR {
	d := s.router.Decide(rec.Service, rec.Policy, rec.Weights)
	eps := d.Endpoints
	if rec.Policy != config.PolicyMultivalue && len(eps) > 1 {
		eps = eps[:1]
	}
	var out []dns.RR
	seen := map[string]bool{}
	for _, e := range eps {
		host := traffic.EndpointHost(s.kinds[rec.Service], e.Addr)
		if host == "" || seen[host] {
			continue
		}
		seen[host] = true
		ip := net.ParseIP(host)
		switch {
		case ip == nil:
			// A name: one CNAME, and nothing else may stand beside it.
			if len(out) == 0 {
				return []dns.RR{&dns.CNAME{Hdr: s.hdr(name, dns.TypeCNAME), Target: dns.Fqdn(host)}}
			}
		case ip.To4() != nil && (qtype == dns.TypeA || qtype == dns.TypeANY):
			out = append(out, &dns.A{Hdr: s.hdr(name, dns.TypeA), A: ip.To4()})
		case ip.To4() == nil && (qtype == dns.TypeAAAA || qtype == dns.TypeANY):
			out = append(out, &dns.AAAA{Hdr: s.hdr(name, dns.TypeAAAA), AAAA: ip})
		}
	}
	return out
}

// RecordStatus is where one record points now, for the status API.
type RecordStatus struct {
	Name    string   `json:"name"`
	Service string   `json:"service"`
	Policy  string   `json:"policy"`
	Answers []string `json:"answers"`
	Mode    string   `json:"mode"`
	TTL     uint32   `json:"ttl"`
}

// Records lists every record with its current answers (for A queries).
func (s *Server) Records() []RecordStatus {
	out := make([]RecordStatus, 0, len(s.order))
	for _, name := range s.order {
		rec := s.records[name]
		d := s.router.Decide(rec.Service, rec.Policy, rec.Weights)
		rs := RecordStatus{Name: name, Service: rec.Service, Policy: rec.Policy, Mode: d.Mode, TTL: s.ttl, Answers: []string{}}
		for _, rr := range s.recordAnswers(name, rec, dns.TypeANY) {
			switch v := rr.(type) {
			case *dns.A:
				rs.Answers = append(rs.Answers, v.A.String())
			case *dns.AAAA:
				rs.Answers = append(rs.Answers, v.AAAA.String())
			case *dns.CNAME:
				rs.Answers = append(rs.Answers, v.Target)
			}
		}
		out = append(out, rs)
	}
	return out
}
