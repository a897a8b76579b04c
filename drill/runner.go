package drill

// runner.go runs a drill against a running topology (lifeboat serve) over
// its API: the fault is injected by the commands of the configuration's
// drills section (or, for a planned move, the run is started), while a
// Postgres workload writes through the writer endpoint, and the same
// figures as the lab's drills are measured.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/lifeboat-dr/lifeboat/api"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/report"
	"github.com/lifeboat-dr/lifeboat/runbook"
)

// Outcome is what one drill measured; its JSON is that of the lab's
// drills (lab.DrillResult). A figure that could not be measured is nil,
// with a note saying why.
type Outcome struct {
	Scenario             string   `json:"scenario"`
	Replication          string   `json:"replication"`
	From                 string   `json:"from"`
	To                   string   `json:"to"`
	DetectSeconds        *float64 `json:"detect_seconds"`
	RecoverSeconds       *float64 `json:"recover_seconds"`
	ClientErrors         int      `json:"client_errors"`
	ErrorWindowSeconds   *float64 `json:"error_window_seconds"`
	WritesAcked          int      `json:"writes_acked"`
	WritesLost           *int     `json:"writes_lost"`
	LostIDs              []int64  `json:"lost_ids,omitempty"`
	PredictedLossSeconds *float64 `json:"predicted_loss_seconds"`
	SplitBrainViolations *int     `json:"split_brain_violations"`
	Violations           []string `json:"violations,omitempty"`
	RunID                string   `json:"run_id"`
	RunbookStatus        string   `json:"runbook_status"`
	// Report is where the run's DR report is served (GET; lifeboat report
	// RUN_ID prints it), once the measurements are attached.
	Report  *string    `json:"report"`
	Steps   []StepTime `json:"steps,omitempty"`
	FaultAt string     `json:"fault_at,omitempty"`
	Notes   []string   `json:"notes"`
	faultAt time.Time
}

// StepTime is one runbook step's duration.
type StepTime struct {
	Name    string  `json:"name"`
	Status  string  `json:"status"`
	Seconds float64 `json:"seconds"`
}

func (o *Outcome) note(format string, args ...any) {
	o.Notes = append(o.Notes, fmt.Sprintf(format, args...))
}

// RecordRun keeps the run's status and each finished step's duration.
func (o *Outcome) RecordRun(run *runbook.Run) {
	o.RunbookStatus = run.Status
	o.Steps = o.Steps[:0]
	for _, s := range run.Steps {
		if !s.StartedAt.IsZero() && !s.FinishedAt.IsZero() {
			o.Steps = append(o.Steps, StepTime{Name: s.Name, Status: s.Status, Seconds: s.FinishedAt.Sub(s.StartedAt).Seconds()})
		}
	}
}

func seconds(d time.Duration) *float64 {
	v := d.Seconds()
	return &v
}

// API calls a Lifeboat node's API: body is sent as JSON, the answer
// decoded into out; an error answer is an error.
type API interface {
	Do(ctx context.Context, method, path string, body, out any) error
}

// APIFunc makes a function an API.
type APIFunc func(ctx context.Context, method, path string, body, out any) error

// Do calls f.
func (f APIFunc) Do(ctx context.Context, method, path string, body, out any) error {
	return f(ctx, method, path, body, out)
}

// Runner runs drills against the topology of Config through API.
type Runner struct {
	API    API
	Config *config.Config
	// To is the region expected to take over; default: the first ready
	// standby (failback: the configured active region).
	To string
	// Progress, when set, is told what the drill is waiting for.
	Progress func(msg string)
	// Home, when set, is the region the runner itself runs in: a fault
	// there could take the runner down before it restores, so an
	// unplanned drill whose fault would hit it is refused.
	Home string

	// Timings (zero: the default). Warmup: the workload writes this long
	// before the fault (2s); Settle: and this long after the run ends
	// (2s). ReadyTimeout: how long to wait for a ready standby (60s).
	// DetectTimeout: for the region to be seen down, the failover run to
	// appear, the lag gate to refuse (2m each). RunTimeout: for the run
	// to end (30m: a manual policy waits for an approval).
	Warmup, Settle, ReadyTimeout, DetectTimeout, RunTimeout time.Duration
}

