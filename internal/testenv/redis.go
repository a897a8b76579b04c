package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const redisInstall = "apt-get install -y redis-server"

// RedisNode is one redis-server process.
type RedisNode struct {
	Name     string
	Port     int
	Password string
	Dir      string

	bin     string
	args    []string
	account runAs

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// RedisPair is a primary with one replica.
type RedisPair struct {
	Primary *RedisNode
	Replica *RedisNode
}

// StartRedis starts a primary and a replica of it (replicaof), both with a
// password, and waits until the replica's link to the primary is up.
func StartRedis(t testing.TB) *RedisPair {
	t.Helper()
	bin := lookBinary(t, "redis-server", redisInstall)
	acct := serverAccount(t)
	root := acct.tempDir(t, "lifeboat-redis-")
	password := randomToken()
	primary := newRedisNode(t, "primary", bin, acct, root, password)
	primary.Start(t)
	replica := newRedisNode(t, "replica", bin, acct, root, password, "--replicaof", "127.0.0.1", strconv.Itoa(primary.Port))
	replica.Start(t)
	pair := &RedisPair{Primary: primary, Replica: replica}
	rc := replica.Client(t)
	waitFor(t, "redis replica link", 30*time.Second, func() error {
		info, err := rc.Info(context.Background(), "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("replica not linked:\n%s", info)
		}
		return nil
	})
	return pair
}

func newRedisNode(t testing.TB, name, bin string, acct runAs, root, password string, extra ...string) *RedisNode {
	t.Helper()
	n := &RedisNode{Name: name, Port: FreePort(t), Password: password, Dir: filepath.Join(root, name), bin: bin, account: acct}
	if err := os.Mkdir(n.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if acct.root {
		if err := os.Chown(n.Dir, int(acct.uid), int(acct.gid)); err != nil {
			t.Fatal(err)
		}
	}
	n.args = append([]string{
		"--port", strconv.Itoa(n.Port), "--bind", "127.0.0.1", "--dir", n.Dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		"--requirepass", password, "--masterauth", password,
		"--logfile", filepath.Join(n.Dir, "redis.log"),
		"--repl-ping-replica-period", "1",
		// A replica syncs at once instead of after diskless sync's 5s wait.
		"--repl-diskless-sync-delay", "0",
	}, extra...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testenv: last lines of redis %s's log:\n%s", n.Name, tail(filepath.Join(n.Dir, "redis.log"), 4000))
		}
	})
	t.Cleanup(n.kill)
	return n
}

// Start starts the server (again) and waits until it answers PING.
func (n *RedisNode) Start(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	if n.cmd != nil {
		n.mu.Unlock()
		t.Fatalf("testenv: redis %s is already running", n.Name)
	}
	cmd := n.account.command(context.Background(), nil, n.bin, n.args...)
	if err := cmd.Start(); err != nil {
		n.mu.Unlock()
		t.Fatalf("testenv: start redis %s: %v", n.Name, err)
	}
	n.cmd = cmd
	n.done = make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(n.done)
	n.mu.Unlock()
	c := n.Client(t)
	waitFor(t, "redis "+n.Name, 15*time.Second, func() error {
		return c.Ping(context.Background()).Err()
	})
}

// Kill stops the server at once (SIGKILL), as a crash would.
func (n *RedisNode) Kill(t testing.TB) {
	t.Helper()
	n.kill()
}

func (n *RedisNode) kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	<-n.done
	n.cmd = nil
}

// Addr is host:port.
func (n *RedisNode) Addr() string { return fmt.Sprintf("127.0.0.1:%d", n.Port) }

// URL is a redis:// URL with the password.
func (n *RedisNode) URL() string {
	return fmt.Sprintf("redis://:%s@%s/0", n.Password, n.Addr())
}

// Client returns a client closed when the test ends.
func (n *RedisNode) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: n.Addr(), Password: n.Password, DialTimeout: 2 * time.Second, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return c
}
