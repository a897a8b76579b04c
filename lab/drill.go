package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/drill"
	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/report"
	"github.com/lifeboat-dr/lifeboat/runbook"
)

// Drill scenarios: the same as drills outside the lab (config.Drill*).
const (
	RegionOutage     = config.DrillRegionOutage     // everything in the active region dies at once
	DBCrash          = config.DrillDBCrash          // only the primary database dies
	NetworkPartition = config.DrillNetworkPartition // the active region is cut off from the others
	Switchover       = config.DrillSwitchover       // planned move
	Failback         = config.DrillFailback         // back to the preferred region after a failover
	// ReplicationLag: the standby falls behind (replay paused, a burst of
	// writes), then the active region dies: the lag gate must refuse the
	// automatic failover.
	ReplicationLag = config.DrillReplicationLag
)

// Scenarios lists the drills the lab runs.
func Scenarios() []string {
	return []string{RegionOutage, DBCrash, NetworkPartition, Switchover, Failback, ReplicationLag}
}

// DrillResult is what one drill measured (the same result as a drill
// outside the lab). A figure that could not be measured is nil, with a
// note saying why.
type DrillResult = drill.Outcome

// Step is one runbook step's duration.
type Step = drill.StepTime

func seconds(d time.Duration) *float64 {
	v := d.Seconds()
	return &v
}

