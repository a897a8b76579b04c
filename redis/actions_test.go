package redis

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

// actionCtx is the context of one action in these tests.
func actionCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it returns nil, and fails the test with its
// last error when that takes longer than timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// replicationInfo reads INFO replication of n with a client of its own.
func replicationInfo(t *testing.T, n *testenv.RedisNode) map[string]string {
	t.Helper()
	s, err := n.Client(t).Info(t.Context(), "replication").Result()
	if err != nil {
		t.Fatalf("INFO replication on %s: %v", n.Name, err)
	}
	return parseInfo(s)
}

func mustFenced(t *testing.T, n *testenv.RedisNode, want bool) {
	t.Helper()
	got, err := IsFenced(actionCtx(t), n.URL())
	if err != nil {
		t.Fatalf("IsFenced(%s): %v", n.Name, err)
	}
	if got != want {
		t.Fatalf("IsFenced(%s) = %v, want %v", n.Name, got, want)
	}
}

func wantResult(t *testing.T, what string, got Result, err error, want Result) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if got != want {
		t.Fatalf("%s = %+v, want %+v", what, got, want)
	}
}

// TestFailoverActions walks one failover: fence the primary, promote the
// replica, make the old primary a replica of the new one; each action twice.
func TestFailoverActions(t *testing.T) {
	t.Parallel()
	pair := testenv.StartRedis(t)
	oldPrimary, newPrimary := pair.Primary, pair.Replica
	ctx := actionCtx(t)

	// A client connected before the fence, on one pooled connection.
	before := goredis.NewClient(&goredis.Options{Addr: oldPrimary.Addr(), Password: oldPrimary.Password, PoolSize: 1, MaxRetries: -1})
	defer before.Close()
	if err := before.Set(ctx, "before-fence", "1", 0).Err(); err != nil {
		t.Fatalf("SET before the fence: %v", err)
	}
	beforeID, err := before.ClientID(ctx).Result()
	if err != nil {
		t.Fatalf("CLIENT ID: %v", err)
	}

	mustFenced(t, oldPrimary, false)
	res, err := Fence(ctx, oldPrimary.URL())
	wantResult(t, "Fence", res, err, Result{Already: false, Role: "master"})
	mustFenced(t, oldPrimary, true)

	c := oldPrimary.Client(t)
	err = c.Set(ctx, "after-fence", "1", 0).Err()
	if err == nil || !strings.HasPrefix(err.Error(), "NOREPLICAS") {
		t.Fatalf("SET on the fenced primary: %v, want NOREPLICAS", err)
	}
	if v, err := c.Get(ctx, "before-fence").Result(); err != nil || v != "1" {
		t.Fatalf("GET on the fenced primary = %q, %v; want \"1\"", v, err)
	}
	eventually(t, 5*time.Second, "client connected before the fence disconnected", func() error {
		list, err := c.ClientList(ctx).Result()
		if err != nil {
			return err
		}
		if strings.Contains(list, "id="+strconv.FormatInt(beforeID, 10)+" ") {
			return errors.New("still in CLIENT LIST")
		}
		return nil
	})
	// The pool may first hand out the dead connection (an I/O error); the
	// next command reconnects and meets the fence.
	for i := range 2 {
		err := before.Set(ctx, "after-fence", "1", 0).Err()
		if err == nil {
			t.Fatal("SET through the client connected before the fence succeeded")
		}
		if strings.HasPrefix(err.Error(), "NOREPLICAS") {
			break
		}
		if i == 1 {
			t.Fatalf("SET through the client connected before the fence: %v, want NOREPLICAS", err)
		}
	}

	res, err = Fence(ctx, oldPrimary.URL())
	wantResult(t, "second Fence", res, err, Result{Already: true, Role: "master"})

	res, err = Promote(ctx, newPrimary.URL())
	wantResult(t, "Promote", res, err, Result{Already: false, Role: "master"})
	if role := replicationInfo(t, newPrimary)["role"]; role != "master" {
		t.Fatalf("role after Promote = %q, want master", role)
	}
	nc := newPrimary.Client(t)
	if err := nc.Set(ctx, "after-promote", "new", 0).Err(); err != nil {
		t.Fatalf("SET on the promoted server: %v", err)
	}
	mustFenced(t, newPrimary, false)
	res, err = Promote(ctx, newPrimary.URL())
	wantResult(t, "second Promote", res, err, Result{Already: true, Role: "master"})

	res, err = Replicate(ctx, oldPrimary.URL(), newPrimary.URL())
	wantResult(t, "Replicate", res, err, Result{Already: false, Role: "slave"})
	info := replicationInfo(t, oldPrimary)
	if info["role"] != "slave" || info["master_link_status"] != "up" || info["master_port"] != strconv.Itoa(newPrimary.Port) {
		t.Fatalf("INFO replication after Replicate: role %q, link %q, master_port %q; want slave, up, %d",
			info["role"], info["master_link_status"], info["master_port"], newPrimary.Port)
	}
	mustFenced(t, oldPrimary, false) // Replicate lifted the fence
	if err := nc.Set(ctx, "after-replicate", "streamed", 0).Err(); err != nil {
		t.Fatalf("SET on the new primary: %v", err)
	}
	eventually(t, 10*time.Second, "key written on the new primary visible on the old one", func() error {
		v, err := c.Get(ctx, "after-replicate").Result()
		if err != nil {
			return err
		}
		if v != "streamed" {
			return errors.New("value " + v)
		}
		return nil
	})
	if v, err := c.Get(ctx, "after-promote").Result(); err != nil || v != "new" {
		t.Errorf("GET after-promote on the old primary = %q, %v; want \"new\"", v, err)
	}

	res, err = Replicate(ctx, oldPrimary.URL(), newPrimary.URL())
	wantResult(t, "second Replicate", res, err, Result{Already: true, Role: "slave"})
}

