package api

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"

	"github.com/lifeboat-dr/lifeboat/config"
)

// serverTLS is the TLS configuration of api.tls: the server's
// certificate and, with a CA, client certificates required and verified
// against it (mutual TLS). Nil without a certificate.
func serverTLS(t config.TLS) (*tls.Config, error) {
	if t.Cert == "" && t.Key == "" && t.CA == "" {
		return nil, nil
	}
	if t.Cert == "" || t.Key == "" {
		return nil, fmt.Errorf("api: tls: cert and key go together: set both or neither")
	}
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("api: tls: %w", err)
	}
	conf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("api: tls: client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("api: tls: client CA: %s holds no PEM certificate", t.CA)
		}
		conf.ClientCAs = pool
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return conf, nil
}

// listenAddr is where the server listens: the configured address, or,
// when no token is configured and that address is not loopback (an
// empty host, 0.0.0.0, ::, a LAN address, a name), the same port on
// 127.0.0.1. moved reports the second case.
func listenAddr(configured string, tokens bool) (addr string, moved bool) {
	if tokens {
		return configured, false
	}
	host, port, err := net.SplitHostPort(configured)
	if err != nil || loopbackHost(host) {
		return configured, false // an error is the listener's to report
	}
	return net.JoinHostPort("127.0.0.1", port), true
}
