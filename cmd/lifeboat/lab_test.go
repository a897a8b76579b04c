package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The lab comes up (namespaces, Postgres, Redis, apps, three Lifeboat
// nodes: this test binary re-executed as lifeboat), runs each drill once
// with synchronous replication, and goes down leaving nothing behind.
// Each drill must complete its runbook, lose no acknowledged write and
// show no split brain; the timings are benchmarks, not asserted here.
func TestLabDrills(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the lab needs root for network namespaces (CI runs as root)")
	}
	bin := buildLab(t)
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("lifeboat-lab-test-%d", os.Getpid()))
	out, errs, code := run(t, nil, "lab", "up", "--dir", dir, "--sync", "--latency", "0", "--binary", bin)
	m := regexp.MustCompile(`lab ([0-9a-f]+) up in`).FindStringSubmatch(out)
	if m != nil {
		defer func() {
			run(t, nil, "lab", "down", "--dir", dir)
			nets, _ := exec.Command("ip", "netns", "list").Output()
			if strings.Contains(string(nets), "lb"+m[1]) {
				t.Errorf("namespaces left behind:\n%s", nets)
			}
			links, _ := exec.Command("ip", "link").Output()
			if strings.Contains(string(links), "lb"+m[1]) {
				t.Errorf("links left behind:\n%s", links)
			}
			if _, err := os.Stat(dir); err == nil {
				t.Errorf("%s left behind", dir)
			}
		}()
	}
	if code != 0 || m == nil {
		t.Fatalf("lab up: exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"east     active", "west     standby", "witness  witness", "front door", "node witness"} {
		if !strings.Contains(out, want) {
			t.Errorf("lab up output lacks %q:\n%s", want, out)
		}
	}
	out, _, code = run(t, nil, "lab", "status", "--dir", dir)
	if code != 0 || !strings.Contains(out, "node witness: active east, epoch 1") {
		t.Errorf("lab status: exit %d\n%s", code, out)
	}
	// As root, the kernel's NAT carries the writer endpoints' connections
	// (the drills below go through it).
	if n := strings.Count(out, "writer endpoint: kernel NAT"); n != 3 {
		t.Errorf("lab status: %d of 3 writer endpoints on the kernel's NAT:\n%s", n, out)
	}
	for _, scenario := range []string{"region-outage", "db-crash", "network-partition", "switchover", "failback", "replication-lag"} {
		out, errs, code := run(t, nil, "lab", "drill", scenario, "--json", "--dir", dir)
		if code != 0 {
			t.Fatalf("drill %s: exit %d\n%s\n%s", scenario, code, out, errs)
		}
		checkDrill(t, scenario, out, true)
	}
}

// buildLab builds the lifeboat the lab's processes run, without the race
// detector (nine race-instrumented processes would crowd two cores).
func buildLab(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "lifeboat")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// checkDrill checks one drill's --json result: every field, and the
// invariants of the scenario (sync replication): the runbook succeeded,
// no acknowledged write lost, no split brain; with plannedErrorFree, no
// client error in a planned move either (without added latency; with
// latency that is a benchmark figure, see BENCHMARKS.md).
func checkDrill(t *testing.T, scenario, out string, plannedErrorFree bool) {
	t.Helper()
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("drill %s --json: %v\n%s", scenario, err, out)
	}
	requireKeys(t, scenario, r, "scenario", "replication", "detect_seconds", "recover_seconds", "client_errors", "error_window_seconds",
		"writes_acked", "writes_lost", "predicted_loss_seconds", "split_brain_violations", "run_id", "runbook_status", "report", "notes")
	t.Logf("%s: detect %v recover %v errors %v acked %v lost %v split-brain %v; notes %v", scenario, r["detect_seconds"], r["recover_seconds"], r["client_errors"], r["writes_acked"], r["writes_lost"], r["split_brain_violations"], r["notes"])
	if scenario == "replication-lag" {
		// The lag gate refuses the automatic failover: nothing moves.
		if r["runbook_status"] != "refused" || r["run_id"] != "" || !strings.Contains(fmt.Sprint(r["notes"]), "over max_lag_on_failover") {
			t.Errorf("replication-lag: %v", r)
		}
		return
	}
	if r["runbook_status"] != "succeeded" || r["replication"] != "sync" {
		t.Errorf("%s: runbook %v, replication %v", scenario, r["runbook_status"], r["replication"])
	}
	if r["writes_lost"] != 0.0 || r["split_brain_violations"] != 0.0 {
		t.Errorf("%s: %v writes lost, %v split-brain violations: %v %v", scenario, r["writes_lost"], r["split_brain_violations"], r["lost_ids"], r["violations"])
	}
	if acked, _ := r["writes_acked"].(float64); acked < 50 {
		t.Errorf("%s: only %v writes acknowledged", scenario, acked)
	}
	if scenario == "switchover" || scenario == "failback" {
		if plannedErrorFree && r["client_errors"] != 0.0 {
			t.Errorf("%s: %v client errors in a planned move", scenario, r["client_errors"])
		}
	} else if r["detect_seconds"] == nil || r["recover_seconds"] == nil {
		t.Errorf("%s: detection or recovery not measured: %v", scenario, r["notes"])
	}
}

