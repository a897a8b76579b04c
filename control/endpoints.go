package control

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// checkEndpoints tries each endpoint of an etcd cluster the way its client
// will reach it (a TCP connection, then the TLS handshake for https) and
// returns nil once one answers; else every endpoint's reason. The etcd
// client itself only says its deadline passed: a wrong certificate
// authority, a refused client certificate or a closed port must be named.
func checkEndpoints(ctx context.Context, endpoints []string, tc *tls.Config) error {
	var errs []error
	for _, ep := range endpoints {
		err := checkEndpoint(ctx, ep, tc)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", ep, err))
	}
	return errors.Join(errs...)
}

// checkEndpoint dials one endpoint: "https://host:port", "http://host:port"
// or "host:port" (TLS when tc is set, as the etcd client does).
func checkEndpoint(ctx context.Context, ep string, tc *tls.Config) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, host, secure, err := dialEndpoint(ctx, ep, tc != nil)
	if err != nil || conn == nil {
		return err
	}
	defer conn.Close()
	if !secure {
		return nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if tc != nil {
		conf = tc.Clone()
	}
	if conf.ServerName == "" {
		if h, _, err := net.SplitHostPort(host); err == nil {
			conf.ServerName = h
		}
	}
	c := tls.Client(conn, conf)
	if err := c.HandshakeContext(ctx); err != nil {
		return err
	}
	// With TLS 1.3 a server refuses a client certificate after the
	// handshake: its alert is the first thing to read. A server that
	// accepted waits for the client to speak.
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return err
	}
	return nil
}

// dialEndpoint opens a TCP connection to an etcd endpoint; secure says
// whether the endpoint speaks TLS (a bare host:port: as tlsDefault says).
// A unix socket endpoint gives no connection and no error.
func dialEndpoint(ctx context.Context, ep string, tlsDefault bool) (conn net.Conn, host string, secure bool, err error) {
	host, secure = ep, tlsDefault
	if strings.Contains(ep, "://") {
		u, err := url.Parse(ep)
		if err != nil {
			return nil, "", false, err
		}
		switch u.Scheme {
		case "https":
			secure = true
		case "http":
			secure = false
		case "unix", "unixs":
			return nil, "", false, nil // a socket path: the client says what is wrong
		default:
			return nil, "", false, fmt.Errorf("scheme %q: use http or https", u.Scheme)
		}
		host = u.Host
	}
	var d net.Dialer
	conn, err = d.DialContext(ctx, "tcp", host)
	return conn, host, secure, err
}