const (
	defaultWarmup        = 2 * time.Second
	defaultSettle        = 2 * time.Second
	defaultReadyTimeout  = time.Minute
	defaultDetectTimeout = 2 * time.Minute
	defaultRunTimeout    = 30 * time.Minute
	pollEvery            = 100 * time.Millisecond
	callTimeout          = 10 * time.Second
	reportWait           = 15 * time.Second
	eventsPage           = 1000
)

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (r *Runner) progress(format string, args ...any) {
	if r.Progress != nil {
		r.Progress(fmt.Sprintf(format, args...))
	}
}

func (r *Runner) call(ctx context.Context, method, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return r.API.Do(ctx, method, path, body, out)
}

// runKind is the kind of run a scenario drives.
func runKind(scenario string) string {
	switch scenario {
	case config.DrillSwitchover:
		return runbook.KindSwitchover
	case config.DrillFailback:
		return runbook.KindFailback
	}
	return runbook.KindFailover
}

// Run runs one drill. Unplanned scenarios inject their fault with the
// configured command and undo it with the restore command once measured
// (also when the drill fails, and when ctx ends). The measurements are
// attached to the run (its DR report is written again with them). The
// outcome is returned whenever the drill got as far as starting its
// workload, with an error when the drill itself failed.
func (r *Runner) Run(ctx context.Context, scenario string) (*Outcome, error) {
	cfg := r.Config
	if cfg == nil || cfg.Drills == nil {
		return nil, errors.New("drill: the configuration has no drills section (drills: workload, scenarios)")
	}
	if !slices.Contains(config.DrillScenarios(), scenario) {
		return nil, fmt.Errorf("drill: scenario %q is not one of %s", scenario, strings.Join(config.DrillScenarios(), ", "))
	}
	planned := config.PlannedDrill(scenario)
	sc := cfg.Drills.Scenarios[scenario]
	if !planned && (sc == nil || sc.Inject == "") {
		return nil, fmt.Errorf("drill: drills.scenarios.%s is not configured: add the commands that inject and restore the fault", scenario)
	}
	svc, ok := cfg.Service(cfg.Drills.Workload.Service)
	if !ok {
		return nil, fmt.Errorf("drill: drills.workload.service %q is not declared", cfg.Drills.Workload.Service)
	}
	dsn, err := WriterDSN(cfg)
	if err != nil {
		return nil, err
	}
	res := &Outcome{Scenario: scenario, Replication: config.ModeAsync, Notes: []string{}}
	if svc.Replication != nil && svc.Replication.Mode != "" {
		res.Replication = svc.Replication.Mode
	}

	st, err := r.ready(ctx, scenario, res)
	if err != nil {
		return nil, err
	}
	if !planned && r.Home != "" && res.From == r.Home {
		return nil, fmt.Errorf("drill: %s would hit %s, where this drill runs: it could not restore from there; run it from another region", scenario, r.Home)
	}
	kind := runKind(scenario)
	if err := r.preCheck(ctx, kind, res.To); err != nil {
		return nil, err
	}
	cursor, err := r.lastSeq(ctx)
	if err != nil {
		return nil, fmt.Errorf("drill: reading the event stream: %w", err)
	}
	known, err := r.runIDs(ctx)
	if err != nil {
		return nil, err
	}
	var initial *EpochCommit
	if st.Traffic != nil && st.Traffic.State.Epoch > 0 {
		initial = &EpochCommit{Epoch: st.Traffic.State.Epoch, Region: st.Traffic.State.Active}
	}
	servers, notes := ProbeServers(ctx, svc.Endpoints)
	res.Notes = append(res.Notes, notes...)

	// Writes wait as long as a switchover may hold new connections (5s)
	// and then some.
	w, err := StartPGWorkload(ctx, PGWorkloadConfig{DSN: dsn, Rate: cfg.Drills.Workload.Rate, Timeout: 8 * time.Second, RegionOf: servers.Region})
	if err != nil {
		return nil, fmt.Errorf("%w (through the writer endpoint of %s)", err, svc.Name)
	}
	if err := sleep(ctx, orDefault(r.Warmup, defaultWarmup)); err != nil {
		w.Stop()
		return nil, err
	}
	if w.Acked() == 0 {
		w.Stop()
		return nil, fmt.Errorf("drill: no write was acknowledged through the writer endpoint of %s before the fault (last error: %s); nothing was injected", svc.Name, cfg.Redact(w.LastError()))
	}
	r.predictedLoss(ctx, svc.Name, res)

	fault := time.Now()
	res.faultAt = fault
	res.FaultAt = fault.UTC().Format(time.RFC3339Nano)
	var (
		run    *runbook.Run
		runErr error
	)
	if planned {
		res.note("detection: a planned move has no fault to detect")
		run, runErr = r.startRun(ctx, kind, res.To, scenario)
	} else {
		r.progress("injecting %s: %s", scenario, cfg.Redact(sc.Inject))
		note, err := r.command(ctx, "inject", scenario, sc, res)
		res.Notes = append(res.Notes, note)
		switch {
		case err != nil:
			runErr = fmt.Errorf("drill: inject %s: %w", scenario, err)
		case scenario == config.DrillReplicationLag:
			runErr = r.lagGate(ctx, known, cursor, res)
		default:
			r.detect(ctx, res)
			run, runErr = r.newRun(ctx, known, fault, res)
		}
	}
	if run != nil && runErr == nil {
		res.RunID = run.ID
		r.progress("run %s: %s %s → %s", run.ID, run.Kind, run.From, run.To)
		run, runErr = r.waitRun(ctx, run.ID)
		if run != nil {
			res.RecordRun(run)
			if run.Status != runbook.StatusSucceeded {
				runErr = fmt.Errorf("drill: %s run %s %s: %s", run.Kind, run.ID, run.Status, run.Error)
			}
		}
	}
	if res.RunbookStatus == "" {
		res.RunbookStatus = "none"
	}
	if runErr == nil {
		sleep(ctx, orDefault(r.Settle, defaultSettle))
	}
	result := w.Stop()
	r.measure(ctx, res, w, result, initial, cursor)
	if !planned {
		// The fault is undone whatever became of the drill, even when the
		// caller gave up on it.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sc.CommandTimeout()+5*time.Second)
		r.progress("restoring after %s: %s", scenario, cfg.Redact(sc.Restore))
		note, err := r.command(rctx, "restore", scenario, sc, res)
		cancel()
		res.Notes = append(res.Notes, note)
		if err != nil && runErr == nil {
			runErr = fmt.Errorf("drill: restore after %s: %w", scenario, err)
		}
	}
	if res.RunID != "" {
		r.attach(ctx, res)
	}
	return res, runErr
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// status is the node's status, the routing state included.
func (r *Runner) status(ctx context.Context) (api.StatusResponse, error) {
	var st api.StatusResponse
	err := r.call(ctx, http.MethodGet, "/api/v1/status", nil, &st)
	return st, err
}

// ready finds the regions of the drill: from is the active region, to
// the standby that takes over, once it is ready (failback: the configured
// active region, which the failback reprotects first).
func (r *Runner) ready(ctx context.Context, scenario string, res *Outcome) (api.StatusResponse, error) {
	deadline := time.Now().Add(orDefault(r.ReadyTimeout, defaultReadyTimeout))
	said := false
	for {
		st, err := r.status(ctx)
		if err != nil {
			return st, fmt.Errorf("drill: reading the status: %w", err)
		}
		res.From = st.ActiveRegion
		if st.Traffic != nil && st.Traffic.State.Active != "" {
			res.From = st.Traffic.State.Active // the routing state is the authority
		}
		if scenario == config.DrillFailback {
			res.To = r.To
			if res.To == "" {
				res.To = r.Config.ActiveRegion()
			}
			if res.To == res.From {
				return st, fmt.Errorf("drill: failback: %s is already active; a failback drill moves back after a failover (or a switchover)", res.From)
			}
			return st, nil
		}
		var why []string
		for _, rd := range st.Readiness {
			if (r.To == "" || rd.Region == r.To) && rd.Ready {
				res.To = rd.Region
				return st, nil
			}
			if r.To == "" || rd.Region == r.To {
				why = append(why, rd.Region+": "+strings.Join(rd.Reasons, "; "))
			}
		}
		if r.To != "" && len(why) == 0 {
			return st, fmt.Errorf("drill: region %q is not a standby of this topology", r.To)
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("drill: no standby is ready to take over (%s)", strings.Join(why, "; "))
		}
		if !said {
			r.progress("waiting for a ready standby (%s)", strings.Join(why, "; "))
			said = true
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return st, err
		}
	}
}

// preCheck plans the run the drill drives (nothing is changed) and
// refuses to go on when a pre-check fails. A failback reprotects its
// target before it checks it: that check is for later, and the old
// primary, just restored, may need a moment to answer (it is waited for).
func (r *Runner) preCheck(ctx context.Context, kind, to string) error {
	deadline := time.Now().Add(orDefault(r.ReadyTimeout, defaultReadyTimeout))
	for {
		var dr api.DryRunResponse
		if err := r.call(ctx, http.MethodPost, "/api/v1/runs", api.RunRequest{Kind: kind, To: to, DryRun: true}, &dr); err != nil {
			return fmt.Errorf("drill: planning the %s to %s: %w", kind, to, err)
		}
		var failed []string
		for _, c := range dr.Checks {
			if !c.OK && !(kind == runbook.KindFailback && strings.HasSuffix(c.What, " ready to take over")) {
				failed = append(failed, c.What+": "+c.Detail)
			}
		}
		if len(failed) == 0 {
			return nil
		}
		if kind != runbook.KindFailback || time.Now().After(deadline) {
			return fmt.Errorf("drill: the %s to %s fails its pre-checks, nothing was done: %s", kind, to, strings.Join(failed, "; "))
		}
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
}

// runIDs lists the runs there are; a run in progress stops the drill (it
// needs the topology at rest, and one run at a time).
func (r *Runner) runIDs(ctx context.Context) (map[string]bool, error) {
	var runs []*runbook.Run
	if err := r.call(ctx, http.MethodGet, "/api/v1/runs", nil, &runs); err != nil {
		return nil, fmt.Errorf("drill: listing runs: %w", err)
	}
	out := map[string]bool{}
	for _, run := range runs {
		if !runbook.Terminal(run.Status) {
			return nil, fmt.Errorf("drill: run %s (%s %s → %s) is %s: a drill starts when no run is in progress", run.ID, run.Kind, run.From, run.To, run.Status)
		}
		out[run.ID] = true
	}
	return out, nil
}

func (r *Runner) events(ctx context.Context, after uint64, limit int) ([]control.Event, error) {
	var evs []control.Event
	err := r.call(ctx, http.MethodGet, fmt.Sprintf("/api/v1/events?after=%d&limit=%d", after, limit), nil, &evs)
	return evs, err
}

// lastSeq is the sequence number of the stream's last event (0 if none),
// found in a few calls however long the stream is.
func (r *Runner) lastSeq(ctx context.Context) (uint64, error) {
	// lo is an event's number (or 0), no event is numbered above hi.
	lo, hi := uint64(0), uint64(1024)
	for {
		evs, err := r.events(ctx, hi, 1)
		if err != nil {
			return 0, err
		}
		if len(evs) == 0 {
			break
		}
		lo, hi = evs[0].Seq, evs[0].Seq*4
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		evs, err := r.events(ctx, mid, 1)
		if err != nil {
			return 0, err
		}
		if len(evs) > 0 {
			lo = evs[0].Seq
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// eventsAfter reads every event numbered above seq.
func (r *Runner) eventsAfter(ctx context.Context, seq uint64) ([]control.Event, error) {
	var all []control.Event
	for {
		evs, err := r.events(ctx, seq, eventsPage)
		if err != nil {
			return all, err
		}
		all = append(all, evs...)
		if len(evs) < eventsPage {
			return all, nil
		}
		seq = evs[len(evs)-1].Seq
	}
}

// predictedLoss records the exposure of the workload's service just
// before the fault.
func (r *Runner) predictedLoss(ctx context.Context, service string, res *Outcome) {
	if st, err := r.status(ctx); err == nil {
		for _, e := range st.Exposure {
			if e.Service == service && !e.Measured.IsZero() {
				v := e.LagSeconds
				res.PredictedLossSeconds = &v
			}
		}
	}
	if res.PredictedLossSeconds == nil {
		res.note("predicted loss: the exposure of %s was not measured before the fault", service)
	}
}

func (r *Runner) startRun(ctx context.Context, kind, to, scenario string) (*runbook.Run, error) {
	var run runbook.Run
	if err := r.call(ctx, http.MethodPost, "/api/v1/runs", api.RunRequest{Kind: kind, To: to, Reason: "drill " + scenario}, &run); err != nil {
		return nil, fmt.Errorf("drill: starting the %s to %s: %w", kind, to, err)
	}
	return &run, nil
}

// detect waits for the active region to be seen down.
func (r *Runner) detect(ctx context.Context, res *Outcome) {
	deadline := time.Now().Add(orDefault(r.DetectTimeout, defaultDetectTimeout))
	for time.Now().Before(deadline) {
		if st, err := r.status(ctx); err == nil {
			for _, reg := range st.Regions {
				if reg.Name == res.From && reg.State == health.RegionDown {
					at := reg.Since
					if at.Before(res.faultAt) {
						at = time.Now()
					}
					res.DetectSeconds = seconds(at.Sub(res.faultAt))
					return
				}
			}
		}
		if sleep(ctx, pollEvery) != nil {
			break
		}
	}
	res.note("detection: %s was not seen down within %s of the fault", res.From, orDefault(r.DetectTimeout, defaultDetectTimeout))
}

// newRun waits for the run the fault raises (the leader's failover).
func (r *Runner) newRun(ctx context.Context, known map[string]bool, fault time.Time, res *Outcome) (*runbook.Run, error) {
	limit := orDefault(r.DetectTimeout, defaultDetectTimeout)
	for deadline := fault.Add(limit); time.Now().Before(deadline); {
		var runs []*runbook.Run
		if err := r.call(ctx, http.MethodGet, "/api/v1/runs", nil, &runs); err == nil {
			for _, run := range runs {
				if !known[run.ID] {
					return run, nil
				}
			}
		}
		if err := sleep(ctx, pollEvery); err != nil {
			return nil, err
		}
	}
	res.note("no failover run started within %s of the fault (is policy.failover auto, and the fault one the nodes can see?)", limit)
	return nil, fmt.Errorf("drill: no failover run within %s of the fault", limit)
}

// waitRun waits for a run to end; a run that waits for an approval is
// said once.
func (r *Runner) waitRun(ctx context.Context, id string) (*runbook.Run, error) {
	limit := orDefault(r.RunTimeout, defaultRunTimeout)
	deadline := time.Now().Add(limit)
	var last *runbook.Run
	said := false
	for {
		var run runbook.Run
		if err := r.call(ctx, http.MethodGet, "/api/v1/runs/"+id, nil, &run); err == nil {
			last = &run
			if runbook.Terminal(run.Status) {
				return &run, nil
			}
			if run.Status == runbook.StatusWaitingApproval && !said {
				r.progress("run %s waits for approval: lifeboat approve %s", id, id)
				said = true
			}
		}
		if time.Now().After(deadline) {
			if last != nil {
				return last, fmt.Errorf("drill: run %s did not end within %s (it is %s; it goes on)", id, limit, last.Status)
			}
			return nil, fmt.Errorf("drill: run %s did not end within %s", id, limit)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return last, err
		}
	}
}

// lagGate: with the standby beyond max_lag_on_failover when the region
// fails, the automatic failover must be refused (a decision event) and no
// run started.
func (r *Runner) lagGate(ctx context.Context, known map[string]bool, cursor uint64, res *Outcome) error {
	limit := orDefault(r.DetectTimeout, defaultDetectTimeout)
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); {
		var runs []*runbook.Run
		if err := r.call(ctx, http.MethodGet, "/api/v1/runs", nil, &runs); err == nil {
			for _, run := range runs {
				if !known[run.ID] {
					res.RunID, res.RunbookStatus = run.ID, run.Status
					return fmt.Errorf("drill: a failover ran although the standby was beyond the lag gate (run %s)", run.ID)
				}
			}
		}
		if evs, err := r.eventsAfter(ctx, cursor); err == nil {
			for _, e := range evs {
				if e.Type == control.EventDecision && e.Time.After(res.faultAt) && strings.Contains(e.Message, "max_lag_on_failover") {
					res.RunbookStatus = "refused"
					res.note("lag gate: %s", e.Message)
					res.note("recovery, loss and split brain: nothing failed over, by design (force a failover to accept the loss)")
					return nil
				}
			}
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("drill: the automatic failover was neither run nor refused within %s", limit)
}

// measure fills the client-side figures: recovery, errors, loss, split
// brain.
func (r *Runner) measure(ctx context.Context, res *Outcome, w *PGWorkload, result Result, initial *EpochCommit, cursor uint64) {
	res.WritesAcked = len(result.Acks)
	res.ClientErrors = len(result.Errors)
	if len(result.Errors) > 0 {
		res.ErrorWindowSeconds = seconds(result.ErrorWindow())
		res.note("client errors: %s", r.Config.Redact(ErrorKinds(result.Errors, 3)))
	} else {
		res.ErrorWindowSeconds = seconds(0)
	}
	if res.RunbookStatus == "refused" {
		// Nothing moved: the figures of a failover do not apply.
		return
	}
	if a, ok := result.FirstAckAfter(res.faultAt, res.To); ok {
		res.RecoverSeconds = seconds(a.At.Sub(res.faultAt))
	} else {
		res.note("recovery: no write was acknowledged by %s's database after the fault", res.To)
	}
	lost, err := result.Lost(func(ids []int64) (map[int64]bool, error) { return w.Present(ctx, ids) })
	if err != nil {
		res.note("writes lost: %v", err)
	} else {
		n := len(lost)
		res.WritesLost, res.LostIDs = &n, lost
	}
	unknown := map[string]bool{}
	for _, a := range result.Acks {
		if a.Region == "" || a.RowRegion == "" {
			unknown[a.DB] = true
		}
	}
	if len(unknown) > 0 {
		res.note("split brain: writes were acknowledged by servers no region's endpoint matches (%s)", strings.Join(sortedKeys(unknown), ", "))
		return
	}
	if initial == nil {
		res.note("split brain: the node's status has no routing state (epoch) to start the history from")
		return
	}
	evs, err := r.eventsAfter(ctx, cursor)
	if err != nil {
		res.note("split brain: the epoch history could not be read: %v", err)
		return
	}
	commits := []EpochCommit{*initial}
	for _, e := range evs {
		if e.Type == control.EventEpoch {
			commits = append(commits, EpochCommit{Epoch: e.Epoch, Region: e.Region, Time: e.Time})
		}
	}
	v := CheckHistory(commits, result.History(EpochOfRegion(commits)))
	n := len(v)
	res.SplitBrainViolations = &n
	for _, x := range v {
		res.Violations = append(res.Violations, x.String())
	}
}

// ErrorKinds counts the client errors by message, the most frequent
// first, naming at most n.
func ErrorKinds(errs []ClientError, n int) string {
	count := map[string]int{}
	for _, e := range errs {
		count[e.Err]++
	}
	var kinds []string
	for k := range count {
		kinds = append(kinds, k)
	}
	slices.SortFunc(kinds, func(a, b string) int {
		if count[a] != count[b] {
			return count[b] - count[a]
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for i, k := range kinds {
		if i == n {
			parts = append(parts, fmt.Sprintf("%d other kinds", len(kinds)-n))
			break
		}
		parts = append(parts, fmt.Sprintf("%d× %s", count[k], k))
	}
	return strings.Join(parts, "; ")
}

// EpochOfRegion says under which epoch a write was accepted: the newest
// epoch committed for the region of the server that acknowledged it, at
// or before the acknowledgement.
func EpochOfRegion(commits []EpochCommit) func(Ack) (uint64, string) {
	return func(a Ack) (uint64, string) {
		var epoch uint64
		for _, c := range commits {
			if c.Region == a.Region && !c.Time.After(a.At) && c.Epoch > epoch {
				epoch = c.Epoch
			}
		}
		return epoch, a.Region
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// attach sends the measurements to the run and waits (a while) for the
// leader to write its report again with them.
func (r *Runner) attach(ctx context.Context, res *Outcome) {
	d := report.Drill{Scenario: res.Scenario, Replication: res.Replication, FaultAt: res.faultAt, DetectSeconds: res.DetectSeconds,
		RecoverSeconds: res.RecoverSeconds, ClientErrors: res.ClientErrors, ErrorWindowSeconds: res.ErrorWindowSeconds, WritesAcked: res.WritesAcked,
		WritesLost: res.WritesLost, PredictedLossSeconds: res.PredictedLossSeconds, SplitBrainViolations: res.SplitBrainViolations}
	var ans struct {
		Report string `json:"report"`
	}
	if err := r.call(ctx, http.MethodPost, "/api/v1/runs/"+res.RunID+"/drill", d, &ans); err != nil {
		res.note("report: the measurements could not be attached to run %s: %v", res.RunID, err)
		return
	}
	if ans.Report == "" {
		ans.Report = "/api/v1/runs/" + res.RunID + "/report"
	}
	res.Report = &ans.Report
	deadline := time.Now().Add(reportWait)
	for {
		var rep report.Report
		err := r.call(ctx, http.MethodGet, ans.Report, nil, &rep)
		if err == nil && rep.Facts.Run.Drill != "" {
			return
		}
		if time.Now().After(deadline) || sleep(ctx, 250*time.Millisecond) != nil {
			res.note("report: not yet written again with the measurements (the leader writes it; see lifeboat report %s)", res.RunID)
			return
		}
	}
}

// command runs a scenario's inject or restore command with sh -c, bounded
// by the scenario's timeout (the whole process group is killed then),
// with the drill described in LIFEBOAT_SCENARIO, LIFEBOAT_FROM and
// LIFEBOAT_TO. It returns a note with its outcome and output (redacted).
func (r *Runner) command(ctx context.Context, which, scenario string, sc *config.DrillScenario, res *Outcome) (string, error) {
	line := sc.Inject
	if which == "restore" {
		line = sc.Restore
	}
	timeout := sc.CommandTimeout()
	out, took, err := RunCommand(ctx, line, timeout, "LIFEBOAT_SCENARIO="+scenario, "LIFEBOAT_FROM="+res.From, "LIFEBOAT_TO="+res.To)
	status := "ok"
	if err != nil {
		status = err.Error()
	}
	note := fmt.Sprintf("%s (%s, %.1fs)", which, status, took.Seconds())
	if out != "" {
		note += ": " + r.Config.Redact(out)
	}
	return note, err
}

// commandOutput is how much of a command's output is kept: its end.
const commandOutput = 4 << 10

// RunCommand runs line with sh -c and env added to this process's
// environment, within timeout (then its process group is killed). It
// returns the end of its output (stdout and stderr), how long it took and
// why it failed.
func RunCommand(ctx context.Context, line string, timeout time.Duration, env ...string) (string, time.Duration, error) {
	// Timed from before the deadline is set: a command killed at its
	// timeout took at least the timeout.
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", line)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	took := time.Since(start)
	out := buf.Bytes()
	if len(out) > commandOutput {
		out = append([]byte("..."), out[len(out)-commandOutput:]...)
	}
	switch {
	case err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		err = fmt.Errorf("timed out after %s, killed", timeout)
	case err != nil && ctx.Err() != nil:
		err = fmt.Errorf("stopped: %w", ctx.Err())
	case err != nil:
		err = fmt.Errorf("failed: %w", err)
	}
	return strings.TrimSpace(string(out)), took, err
}