// Drill runs one scenario and puts the lab back (the preferred region
// active, the other a ready standby) for the next.
func (l *Lab) Drill(ctx context.Context, scenario string) (*DrillResult, error) {
	if !slices.Contains(Scenarios(), scenario) {
		return nil, fmt.Errorf("lab: scenario %q is not one of %v", scenario, Scenarios())
	}
	res := &DrillResult{Scenario: scenario, Replication: "async", Notes: []string{}}
	if l.Sync {
		res.Replication = "sync"
	}
	res.Notes = append(res.Notes, l.Notes...)
	data := l.DataRegions()
	from, to := data[0], data[1]
	if err := l.waitControl(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	if err := l.waitStandbyReady(ctx, to.Name, 60*time.Second); err != nil {
		return nil, err
	}
	if scenario == Failback {
		// A failback needs a failover first: a database crash, not timed.
		if _, err := l.unplanned(ctx, DBCrash, from, to, &DrillResult{}); err != nil {
			return nil, fmt.Errorf("lab: the failover before the failback drill: %w", err)
		}
		if err := l.restore(ctx, DBCrash, from, false); err != nil {
			return nil, err
		}
		from, to = to, from
	}
	res.From, res.To = from.Name, to.Name
	var err error
	switch scenario {
	case Switchover, Failback:
		err = l.planned(ctx, scenario, from, to, res)
	case ReplicationLag:
		err = l.lagGate(ctx, from, to, res)
	default:
		_, err = l.unplanned(ctx, scenario, from, to, res)
	}
	if err == nil && res.RunID != "" {
		// The measurements go to the run's report before the lab is put
		// back, so the report's status is the one the drill left.
		l.attachReport(ctx, res)
	}
	if err == nil && scenario != Switchover && scenario != Failback && scenario != ReplicationLag {
		err = l.restore(ctx, scenario, from, true)
	}
	return res, err
}

// attachReport sends the drill's measurements to its run, then writes the
// run's DR report (markdown) into the lab's reports/ directory.
func (l *Lab) attachReport(ctx context.Context, res *DrillResult) {
	d := report.Drill{Scenario: res.Scenario, Replication: res.Replication, DetectSeconds: res.DetectSeconds, RecoverSeconds: res.RecoverSeconds,
		ClientErrors: res.ClientErrors, ErrorWindowSeconds: res.ErrorWindowSeconds, WritesAcked: res.WritesAcked, WritesLost: res.WritesLost,
		PredictedLossSeconds: res.PredictedLossSeconds, SplitBrainViolations: res.SplitBrainViolations}
	d.FaultAt, _ = time.Parse(time.RFC3339Nano, res.FaultAt)
	n, _, err := l.liveNode(ctx)
	if err == nil {
		err = l.call(ctx, n, http.MethodPost, "/api/v1/runs/"+res.RunID+"/drill", d, nil)
	}
	var rep report.Report
	if err == nil {
		// The leader writes the report again with the measurements.
		deadline := time.Now().Add(15 * time.Second)
		for {
			err = l.call(ctx, n, http.MethodGet, "/api/v1/runs/"+res.RunID+"/report", nil, &rep)
			if (err == nil && rep.Facts.Run.Drill != "") || time.Now().After(deadline) {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	var b bytes.Buffer
	if err == nil {
		err = report.Markdown(&b, &rep)
	}
	path := filepath.Join(l.Dir, "reports", res.RunID+".md")
	if err == nil {
		err = os.MkdirAll(filepath.Dir(path), 0o755)
	}
	if err == nil {
		err = os.WriteFile(path, b.Bytes(), 0o644)
	}
	if err != nil {
		res.Notes = append(res.Notes, "report: "+err.Error())
		return
	}
	res.Report = &path
}

// node is a live node outside region r (the witness first).
func (l *Lab) nodeOutside(r Region) Region {
	for i := len(l.Nodes) - 1; i >= 0; i-- {
		if l.Nodes[i].Name != r.Name {
			return l.Nodes[i]
		}
	}
	return l.Nodes[0]
}

func (l *Lab) waitStandbyReady(ctx context.Context, region string, limit time.Duration) error {
	err := poll(ctx, limit, func() error {
		_, st, err := l.liveNode(ctx)
		if err != nil {
			return err
		}
		for _, rd := range st.Readiness {
			if rd.Region == region && rd.Ready {
				return nil
			}
		}
		return fmt.Errorf("readiness %v", st.Readiness)
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("lab: %s is not ready to take over: %v", region, err)
	}
	return err
}

// poll calls try every 250ms until it succeeds, limit passes (its last
// error) or ctx ends (ctx's error).
func poll(ctx context.Context, limit time.Duration, try func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := try()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (l *Lab) startWorkload() *drill.Workload {
	// Clients wait as long as a switchover may hold them (5s) and then some.
	return drill.StartWorkload(drill.WorkloadConfig{URL: l.FrontDoor(), Host: AppHost, Rate: 50, Reads: true, Timeout: 8 * time.Second})
}

// unplanned injects the fault in from and measures the automatic failover
// to to.
func (l *Lab) unplanned(ctx context.Context, scenario string, from, to Region, res *DrillResult) (drill.Result, error) {
	watcher := l.nodeOutside(from)
	before, err := l.runs(ctx, watcher)
	if err != nil {
		return drill.Result{}, err
	}
	known := map[string]bool{}
	for _, r := range before {
		known[r.ID] = true
	}
	w := l.startWorkload()
	time.Sleep(2 * time.Second)
	if st, err := l.NodeStatus(ctx, watcher); err == nil {
		for _, e := range st.Exposure {
			if e.Service == "db" && e.Measured.After(time.Time{}) {
				res.PredictedLossSeconds = &e.LagSeconds
			}
		}
	}
	if res.PredictedLossSeconds == nil {
		res.Notes = append(res.Notes, "predicted loss: the database's exposure was not measured before the fault")
	}
	fault := time.Now()
	res.FaultAt = fault.UTC().Format(time.RFC3339Nano)
	switch scenario {
	case RegionOutage:
		l.killRegion(ctx, from)
	case DBCrash:
		err = l.runIn(ctx, from, "postgres", filepath.Join(l.PGBin, "pg_ctl"), "stop", "-m", "immediate", "-D", l.pgDir(from))
	case NetworkPartition:
		err = l.partition(ctx, from, true)
	}
	if err != nil {
		w.Stop()
		return drill.Result{}, fmt.Errorf("lab: inject %s: %w", scenario, err)
	}
	// Detection: the watcher sees the region down.
	detected := time.Time{}
	deadline := time.Now().Add(60 * time.Second)
	for detected.IsZero() && time.Now().Before(deadline) {
		if st, err := l.NodeStatus(ctx, watcher); err == nil {
			for _, r := range st.Regions {
				if r.Name == from.Name && r.State == health.RegionDown {
					detected = r.Since
				}
			}
		}
		if detected.IsZero() {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if detected.IsZero() {
		res.Notes = append(res.Notes, "detection: the region was not seen down within 60s")
	} else {
		res.DetectSeconds = seconds(detected.Sub(fault))
	}
	// The automatic failover.
	var run *runbook.Run
	for deadline := time.Now().Add(90 * time.Second); run == nil && time.Now().Before(deadline); {
		if runs, err := l.runs(ctx, watcher); err == nil {
			for _, r := range runs {
				if !known[r.ID] {
					run = r
					break
				}
			}
		}
		if run == nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if run == nil {
		w.Stop()
		res.RunbookStatus = "none"
		res.Notes = append(res.Notes, "no failover run started within 90s of the fault")
		return drill.Result{}, errors.New("lab: no automatic failover")
	}
	res.RunID = run.ID
	run, err = l.waitRun(ctx, run.ID, 2*time.Minute)
	if err != nil {
		w.Stop()
		return drill.Result{}, err
	}
	res.RecordRun(run)
	time.Sleep(2 * time.Second)
	result := w.Stop()
	l.measure(ctx, res, result, fault, to, watcher)
	return result, nil
}

// measure fills the client-side figures: recovery, errors, loss, split
// brain.
func (l *Lab) measure(ctx context.Context, res *DrillResult, w drill.Result, fault time.Time, to, watcher Region) {
	res.WritesAcked = len(w.Acks)
	res.ClientErrors = len(w.Errors)
	if len(w.Errors) > 0 {
		res.Notes = append(res.Notes, "client errors: "+strings.ReplaceAll(drill.ErrorKinds(w.Errors, 3), l.Password, "xxxxx"))
	}
	if len(w.Errors) > 0 {
		res.ErrorWindowSeconds = seconds(w.ErrorWindow())
	} else {
		zero := 0.0
		res.ErrorWindowSeconds = &zero
	}
	if a, ok := firstAckFrom(w, fault, to.Name); ok {
		res.RecoverSeconds = seconds(a.At.Sub(fault))
	} else {
		res.Notes = append(res.Notes, "recovery: no write was acknowledged by "+to.Name+"'s database after the fault")
	}
	lost, err := w.Lost(func(ids []int64) (map[int64]bool, error) { return l.present(ctx, to, ids) })
	if err != nil {
		res.Notes = append(res.Notes, "writes lost: "+err.Error())
	} else {
		n := len(lost)
		res.WritesLost = &n
		res.LostIDs = lost
	}
	evs, err := l.events(ctx, watcher)
	if err != nil {
		res.Notes = append(res.Notes, "split brain: the epoch history could not be read: "+err.Error())
		return
	}
	var commits []drill.EpochCommit
	for _, e := range evs {
		if e.Type == control.EventEpoch {
			commits = append(commits, drill.EpochCommit{Epoch: e.Epoch, Region: e.Region, Time: e.Time})
		}
	}
	hist := w.History(func(a drill.Ack) (uint64, string) {
		region := a.DB
		var epoch uint64
		for _, c := range commits {
			if c.Region == region && !c.Time.After(a.At) && c.Epoch > epoch {
				epoch = c.Epoch
			}
		}
		return epoch, region
	})
	v := drill.CheckHistory(commits, hist)
	n := len(v)
	res.SplitBrainViolations = &n
	for _, x := range v {
		res.Violations = append(res.Violations, x.String())
	}
}

// firstAckFrom is the first write acknowledged after t by region's
// database.
func firstAckFrom(w drill.Result, t time.Time, region string) (drill.Ack, bool) {
	for _, a := range w.Acks {
		if !a.At.Before(t) && a.DB == region {
			return a, true
		}
	}
	return drill.Ack{}, false
}

// present reports which ids the region's database holds.
func (l *Lab) present(ctx context.Context, r Region, ids []int64) (map[int64]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, l.PGDSN(r.IP, PortPostgres))
	if err != nil {
		return nil, err
	}
	defer c.Close(context.Background())
	rows, err := c.Query(ctx, `SELECT id FROM transactions WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out[id] = true
	}
	return out, rows.Err()
}

// planned measures a switchover or failback run under the workload.
func (l *Lab) planned(ctx context.Context, kind string, from, to Region, res *DrillResult) error {
	watcher := l.nodeOutside(Region{})
	w := l.startWorkload()
	time.Sleep(2 * time.Second)
	start := time.Now()
	res.FaultAt = start.UTC().Format(time.RFC3339Nano)
	res.Notes = append(res.Notes, "detection: a planned move has no fault to detect")
	run, err := l.startRun(ctx, watcher, kind, to.Name)
	if err != nil {
		w.Stop()
		return err
	}
	res.RunID = run.ID
	run, err = l.waitRun(ctx, run.ID, 3*time.Minute)
	if err != nil {
		w.Stop()
		return err
	}
	res.RecordRun(run)
	time.Sleep(2 * time.Second)
	result := w.Stop()
	l.measure(ctx, res, result, start, to, watcher)
	if run.Status != runbook.StatusSucceeded {
		return fmt.Errorf("lab: %s run %s %s: %s", kind, run.ID, run.Status, run.Error)
	}
	if kind == Switchover {
		// Back to the preferred region for the next drill.
		back, err := l.startRun(ctx, watcher, Switchover, from.Name)
		if err != nil {
			return err
		}
		if back, err = l.waitRun(ctx, back.ID, 3*time.Minute); err != nil {
			return err
		}
		if back.Status != runbook.StatusSucceeded {
			return fmt.Errorf("lab: switchover back to %s %s: %s", from.Name, back.Status, back.Error)
		}
	}
	standby := to
	if kind == Failback {
		standby = from
	}
	return l.waitStandbyReady(ctx, standby.Name, 60*time.Second)
}

// restore brings the failed region back after an unplanned drill and,
// when failback is set, moves the lab back to it.
func (l *Lab) restore(ctx context.Context, scenario string, r Region, failback bool) error {
	switch scenario {
	case RegionOutage:
		if err := l.restartPostgres(ctx, r); err != nil {
			return err
		}
		if err := l.startRedisIn(r, ""); err != nil {
			return err
		}
		if err := l.startApp(r); err != nil {
			return err
		}
		for _, n := range l.Nodes {
			if n.Name == r.Name {
				if err := l.restartNode(ctx, n); err != nil {
					return err
				}
			}
		}
	case DBCrash:
		if err := l.restartPostgres(ctx, r); err != nil {
			return err
		}
	case NetworkPartition:
		if err := l.partition(ctx, r, false); err != nil {
			return err
		}
	}
	if err := waitPG(ctx, l.PGDSN(r.IP, PortPostgres), ""); err != nil {
		return fmt.Errorf("lab: %s's database after the %s: %w%s", r.Name, scenario, err, l.pgLogTails(r))
	}
	if err := l.waitNodes(ctx); err != nil {
		return err
	}
	if !failback {
		return nil
	}
	watcher := l.nodeOutside(Region{})
	var run *runbook.Run
	var err error
	// The old primary answers again; the failback may need a moment while
	// the nodes see it up.
	for attempt := 0; attempt < 30; attempt++ {
		if run, err = l.startRun(ctx, watcher, Failback, r.Name); err == nil {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		return fmt.Errorf("lab: failback to %s: %w", r.Name, err)
	}
	if run, err = l.waitRun(ctx, run.ID, 3*time.Minute); err != nil {
		return err
	}
	if run.Status != runbook.StatusSucceeded {
		return fmt.Errorf("lab: failback to %s %s: %s", r.Name, run.Status, run.Error)
	}
	other := l.DataRegions()[1]
	return l.waitStandbyReady(ctx, other.Name, 60*time.Second)
}

// restartNode starts the killed node n again and waits until it answers.
// A node that exits while it starts is started again, up to three times
// (under load, its member's peers may refuse it for a moment); one that
// does not come back shows its log.
func (l *Lab) restartNode(ctx context.Context, n Region) error {
	err := l.restart(n.Name+"/lifeboat", func() error { return l.startNode(n) }, func(alive func() bool) error {
		return l.waitNode(ctx, n, alive)
	})
	if err != nil {
		return fmt.Errorf("%w%s", err, tails([]string{filepath.Join(l.Dir, "logs", n.Name+"-lifeboat.log")}, func(f string) string { return f }))
	}
	return nil
}

// waitNodes waits until every node answers, then until the control
// plane is whole again (see waitControl).
func (l *Lab) waitNodes(ctx context.Context) error {
	for _, n := range l.Nodes {
		if err := l.waitNode(ctx, n, nil); err != nil {
			return err
		}
	}
	return l.waitControl(ctx, 60*time.Second)
}

// waitControl waits until every node reaches a quorum, names the same
// leader and sees every member healthy: after a region comes back its
// etcd member catches up and its node rejoins, and a drill started before
// that would measure the rejoining, not its own fault.
func (l *Lab) waitControl(ctx context.Context, limit time.Duration) error {
	err := poll(ctx, limit, func() error { return l.controlWhole(ctx) })
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("lab: the control plane is not whole after %s: %w", limit, err)
	}
	return err
}

// controlWhole says what keeps the control plane from being whole, if
// anything.
func (l *Lab) controlWhole(ctx context.Context) error {
	leader := ""
	for _, n := range l.Nodes {
		st, err := l.NodeStatus(ctx, n)
		switch {
		case err != nil:
			return fmt.Errorf("node %s: %w", n.Name, err)
		case st.Control == nil:
			return nil // a single node without a control plane to wait for
		case !st.Control.Quorum:
			return fmt.Errorf("node %s has no quorum", n.Name)
		case st.Control.Leader == "":
			return fmt.Errorf("node %s knows no leader (%s)", n.Name, st.Control.Error)
		case leader != "" && st.Control.Leader != leader:
			return fmt.Errorf("nodes name different leaders: %s, %s", leader, st.Control.Leader)
		}
		leader = st.Control.Leader
		for _, m := range st.Control.Members {
			if !m.Healthy {
				return fmt.Errorf("node %s sees member %s unhealthy: %s", n.Name, m.Name, m.Error)
			}
		}
	}
	return nil
}

// waitNode waits (up to 60s) until node n answers, giving up early once
// alive (when set) says its process has exited.
func (l *Lab) waitNode(ctx context.Context, n Region, alive func() bool) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		if alive != nil && !alive() {
			return fmt.Errorf("lab: node %s: %w", n.Name, errServerExited)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.APIURL()+"/healthz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: node %s does not answer: %w", n.Name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Summary is the median, p95 and max of a figure over runs.
type Summary struct {
	Median *float64 `json:"median"`
	P95    *float64 `json:"p95"`
	Max    *float64 `json:"max"`
	N      int      `json:"n"`
}

// Summarize computes a figure's summary over the runs that measured it.
func Summarize(vals []*float64) Summary {
	var xs []float64
	for _, v := range vals {
		if v != nil {
			xs = append(xs, *v)
		}
	}
	s := Summary{N: len(xs)}
	if len(xs) == 0 {
		return s
	}
	slices.Sort(xs)
	med, p95, mx := xs[len(xs)/2], xs[min(len(xs)-1, int(float64(len(xs))*0.95))], xs[len(xs)-1]
	s.Median, s.P95, s.Max = &med, &p95, &mx
	return s
}

// lagGate: the standby stops replaying, a burst of writes puts it beyond
// max_lag_on_failover, then the active region dies. The automatic failover
// must be refused (an unforced promotion would lose the lag). The lab is
// then put back: the region restarted, replay resumed; nothing moved.
func (l *Lab) lagGate(ctx context.Context, from, to Region, res *DrillResult) error {
	watcher := l.nodeOutside(from)
	before, err := l.runs(ctx, watcher)
	if err != nil {
		return err
	}
	standby := l.PGDSN(to.IP, PortPostgres)
	if err := waitPG(ctx, standby, "SELECT pg_wal_replay_pause()"); err != nil {
		return err
	}
	defer waitPG(context.WithoutCancel(ctx), standby, "SELECT pg_wal_replay_resume()")
	burst := "CREATE TABLE IF NOT EXISTS filler (id serial, pad text); INSERT INTO filler (pad) SELECT repeat('x', 1000) FROM generate_series(1, 4000)"
	if err := waitPG(ctx, l.PGDSN(from.IP, PortPostgres), burst); err != nil {
		return err
	}
	// Wait until the nodes have measured the standby beyond the gate.
	var lag int64
	deadline := time.Now().Add(30 * time.Second)
	for lag < 1<<20 {
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: the standby's lag never passed the gate (last %d bytes)", lag)
		}
		if st, err := l.NodeStatus(ctx, watcher); err == nil {
			for _, e := range st.Exposure {
				if e.Service == "db" {
					lag = e.LagBytes
					secs := e.LagSeconds
					res.PredictedLossSeconds = &secs
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	res.Notes = append(res.Notes, fmt.Sprintf("the standby lagged %d bytes (gate %s) when the region died", lag, LagGate))
	fault := time.Now()
	res.FaultAt = fault.UTC().Format(time.RFC3339Nano)
	l.killRegion(ctx, from)
	// The refusal: a decision event, and no run.
	refused := ""
	for deadline := time.Now().Add(30 * time.Second); refused == "" && time.Now().Before(deadline); {
		evs, err := l.events(ctx, watcher)
		if err == nil {
			for _, e := range evs {
				if e.Type == control.EventDecision && e.Time.After(fault) && strings.Contains(e.Message, "max_lag_on_failover") {
					refused = e.Message
				}
			}
		}
		if refused == "" {
			time.Sleep(200 * time.Millisecond)
		}
	}
	runs, err := l.runs(ctx, watcher)
	if err != nil {
		return err
	}
	if len(runs) != len(before) {
		res.RunID, res.RunbookStatus = runs[0].ID, runs[0].Status
		return fmt.Errorf("lab: a failover ran although the standby was beyond the lag gate (run %s)", runs[0].ID)
	}
	if refused == "" {
		return errors.New("lab: the automatic failover was neither run nor refused within 30s")
	}
	res.RunbookStatus = "refused"
	res.Notes = append(res.Notes, "lag gate: "+refused)
	res.Notes = append(res.Notes, "recovery, loss and split brain: nothing failed over, by design (force a failover to accept the loss)")
	// Put the lab back: the region restarts as it was, still active.
	if err := waitPG(ctx, standby, "SELECT pg_wal_replay_resume()"); err != nil {
		return err
	}
	if err := l.restore(ctx, RegionOutage, from, false); err != nil {
		return err
	}
	return l.waitStandbyReady(ctx, to.Name, 90*time.Second)
}

// waitPostmasterGone waits (up to 10s) until the killed postmaster named
// in the region's postmaster.pid has exited, and removes the lock file
// when that process is gone or a zombie nobody reaps: PostgreSQL refuses
// to start while the pid in it exists.
func (l *Lab) waitPostmasterGone(r Region) {
	lock := filepath.Join(l.pgDir(r), "postmaster.pid")
	b, err := os.ReadFile(lock)
	if err != nil {
		return
	}
	pid := strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		st, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil || strings.Contains(string(st), ") Z ") {
			os.Remove(lock)
			return
		}
	}
}
