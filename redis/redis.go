// Package redis is Lifeboat's Redis backend: a health.Prober that reports
// whether a Redis server answers and what its role is, and a
// replication.Source that measures how far each replica trails the primary
// with a heartbeat key written by Lifeboat.
//
// Every client made here has a small pool, never retries a command (the
// callers count failures themselves) and honours the deadline of the
// context it is given. Errors name the command and host:port and never
// contain the password.
package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// node is one Redis server and the client that talks to it.
type node struct {
	client   *goredis.Client
	addr     string // host:port, for messages
	password string // to scrub from messages; never printed
}

// newNode parses rawURL (redis://[user:password@]host:port[/db], as
// goredis.ParseURL accepts) and builds a client with a pool of poolSize
// connections. It does no I/O. The error, if any, does not contain
// the password.
func newNode(rawURL string, poolSize int) (*node, error) {
	opt, err := goredis.ParseURL(rawURL)
	if err != nil {
		return nil, urlError(rawURL, err)
	}
	opt.PoolSize = poolSize
	opt.MaxIdleConns = poolSize
	opt.MaxRetries = -1              // no command retries: callers count failures
	opt.DialerRetries = 1            // one dial attempt per connection
	opt.ContextTimeoutEnabled = true // the caller's deadline bounds every read and write
	opt.DisableIdentity = true       // no CLIENT SETINFO on connect
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return &node{client: goredis.NewClient(opt), addr: opt.Addr, password: opt.Password}, nil
}

// close releases the node's connections. Closing again does nothing.
func (n *node) close() error {
	if err := n.client.Close(); err != nil && !errors.Is(err, goredis.ErrClosed) {
		return n.describe("close", err)
	}
	return nil
}

// describe turns err, from command op on n, into an error an operator can
// read: "dial 127.0.0.1:6379: connection refused", "PING 127.0.0.1:6379:
// timed out", "PING 127.0.0.1:6379: WRONGPASS invalid username-password
// pair or user is disabled.". The message never contains the password;
// errors.Is and errors.As still see the cause.
func (n *node) describe(op string, err error) error {
	var msg string
	var opErr *net.OpError
	var errno syscall.Errno
	var redisErr goredis.Error
	switch {
	case errors.As(err, &opErr) && opErr.Op == "dial":
		cause := opErr.Err.Error()
		if errors.As(opErr.Err, &errno) {
			cause = errno.Error()
		}
		if opErr.Timeout() {
			cause = "timed out"
		}
		msg = fmt.Sprintf("dial %s: %s", n.addr, cause)
	case errors.As(err, &redisErr):
		msg = fmt.Sprintf("%s %s: %s", op, n.addr, redisErr.Error())
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		msg = fmt.Sprintf("%s %s: timed out", op, n.addr)
	case errors.Is(err, context.Canceled):
		msg = fmt.Sprintf("%s %s: canceled", op, n.addr)
	case errors.Is(err, goredis.ErrClosed):
		msg = fmt.Sprintf("%s %s: client closed", op, n.addr)
	default:
		msg = fmt.Sprintf("%s %s: %v", op, n.addr, err)
	}
	return &scrubbedError{msg: scrub(msg, n.password), cause: err}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// scrubbedError is an error whose message was written, and cleaned of
// secrets, for an operator; Unwrap gives the original cause.
type scrubbedError struct {
	msg   string
	cause error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.cause }

// scrub replaces every occurrence of secret in s.
func scrub(s, secret string) string {
	if secret == "" {
		return s
	}
	return strings.ReplaceAll(s, secret, "xxxxx")
}

// urlError describes a URL that goredis.ParseURL rejected without
// repeating its user information: url.Parse puts the whole URL, password
// included, in its errors.
func urlError(rawURL string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	msg := err.Error()
	if userinfo, password := userinfoOf(rawURL); userinfo != "" {
		// url.Parse quotes the part it rejects ("invalid URL escape
		// \"%zz\""), which may be a piece of the password.
		msg = redactQuoted(msg, userinfo)
		msg = scrub(msg, userinfo)
		msg = scrub(msg, password)
		if unescaped, uerr := url.PathUnescape(password); uerr == nil {
			msg = scrub(msg, unescaped)
		}
	}
	return &scrubbedError{
		msg:   fmt.Sprintf("parse redis URL %q: %s", redactURL(rawURL), msg),
		cause: errors.New(msg),
	}
}

// redactQuoted replaces each Go-quoted string of msg whose content is a
// part of userinfo with "xxxxx".
func redactQuoted(msg, userinfo string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(msg, '"')
		if i < 0 {
			b.WriteString(msg)
			return b.String()
		}
		b.WriteString(msg[:i])
		q, err := strconv.QuotedPrefix(msg[i:])
		if err != nil {
			b.WriteByte('"')
			msg = msg[i+1:]
			continue
		}
		msg = msg[i+len(q):]
		if u, _ := strconv.Unquote(q); u != "" && strings.Contains(userinfo, u) {
			q = `"xxxxx"`
		}
		b.WriteString(q)
	}
}

// userinfoOf returns the user information of a URL-like string, found by
// position rather than by parsing (so it works on URLs that do not parse),
// and the part of it after the first ':' (the password).
func userinfoOf(rawURL string) (userinfo, password string) {
	rest := rawURL
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return "", ""
	}
	userinfo = rest[:at]
	if _, p, ok := strings.Cut(userinfo, ":"); ok {
		password = p
	}
	return userinfo, password
}

// redactURL returns rawURL with its user information replaced by "xxxxx".
func redactURL(rawURL string) string {
	userinfo, _ := userinfoOf(rawURL)
	if userinfo == "" {
		return rawURL
	}
	return strings.Replace(rawURL, userinfo+"@", "xxxxx@", 1)
}
