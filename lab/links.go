package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	toxiclient "github.com/Shopify/toxiproxy/v2/client"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
)

// Network modes: how the lab separates its regions.
const (
	// NetNS: a network namespace per region, joined by a bridge, with
	// netem latency. Needs root and a kernel with netem for latency.
	NetNS = "netns"
	// NetLoopback: a loopback address per region (127.x.y.1, .2, ...);
	// every connection from one region to another goes through a fault
	// proxy (toxiproxy, in a process of the lab's) that carries the
	// latency and the cuts. Needs no privilege.
	NetLoopback = "loopback"
)

// Link is one fault proxy of a loopback lab: the connections processes of
// region From open to a port of region To. From is "*" for an etcd
// member's links, which every other member dials at the same address.
type Link struct {
	Name     string `json:"name"`
	From     string `json:"from"`
	To       string `json:"to"`
	Listen   string `json:"listen"`
	Upstream string `json:"upstream"`
}

// Ports an etcd member listens on behind its links (the lab's members
// advertise PortPeer, where their links listen), and its peer filter.
const (
	memberPortOffset = 10000
	filterPortOffset = 20000
)

// places are where the lab's processes run: the regions and, with two
// regions, the node outside both.
func (s *Spec) places() []Region {
	out := append([]Region(nil), s.Regions...)
	for _, n := range s.Nodes {
		if _, ok := s.Region(n.Name); !ok {
			out = append(out, n)
		}
	}
	return out
}

func (s *Spec) placeIndex(name string) int {
	for i, p := range s.places() {
		if p.Name == name {
			return i
		}
	}
	return -1
}

// hostPort is the address at which a process in from reaches port of to:
// to's own address in a namespace lab or within one region, else the
// link between them.
func (s *Spec) hostPort(from, to Region, port int) string {
	if s.Net != NetLoopback || from.Name == to.Name {
		return net.JoinHostPort(to.IP, strconv.Itoa(port))
	}
	ip := fmt.Sprintf("%s.%d", s.Subnet, 100+10*s.placeIndex(from.Name)+s.placeIndex(to.Name))
	return net.JoinHostPort(ip, strconv.Itoa(port))
}

// linksAPI is where the lab's fault proxies take orders (toxiproxy's API).
func (s *Spec) linksAPI() string { return net.JoinHostPort(s.Subnet+".253", "8474") }

// planLinks lays out a loopback lab's links: from every place to every
// other, one per port the other serves (PostgreSQL, Redis and the app in
// a data region; the writer endpoint on a node), and one per etcd member
// port (peer and client), which every other member dials.
func (s *Spec) planLinks() {
	s.Links = nil
	places := s.places()
	for _, to := range places {
		var ports []int
		if to.Role == "active" || to.Role == "standby" {
			ports = append(ports, PortPostgres, PortRedis, PortApp)
		}
		if s.isNode(to.Name) {
			ports = append(ports, PortWriter)
		}
		for _, from := range places {
			if from.Name == to.Name {
				continue
			}
			for _, port := range ports {
				s.Links = append(s.Links, Link{Name: fmt.Sprintf("%s-%s-%d", from.Name, to.Name, port), From: from.Name, To: to.Name,
					Listen: s.hostPort(from, to, port), Upstream: net.JoinHostPort(to.IP, strconv.Itoa(port))})
			}
		}
	}
	if len(s.Nodes) > 1 {
		// Members dial each other at the peer port: the link carries the
		// latency to the member's peer filter, which cuts by sender.
		for _, n := range s.Nodes {
			s.Links = append(s.Links, Link{Name: fmt.Sprintf("etcd-%s", n.Name), From: "*", To: n.Name,
				Listen: net.JoinHostPort(n.IP, strconv.Itoa(PortPeer)), Upstream: net.JoinHostPort(n.IP, strconv.Itoa(PortPeer+filterPortOffset))})
		}
	}
}

func (s *Spec) isNode(name string) bool {
	for _, n := range s.Nodes {
		if n.Name == name {
			return true
		}
	}
	return false
}

// ServeLinks runs the fault proxies of the lab in dir, with half the
// round trip added each way, and toxiproxy's API at the lab's links
// address, until the process is killed (lab down does).
func ServeLinks(dir string) error {
	l, err := Load(dir)
	if err != nil {
		return err
	}
	if l.Net != NetLoopback {
		return fmt.Errorf("lab: the lab in %s runs in namespaces: it has no links", dir)
	}
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	for _, k := range l.Links {
		p := toxiproxy.NewProxy(srv, k.Name, k.Listen, k.Upstream)
		if err := srv.Collection.Add(p, true); err != nil {
			return fmt.Errorf("lab: link %s (%s → %s): %w", k.Name, k.Listen, k.Upstream, err)
		}
		if l.LatencyMS <= 0 {
			continue
		}
		for _, stream := range []string{"upstream", "downstream"} {
			js := fmt.Sprintf(`{"name":"latency-%s","type":"latency","stream":%q,"toxicity":1,"attributes":{"latency":%d}}`, stream, stream, l.LatencyMS/2)
			if _, err := p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
				return fmt.Errorf("lab: link %s latency: %w", k.Name, err)
			}
		}
	}
	filters, err := l.startPeerFilters()
	if err != nil {
		return err
	}
	go http.ListenAndServe(l.cutsAPI(), filters) //nolint:errcheck // the links' own API below reports a dead process
	host, port, _ := net.SplitHostPort(l.linksAPI())
	srv.Listen(host, port) // returns only by exiting the process
	return errors.New("lab: the links' API stopped")
}

// cutsAPI is where the peer filters take cuts: POST /cut?region=R&cut=1.
func (s *Spec) cutsAPI() string { return net.JoinHostPort(s.Subnet+".253", "8475") }

