package redis

// Runbook actions: promote a server, make it a replica of another, fence it
// (refuse writes while it stays up) and lift the fence. Each takes the URL of
// the server as the configuration writes it, opens one connection for the
// action and closes it before returning. Each is idempotent: run again after
// it succeeded it changes nothing and says so (Result.Already); run again
// after it failed half-way it finishes the job.
//
// Nothing is written to the server's configuration file: a server that
// restarts comes back with what its own configuration says (fence and
// replication included).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

const (
	// fenceReplicas is min-replicas-to-write on a fenced server: more good
	// replicas than any server can have, so a primary refuses every write
	// with NOREPLICAS. It is the largest value Redis accepts.
	fenceReplicas = math.MaxInt32
	// fenceMaxLag is what Fence sets min-replicas-max-lag to when it is 0:
	// 0 turns min-replicas-to-write off, and the fence with it. It is
	// Redis's default.
	fenceMaxLag = 10
	// linkPollInterval is how often Replicate reads INFO replication while
	// it waits for the link to the primary.
	linkPollInterval = 100 * time.Millisecond
)

// Result is what a runbook action found and left.
type Result struct {
	// Already is true when the server was in the wanted state before the
	// action, which then changed nothing (Fence still disconnects normal
	// clients).
	Already bool
	// Role is the server's role after the action, as INFO replication
	// names it: "master" or "slave".
	Role string
}

// Promote makes the server of url a primary: REPLICAOF NO ONE when it is a
// replica, then it lifts a fence (see Fence), so that it takes writes.
// Result.Already is true when it was a primary and not fenced. Errors name
// the command and host:port and never contain a password.
func Promote(ctx context.Context, url string) (Result, error) {
	a, err := openAction("promote", url)
	if err != nil {
		return Result{}, err
	}
	defer a.close()
	st, err := a.state(ctx)
	if err != nil {
		return Result{}, err
	}
	if st.role() == "master" && !st.fenceSet() {
		return Result{Already: true, Role: "master"}, nil
	}
	if st.role() != "master" {
		if err := a.client().Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
			return Result{}, a.fail("REPLICAOF NO ONE", err)
		}
	}
	if err := a.unfence(ctx, st); err != nil {
		return Result{}, err
	}
	after, err := a.info(ctx)
	if err != nil {
		return Result{}, err
	}
	if role := after["role"]; role != "master" {
		return Result{}, a.errorf("role is %q after REPLICAOF NO ONE, want master", role)
	}
	return Result{Role: "master"}, nil
}

