package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lifeboat-dr/lifeboat/api"
	"github.com/lifeboat-dr/lifeboat/netfilter"
)

// Up starts a lab in opts.Dir: in network namespaces as root, on loopback
// addresses with fault proxies otherwise (see Options.Net). On failure it
// removes what it made.
func Up(ctx context.Context, opts Options) (l *Lab, err error) {
	var notes []string
	switch opts.Net {
	case NetNS:
		if os.Geteuid() != 0 {
			return nil, errors.New("lab: --net netns needs root to create network namespaces, veth links and netem latency (run it with sudo, or use --net loopback)")
		}
	case NetLoopback:
	case "":
		opts.Net = NetLoopback
		switch {
		case os.Geteuid() != 0:
			notes = append(notes, "not root: regions are loopback addresses joined by fault proxies (toxiproxy), not network namespaces")
		case opts.Latency > 0 && !netemWorks(ctx):
			notes = append(notes, fmt.Sprintf("netem is not available in this kernel: regions are loopback addresses joined by fault proxies (toxiproxy), which carry the %s", opts.Latency))
		default:
			opts.Net = NetNS
		}
	default:
		return nil, fmt.Errorf("lab: network %q: use %s or %s", opts.Net, NetNS, NetLoopback)
	}
	if opts.Dir == "" {
		opts.Dir = DefaultDir
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if _, err := os.Stat(filepath.Join(opts.Dir, "lab.json")); err == nil {
		return nil, fmt.Errorf("lab: a lab already runs in %s (lifeboat lab down first)", opts.Dir)
	}
	progs := []string{"redis-server", filepath.Join(opts.PGBin, "initdb")}
	if opts.Net == NetNS {
		progs = append(progs, "ip", "tc", "runuser")
	} else if os.Geteuid() == 0 {
		progs = append(progs, "runuser")
	}
	for _, prog := range progs {
		if _, err := exec.LookPath(prog); err != nil {
			return nil, fmt.Errorf("lab: %s is missing (scripts/deps.sh installs what the lab needs): %w", prog, err)
		}
	}
	spec, err := newSpec(opts)
	if err != nil {
		return nil, err
	}
	spec.Notes = append(spec.Notes, notes...)
	l = &Lab{Spec: *spec, logger: opts.Logger}
	if err := l.account(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(l.Dir, 0o755); err != nil {
		return nil, err
	}
	os.Chmod(l.Dir, 0o755)
	if err := l.save(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			l.Down(cctx)
		}
	}()
	steps := []struct {
		what string
		do   func(context.Context) error
	}{
		{"network", l.createNetwork},
		{"postgres", l.startPostgres},
		{"redis", l.startRedis},
		{"shares", l.makeShares},
		{"lifeboat", l.startNodes},
		{"apps", l.startApps},
		{"ready", l.waitReady},
	}
	for _, st := range steps {
		l.logger.Info("lab: "+st.what, "lab", l.ID)
		if err := st.do(ctx); err != nil {
			return l, fmt.Errorf("lab up (%s): %w%s", st.what, err, l.logTails())
		}
	}
	return l, nil
}

func (l *Lab) startPostgres(ctx context.Context) error {
	data := l.DataRegions()
	primary, standby := data[0], data[1]
	for _, r := range data {
		sock := filepath.Join(l.regionDir(r), "sock")
		if err := os.MkdirAll(l.pgDir(r), 0o700); err != nil {
			return err
		}
		if err := os.MkdirAll(sock, 0o755); err != nil {
			return err
		}
		os.Chmod(l.regionDir(r), 0o755)
		// The data directory's parent belongs to postgres too: a
		// reprotect keeps the old data and configuration beside it.
		if err := l.chown(filepath.Dir(l.pgDir(r)), l.pgDir(r), sock); err != nil {
			return err
		}
	}
	pw := filepath.Join(l.regionDir(primary), "pwfile")
	if err := os.WriteFile(pw, []byte(l.Password+"\n"), 0o600); err != nil {
		return err
	}
	if err := l.chown(pw); err != nil {
		return err
	}
	if err := l.runIn(ctx, Region{Name: primary.Name}, "postgres", filepath.Join(l.PGBin, "initdb"), "-D", l.pgDir(primary), "-U", "lifeboat",
		"--pwfile="+pw, "-A", "scram-sha-256", "--no-sync"); err != nil {
		return err
	}
	os.Remove(pw)
	conf := fmt.Sprintf(`
listen_addresses = '%%s'
port = %d
unix_socket_directories = '%%s'
cluster_name = '%%s'
wal_level = replica
max_wal_senders = 10
hot_standby = on
wal_log_hints = on
fsync = off
`, PortPostgres)
	if err := appendFile(filepath.Join(l.pgDir(primary), "postgresql.conf"), fmt.Sprintf(conf, primary.IP, filepath.Join(l.regionDir(primary), "sock"), primary.Name)); err != nil {
		return err
	}
	if err := appendFile(filepath.Join(l.pgDir(primary), "pg_hba.conf"), "host all all 0.0.0.0/0 scram-sha-256\nhost replication all 0.0.0.0/0 scram-sha-256\n"); err != nil {
		return err
	}
	if err := l.startPostgresIn(primary); err != nil {
		return err
	}
	admin := fmt.Sprintf("postgres://lifeboat:%s@%s:%d/postgres?sslmode=disable&connect_timeout=2", l.Password, primary.IP, PortPostgres)
	if err := waitPG(ctx, admin, "CREATE DATABASE lab"); err != nil {
		return err
	}
	phost, pport, _ := net.SplitHostPort(l.hostPort(standby, primary, PortPostgres))
	if err := l.runIn(ctx, standby, "postgres", filepath.Join(l.PGBin, "pg_basebackup"), "-h", phost, "-p", pport, "-U", "lifeboat",
		"-D", l.pgDir(standby), "-R", "-X", "stream", "-c", "fast", "--no-sync"); err != nil {
		return err
	}
	if err := appendFile(filepath.Join(l.pgDir(standby), "postgresql.conf"), fmt.Sprintf(conf, standby.IP, filepath.Join(l.regionDir(standby), "sock"), standby.Name)); err != nil {
		return err
	}
	if err := l.startPostgresIn(standby); err != nil {
		return err
	}
	if err := waitPG(ctx, l.PGDSN(standby.IP, PortPostgres), ""); err != nil {
		return err
	}
	if l.Sync {
		// Synchronous once the standby streams (earlier, the primary's
		// own setup would wait for it).
		if err := waitPG(ctx, admin, "ALTER SYSTEM SET synchronous_standby_names = '*'"); err != nil {
			return err
		}
		return waitPG(ctx, admin, "SELECT pg_reload_conf()")
	}
	return nil
}

// logTails is the end of every log the lab wrote, for an error message
// (the directory is removed when lab up fails).
func (l *Lab) logTails() string {
	files, _ := filepath.Glob(filepath.Join(l.Dir, "logs", "*.log"))
	return tails(files, filepath.Base)
}

// tails is the last lines of each file that has some, each under its
// name as label gives it.
func tails(files []string, label func(string) string) string {
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil || len(data) == 0 {
			continue
		}
		if len(data) > 1500 {
			data = data[len(data)-1500:]
		}
		fmt.Fprintf(&b, "\n--- %s (last lines)\n%s", label(f), data)
	}
	return b.String()
}

