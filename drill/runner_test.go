package drill

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/api"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/dataplane"
	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
	"github.com/lifeboat-dr/lifeboat/observe"
	"github.com/lifeboat-dr/lifeboat/replication"
	"github.com/lifeboat-dr/lifeboat/runbook"
	"github.com/lifeboat-dr/lifeboat/traffic"
)

func TestRunCommand(t *testing.T) {
	ctx := context.Background()
	out, _, err := RunCommand(ctx, `echo "$LIFEBOAT_SCENARIO $LIFEBOAT_FROM"; echo oops >&2`, 5*time.Second, "LIFEBOAT_SCENARIO=db-crash", "LIFEBOAT_FROM=east")
	if err != nil || out != "db-crash east\noops" {
		t.Errorf("env and output: %q, %v", out, err)
	}
	if _, _, err := RunCommand(ctx, "echo no; exit 3", 5*time.Second); err == nil || err.Error() != "failed: exit status 3" {
		t.Errorf("exit 3: %v", err)
	}
	out, _, _ = RunCommand(ctx, `head -c 10000 /dev/zero | tr '\0' x; echo END`, 5*time.Second)
	if len(out) > commandOutput+3 || !strings.HasPrefix(out, "...") || !strings.HasSuffix(out, "xEND") {
		t.Errorf("long output kept as %d bytes: %.20q...%.20q", len(out), out, out[max(0, len(out)-20):])
	}

	// A command that outlives its timeout is killed with everything it
	// started.
	pidFile := filepath.Join(t.TempDir(), "pid")
	start := time.Now()
	_, took, err := RunCommand(ctx, "sleep 30 & echo $! > "+pidFile+"; sleep 30", 300*time.Millisecond)
	if err == nil || err.Error() != "timed out after 300ms, killed" || time.Since(start) > 5*time.Second || took < 300*time.Millisecond {
		t.Errorf("timeout: %v after %s", err, took)
	}
	b, _ := os.ReadFile(pidFile)
	pid := strings.TrimSpace(string(b))
	if pid == "" {
		t.Fatal("the command did not start its background job")
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		st, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil || strings.Contains(string(st), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the background job %s outlived the command's timeout: %s", pid, st)
		}
	}
}

// fakeNode answers the API calls of a drill like a node whose active
// region never goes down and whose leader never fails over.
type fakeNode struct {
	t     *testing.T
	calls []string
}

func (n *fakeNode) Do(ctx context.Context, method, path string, body, out any) error {
	n.calls = append(n.calls, method+" "+path)
	var v any
	switch {
	case method == "GET" && path == "/api/v1/status":
		v = api.StatusResponse{
			Status: observe.Status{ActiveRegion: "east",
				Regions:   []health.RegionStatus{{Name: "east", State: health.RegionUp}, {Name: "west", State: health.RegionUp}},
				Readiness: []health.Readiness{{Region: "west", Ready: true}},
				Exposure:  []replication.Exposure{{Service: "db", LagSeconds: 0.25, Measured: time.Now()}}},
			Traffic: &dataplane.Status{State: traffic.State{Active: "east", Epoch: 1}},
		}
	case method == "POST" && path == "/api/v1/runs":
		if req := body.(api.RunRequest); !req.DryRun || req.Kind != runbook.KindFailover || req.To != "west" {
			n.t.Errorf("POST /api/v1/runs %+v: a drill that injects a fault only rehearses the failover", req)
		}
		v = api.DryRunResponse{Checks: []runbook.Check{{What: "region west ready to take over", OK: true}}}
	case method == "GET" && path == "/api/v1/runs":
		v = []*runbook.Run{}
	case method == "GET" && strings.HasPrefix(path, "/api/v1/events?"):
		v = []any{}
	default:
		return fmt.Errorf("fake node: %s %s", method, path)
	}
	b, _ := json.Marshal(v)
	return json.Unmarshal(b, out)
}