// TestFenceSettings: Unfence leaves an operator's own
// min-replicas-to-write alone, Fence turns min-replicas-max-lag 0 (which
// switches the setting off) back on, Promote of a fenced primary lifts the
// fence.
func TestFenceSettings(t *testing.T) {
	t.Parallel()
	pair := testenv.StartRedis(t)
	ctx := actionCtx(t)
	c := pair.Primary.Client(t)
	url := pair.Primary.URL()
	configSet := func(name, value string) {
		t.Helper()
		if err := c.ConfigSet(ctx, name, value).Err(); err != nil {
			t.Fatalf("CONFIG SET %s %s: %v", name, value, err)
		}
	}
	wantWrites := func(what string, refused bool) {
		t.Helper()
		err := c.Set(ctx, "k", "v", 0).Err()
		if refused && (err == nil || !strings.HasPrefix(err.Error(), "NOREPLICAS")) {
			t.Fatalf("SET %s: %v, want NOREPLICAS", what, err)
		}
		if !refused && err != nil {
			t.Fatalf("SET %s: %v", what, err)
		}
	}

	if _, err := Fence(ctx, url); err != nil {
		t.Fatalf("Fence: %v", err)
	}
	wantWrites("after Fence", true)
	for i := range 2 { // the second does nothing
		if err := Unfence(ctx, url); err != nil {
			t.Fatalf("Unfence %d: %v", i+1, err)
		}
		mustFenced(t, pair.Primary, false)
		wantWrites("after Unfence", false)
	}

	// An operator's own value is not the fence's: left alone.
	configSet("min-replicas-to-write", "1")
	if err := Unfence(ctx, url); err != nil {
		t.Fatalf("Unfence: %v", err)
	}
	if v := c.ConfigGet(ctx, "min-replicas-to-write").Val()["min-replicas-to-write"]; v != "1" {
		t.Errorf("min-replicas-to-write after Unfence = %q, want the operator's 1", v)
	}

	// min-replicas-max-lag 0 switches min-replicas-to-write off.
	configSet("min-replicas-max-lag", "0")
	configSet("min-replicas-to-write", strconv.Itoa(fenceReplicas))
	mustFenced(t, pair.Primary, false)
	wantWrites("with the fence's value but max-lag 0", false)
	res, err := Fence(ctx, url)
	wantResult(t, "Fence with max-lag 0", res, err, Result{Already: false, Role: "master"})
	mustFenced(t, pair.Primary, true)
	wantWrites("after Fence with max-lag 0", true)

	res, err = Promote(ctx, url)
	wantResult(t, "Promote of the fenced primary", res, err, Result{Already: false, Role: "master"})
	mustFenced(t, pair.Primary, false)
	wantWrites("after Promote", false)
}

