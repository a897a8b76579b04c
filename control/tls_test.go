package control

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

// testPKI is a CA and the files of certificates it signed, for loopback.
type testPKI struct {
	dir    string
	ca     *x509.Certificate
	key    *ecdsa.PrivateKey
	serial int64
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lifeboat test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.key, p.serial = key, 1
	p.write(t, "ca.pem", "CERTIFICATE", der)
	return p
}

func (p *testPKI) write(t testing.TB, name, kind string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue signs a certificate for 127.0.0.1 and localhost, good for server
// and client authentication (a member is both), and returns its files.
func (p *testPKI) issue(t testing.TB, name string) config.TLS {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return config.TLS{Cert: p.write(t, name+".pem", "CERTIFICATE", der), Key: p.write(t, name+"-key.pem", "EC PRIVATE KEY", kder), CA: filepath.Join(p.dir, "ca.pem")}
}

// etcdGet reads a key through a new client of endpoints with tc (nil:
// plain connections), within a short deadline.
func etcdGet(endpoints []string, tc *tls.Config) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: time.Second, TLS: tc, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = cli.Get(ctx, "probe")
	return err
}

// A member with TLS serves https only, and only to clients whose
// certificate its CA signed.
func TestEmbeddedTLS(t *testing.T) {
	pki := newTestPKI(t)
	files := pki.issue(t, "east-1")
	e, err := StartEmbedded(EmbedConfig{Name: "east-1", Dir: t.TempDir(), Token: "test", LogLevel: "fatal", TLS: files})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Close(ctx)
	}()
	if eps := e.Endpoints(); len(eps) != 1 || !strings.HasPrefix(eps[0], "https://127.0.0.1:") {
		t.Fatalf("endpoints = %v", eps)
	}
	good, err := ClientTLS(pki.issue(t, "client"))
	if err != nil {
		t.Fatal(err)
	}
	if err := etcdGet(e.Endpoints(), good); err != nil {
		t.Errorf("a client with a certificate of the CA: %v", err)
	}
	noCert := &tls.Config{RootCAs: good.RootCAs, MinVersion: tls.VersionTLS12}
	if err := etcdGet(e.Endpoints(), noCert); err == nil {
		t.Error("a client without a certificate was served")
	}
	other, err := ClientTLS(newTestPKI(t).issue(t, "stranger"))
	if err != nil {
		t.Fatal(err)
	}
	other.RootCAs = good.RootCAs // trusts the server, but its own CA is not the cluster's
	if err := etcdGet(e.Endpoints(), other); err == nil {
		t.Error("a client with a certificate of another CA was served")
	}
	if err := etcdGet([]string{strings.Replace(e.Endpoints()[0], "https://", "http://", 1)}, nil); err == nil {
		t.Error("a plain-text client was served")
	}

	// URLs must match: https with TLS, http without.
	_, err = StartEmbedded(EmbedConfig{Name: "x", Dir: t.TempDir(), Token: "test", LogLevel: "fatal", TLS: files, ClientURL: "http://127.0.0.1:1"})
	if err == nil || !strings.Contains(err.Error(), `client URL "http://127.0.0.1:1" must be https://`) {
		t.Errorf("http URL with TLS: %v", err)
	}
	_, err = StartEmbedded(EmbedConfig{Name: "x", Dir: t.TempDir(), Token: "test", LogLevel: "fatal", TLS: config.TLS{Cert: files.Cert, Key: files.Key}})
	if err == nil || !strings.Contains(err.Error(), "TLS needs cert, key and ca") {
		t.Errorf("TLS without a CA: %v", err)
	}
}

// Three nodes whose control planes use cluster.tls form one cluster over
// https (peers authenticate each other with their certificates), and each
// node's client presents its certificate.
func TestClusterTLS(t *testing.T) {
	pki := newTestPKI(t)
	names := []string{"east-1", "west-1", "tie-1"}
	var peers strings.Builder
	for i, name := range names {
		fmt.Fprintf(&peers, "    - {name: %s, region: %s, peer_url: \"https://127.0.0.1:%d\", client_url: \"https://127.0.0.1:%d\"}\n",
			name, []string{"east", "west", "tie"}[i], testenv.FreePort(t), testenv.FreePort(t))
	}
	dataDir := t.TempDir()
	planes := make([]*Plane, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		files := pki.issue(t, name)
		cfg := testenv.Config(t, fmt.Sprintf(`
cluster:
  name: tlstest
  tls: {cert: %s, key: %s, ca: %s}
  peers:
%sregions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
  - {name: tie, priority: 3, role: witness}
services:
  - name: web
    kind: http
    endpoints:
      east: http://127.0.0.1:1
      west: http://127.0.0.1:2
`, files.Cert, files.Key, files.CA, peers.String()))
		wg.Go(func() {
			planes[i], errs[i] = Open(t.Context(), cfg, Options{Node: name, DataDir: dataDir, EtcdLogLevel: "fatal"})
		})
	}
	wg.Wait()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		for _, p := range planes {
			if p != nil {
				p.Close(ctx)
			}
		}
	}()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", names[i], err)
		}
	}
	// A write on one node is read on another.
	if _, err := planes[0].Store().Append(t.Context(), Event{Type: EventDecision, Message: "over tls"}); err != nil {
		t.Fatal(err)
	}
	// (Other events, an election, may come after it.)
	evs, err := planes[2].Store().Events(t.Context(), 0, 100)
	found := false
	for _, e := range evs {
		found = found || e.Message == "over tls"
	}
	if err != nil || !found {
		t.Errorf("events on another node: %v %v", evs, err)
	}
	st := planes[1].Status(t.Context())
	if len(st.Members) != 3 {
		t.Errorf("members: %+v", st)
	}
	for _, m := range st.Members {
		if !m.Healthy || len(m.ClientURLs) == 0 || !strings.HasPrefix(m.ClientURLs[0], "https://") {
			t.Errorf("member %+v", m)
		}
	}
	noCert := &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}
	noCert.RootCAs.AddCert(pki.ca)
	if err := etcdGet(planes[0].Endpoints(), noCert); err == nil {
		t.Error("a client without a certificate was served")
	}
}