// Replicate makes the server of url a replica of the primary of primaryURL
// (redis:// or rediss://; only its host:port, user, password and scheme are
// used), lifts a fence (see Fence), and waits until INFO replication says
// master_link_status:up. The server's data is replaced by the primary's.
//
// Before REPLICAOF it sets, with CONFIG SET, masterauth to the primary's
// password and masteruser to its user when primaryURL has them (a primary
// URL without a password leaves masterauth as it is), and tls-replication
// to whether primaryURL is rediss://.
//
// The wait is bounded by ctx only: give it a deadline. When ctx ends first
// the error says how the link stands (down for how long, initial sync...)
// and wraps ctx's error; the server is then a replica of the primary and
// not fenced, and a later Replicate waits again.
//
// Result.Already is true when the server was a replica of that primary
// (same host and port as the URL's) with the link up and not fenced.
// Errors never contain either password.
func Replicate(ctx context.Context, url, primaryURL string) (Result, error) {
	popt, err := goredis.ParseURL(primaryURL)
	if err != nil {
		return Result{}, fmt.Errorf("redis replicate: primary URL: %w", urlError(primaryURL, err))
	}
	if popt.Network != "tcp" {
		return Result{}, fmt.Errorf("redis replicate: primary URL %q: a replica reaches its primary over TCP: use redis:// or rediss://", redactURL(primaryURL))
	}
	host, port, err := net.SplitHostPort(popt.Addr)
	if err != nil {
		return Result{}, fmt.Errorf("redis replicate: primary URL %q: %v", redactURL(primaryURL), err)
	}
	a, err := openAction("replicate", url)
	if err != nil {
		return Result{}, err
	}
	defer a.close()
	a.secrets = append(a.secrets, popt.Password)
	if strings.EqualFold(a.node.addr, popt.Addr) {
		return Result{}, a.errorf("a server cannot replicate itself (primary URL is %s too)", popt.Addr)
	}

	// A replica is made after traffic has moved: the old primary may be
	// just back, or reached through a link just restored.
	st, err := a.stateTries(ctx, 3)
	if err != nil {
		return Result{}, err
	}
	if replicaOf(st.info, host, port) && st.info["master_link_status"] == "up" && !st.fenceSet() {
		return Result{Already: true, Role: "slave"}, nil
	}
	if err := a.setTLSReplication(ctx, popt.TLSConfig != nil); err != nil {
		return Result{}, err
	}
	if popt.Username != "" {
		if err := a.client().ConfigSet(ctx, "masteruser", popt.Username).Err(); err != nil {
			return Result{}, a.fail("CONFIG SET masteruser", err)
		}
	}
	if popt.Password != "" {
		if err := a.client().ConfigSet(ctx, "masterauth", popt.Password).Err(); err != nil {
			return Result{}, a.fail("CONFIG SET masterauth", err)
		}
	}
	if err := a.client().Do(ctx, "REPLICAOF", host, port).Err(); err != nil {
		return Result{}, a.fail("REPLICAOF "+net.JoinHostPort(host, port), err)
	}
	// A replica ignores min-replicas-to-write: lifting the fence now is
	// safe, and leaves nothing to do if the wait below runs out of time.
	if err := a.unfence(ctx, st); err != nil {
		return Result{}, err
	}
	if err := a.waitLink(ctx, host, port); err != nil {
		return Result{}, err
	}
	return Result{Role: "slave"}, nil
}

// Fence makes the server of url refuse writes while it stays up and keeps
// answering reads: CONFIG SET min-replicas-to-write 2147483647, which no
// number of replicas satisfies, so every write fails with NOREPLICAS. When
// min-replicas-max-lag is 0 (which turns min-replicas-to-write off) it sets
// that to 10, Redis's default, too. Then it disconnects every normal client
// (CLIENT KILL TYPE normal SKIPME yes), so that connection pools reconnect
// and see the fence; replicas and pub/sub clients stay connected.
//
// The server remembers nothing but those settings: the value
// min-replicas-to-write had before is not kept, and Promote, Replicate and
// Unfence set it back to 0. A replica ignores the setting until it
// becomes a primary, so a fenced replica promoted by something else than
// Promote (Sentinel, an operator's REPLICAOF NO ONE) still refuses writes.
//
// Result.Already is true when the server was fenced; Result.Role is its
// role. Errors name the command and host:port and never contain the
// password.
func Fence(ctx context.Context, url string) (Result, error) {
	a, err := openAction("fence", url)
	if err != nil {
		return Result{}, err
	}
	defer a.close()
	st, err := a.state(ctx)
	if err != nil {
		return Result{}, err
	}
	if st.maxLag <= 0 {
		if err := a.client().ConfigSet(ctx, "min-replicas-max-lag", strconv.Itoa(fenceMaxLag)).Err(); err != nil {
			return Result{}, a.fail("CONFIG SET min-replicas-max-lag", err)
		}
	}
	if !st.fenceSet() {
		if err := a.client().ConfigSet(ctx, "min-replicas-to-write", strconv.Itoa(fenceReplicas)).Err(); err != nil {
			return Result{}, a.fail("CONFIG SET min-replicas-to-write", err)
		}
	}
	// Again when Already: a Fence that failed here before left the
	// setting but maybe not the disconnection.
	if err := a.client().ClientKillByFilter(ctx, "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
		return Result{}, a.fail("CLIENT KILL TYPE normal", err)
	}
	return Result{Already: st.fenced(), Role: st.role()}, nil
}

// Unfence lifts the fence of Fence: it sets min-replicas-to-write back to
// 0 when it has the fence's value, and leaves any other value (an
// operator's own) alone. Unfencing a server that is not fenced does
// nothing. Errors name the command and host:port and never contain the
// password.
func Unfence(ctx context.Context, url string) error {
	a, err := openAction("unfence", url)
	if err != nil {
		return err
	}
	defer a.close()
	st, err := a.state(ctx)
	if err != nil {
		return err
	}
	return a.unfence(ctx, st)
}