// TestFenceOnReplica fences a replica: the setting waits, inert, until the
// replica becomes a primary by other means than Promote.
func TestFenceOnReplica(t *testing.T) {
	t.Parallel()
	pair := testenv.StartRedis(t)
	ctx := actionCtx(t)
	res, err := Fence(ctx, pair.Replica.URL())
	wantResult(t, "Fence of the replica", res, err, Result{Already: false, Role: "slave"})
	if info := replicationInfo(t, pair.Replica); info["master_link_status"] != "up" {
		t.Fatalf("replica link after Fence: %q, want up", info["master_link_status"])
	}
	rc := pair.Replica.Client(t)
	if err := rc.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatalf("REPLICAOF NO ONE: %v", err)
	}
	if err := rc.Set(ctx, "k", "v", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOREPLICAS") {
		t.Fatalf("SET on the fenced replica promoted by hand: %v, want NOREPLICAS", err)
	}
}

// TestReplicateWaitBounded points a replica at a primary that is not
// there: Replicate gives up when ctx ends and says how the link stands,
// without either password.
func TestReplicateWaitBounded(t *testing.T) {
	t.Parallel()
	pair := testenv.StartRedis(t)
	const primaryPassword = "primary-Pw-7731"
	absent := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Replicate(ctx, pair.Replica.URL(), "redis://:"+primaryPassword+"@"+absent+"/0")
	if err == nil {
		t.Fatal("Replicate to an absent primary succeeded")
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("Replicate took %v with a 1.5s deadline", elapsed)
	}
	msg := err.Error()
	t.Logf("Replicate: %v", err)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %q does not wrap context.DeadlineExceeded", msg)
	}
	if !strings.Contains(msg, "link to primary "+absent+" not up") || !strings.Contains(msg, pair.Replica.Addr()) {
		t.Errorf("error %q does not say the link to %s is not up on %s", msg, absent, pair.Replica.Addr())
	}
	if strings.Contains(msg, primaryPassword) || strings.Contains(msg, pair.Replica.Password) {
		t.Errorf("error %q contains a password", msg)
	}
	// masterauth was set to the primary's password before REPLICAOF.
	if v := pair.Replica.Client(t).ConfigGet(t.Context(), "masterauth").Val()["masterauth"]; v != primaryPassword {
		t.Errorf("masterauth = %q, want the primary URL's password", v)
	}
}

// TestReplicateItself: refused before any I/O (nothing listens there).
func TestReplicateItself(t *testing.T) {
	const url = "redis://:self-s3cret@127.0.0.1:1/0"
	_, err := Replicate(actionCtx(t), url, url)
	if err == nil || !strings.Contains(err.Error(), "cannot replicate itself") {
		t.Fatalf("Replicate of a server to itself: %v", err)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error %q contains the password", err)
	}
}

// TestActionsUnreachable runs every action against a port nobody listens
// on and a silent server: errors name the address, not the password.
func TestActionsUnreachable(t *testing.T) {
	t.Parallel()
	const secret = "act-s3cret-Pw"
	closed := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	silent := testenv.Blackhole(t)
	for _, addr := range []string{closed, silent} {
		url := "redis://:" + secret + "@" + addr + "/0"
		primary := "redis://:" + secret + "-primary@127.0.0.1:6390/0"
		actions := map[string]func(context.Context) error{
			"Promote":   func(ctx context.Context) error { _, err := Promote(ctx, url); return err },
			"Replicate": func(ctx context.Context) error { _, err := Replicate(ctx, url, primary); return err },
			"Fence":     func(ctx context.Context) error { _, err := Fence(ctx, url); return err },
			"Unfence":   func(ctx context.Context) error { return Unfence(ctx, url) },
			"IsFenced":  func(ctx context.Context) error { _, err := IsFenced(ctx, url); return err },
		}
		for name, act := range actions {
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			start := time.Now()
			err := act(ctx)
			cancel()
			if err == nil {
				t.Errorf("%s on %s succeeded", name, addr)
				continue
			}
			if elapsed := time.Since(start); elapsed > 2*time.Second {
				t.Errorf("%s on %s took %v with a 500ms deadline", name, addr, elapsed)
			}
			msg := err.Error()
			if strings.Contains(msg, "s3cret") {
				t.Errorf("%s on %s: error %q contains the password", name, addr, msg)
			}
			if !strings.Contains(msg, addr) || !strings.HasPrefix(msg, "redis "+strings.ToLower(name[:1])) {
				t.Errorf("%s on %s: error %q does not name the action and the address", name, addr, msg)
			}
			if addr == closed && !strings.Contains(msg, "connection refused") {
				t.Errorf("%s on %s: error %q does not say connection refused", name, addr, msg)
			}
			if addr == silent && !strings.Contains(msg, "timed out") {
				t.Errorf("%s on %s: error %q does not say timed out", name, addr, msg)
			}
		}
	}
}

