// Package lab runs a real multi-region lab on one machine: per region a
// network namespace (joined by a bridge, with netem latency between
// regions) or, without root or netem, a loopback address whose links to
// the other regions are fault proxies (toxiproxy) carrying the latency
// and the cuts; a PostgreSQL server (primary in the first region, a streaming
// standby in the second), a Redis (primary / replica), a file share, the
// sample application and a Lifeboat node; the third region is a witness
// that only runs a Lifeboat node. Everything the lab starts is recorded in
// its directory, so `lab down` leaves nothing behind.
package lab

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"
)

// DefaultDir is where the lab keeps its state unless told otherwise.
const DefaultDir = "/tmp/lifeboat-lab"

// Ports every region uses on its own address.
const (
	PortPostgres = 5432
	PortRedis    = 6379
	PortApp      = 8080
	PortAPI      = 7480
	PortHTTP     = 18080
	PortWriter   = 6432
	PortDNS      = 5353
	PortPeer     = 2380
	PortClient   = 2379
)

// Options shape a lab.
type Options struct {
	Dir string
	// Regions is 2 (two data regions; one Lifeboat node outside both) or
	// 3 (two data regions and a witness, a Lifeboat node in each).
	Regions int
	// Latency is the round trip between two regions.
	Latency time.Duration
	// Sync makes the standby synchronous.
	Sync bool
	// Net is NetNS, NetLoopback or "" (namespaces when this process is
	// root and the kernel has netem or no latency is asked; else loopback).
	Net string
	// Binary is the lifeboat program the nodes and the apps run.
	Binary string
	// PGBin holds the PostgreSQL 15 programs.
	PGBin  string
	Logger *slog.Logger
}

// Region is one failure domain of the lab.
type Region struct {
	Name string `json:"name"`
	Role string `json:"role"` // active, standby, witness; "control" for the node outside the regions
	NS   string `json:"ns"`   // network namespace ("" = the root namespace)
	Veth string `json:"veth,omitempty"`
	IP   string `json:"ip"`
}

// Spec is the lab as recorded in Dir/lab.json.
type Spec struct {
	ID        string   `json:"id"`
	Dir       string   `json:"dir"`
	Net       string   `json:"net"`
	Bridge    string   `json:"bridge,omitempty"`
	Subnet    string   `json:"subnet"`
	LatencyMS int      `json:"latency_ms"`
	Sync      bool     `json:"sync"`
	Regions   []Region `json:"regions"`
	Nodes     []Region `json:"nodes"` // where the Lifeboat nodes run
	Password  string   `json:"password"`
	// Token is the nodes' API token (role admin): the API refuses
	// unauthenticated calls off loopback.
	Token   string    `json:"token"`
	Config  string    `json:"config"`
	Binary  string    `json:"binary"`
	PGBin   string    `json:"pg_bin"`
	Created time.Time `json:"created"`
	// Pids of the processes the lab started, by "region/name".
	Pids map[string]int `json:"pids"`
	// Links are a loopback lab's fault proxies.
	Links []Link `json:"links,omitempty"`
	// Notes say what the lab could not do as asked.
	Notes []string `json:"notes,omitempty"`
}

// Lab is a running lab.
type Lab struct {
	Spec
	logger *slog.Logger
	pgUID  int
	pgGID  int
}

// ErrNoLab: the directory holds no lab.
var ErrNoLab = errors.New("lab: no lab here (lifeboat lab up starts one)")