// The lab without privilege: lab up as an ordinary user (the postgres
// account here) puts the regions on loopback addresses joined by fault
// proxies carrying 40ms of latency; a region outage, a network partition
// (its links and its etcd member cut both ways) and a switchover keep
// their invariants (runbook succeeded, nothing lost, no split brain; the
// client errors are logged: with latency they are a benchmark figure);
// lab down leaves no process and no directory.
func TestLabLoopbackUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the test runs the lab as another, unprivileged user: it needs root to switch to it (CI runs as root)")
	}
	if _, err := user.Lookup("postgres"); err != nil {
		t.Fatalf("the unprivileged user is postgres, and there is none: %v", err)
	}
	// Built where the postgres user may run it.
	binDir, err := os.MkdirTemp("", "lifeboat-bin-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(binDir)
	os.Chmod(binDir, 0o755)
	bin := filepath.Join(binDir, "lifeboat")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("lifeboat-lab-loopback-%d", os.Getpid()))
	lab := func(args ...string) (string, string, int) {
		cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--", bin, "lab"}, args...)...)
		var out, errs strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errs
		err := cmd.Run()
		code := 0
		if err != nil {
			code = -1
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
		}
		return out.String(), errs.String(), code
	}
	out, errs, code := lab("up", "--dir", dir, "--net", "loopback", "--sync", "--latency", "40ms")
	defer func() {
		if out, errs, code := lab("down", "--dir", dir); code != 0 {
			t.Errorf("lab down: exit %d\n%s\n%s", code, out, errs)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%s left behind", dir)
		}
		if ps, _ := exec.Command("pgrep", "-f", dir).Output(); len(strings.TrimSpace(string(ps))) > 0 {
			t.Errorf("processes left behind: %s", ps)
		}
	}()
	if code != 0 {
		t.Fatalf("lab up: exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"network: loopback", "40ms between regions", "east     active", "witness  witness"} {
		if !strings.Contains(out, want) {
			t.Errorf("lab up output lacks %q:\n%s", want, out)
		}
	}
	for _, scenario := range []string{"region-outage", "network-partition", "switchover"} {
		out, errs, code := lab("drill", scenario, "--json", "--dir", dir)
		if code != 0 {
			t.Fatalf("drill %s: exit %d\n%s\n%s", scenario, code, out, errs)
		}
		checkDrill(t, scenario, out, false)
	}
}

// A two-region lab (its Lifeboat node outside both regions, on the host's
// network) comes up with the node's writer endpoint on the kernel's NAT,
// and lab down removes the node's NAT table with everything else.
func TestLabTwoRegions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the lab needs root for network namespaces (CI runs as root)")
	}
	bin := buildLab(t)
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("lifeboat-lab-two-%d", os.Getpid()))
	out, errs, code := run(t, nil, "lab", "up", "--dir", dir, "--regions", "2", "--sync", "--latency", "0", "--binary", bin)
	defer run(t, nil, "lab", "down", "--dir", dir)
	if code != 0 || !strings.Contains(out, "node control") {
		t.Fatalf("lab up --regions 2: exit %d\n%s\n%s", code, out, errs)
	}
	// The node's table is named after its process.
	ps, _ := exec.Command("pgrep", "-f", dir+"/lifeboat-control.yaml").Output()
	pids := strings.Fields(string(ps))
	if len(pids) != 1 {
		t.Fatalf("the control node's process: %q", ps)
	}
	table := "lifeboat_" + pids[0] + "_"
	tables := func() string {
		b, err := exec.Command("nft", "list", "tables").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list tables: %v\n%s", err, b)
		}
		return string(b)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(tables(), table) {
		if time.Now().After(deadline) {
			t.Fatalf("no NAT table %s* for the control node:\n%s", table, tables())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, errs, code := run(t, nil, "lab", "down", "--dir", dir); code != 0 {
		t.Fatalf("lab down: exit %d\n%s\n%s", code, out, errs)
	}
	if strings.Contains(tables(), table) {
		t.Errorf("lab down left the control node's NAT table:\n%s", tables())
	}
}
