package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PGUser is the superuser (and replication user) of test clusters.
const PGUser = "lifeboat"

const pgInstall = "apt-get install -y postgresql-15, or set LIFEBOAT_PG_BIN to its bin directory"

// PGOptions shapes a primary/standby pair.
type PGOptions struct {
	// Sync makes the standby synchronous (synchronous_standby_names).
	Sync bool
	// Settings are extra postgresql.conf lines for both servers.
	Settings map[string]string
}

// PGNode is one PostgreSQL server.
type PGNode struct {
	// Name is also the server's cluster_name and, on a standby, its
	// application_name in pg_stat_replication.
	Name     string
	DataDir  string
	Port     int
	Password string

	bin     string
	account runAs

	mu      sync.Mutex
	running bool
}

// PGPair is a primary with one streaming standby.
type PGPair struct {
	Primary *PGNode
	Standby *PGNode
}

// PGBin is the directory of the PostgreSQL 15 programs.
func PGBin(t testing.TB) string {
	t.Helper()
	dirs := []string{"/usr/lib/postgresql/15/bin"}
	if d := os.Getenv("LIFEBOAT_PG_BIN"); d != "" {
		dirs = append([]string{d}, dirs...)
	}
	return filepath.Dir(lookBinary(t, "initdb", pgInstall, dirs...))
}

