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
)

// netLab is three network namespaces joined by a bridge in the root
// namespace: one host per region, on 10.77.<n>.0/24.
type netLab struct {
	t      *testing.T
	bridge string
	ns     []string
	veths  []string
	ips    []string
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetLab creates the namespaces; it needs root (CI runs as root), and
// fails rather than skips without it.
func newNetLab(t *testing.T, hosts int) *netLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the partition test needs root to create network namespaces (ip netns add); CI runs as root")
	}
	id := os.Getpid() % 100000
	subnet := fmt.Sprintf("10.77.%d", id%250)
	l := &netLab{t: t, bridge: fmt.Sprintf("lbbr%d", id)}
	t.Cleanup(l.destroy)
	sh(t, "ip", "link", "add", l.bridge, "type", "bridge")
	sh(t, "ip", "addr", "add", subnet+".254/24", "dev", l.bridge)
	sh(t, "ip", "link", "set", l.bridge, "up")
	for i := 1; i <= hosts; i++ {
		ns := fmt.Sprintf("lb%dn%d", id, i)
		veth := fmt.Sprintf("lb%dv%d", id, i)
		ip := fmt.Sprintf("%s.%d", subnet, i)
		sh(t, "ip", "netns", "add", ns)
		l.ns = append(l.ns, ns)
		sh(t, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
		l.veths = append(l.veths, veth)
		sh(t, "ip", "link", "set", veth, "master", l.bridge, "up")
		sh(t, "ip", "-n", ns, "addr", "add", ip+"/24", "dev", "eth0")
		sh(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
		l.ips = append(l.ips, ip)
	}
	return l
}

func (l *netLab) destroy() {
	for _, v := range l.veths {
		exec.Command("ip", "link", "del", v).Run()
	}
	for _, ns := range l.ns {
		exec.Command("ip", "netns", "del", ns).Run()
	}
	exec.Command("ip", "link", "del", l.bridge).Run()
}

// statusIn asks a node for its status from inside its namespace.
func statusIn(ns, url string) (api.StatusResponse, error) {
	var st api.StatusResponse
	out, err := exec.Command("ip", "netns", "exec", ns, "curl", "-s", "-m", "2", url+"/api/v1/status").Output()
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(out, &st)
}

// A region cut off from the other two by a network partition: its node
// stops routing writes (no quorum) within one lease TTL, while the two
// others keep a leader and the quorum.
func TestPartitionStopsWrites(t *testing.T) {
	lab := newNetLab(t, 3)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer web.Close()
	names := []string{"east-1", "west-1", "tie-1"}
	regions := []string{"east", "west", "tie"}
	var peers strings.Builder
	for i, n := range names {
		fmt.Fprintf(&peers, "    - {name: %s, region: %s, peer_url: \"http://%s:2380\", client_url: \"http://%s:2379\"}\n", n, regions[i], lab.ips[i], lab.ips[i])
	}
	doc := fmt.Sprintf(`cluster:
  name: split
  lease_ttl: 2s
  peers:
%sregions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
  - {name: tie, priority: 3, role: witness}
services:
  - name: web
    kind: tcp
    endpoints: {east: "%s:7", west: "%s:7"}
    health: {interval: 500ms, timeout: 200ms}
`, peers.String(), lab.ips[0], lab.ips[1])
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "lifeboat.yaml")
	if err := os.WriteFile(cfgPath, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var cmds []*exec.Cmd
	urls := make([]string, 3)
	for i, name := range names {
		// No API token: each node's API listens on loopback only, inside
		// its namespace.
		urls[i] = "http://127.0.0.1:7480"
		logf, _ := os.Create(filepath.Join(dir, name+".log"))
		cmd := exec.Command("ip", "netns", "exec", lab.ns[i], os.Args[0], "serve", "-c", cfgPath, "--node", name,
			"--data-dir", filepath.Join(dir, "data"), "--listen", lab.ips[i]+":7480", "--log-level", "warn")
		cmd.Env = append(os.Environ(), runMainEnv+"=1")
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
		defer func() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
			logf.Close()
			if t.Failed() {
				b, _ := os.ReadFile(logf.Name())
				t.Logf("%s's log:\n%.3000s", name, b)
			}
		}()
	}
	// All three agree on a leader.
	deadline := time.Now().Add(60 * time.Second)
	for {
		agree := 0
		for i := range names {
			if st, err := statusIn(lab.ns[i], urls[i]); err == nil && st.Control != nil && st.Control.Leader != "" && st.Control.Quorum {
				agree++
			}
		}
		if agree == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the three nodes never agreed on a leader")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Cut east off: its veth goes down.
	sh(t, "ip", "link", "set", lab.veths[0], "down")
	cut := time.Now()
	for {
		st, err := statusIn(lab.ns[0], urls[0])
		if err == nil && st.Traffic != nil && st.Traffic.State.NoQuorum && !st.Control.Leading {
			break
		}
		// One lease TTL (2s), and the time a status takes to answer.
		if time.Since(cut) > 3500*time.Millisecond {
			t.Fatalf("east still routes writes %s after the partition: %+v %v", time.Since(cut), st.Control, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the cut-off node stopped routing writes %s after the partition (lease TTL 2s)", time.Since(cut).Round(time.Millisecond))
	// The majority side keeps a leader and the quorum.
	deadline = time.Now().Add(15 * time.Second)
	for {
		st1, err1 := statusIn(lab.ns[1], urls[1])
		st2, err2 := statusIn(lab.ns[2], urls[2])
		if err1 == nil && err2 == nil && st1.Control.Quorum && st2.Control.Quorum && st1.Control.Leader != "" &&
			st1.Control.Leader != "east-1" && st1.Control.Leader == st2.Control.Leader && !st1.Traffic.State.NoQuorum {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the majority lost its leader or quorum: %v %v", err1, err2)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Healed: east routes writes again.
	sh(t, "ip", "link", "set", lab.veths[0], "up")
	deadline = time.Now().Add(15 * time.Second)
	for {
		if st, err := statusIn(lab.ns[0], urls[0]); err == nil && !st.Traffic.State.NoQuorum && st.Control.Quorum {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("east did not recover the quorum after the partition healed")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