// IsFenced reports whether the server of url is fenced: its
// min-replicas-to-write has the fence's value and min-replicas-max-lag is
// not 0, so it refuses writes whenever it is a primary. Errors name the
// command and host:port and never contain the password.
func IsFenced(ctx context.Context, url string) (bool, error) {
	a, err := openAction("is-fenced", url)
	if err != nil {
		return false, err
	}
	defer a.close()
	st, err := a.state(ctx)
	if err != nil {
		return false, err
	}
	return st.fenced(), nil
}

// action is one runbook action on one server.
type action struct {
	verb    string   // "promote", for messages
	node    *node    // the server acted on
	secrets []string // to scrub from messages besides node's password
}

// openAction builds the client of one action on the server of url. It does
// no I/O.
func openAction(verb, url string) (*action, error) {
	n, err := newNode(url, 1)
	if err != nil {
		return nil, fmt.Errorf("redis %s: %w", verb, err)
	}
	return &action{verb: verb, node: n}, nil
}

// close releases the action's connection. The action is done whatever
// Close says, so its error is dropped.
func (a *action) close() { _ = a.node.close() }

func (a *action) client() *goredis.Client { return a.node.client }

// fail describes err from command op: "redis fence: CONFIG SET
// min-replicas-to-write 127.0.0.1:6379: ERR ...". errors.Is and errors.As
// see err.
func (a *action) fail(op string, err error) error {
	msg := a.node.describe(op, err).Error()
	return &scrubbedError{msg: a.scrub("redis " + a.verb + ": " + msg), cause: err}
}

// errorf is an error of the action that no command returned: "redis
// promote 127.0.0.1:6379: ...". %w works as in fmt.Errorf.
func (a *action) errorf(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	msg := fmt.Sprintf("redis %s %s: %s", a.verb, a.node.addr, err)
	return &scrubbedError{msg: a.scrub(msg), cause: err}
}

func (a *action) scrub(msg string) string {
	msg = scrub(msg, a.node.password)
	for _, s := range a.secrets {
		msg = scrub(msg, s)
	}
	return msg
}

// serverState is what an action reads before it changes anything.
type serverState struct {
	info    map[string]string // INFO replication
	toWrite int64             // min-replicas-to-write
	maxLag  int64             // min-replicas-max-lag
}

func (s serverState) role() string { return s.info["role"] }

// fenceSet reports whether min-replicas-to-write has the fence's value.
func (s serverState) fenceSet() bool { return s.toWrite == fenceReplicas }

// fenced reports whether the fence holds: set, and not turned off by
// min-replicas-max-lag 0.
func (s serverState) fenced() bool { return s.fenceSet() && s.maxLag > 0 }

// state reads INFO replication and the two settings of the fence, in one
// round trip: the action's first contact with the server.
func (a *action) state(ctx context.Context) (serverState, error) {
	return a.stateTries(ctx, 1)
}

// stateTries is state, trying again (up to tries times within ctx) when
// the connection ends before the answer: a server or a network link just
// back. Only actions that come after the urgent part of a run use it: a
// dead region's server looks the same through a proxy, and a failover's
// fence must not wait on it.
func (a *action) stateTries(ctx context.Context, tries int) (serverState, error) {
	var info *goredis.StringCmd
	var toWrite, maxLag *goredis.MapStringStringCmd
	for attempt := 1; ; attempt++ {
		// Errors are per command, below.
		_, _ = a.client().Pipelined(ctx, func(p goredis.Pipeliner) error {
			info = p.Info(ctx, "replication")
			toWrite = p.ConfigGet(ctx, "min-replicas-to-write")
			maxLag = p.ConfigGet(ctx, "min-replicas-max-lag")
			return nil
		})
		err := info.Err()
		if err == nil {
			break
		}
		if attempt >= tries || !connectionEnded(err) {
			return serverState{}, a.fail("INFO", err)
		}
		select {
		case <-ctx.Done():
			return serverState{}, a.fail("INFO", err)
		case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
		}
	}
	st := serverState{info: parseInfo(info.Val())}
	for _, c := range []struct {
		name string
		cmd  *goredis.MapStringStringCmd
		dst  *int64
	}{{"min-replicas-to-write", toWrite, &st.toWrite}, {"min-replicas-max-lag", maxLag, &st.maxLag}} {
		values, err := c.cmd.Result()
		if err != nil {
			return serverState{}, a.fail("CONFIG GET "+c.name, err)
		}
		v, err := strconv.ParseInt(values[c.name], 10, 64)
		if err != nil {
			return serverState{}, a.errorf("CONFIG GET %s: value %q is not a number", c.name, values[c.name])
		}
		*c.dst = v
	}
	if role := st.role(); role != "master" && role != "slave" {
		return serverState{}, a.errorf("INFO replication: role is %q, want master or slave", role)
	}
	return st, nil
}