// peerFilters sit between each etcd member's link and the member. A
// link cannot tell which member dials (all dial the same advertised
// address), but etcd says it in every peer request (X-Server-From: the
// sender's member ID): a filter holds the requests of the members of a
// cut region until they give up, and ends those in flight when the cut
// starts. With the links' own cut, the region's member is cut off both
// ways, as in a real partition.
type peerFilters struct {
	mu       sync.Mutex
	regionOf map[string]string // member ID (hex) → region
	cut      map[string]bool   // regions cut off
	inflight map[string]map[*context.CancelFunc]bool
}

// startPeerFilters starts one filter per member, in front of its peer
// port; the handler it returns takes the cuts.
func (l *Lab) startPeerFilters() (*peerFilters, error) {
	f := &peerFilters{regionOf: map[string]string{}, cut: map[string]bool{}, inflight: map[string]map[*context.CancelFunc]bool{}}
	if len(l.Nodes) < 2 {
		return f, nil
	}
	token := "lifeboat-lab-" + l.ID // the lab's cluster name, as lifeboat serve makes etcd's token of it
	for _, n := range l.Nodes {
		urls, err := types.NewURLs([]string{fmt.Sprintf("http://%s:%d", n.IP, PortPeer)})
		if err != nil {
			return nil, err
		}
		f.regionOf[membership.NewMember(n.Name, urls, token, nil).ID.String()] = n.Name
	}
	for _, n := range l.Nodes {
		member := &url.URL{Scheme: "http", Host: net.JoinHostPort(n.IP, strconv.Itoa(PortPeer+memberPortOffset))}
		proxy := httputil.NewSingleHostReverseProxy(member)
		proxy.FlushInterval = -1 // raft's streams are long responses
		proxy.ErrorLog = log.New(io.Discard, "", 0)
		ln, err := net.Listen("tcp", net.JoinHostPort(n.IP, strconv.Itoa(PortPeer+filterPortOffset)))
		if err != nil {
			return nil, fmt.Errorf("lab: etcd peer filter of %s: %w", n.Name, err)
		}
		go http.Serve(ln, f.filter(proxy)) //nolint:errcheck // lives as long as the process
	}
	return f, nil
}

// filter passes the requests of members that are not cut off.
func (f *peerFilters) filter(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		region := f.regionOf[r.Header.Get("X-Server-From")]
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		f.mu.Lock()
		cut := f.cut[region]
		if !cut && region != "" {
			if f.inflight[region] == nil {
				f.inflight[region] = map[*context.CancelFunc]bool{}
			}
			f.inflight[region][&cancel] = true
			defer func() {
				f.mu.Lock()
				delete(f.inflight[region], &cancel)
				f.mu.Unlock()
			}()
		}
		f.mu.Unlock()
		if cut {
			<-ctx.Done() // a partition answers nothing
			return
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// ServeHTTP takes a cut: POST /cut?region=R&cut=1 (or 0 to mend).
func (f *peerFilters) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/cut" {
		http.Error(w, "POST /cut?region=R&cut=1|0", http.StatusNotFound)
		return
	}
	region, cut := r.URL.Query().Get("region"), r.URL.Query().Get("cut") == "1"
	f.mu.Lock()
	f.cut[region] = cut
	if cut {
		for c := range f.inflight[region] {
			(*c)()
		}
	}
	f.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// cutLinks cuts (or mends) every link into and out of region r: data
// stops flowing both ways on open connections, and new ones hang, as in
// a real partition (toxiproxy's timeout toxic with no timeout).
//
// The region's etcd member is cut both ways: its link, and the others'
// peer filters refuse what it sends them.
func (l *Lab) cutLinks(ctx context.Context, r Region, cut bool) error {
	cli := toxiclient.NewClient(l.linksAPI())
	var errs []error
	flag := "0"
	if cut {
		flag = "1"
	}
	if len(l.Nodes) > 1 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+l.cutsAPI()+"/cut?region="+url.QueryEscape(r.Name)+"&cut="+flag, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			errs = append(errs, fmt.Errorf("etcd peer filter: %w", err))
		} else {
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				errs = append(errs, fmt.Errorf("etcd peer filter: %s", resp.Status))
			}
		}
	}
	for _, k := range l.Links {
		if k.From != r.Name && k.To != r.Name {
			continue
		}
		p, err := cli.Proxy(k.Name)
		if err != nil {
			errs = append(errs, fmt.Errorf("link %s: %w", k.Name, err))
			continue
		}
		for _, stream := range []string{"upstream", "downstream"} {
			name := "cut-" + stream
			if cut {
				_, err = p.AddToxic(name, "timeout", stream, 1, toxiclient.Attributes{"timeout": 0})
			} else if err = p.RemoveToxic(name); err != nil && strings.Contains(err.Error(), "not found") {
				err = nil
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("link %s: %w", k.Name, err))
			}
		}
		if !cut {
			// The cut dropped what was sent meanwhile: the connections
			// that crossed it are broken; reset them, as TCP would after
			// a long partition.
			if err := p.Disable(); err != nil {
				errs = append(errs, fmt.Errorf("link %s: %w", k.Name, err))
			} else if err := p.Enable(); err != nil {
				errs = append(errs, fmt.Errorf("link %s: %w", k.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// partition cuts region r off from the others (or mends it): its veth
// link in a namespace lab, its fault proxies in a loopback lab.
func (l *Lab) partition(ctx context.Context, r Region, cut bool) error {
	if l.Net == NetLoopback {
		return l.cutLinks(ctx, r, cut)
	}
	return setLink(ctx, r, !cut)
}
