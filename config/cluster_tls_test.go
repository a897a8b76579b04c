package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cluster.tls: cert, key and ca together, readable files, and https://
// peer and client URLs exactly when it is set.
func TestClusterTLS(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"node.pem", "node-key.pem", "ca.pem"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("-"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cert, key, ca := filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem"), filepath.Join(dir, "ca.pem")
	doc := func(scheme, tls string) string {
		var peers strings.Builder
		for i, p := range []string{"east", "west", "tie"} {
			fmt.Fprintf(&peers, "    - {name: %s-1, region: %s, peer_url: \"%s://127.0.0.%d:2380\", client_url: \"%s://127.0.0.%d:2379\"}\n", p, p, scheme, i+1, scheme, i+1)
		}
		d := strings.Replace(base, "cluster: shop\n", "cluster:\n  name: shop\n"+tls+"  peers:\n"+peers.String(), 1)
		return strings.Replace(d, "services:", "  - {name: tie, priority: 3, role: witness}\nservices:", 1)
	}
	full := fmt.Sprintf("  tls: {cert: %s, key: %s, ca: %s}\n", cert, key, ca)
	cfg, err := load(t, doc("https", full))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.TLS != (TLS{Cert: cert, Key: key, CA: ca}) {
		t.Errorf("cluster.tls = %+v", cfg.Cluster.TLS)
	}
	var b strings.Builder
	cfg.Print(&b)
	if !strings.Contains(b.String(), "ca: "+ca) {
		t.Errorf("print lost cluster.tls:\n%s", b.String())
	}
	// A single node with TLS (no peers) prints its TLS too.
	single, err := load(t, strings.Replace(base, "cluster: shop\n", "cluster:\n  name: shop\n"+full, 1))
	if err != nil {
		t.Fatal(err)
	}
	b.Reset()
	single.Print(&b)
	if !strings.Contains(b.String(), "cert: "+cert) {
		t.Errorf("print of a single node lost cluster.tls:\n%s", b.String())
	}

	for name, tc := range map[string]struct{ doc, want string }{
		"http with tls":    {doc("http", full), `cluster.peers[0].client_url: "http://127.0.0.1:2379" must be https:// when cluster.tls is set`},
		"https without":    {doc("https", ""), `cluster.peers[1].peer_url: "https://127.0.0.2:2380" is https:// but cluster.tls is not set`},
		"no ca":            {doc("https", fmt.Sprintf("  tls: {cert: %s, key: %s}\n", cert, key)), "cluster.tls.ca: is required: the control plane's mutual TLS needs cert, key and ca"},
		"no key":           {doc("https", fmt.Sprintf("  tls: {cert: %s, ca: %s}\n", cert, ca)), "cluster.tls.key: is required"},
		"unreadable file":  {doc("https", fmt.Sprintf("  tls: {cert: %s, key: %s, ca: %s}\n", cert, key, filepath.Join(dir, "nope.pem"))), "cluster.tls.ca: cannot read " + filepath.Join(dir, "nope.pem") + ": no such file or directory"},
		"single http node": {strings.Replace(base, "cluster: shop\n", "cluster:\n  name: shop\n  tls: {cert: "+cert+"}\n", 1), "cluster.tls.ca: is required"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := load(t, tc.doc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error:\n%v\nwant it to contain:\n%s", err, tc.want)
			}
		})
	}
}