// StartPostgres starts a primary and a standby that streams from it
// (initdb, then pg_basebackup -R), waits until the standby streams, and
// registers their shutdown and removal with t.Cleanup.
func StartPostgres(t testing.TB, opts PGOptions) *PGPair {
	t.Helper()
	bin := PGBin(t)
	ver := strings.TrimSpace(serverAccount(t).run(t, nil, filepath.Join(bin, "postgres"), "--version"))
	if !strings.Contains(ver, " 15.") {
		t.Fatalf("testenv: need PostgreSQL 15, found %q (%s)", ver, pgInstall)
	}
	acct := serverAccount(t)
	root := acct.tempDir(t, "lifeboat-pg-")
	password := randomToken()

	primary := &PGNode{Name: "primary", DataDir: filepath.Join(root, "primary"), Port: FreePort(t), Password: password, bin: bin, account: acct}
	pwfile := filepath.Join(root, "pwfile")
	if err := os.WriteFile(pwfile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if acct.root {
		if err := os.Chown(pwfile, int(acct.uid), int(acct.gid)); err != nil {
			t.Fatal(err)
		}
	}
	acct.run(t, nil, filepath.Join(bin, "initdb"), "-D", primary.DataDir, "-U", PGUser, "--pwfile", pwfile,
		"--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync")
	settings := map[string]string{
		"listen_addresses":             "'127.0.0.1'",
		"unix_socket_directories":      "''",
		"wal_level":                    "replica",
		"max_wal_senders":              "10",
		"max_replication_slots":        "10",
		"wal_keep_size":                "'256MB'",
		"hot_standby":                  "on",
		"hot_standby_feedback":         "on",
		"wal_log_hints":                "on",  // pg_rewind needs it
		"fsync":                        "off", // test data only; replication is still real
		"full_page_writes":             "on",
		"shared_buffers":               "'32MB'",
		"max_connections":              "50",
		"wal_receiver_status_interval": "'1s'",
		"logging_collector":            "off",
	}
	for k, v := range opts.Settings {
		settings[k] = v
	}
	primary.writeConf(t, settings)
	t.Cleanup(func() { primary.dumpLogOnFailure(t) })
	t.Cleanup(func() { primary.stopForCleanup() })
	primary.Start(t)

	standby := &PGNode{Name: "standby", DataDir: filepath.Join(root, "standby"), Port: FreePort(t), Password: password, bin: bin, account: acct}
	acct.run(t, []string{"PGPASSWORD=" + password}, filepath.Join(bin, "pg_basebackup"),
		"-h", "127.0.0.1", "-p", strconv.Itoa(primary.Port), "-U", PGUser,
		"-D", standby.DataDir, "-R", "-X", "stream", "-c", "fast", "--no-sync")
	standby.writeConf(t, nil)
	t.Cleanup(func() { standby.dumpLogOnFailure(t) })
	t.Cleanup(func() { standby.stopForCleanup() })
	standby.Start(t)

	pair := &PGPair{Primary: primary, Standby: standby}
	pair.WaitStreaming(t)
	if opts.Sync {
		primary.Exec(t, fmt.Sprintf("ALTER SYSTEM SET synchronous_standby_names = '%s'", standby.Name))
		primary.Exec(t, "SELECT pg_reload_conf()")
		waitFor(t, "synchronous standby", 30*time.Second, func() error {
			var state string
			err := primary.QueryRow(t, "SELECT coalesce(max(sync_state), '') FROM pg_stat_replication WHERE application_name = $1", standby.Name).Scan(&state)
			if err != nil {
				return err
			}
			if state != "sync" {
				return fmt.Errorf("sync_state %q", state)
			}
			return nil
		})
	}
	return pair
}

// WaitStreaming waits until the primary reports the standby streaming.
func (p *PGPair) WaitStreaming(t testing.TB) {
	t.Helper()
	waitFor(t, "standby streaming", 60*time.Second, func() error {
		var state string
		err := p.Primary.QueryRow(t, "SELECT coalesce(max(state), '') FROM pg_stat_replication WHERE application_name = $1", p.Standby.Name).Scan(&state)
		if err != nil {
			return err
		}
		if state != "streaming" {
			return fmt.Errorf("replication state %q", state)
		}
		return nil
	})
}

// writeConf appends settings, the port and cluster_name to postgresql.conf;
// later lines win, so a standby copied from the primary gets its own port.
func (n *PGNode) writeConf(t testing.TB, settings map[string]string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("\n# testenv\n")
	for k, v := range settings {
		fmt.Fprintf(&b, "%s = %s\n", k, v)
	}
	fmt.Fprintf(&b, "port = %d\ncluster_name = '%s'\n", n.Port, n.Name)
	f, err := os.OpenFile(filepath.Join(n.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer f.Close()
	if _, err := f.WriteString(b.String()); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

func (n *PGNode) logFile() string { return n.DataDir + ".log" }

// Start starts the server and waits until it accepts connections.
func (n *PGNode) Start(t testing.TB) {
	t.Helper()
	n.account.run(t, nil, filepath.Join(n.bin, "pg_ctl"), "-D", n.DataDir, "-l", n.logFile(), "-w", "-t", "60", "start")
	n.mu.Lock()
	n.running = true
	n.mu.Unlock()
}

// Stop stops the server: mode is smart, fast or immediate (a crash).
func (n *PGNode) Stop(t testing.TB, mode string) {
	t.Helper()
	if err := n.stop(mode); err != nil {
		t.Fatalf("testenv: stop %s: %v", n.Name, err)
	}
}

func (n *PGNode) stop(mode string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.running {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := n.account.command(ctx, nil, filepath.Join(n.bin, "pg_ctl"), "-D", n.DataDir, "-m", mode, "-w", "stop").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	n.running = false
	return nil
}

// stopForCleanup stops the server (immediate) if pg_ctl status finds it
// running, whoever started it: a test may stop and start it with other
// tools (pg_ctl through a runbook action), so the running flag may be wrong.
func (n *PGNode) stopForCleanup() {
	n.mu.Lock()
	defer n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if n.account.command(ctx, nil, filepath.Join(n.bin, "pg_ctl"), "-D", n.DataDir, "status").Run() != nil {
		n.running = false
		return // not running (exit 3), or no data directory left (exit 4)
	}
	_ = n.account.command(ctx, nil, filepath.Join(n.bin, "pg_ctl"), "-D", n.DataDir, "-m", "immediate", "-w", "stop").Run()
	n.running = false
}

// Bin is the directory of the PostgreSQL programs this server runs.
func (n *PGNode) Bin() string { return n.bin }

// OSUser is the OS account the server runs as: "postgres" (or "nobody")
// when the tests run as root, else the current user.
func (n *PGNode) OSUser() string { return n.account.name }

// ReplicationConnInfo is a libpq key=value connection string for the
// superuser (also the replication user) with its password, to database
// postgres: what a standby's primary_conninfo, pg_basebackup -d or
// pg_rewind --source-server take.
func (n *PGNode) ReplicationConnInfo() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=postgres sslmode=disable connect_timeout=5",
		n.Port, PGUser, n.Password)
}

func (n *PGNode) dumpLogOnFailure(t testing.TB) {
	if t.Failed() {
		t.Logf("testenv: last lines of %s's log:\n%s", n.Name, tail(n.logFile(), 4000))
	}
}

// DSN is a connection string for the superuser, with its password.
func (n *PGNode) DSN() string {
	return n.DSNFor("postgres")
}

// DSNFor is the DSN of a database on this server.
func (n *PGNode) DSNFor(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(PGUser, n.Password),
		Host:     fmt.Sprintf("127.0.0.1:%d", n.Port),
		Path:     "/" + db,
		RawQuery: "sslmode=disable&connect_timeout=5",
	}
	return u.String()
}

// Conn opens a connection closed when the test ends.
func (n *PGNode) Conn(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, n.DSN())
	if err != nil {
		t.Fatalf("testenv: connect to %s: %v", n.Name, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// Exec runs SQL on a new connection and fails the test on error.
func (n *PGNode) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, n.DSN())
	if err != nil {
		t.Fatalf("testenv: connect to %s: %v", n.Name, err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("testenv: %s on %s: %v", sql, n.Name, err)
	}
}

// QueryRow runs a query on a new connection; connection errors come back
// through Scan, so it can be polled.
func (n *PGNode) QueryRow(t testing.TB, sql string, args ...any) pgx.Row {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := pgx.Connect(ctx, n.DSN())
	if err != nil {
		cancel()
		return errRow{err}
	}
	return closingRow{row: c.QueryRow(ctx, sql, args...), close: func() { c.Close(context.Background()); cancel() }}
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

type closingRow struct {
	row   pgx.Row
	close func()
}

func (r closingRow) Scan(dest ...any) error {
	defer r.close()
	return r.row.Scan(dest...)
}

func randomToken() string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}