// pgLogTails is the end of region r's PostgreSQL logs: the one of the
// server the lab started and the one of a server a runbook restarted.
func (l *Lab) pgLogTails(r Region) string {
	return tails([]string{filepath.Join(l.Dir, "logs", r.Name+"-postgres.log"), l.pgDir(r) + ".log"}, func(f string) string { return f })
}

// restartPostgres starts region r's killed PostgreSQL server again and
// waits until it answers. A server that exits while it starts is started
// again, up to three times: under load, what its killed predecessor held
// may take a moment to go.
func (l *Lab) restartPostgres(ctx context.Context, r Region) error {
	err := l.restart(r.Name+"/postgres", func() error {
		l.waitPostmasterGone(r)
		return l.startPostgresIn(r)
	}, func(alive func() bool) error {
		return waitPGWhile(ctx, l.PGDSN(r.IP, PortPostgres), "", alive)
	})
	if err != nil {
		return fmt.Errorf("lab: %s's database: %w%s", r.Name, err, l.pgLogTails(r))
	}
	return nil
}

// startPostgresIn starts region r's PostgreSQL server on its data
// directory, as the postgres user.
func (l *Lab) startPostgresIn(r Region) error {
	return l.daemon(r, "postgres", "postgres", filepath.Join(l.PGBin, "postgres"), "-D", l.pgDir(r))
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// waitPG waits until the server at dsn answers, then runs sql if set.
func waitPG(ctx context.Context, dsn, sql string) error {
	return waitPGWhile(ctx, dsn, sql, nil)
}

// errServerExited says the server waited for has exited.
var errServerExited = errors.New("the server exited")

// waitPGWhile is waitPG that gives up early once alive (when set) says
// the server's process has exited.
func waitPGWhile(ctx context.Context, dsn, sql string, alive func() bool) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		if alive != nil && !alive() {
			return errServerExited
		}
		c, err := pgx.Connect(ctx, dsn)
		if err == nil {
			if sql != "" {
				_, err = c.Exec(ctx, sql)
			}
			c.Close(context.Background())
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not answer within 60s: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (l *Lab) startRedis(ctx context.Context) error {
	data := l.DataRegions()
	for i, r := range data {
		replicaOf := ""
		if i > 0 {
			replicaOf = l.hostPort(r, data[0], PortRedis)
		}
		if err := l.startRedisIn(r, replicaOf); err != nil {
			return err
		}
	}
	for _, r := range data {
		if err := waitTCP(ctx, net.JoinHostPort(r.IP, strconv.Itoa(PortRedis))); err != nil {
			return fmt.Errorf("redis in %s: %w", r.Name, err)
		}
	}
	return nil
}

// startRedisIn starts region r's Redis, a replica of replicaOf (host:port)
// when set.
func (l *Lab) startRedisIn(r Region, replicaOf string) error {
	dir := filepath.Join(l.regionDir(r), "redis")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := l.chown(dir); err != nil {
		return err
	}
	args := []string{"redis-server", "--bind", r.IP, "--port", strconv.Itoa(PortRedis), "--dir", dir,
		"--requirepass", l.Password, "--masterauth", l.Password, "--save", "", "--appendonly", "no",
		"--repl-diskless-sync-delay", "0", "--protected-mode", "no"}
	if replicaOf != "" {
		host, port, _ := net.SplitHostPort(replicaOf)
		args = append(args, "--replicaof", host, port)
	}
	return l.daemon(r, "redis", "postgres", args...)
}

func waitTCP(ctx context.Context, addr string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (l *Lab) makeShares(ctx context.Context) error {
	for _, r := range l.DataRegions() {
		if err := os.MkdirAll(l.shareDir(r), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// startNodes writes each node's configuration (the same topology; the
// addresses as seen from the node's region) and starts the nodes.
func (l *Lab) startNodes(ctx context.Context) error {
	l.Config = l.nodeConfig(l.Nodes[len(l.Nodes)-1])
	for _, n := range l.Nodes {
		if err := os.WriteFile(l.nodeConfig(n), []byte(l.configYAML(n)), 0o600); err != nil {
			return err
		}
	}
	for _, n := range l.Nodes {
		if err := l.startNode(n); err != nil {
			return err
		}
	}
	return nil
}

// nodeConfig is where node n's configuration is.
func (l *Lab) nodeConfig(n Region) string {
	return filepath.Join(l.Dir, "lifeboat-"+n.Name+".yaml")
}

// startNode starts the Lifeboat node n.
func (l *Lab) startNode(n Region) error {
	return l.daemon(n, "lifeboat", "", l.Binary, "serve", "-c", l.nodeConfig(n), "--node", n.Name,
		"--listen", net.JoinHostPort(n.IP, strconv.Itoa(PortAPI)), "--data-dir", filepath.Join(l.Dir, n.Name, "lifeboat"), "--log-format", "json")
}

// writerFor is the writer endpoint region r's sample app uses: that of
// the Lifeboat node in its region, or of the node outside the regions.
func (l *Lab) writerFor(r Region) string {
	for _, n := range l.Nodes {
		if n.Name == r.Name {
			if l.Net == NetNS {
				return net.JoinHostPort(n.IP, strconv.Itoa(PortWriter))
			}
			return l.hostPort(r, n, PortWriter)
		}
	}
	return l.hostPort(r, l.Nodes[0], PortWriter)
}

func (l *Lab) startApps(ctx context.Context) error {
	for _, r := range l.DataRegions() {
		if err := l.startApp(r); err != nil {
			return err
		}
	}
	return nil
}

// startApp starts region r's sample app. It writes through the Lifeboat
// writer endpoint of the node that serves its region; the password comes
// from LAB_PASSWORD.
func (l *Lab) startApp(r Region) error {
	return l.daemon(r, "app", "", l.Binary, "lab", "app", "--listen", net.JoinHostPort(r.IP, strconv.Itoa(PortApp)),
		"--region", r.Name, "--db", l.writerFor(r))
}

// waitReady waits until every node answers and the standby is ready to
// take over.
func (l *Lab) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		st, err := l.NodeStatus(ctx, l.Nodes[len(l.Nodes)-1])
		ready := false
		if err == nil {
			for _, rd := range st.Readiness {
				ready = ready || rd.Ready
			}
		}
		if ready {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				b, _ := json.Marshal(st.Readiness)
				err = fmt.Errorf("no standby ready: %s", b)
			}
			return fmt.Errorf("the lab did not become ready within 90s: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// NodeStatus asks one node for its status.
func (l *Lab) NodeStatus(ctx context.Context, n Region) (api.StatusResponse, error) {
	var st api.StatusResponse
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return st, l.call(ctx, n, http.MethodGet, "/api/v1/status", nil, &st)
}

// Down stops everything the lab started and removes its namespaces,
// links and directory.
func (l *Lab) Down(ctx context.Context) error {
	for _, r := range append(append([]Region(nil), l.Regions...), l.Nodes...) {
		l.killRegion(ctx, r)
	}
	l.killProcess(Region{Name: "lab"}, "links")
	time.Sleep(200 * time.Millisecond)
	var errs []error
	if l.Net == NetNS {
		deleteNetwork(ctx, &l.Spec)
	}
	if os.Geteuid() == 0 {
		// The killed nodes' NAT tables on the host's network (a node
		// outside the regions' namespaces, or every node of a loopback
		// lab): no node will route the lab's addresses again. Tables in
		// a namespace went with it.
		ips := map[netip.Addr]bool{}
		for _, r := range append(append([]Region(nil), l.Regions...), l.Nodes...) {
			if a, err := netip.ParseAddr(r.IP); err == nil {
				ips[a] = true
			}
		}
		// A node just killed may take a moment to exit.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			living, err := netfilter.RemoveOrphans(func(a netip.AddrPort) bool { return ips[a.Addr()] })
			if err != nil {
				errs = append(errs, fmt.Errorf("lab: %w", err))
			}
			if err != nil || living == 0 || time.Now().After(deadline) {
				break
			}
		}
	}
	if l.Dir == "" || l.Dir == "/" {
		return errors.New("lab: refusing to remove the directory " + l.Dir)
	}
	return errors.Join(append(errs, os.RemoveAll(l.Dir))...)
}
