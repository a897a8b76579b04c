package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/api"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

// runMainEnv makes the test binary run lifeboat's main (see TestMain), so
// that cluster tests start real, separate lifeboat processes.
const runMainEnv = "LIFEBOAT_TEST_RUN_MAIN"

// clusterNode is one `lifeboat serve` process.
type clusterNode struct {
	name string
	api  string
	cmd  *exec.Cmd
	log  *os.File
}

func (n *clusterNode) status(t *testing.T) (api.StatusResponse, error) {
	var st api.StatusResponse
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(n.api + "/api/v1/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func startCluster(t *testing.T) []*clusterNode {
	t.Helper()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(web.Close)
	names := []string{"east-1", "west-1", "tie-1"}
	regions := []string{"east", "west", "tie"}
	var peers strings.Builder
	for i, n := range names {
		fmt.Fprintf(&peers, "    - {name: %s, region: %s, peer_url: \"http://127.0.0.1:%d\", client_url: \"http://127.0.0.1:%d\"}\n",
			n, regions[i], testenv.FreePort(t), testenv.FreePort(t))
	}
	doc := fmt.Sprintf(`cluster:
  name: trio
  lease_ttl: 2s
  peers:
%sregions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
  - {name: tie, priority: 3, role: witness}
services:
  - name: web
    kind: http
    critical: true
    endpoints: {east: %q, west: %q}
    health: {interval: 200ms, timeout: 100ms}
`, peers.String(), web.URL, web.URL)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "lifeboat.yaml")
	if err := os.WriteFile(cfgPath, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var nodes []*clusterNode
	for _, name := range names {
		port := testenv.FreePort(t)
		n := &clusterNode{name: name, api: fmt.Sprintf("http://127.0.0.1:%d", port)}
		var err error
		n.log, err = os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		n.cmd = exec.Command(os.Args[0], "serve", "-c", cfgPath, "--node", name,
			"--data-dir", filepath.Join(dir, "data"), "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--log-level", "warn")
		n.cmd.Env = append(os.Environ(), runMainEnv+"=1")
		n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
		if err := n.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.cmd.Process.Signal(syscall.SIGCONT)
			n.cmd.Process.Kill()
			n.cmd.Wait()
			n.log.Close()
			if t.Failed() {
				b, _ := os.ReadFile(n.log.Name())
				t.Logf("%s's log:\n%s", n.name, b)
			}
		}
	})
	return nodes
}

// leaderSeen waits until every node in nodes names the same leader, and
// that leader says it leads; it returns the leader.
func leaderSeen(t *testing.T, nodes []*clusterNode, within time.Duration, not string) *clusterNode {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		leader := ""
		agree := true
		for _, n := range nodes {
			st, err := n.status(t)
			if err != nil || st.Control == nil || st.Control.Leader == "" || st.Control.Leader == not {
				agree = false
				break
			}
			if leader == "" {
				leader = st.Control.Leader
			}
			agree = agree && st.Control.Leader == leader
		}
		if agree {
			for _, n := range nodes {
				if n.name == leader {
					if st, err := n.status(t); err == nil && st.Control.Leading {
						return n
					}
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no leader agreed on by %d nodes within %s", len(nodes), within)
	return nil
}

func without(nodes []*clusterNode, gone *clusterNode) []*clusterNode {
	var out []*clusterNode
	for _, n := range nodes {
		if n != gone {
			out = append(out, n)
		}
	}
	return out
}

// Three lifeboat processes form one control plane. A leader frozen with
// SIGSTOP past its lease is replaced and, woken, does not act as leader; a
// leader killed with SIGKILL is replaced within the election timeout.
func TestThreeProcessCluster(t *testing.T) {
	nodes := startCluster(t)
	first := leaderSeen(t, nodes, 60*time.Second, "")
	st, _ := first.status(t)
	if len(st.Control.Members) != 3 {
		t.Fatalf("members = %+v", st.Control.Members)
	}
	for _, m := range st.Control.Members {
		if !m.Healthy {
			t.Errorf("member %s unhealthy: %s", m.Name, m.Error)
		}
	}
	// Every node votes on the endpoints' health.
	deadline := time.Now().Add(10 * time.Second)
	for len(st.Control.Voters) != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("voters = %v, want the three nodes", st.Control.Voters)
		}
		time.Sleep(50 * time.Millisecond)
		st, _ = first.status(t)
	}

	// Freeze the leader for longer than its lease.
	if err := first.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	second := leaderSeen(t, without(nodes, first), 15*time.Second, first.name)
	t.Logf("frozen leader %s replaced by %s after %s", first.name, second.name, time.Since(stopped).Round(time.Millisecond))
	time.Sleep(time.Until(stopped.Add(3 * time.Second)))
	if err := first.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// Woken, the old leader must not claim leadership: its lease is gone.
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		st, err := first.status(t)
		if err == nil {
			if st.Control.Leading {
				t.Fatalf("%s leads again after waking from SIGSTOP", first.name)
			}
			if st.Control.Leader == second.name {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Kill the leader outright.
	if err := second.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	third := leaderSeen(t, without(nodes, second), 15*time.Second, second.name)
	took := time.Since(killed)
	t.Logf("killed leader %s replaced by %s after %s", second.name, third.name, took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("new leader after %s", took)
	}
}