// Load reads the lab recorded in dir.
func Load(dir string) (*Lab, error) {
	b, err := os.ReadFile(filepath.Join(dir, "lab.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoLab, dir)
	}
	if err != nil {
		return nil, err
	}
	l := &Lab{logger: slog.New(slog.DiscardHandler)}
	if err := json.Unmarshal(b, &l.Spec); err != nil {
		return nil, fmt.Errorf("lab: %s/lab.json is corrupt: %w", dir, err)
	}
	if err := l.account(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Lab) save() error {
	b, _ := json.MarshalIndent(l.Spec, "", "  ")
	tmp := filepath.Join(l.Dir, "lab.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(l.Dir, "lab.json"))
}

// account finds the unprivileged user the servers run as: postgres when
// the lab runs as root, else the lab's own user.
func (l *Lab) account() error {
	if os.Geteuid() != 0 {
		l.pgUID, l.pgGID = os.Geteuid(), os.Getegid()
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("lab: the servers run as the postgres user, and there is none (apt-get install -y postgresql-15): %w", err)
	}
	l.pgUID, _ = strconv.Atoi(u.Uid)
	l.pgGID, _ = strconv.Atoi(u.Gid)
	return nil
}

// newSpec lays out a lab: names, addresses, ports.
func newSpec(opts Options) (*Spec, error) {
	if opts.Regions != 2 && opts.Regions != 3 {
		return nil, fmt.Errorf("lab: --regions %d: use 2 or 3", opts.Regions)
	}
	var b [3]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	n := int(b[0])%200 + 20
	s := &Spec{
		ID: id, Dir: opts.Dir, Net: opts.Net, Bridge: "lb" + id, Subnet: fmt.Sprintf("10.%d.%d", 100+int(b[1])%100, n),
		LatencyMS: int(opts.Latency / time.Millisecond), Sync: opts.Sync,
		Password: hex.EncodeToString(b[:]) + randomHex(8), Token: "lab-" + randomHex(16), Binary: opts.Binary, PGBin: opts.PGBin,
		Created: time.Now().UTC(), Pids: map[string]int{},
	}
	names := []string{"east", "west", "witness"}
	roles := []string{"active", "standby", "witness"}
	if s.Net == NetLoopback {
		// Addresses in 127/8 need no setup: every one is this machine's.
		s.Bridge, s.Subnet = "", fmt.Sprintf("127.%d.%d", 100+int(b[1])%100, n)
	}
	for i := 0; i < opts.Regions; i++ {
		r := Region{Name: names[i], Role: roles[i], IP: fmt.Sprintf("%s.%d", s.Subnet, i+1)}
		if s.Net == NetNS {
			r.NS, r.Veth = fmt.Sprintf("lb%s-%s", id, names[i]), fmt.Sprintf("lb%s%d", id, i+1)
		}
		s.Regions = append(s.Regions, r)
	}
	if opts.Regions == 3 {
		s.Nodes = s.Regions
	} else {
		s.Nodes = []Region{{Name: "control", Role: "control", IP: s.Subnet + ".254"}}
	}
	if s.Net == NetLoopback {
		s.planLinks()
	}
	return s, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Region returns the named region.
func (s *Spec) Region(name string) (Region, bool) {
	for _, r := range s.Regions {
		if r.Name == name {
			return r, true
		}
	}
	return Region{}, false
}

// DataRegions are the regions with services (not the witness).
func (s *Spec) DataRegions() []Region {
	var out []Region
	for _, r := range s.Regions {
		if r.Role != "witness" {
			out = append(out, r)
		}
	}
	return out
}

// APIURL is the API of the Lifeboat node running at n.
func (n Region) APIURL() string { return fmt.Sprintf("http://%s:%d", n.IP, PortAPI) }

// FrontDoor is the global HTTP endpoint clients use: the front door of the
// last node (the witness, or the node outside the regions), which no
// region outage takes down.
func (s *Spec) FrontDoor() string {
	return fmt.Sprintf("http://%s:%d", s.Nodes[len(s.Nodes)-1].IP, PortHTTP)
}

// AppHost is the host name the front door routes to the sample app.
const AppHost = "app.lab"

// PGDSN is the lab database at host:port.
func (s *Spec) PGDSN(host string, port int) string {
	return fmt.Sprintf("postgres://lifeboat:%s@%s:%d/lab?sslmode=disable&connect_timeout=3", s.Password, host, port)
}