func TestActionsBadURL(t *testing.T) {
	const secret = "s3cr3t-Pw"
	good := "redis://127.0.0.1:1/0"
	for _, url := range []string{
		"redis://:" + secret + "@127.0.0.1:notaport/0",
		"http://:" + secret + "@127.0.0.1:6379/0",
		"redis://:s3cr%zz3t@127.0.0.1/0",
	} {
		errs := map[string]error{}
		_, errs["Promote"] = Promote(t.Context(), url)
		_, errs["Fence"] = Fence(t.Context(), url)
		errs["Unfence"] = Unfence(t.Context(), url)
		_, errs["IsFenced"] = IsFenced(t.Context(), url)
		_, errs["Replicate"] = Replicate(t.Context(), url, good)
		_, errs["Replicate primary"] = Replicate(t.Context(), good, url)
		for name, err := range errs {
			if err == nil {
				t.Errorf("%s(%q) succeeded", name, url)
				continue
			}
			msg := err.Error()
			if strings.Contains(msg, "s3cr") || strings.Contains(msg, "%zz") {
				t.Errorf("%s(%q): error %q contains the password", name, url, msg)
			}
			if !strings.Contains(msg, "parse redis URL") {
				t.Errorf("%s(%q): error %q does not say the URL is wrong", name, url, msg)
			}
		}
	}
	if _, err := Replicate(t.Context(), good, "unix://:"+secret+"@/tmp/redis.sock"); err == nil || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "TCP") {
		t.Errorf("Replicate to a unix socket: %v", err)
	}
}

// TestActionAfterDroppedConnection: a connection that ends before the
// first command's answer (a link just back, a server restarting) is tried
// again: the action succeeds on the next one.
func TestActionAfterDroppedConnection(t *testing.T) {
	t.Parallel()
	pair := testenv.StartRedis(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			first := accepted.Add(1) == 1
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", pair.Replica.Addr())
				if err != nil {
					return
				}
				defer up.Close()
				if first {
					// The connection's handshake passes; it ends when
					// the first command comes, before any answer.
					buf := make([]byte, 4096)
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					up.Write(buf[:n])
					if n, err = up.Read(buf); err != nil {
						return
					}
					c.Write(buf[:n])
					c.Read(buf)
					return
				}
				go io.Copy(up, c)
				io.Copy(c, up)
			}()
		}
	}()
	through := strings.Replace(pair.Replica.URL(), pair.Replica.Addr(), ln.Addr().String(), 1)
	res, err := Replicate(actionCtx(t), through, pair.Primary.URL())
	if err != nil {
		t.Fatalf("Replicate after a dropped connection: %v", err)
	}
	if res.Role != "slave" || accepted.Load() < 2 {
		t.Errorf("Replicate: %+v after %d connections, want a replica and a second connection", res, accepted.Load())
	}
}

// TestFenceDoesNotWaitOnAnEndedConnection: a failover's fence of a dead
// region's server, reached through a proxy that ends every connection,
// fails at its first try: the run must not wait on it (it once waited
// 0.6s for two more).
func TestFenceDoesNotWaitOnAnEndedConnection(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	url := "redis://:pw@" + ln.Addr().String()
	if _, err := Fence(actionCtx(t), url); err == nil || !connectionEnded(err) {
		t.Fatalf("Fence through a proxy to a dead server: %v, want the connection's end", err)
	}
	once := accepted.Load()
	// Replicate, which comes after traffic has moved, tries three times.
	accepted.Store(0)
	if _, err := Replicate(actionCtx(t), url, "redis://:pw@127.0.0.1:1"); err == nil || !connectionEnded(err) {
		t.Fatalf("Replicate through a proxy to a dead server: %v, want the connection's end", err)
	}
	if thrice := accepted.Load(); once == 0 || thrice != 3*once {
		t.Errorf("Fence made %d connections, Replicate %d: want one try and three", once, thrice)
	}
}
