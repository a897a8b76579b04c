package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

// certs makes a CA and, signed by it, a server certificate for
// 127.0.0.1 and a client certificate; it returns the files and the pool
// that trusts the CA.
func certs(t *testing.T) (server, client config.TLS, ca string, pool *x509.CertPool) {
	t.Helper()
	pki := testenv.NewPKI(t)
	server = pki.Issue(t, "server", x509.ExtKeyUsageServerAuth)
	client = pki.Issue(t, "client", x509.ExtKeyUsageClientAuth)
	server.CA, client.CA = "", ""
	return server, client, pki.CAFile, pki.Pool()
}

// api.tls: https with the certificate; with a CA, a client certificate
// signed by it is required.
func TestTLS(t *testing.T) {
	server, client, ca, pool := certs(t)
	open := func(tc config.TLS) *Server {
		t.Helper()
		return openServer(t, Config{Status: fixedStatus{Cluster: "tls"}, API: config.API{TLS: tc}})
	}
	get := func(url string, tc *tls.Config) (int, string, error) {
		t.Helper()
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
		defer c.CloseIdleConnections()
		resp, err := c.Get(url + "/api/v1/status")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}

	s := open(server)
	if !strings.HasPrefix(s.URL(), "https://127.0.0.1:") {
		t.Fatalf("URL = %s", s.URL())
	}
	if code, body, err := get(s.URL(), &tls.Config{RootCAs: pool}); err != nil || code != 200 || !strings.Contains(body, `"cluster": "tls"`) {
		t.Errorf("https: %d %s %v", code, body, err)
	}
	if code, body, err := get("http://"+s.Addr(), nil); err == nil && code == 200 {
		t.Errorf("plain http to the https port: %d %s", code, body)
	}
	if _, _, err := get(s.URL(), &tls.Config{}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client that does not trust the CA: %v", err)
	}

	mtls := server
	mtls.CA = ca
	s = open(mtls)
	if _, _, err := get(s.URL(), &tls.Config{RootCAs: pool}); err == nil {
		t.Error("a client without a certificate was served")
	}
	cert, err := tls.LoadX509KeyPair(client.Cert, client.Key)
	if err != nil {
		t.Fatal(err)
	}
	if code, _, err := get(s.URL(), &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}); err != nil || code != 200 {
		t.Errorf("a client with a certificate: %d %v", code, err)
	}
	// A certificate of another CA is refused.
	_, stranger, _, _ := certs(t)
	other, _ := tls.LoadX509KeyPair(stranger.Cert, stranger.Key)
	if _, _, err := get(s.URL(), &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{other}}); err == nil {
		t.Error("a client with another CA's certificate was served")
	}

	// Bad files fail Open with the reason.
	for tc, want := range map[config.TLS]string{
		{Cert: server.Cert}:                                         "cert and key go together",
		{Cert: server.Cert, Key: server.Key + ".nope"}:              "no such file",
		{Cert: server.Cert, Key: server.Key, CA: server.Cert + "x"}: "client CA",
	} {
		s := New(Config{Listen: "127.0.0.1:0", Status: fixedStatus{}, API: config.API{TLS: tc}})
		if err := s.Open(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v, want %q", tc, err, want)
			s.Close(context.Background())
		}
	}
}