// connectionEnded says whether err is a connection closed or refused
// before an answer came, rather than an answer.
func connectionEnded(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE)
}

// info reads INFO replication.
func (a *action) info(ctx context.Context) (map[string]string, error) {
	s, err := a.client().Info(ctx, "replication").Result()
	if err != nil {
		return nil, a.fail("INFO", err)
	}
	return parseInfo(s), nil
}

// unfence sets min-replicas-to-write back to 0 if st says it has the
// fence's value.
func (a *action) unfence(ctx context.Context, st serverState) error {
	if !st.fenceSet() {
		return nil
	}
	if err := a.client().ConfigSet(ctx, "min-replicas-to-write", "0").Err(); err != nil {
		return a.fail("CONFIG SET min-replicas-to-write", err)
	}
	return nil
}

// setTLSReplication sets tls-replication to want when it differs. A server
// built without TLS has no such setting: fine when want is false.
func (a *action) setTLSReplication(ctx context.Context, want bool) error {
	values, err := a.client().ConfigGet(ctx, "tls-replication").Result()
	if err != nil {
		return a.fail("CONFIG GET tls-replication", err)
	}
	current, ok := values["tls-replication"]
	switch {
	case !ok && want:
		return a.errorf("the primary URL is rediss:// but the server has no tls-replication setting (built without TLS?)")
	case !ok || (current == "yes") == want:
		return nil
	}
	value := "no"
	if want {
		value = "yes"
	}
	if err := a.client().ConfigSet(ctx, "tls-replication", value).Err(); err != nil {
		return a.fail("CONFIG SET tls-replication", err)
	}
	return nil
}

// waitLink polls INFO replication until the server is a replica of
// host:port with master_link_status:up, or ctx ends.
func (a *action) waitLink(ctx context.Context, host, port string) error {
	primary := net.JoinHostPort(host, port)
	ticker := time.NewTicker(linkPollInterval)
	defer ticker.Stop()
	var last map[string]string
	for {
		info, err := a.info(ctx)
		switch {
		case err == nil:
			last = info
			if replicaOf(info, host, port) && info["master_link_status"] == "up" {
				return nil
			}
		case ctx.Err() == nil:
			return err
		}
		select {
		case <-ctx.Done():
			return a.errorf("link to primary %s not up: %s: %w", primary, linkState(last, host, port), ctx.Err())
		case <-ticker.C:
		}
	}
}

// linkState describes the replication of a server from its INFO
// replication, for the error of a wait that ran out of time.
func linkState(info map[string]string, host, port string) string {
	if info == nil {
		return "INFO replication never answered"
	}
	if info["role"] == "slave" && !replicaOf(info, host, port) {
		return fmt.Sprintf("replica of %s", net.JoinHostPort(info["master_host"], info["master_port"]))
	}
	if _, reason := brokenReason(replicaReading{info: info}); reason != "" {
		return reason
	}
	return "master_link_status:" + info["master_link_status"]
}

// replicaOf reports whether INFO replication says the server is a replica
// of host:port (host compared without regard to case, as REPLICAOF was
// given it).
func replicaOf(info map[string]string, host, port string) bool {
	return info["role"] == "slave" &&
		strings.EqualFold(strings.TrimSpace(info["master_host"]), host) &&
		strings.TrimSpace(info["master_port"]) == port
}