// An unplanned drill whose fault raises no failover fails, and its
// restore command runs all the same; inject and restore see the drill in
// their environment; a command that fails or hangs fails the drill, and
// restore still runs; a workload that cannot write stops the drill before
// any fault.
func TestRunnerRestoresWhenTheDrillFails(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	dir := t.TempDir()
	inj, rest := filepath.Join(dir, "inject"), filepath.Join(dir, "restore")
	cfg := &config.Config{
		Regions: []config.Region{{Name: "east", Priority: 1, Role: config.RoleActive}, {Name: "west", Priority: 2, Role: config.RoleStandby}},
		Services: []config.Service{{Name: "db", Kind: config.KindPostgres, Critical: true,
			Endpoints: map[string]string{"east": pg.Primary.DSN(), "west": pg.Standby.DSN()}}},
		Traffic: config.Traffic{Postgres: []config.PostgresPort{{Listen: "127.0.0.1:1", Service: "db", Role: config.PGWriter}}},
		Drills: &config.Drills{
			// The workload writes to the primary directly.
			Workload: config.DrillWorkload{Service: "db", Rate: 50, Address: "127.0.0.1:" + strconv.Itoa(pg.Primary.Port)},
			Scenarios: map[string]*config.DrillScenario{config.DrillDBCrash: {
				Inject:  `echo "$LIFEBOAT_SCENARIO $LIFEBOAT_FROM $LIFEBOAT_TO" > ` + inj,
				Restore: `echo "restored $LIFEBOAT_FROM" > ` + rest, Timeout: config.Duration(5 * time.Second)}},
		},
	}
	node := &fakeNode{t: t}
	r := &Runner{API: node, Config: cfg, Warmup: 300 * time.Millisecond, DetectTimeout: time.Second}
	out, err := r.Run(context.Background(), config.DrillDBCrash)
	if err == nil || !strings.Contains(err.Error(), "no failover run within 1s of the fault") {
		t.Fatalf("drill without a failover: %v", err)
	}
	if b, _ := os.ReadFile(inj); string(b) != "db-crash east west\n" {
		t.Errorf("inject saw %q", b)
	}
	if b, _ := os.ReadFile(rest); string(b) != "restored east\n" {
		t.Errorf("restore did not run after the failed drill: %q", b)
	}
	notes := strings.Join(out.Notes, "\n")
	for _, want := range []string{"inject (ok, ", "restore (ok, ", "detection: east was not seen down within 1s of the fault", "no failover run started within 1s",
		"recovery: no write was acknowledged by west's database after the fault"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes lack %q:\n%s", want, notes)
		}
	}
	if out.RunbookStatus != "none" || out.RunID != "" || out.Report != nil || out.WritesAcked < 10 || out.DetectSeconds != nil || out.RecoverSeconds != nil {
		t.Errorf("outcome: %+v", out)
	}
	if out.PredictedLossSeconds == nil || *out.PredictedLossSeconds != 0.25 || out.WritesLost == nil || *out.WritesLost != 0 ||
		out.SplitBrainViolations == nil || *out.SplitBrainViolations != 0 || out.From != "east" || out.To != "west" {
		t.Errorf("measurements: %+v", out)
	}

	for _, c := range []struct {
		inject string
		want   string
	}{
		{"echo broken >&2; exit 3", "drill: inject db-crash: failed: exit status 3"},
		{"sleep 10", "drill: inject db-crash: timed out after 300ms, killed"},
	} {
		os.Remove(rest)
		sc := cfg.Drills.Scenarios[config.DrillDBCrash]
		sc.Inject, sc.Timeout = c.inject, config.Duration(300*time.Millisecond)
		out, err := r.Run(context.Background(), config.DrillDBCrash)
		if err == nil || err.Error() != c.want {
			t.Errorf("inject %q: %v, want %s", c.inject, err, c.want)
		}
		if b, _ := os.ReadFile(rest); string(b) != "restored east\n" {
			t.Errorf("inject %q: restore did not run: %q", c.inject, b)
		}
		if out == nil || !strings.Contains(strings.Join(out.Notes, "\n"), "inject (") {
			t.Errorf("inject %q: outcome %+v", c.inject, out)
		}
	}

	// Nothing is injected when the workload cannot write.
	os.Remove(rest)
	cfg.Drills.Scenarios[config.DrillDBCrash].Inject = "touch " + inj + ".2"
	cfg.Drills.Workload.Address = testenv.Blackhole(t)
	if _, err := r.Run(context.Background(), config.DrillDBCrash); err == nil || !strings.Contains(err.Error(), "creating lifeboat_drill.writes") {
		t.Errorf("workload that cannot connect: %v", err)
	}
	for _, f := range []string{inj + ".2", rest} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s ran although the workload could not write", filepath.Base(f))
		}
	}

	// A fault that would hit the runner's own region is refused.
	cfg.Drills.Workload.Address = "127.0.0.1:" + strconv.Itoa(pg.Primary.Port)
	home := &Runner{API: node, Config: cfg, Home: "east"}
	if _, err := home.Run(context.Background(), config.DrillDBCrash); err == nil || err.Error() != "drill: db-crash would hit east, where this drill runs: it could not restore from there; run it from another region" {
		t.Errorf("a fault in the runner's region: %v", err)
	}
	if _, err := os.Stat(inj + ".2"); err == nil {
		t.Error("inject ran in the runner's own region")
	}

	// A scenario without commands, an unknown one.
	for scenario, want := range map[string]string{"region-outage": "drills.scenarios.region-outage is not configured", "meteor": `scenario "meteor" is not one of`} {
		if _, err := r.Run(context.Background(), scenario); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", scenario, err)
		}
	}
}
