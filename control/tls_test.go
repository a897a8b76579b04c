package control

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
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
	pki := testenv.NewPKI(t)
	files := pki.Issue(t, "east-1")
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
	good, err := ClientTLS(pki.Issue(t, "client"))
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
	other, err := ClientTLS(testenv.NewPKI(t).Issue(t, "stranger"))
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
	pki := testenv.NewPKI(t)
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
		files := pki.Issue(t, name)
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
	noCert.RootCAs.AddCert(pki.CA)
	if err := etcdGet(planes[0].Endpoints(), noCert); err == nil {
		t.Error("a client without a certificate was served")
	}
}
