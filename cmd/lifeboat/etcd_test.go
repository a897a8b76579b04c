package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/lifeboat-dr/lifeboat/api"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

// lifeboat serve --etcd-endpoints keeps its state in an existing etcd
// cluster over mutual TLS: nothing in its data directory, the state there
// for the next process; bad TLS flags are refused by name.
func TestServeExternalEtcd(t *testing.T) {
	pki := testenv.NewPKI(t)
	etcd, err := control.StartEmbedded(control.EmbedConfig{Name: "ext-1", Dir: t.TempDir(), Token: "ext", LogLevel: "fatal", TLS: pki.Issue(t, "etcd")})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		etcd.Close(ctx)
	}()
	endpoints := strings.Join(etcd.Endpoints(), ",")
	client := pki.Issue(t, "lifeboat")
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer web.Close()
	port := testenv.FreePort(t)
	path := filepath.Join(t.TempDir(), "lifeboat.yaml")
	doc := fmt.Sprintf(`cluster: shop
api:
  listen: 127.0.0.1:%d
regions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
services:
  - name: web
    kind: http
    critical: true
    endpoints: {east: %q, west: %q}
    health: {interval: 100ms, timeout: 80ms}
`, port, web.URL, web.URL)
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	node := &clusterNode{name: "east-1", api: fmt.Sprintf("http://127.0.0.1:%d", port)}
	serveExternal := func(t *testing.T) {
		dataDir := t.TempDir()
		serving(t, nil, "", "-c", path, "--node", "east-1", "--data-dir", dataDir, "--etcd-endpoints", endpoints,
			"--etcd-cacert", client.CA, "--etcd-cert", client.Cert, "--etcd-key", client.Key)
		leaderSeen(t, []*clusterNode{node}, 20*time.Second, "")
		t.Cleanup(func() {
			if entries, _ := os.ReadDir(dataDir); len(entries) != 0 {
				t.Errorf("serve with an external etcd wrote to its data directory: %v", entries)
			}
		})
	}
	t.Run("first", func(t *testing.T) {
		serveExternal(t)
		st, err := node.status(t)
		if err != nil {
			t.Fatal(err)
		}
		if m := st.Control.Members; len(m) != 1 || m[0].Name != "ext-1" || !m[0].Healthy {
			t.Errorf("members = %+v, want the external member ext-1, healthy", m)
		}
		if epoch := switchover(t, node, "west"); epoch != 2 {
			t.Errorf("switchover committed epoch %d, want 2", epoch)
		}
	})

	// The state is in the external cluster.
	tc, err := control.ClientTLS(client)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd.Endpoints(), DialTimeout: 2 * time.Second, TLS: tc, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, _, err := control.NewStore(cli, "shop").LoadState(ctx)
	if err != nil || st.Active != "west" || st.Epoch != 2 {
		t.Fatalf("state in the external etcd: %+v %v, want west at epoch 2", st, err)
	}

	// A new process on a new data directory starts from it.
	t.Run("again", func(t *testing.T) {
		serveExternal(t)
		var st api.StatusResponse
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get(node.api + "/api/v1/status")
			if err == nil {
				err = json.NewDecoder(resp.Body).Decode(&st)
				resp.Body.Close()
			}
			if err == nil && st.ActiveRegion == "west" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("active region after a restart: %q (%v), want west", st.ActiveRegion, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		checkEpochs(t, events(t, node), 2)
	})

	// Bad TLS flags are refused by name, before anything starts.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--etcd-cacert", client.CA}, "--etcd-cacert/--etcd-cert/--etcd-key go with --etcd-endpoints"},
		{[]string{"--etcd-endpoints", endpoints, "--etcd-cert", client.Cert}, "--etcd-cert and --etcd-key go together"},
		{[]string{"--etcd-endpoints", endpoints, "--etcd-cacert", client.Key}, "no PEM certificate in it"},
		{[]string{"--etcd-endpoints", endpoints, "--etcd-cacert", filepath.Join(pki.Dir, "missing.pem")}, "--etcd-cacert: open"},
		{[]string{"--etcd-endpoints", endpoints, "--etcd-cert", client.Key, "--etcd-key", client.Cert}, "--etcd-cert/--etcd-key:"},
	} {
		_, errs, code := run(t, nil, append([]string{"serve", "-c", path, "--data-dir", t.TempDir()}, c.args...)...)
		if code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("serve %v: exit %d, %q; want exit 2 and %q", c.args, code, errs, c.want)
		}
	}
	// A cluster that cannot be reached, or refuses the TLS, is named with
	// the reason at once (the etcd client alone would say its deadline
	// passed, after 30s).
	stranger := testenv.NewPKI(t).Issue(t, "stranger")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--etcd-cacert", stranger.CA, "--etcd-cert", client.Cert, "--etcd-key", client.Key}, "x509: certificate signed by unknown authority"},
		{[]string{"--etcd-cacert", client.CA, "--etcd-cert", stranger.Cert, "--etcd-key", stranger.Key}, "remote error: tls: unknown certificate authority"},
		{[]string{"--etcd-cacert", client.CA}, "remote error: tls: certificate required"},
	} {
		start := time.Now()
		args := append([]string{"serve", "-c", path, "--data-dir", t.TempDir(), "--etcd-endpoints", endpoints}, c.args...)
		_, errs, code := run(t, nil, args...)
		if code != 1 || !strings.Contains(errs, "no etcd endpoint answers: "+etcd.Endpoints()[0]+": ") || !strings.Contains(errs, c.want) {
			t.Errorf("serve %v: exit %d, %q; want exit 1 and %q", c.args, code, errs, c.want)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("serve %v: refused after %s", c.args, took)
		}
	}
	closed := fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))
	_, errs, code := run(t, nil, "serve", "-c", path, "--data-dir", t.TempDir(), "--etcd-endpoints", closed)
	if code != 1 || !strings.Contains(errs, closed+": dial tcp") || !strings.Contains(errs, "connection refused") {
		t.Errorf("serve with a closed endpoint: exit %d, %q", code, errs)
	}
}
