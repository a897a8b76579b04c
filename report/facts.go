// Package report writes the DR report of a run (failover, switchover,
// failback, drill): the seven sections of the seeds' "DR Report" —
// executive summary, timeline, current service status, data integrity,
// impact (with RTO and RPO against the policy), next steps, estimated
// recovery timeline — every figure computed from the run's record and the
// event stream, events cited by their sequence number ([#42]).
//
// Build computes the Facts; the narrative is written from them by a
// template, or by a language model whose every number is checked against
// the facts (see Narrator). Markdown, HTML and JSON render the same
// Report.
package report

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/observe"
	"github.com/lifeboat-dr/lifeboat/runbook"
)

// Drill is a drill's measured outcome, attached to the run it drove
// (POST /api/v1/runs/{id}/drill).
type Drill struct {
	Scenario    string    `json:"scenario"`
	Replication string    `json:"replication,omitempty"`
	FaultAt     time.Time `json:"fault_at"`
	// DetectSeconds: fault → region down; RecoverSeconds: fault → first
	// acknowledged write in the new region.
	DetectSeconds      *float64 `json:"detect_seconds"`
	RecoverSeconds     *float64 `json:"recover_seconds"`
	ClientErrors       int      `json:"client_errors"`
	ErrorWindowSeconds *float64 `json:"error_window_seconds"`
	WritesAcked        int      `json:"writes_acked"`
	// WritesLost are acknowledged writes missing afterwards.
	WritesLost *int `json:"writes_lost"`
	// PredictedLossSeconds is the exposure Lifeboat reported just before
	// the fault.
	PredictedLossSeconds *float64 `json:"predicted_loss_seconds"`
	SplitBrainViolations *int     `json:"split_brain_violations"`
}

// Validate checks a drill outcome as received from a client.
func (d *Drill) Validate() error {
	var errs []error
	if d.Scenario == "" {
		errs = append(errs, errors.New("scenario: required"))
	}
	if d.FaultAt.IsZero() {
		errs = append(errs, errors.New("fault_at: required (RFC 3339 time of the fault)"))
	}
	for name, v := range map[string]*float64{"detect_seconds": d.DetectSeconds, "recover_seconds": d.RecoverSeconds,
		"error_window_seconds": d.ErrorWindowSeconds, "predicted_loss_seconds": d.PredictedLossSeconds} {
		if v != nil && (*v < 0 || math.IsNaN(*v) || math.IsInf(*v, 0)) {
			errs = append(errs, fmt.Errorf("%s: %v is not a duration in seconds", name, *v))
		}
	}
	for name, v := range map[string]*int{"writes_lost": d.WritesLost, "split_brain_violations": d.SplitBrainViolations,
		"client_errors": &d.ClientErrors, "writes_acked": &d.WritesAcked} {
		if v != nil && *v < 0 {
			errs = append(errs, fmt.Errorf("%s: %d is negative", name, *v))
		}
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// Input is what a report is computed from.
type Input struct {
	Run *runbook.Run
	// Events are the stream's events around the run (see Window).
	Events []control.Event
	// Status is the status now; nil when unknown.
	Status *observe.Status
	Policy config.Policy
	Drill  *Drill
	Now    time.Time
}

// Window is the span of events a report of run reads: from two minutes
// before the run was raised (the fault's evidence) or the drill's fault,
// to a little after it ended (or now).
func Window(run *runbook.Run, drill *Drill, now time.Time) (from, to time.Time) {
	from = run.CreatedAt.Add(-2 * time.Minute)
	if drill != nil && !drill.FaultAt.IsZero() && drill.FaultAt.Before(run.CreatedAt) {
		from = drill.FaultAt.Add(-time.Second)
	}
	to = now
	if !run.FinishedAt.IsZero() {
		to = run.FinishedAt.Add(5 * time.Second)
	}
	return from, to
}

// Facts are every figure of a report. The narrative may only use these.
type Facts struct {
	Run        RunFacts    `json:"run"`
	Fault      *Evidence   `json:"fault,omitempty"`
	Timeline   []Entry     `json:"timeline"`
	Steps      []StepFacts `json:"steps"`
	Status     *StatusNow  `json:"status_now,omitempty"`
	Integrity  Integrity   `json:"data_integrity"`
	Objectives Objectives  `json:"objectives"`
	Impact     Impact      `json:"impact"`
	NextSteps  []string    `json:"next_steps"`
	Estimate   []Phase     `json:"estimated_recovery"`
}

// RunFacts identify the run.
type RunFacts struct {
	ID         string    `json:"id"`
	Kind       string    `json:"kind"`
	Drill      string    `json:"drill,omitempty"`
	Status     string    `json:"status"`
	From       string    `json:"from"`
	To         string    `json:"to"`
	Trigger    string    `json:"trigger"`
	By         string    `json:"by,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	Severity   string    `json:"severity,omitempty"`
	Forced     bool      `json:"forced,omitempty"`
	StartEpoch uint64    `json:"start_epoch"`
	Epoch      uint64    `json:"epoch,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// Seconds is the run's execution, start to end.
	Seconds *float64 `json:"seconds,omitempty"`
	Error   string   `json:"error,omitempty"`
	// Cite is the event that recorded the run's end (or start).
	Cite uint64 `json:"cite,omitempty"`
}

// Evidence is the first sign of the fault: when and which event.
type Evidence struct {
	At      time.Time `json:"at"`
	Cite    uint64    `json:"cite,omitempty"`
	Message string    `json:"message"`
}

// Entry is one event of the timeline.
type Entry struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Offset is seconds since the window's first entry.
	Offset  float64 `json:"offset_seconds"`
	Type    string  `json:"type"`
	Status  string  `json:"status,omitempty"`
	Message string  `json:"message"`
}

// StepFacts are one step's outcome and duration.
type StepFacts struct {
	Name     string   `json:"name"`
	Action   string   `json:"action"`
	Group    string   `json:"group"`
	Status   string   `json:"status"`
	Seconds  *float64 `json:"seconds,omitempty"`
	Attempts int      `json:"attempts,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// StatusNow is the topology when the report was written.
type StatusNow struct {
	At           time.Time        `json:"at"`
	ActiveRegion string           `json:"active_region"`
	Regions      []RegionNow      `json:"regions"`
	Services     []ServiceNow     `json:"services"`
	Readiness    []ReadinessNow   `json:"readiness,omitempty"`
	Exposure     []ExposureFigure `json:"exposure,omitempty"`
}

// RegionNow is a region's state.
type RegionNow struct {
	Name   string `json:"name"`
	Role   string `json:"role"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
}

// ServiceNow is one service's health per region.
type ServiceNow struct {
	Name      string            `json:"name"`
	Kind      string            `json:"kind"`
	Health    map[string]string `json:"health"`
	Primaries []string          `json:"primaries,omitempty"`
}

// ReadinessNow is a standby's readiness.
type ReadinessNow struct {
	Region  string   `json:"region"`
	Ready   bool     `json:"ready"`
	Reasons []string `json:"reasons,omitempty"`
}

// ExposureFigure is a data service's exposure toward one standby.
type ExposureFigure struct {
	Service    string  `json:"service"`
	Standby    string  `json:"standby,omitempty"`
	LagSeconds float64 `json:"lag_seconds"`
	LagBytes   int64   `json:"lag_bytes"`
	Status     string  `json:"status"`
}

// Integrity is what data was at risk and what was lost.
type Integrity struct {
	// AtStart is the exposure reported when the run was raised.
	AtStart            []ExposureFigure `json:"exposure_at_start,omitempty"`
	EstimatedLossBytes int64            `json:"estimated_loss_bytes,omitempty"`
	// Measured loss, from a drill's workload.
	WritesAcked          *int     `json:"writes_acked,omitempty"`
	WritesLost           *int     `json:"writes_lost,omitempty"`
	PredictedLossSeconds *float64 `json:"predicted_loss_seconds,omitempty"`
	SplitBrainViolations *int     `json:"split_brain_violations,omitempty"`
	// Fences are the fence steps and their outcome.
	Fences []string `json:"fences,omitempty"`
	// DivergentWAL is what reprotect kept of an old primary's history.
	DivergentWAL []string `json:"divergent_wal,omitempty"`
	Assessment   string   `json:"assessment"`
}

// Objectives compare the achieved RTO and RPO with the policy.
type Objectives struct {
	RTOPolicySeconds   float64  `json:"rto_policy_seconds"`
	RTOAchievedSeconds *float64 `json:"rto_achieved_seconds,omitempty"`
	RTOMet             *bool    `json:"rto_met,omitempty"`
	RTOBasis           string   `json:"rto_basis"`
	RPOPolicySeconds   float64  `json:"rpo_policy_seconds"`
	RPOAchievedSeconds *float64 `json:"rpo_achieved_seconds,omitempty"`
	RPOMet             *bool    `json:"rpo_met,omitempty"`
	RPOBasis           string   `json:"rpo_basis"`
}

// Impact is the outage as users saw it.
type Impact struct {
	DowntimeStart   time.Time `json:"downtime_start,omitzero"`
	DowntimeEnd     time.Time `json:"downtime_end,omitzero"`
	DowntimeSeconds *float64  `json:"downtime_seconds,omitempty"`
	// Writes are held rather than failed during a planned switch.
	Held               bool     `json:"held,omitempty"`
	FailedRequests     *int     `json:"failed_requests,omitempty"`
	ErrorWindowSeconds *float64 `json:"error_window_seconds,omitempty"`
	Basis              string   `json:"basis"`
}

// Phase is one line of the estimated recovery timeline.
type Phase struct {
	Phase   string  `json:"phase"`
	Seconds float64 `json:"seconds"`
	Basis   string  `json:"basis"`
}

// ms rounds a duration to milliseconds, in seconds.
func ms(d time.Duration) float64 { return math.Round(d.Seconds()*1000) / 1000 }

func ptr[T any](v T) *T { return &v }

// Build computes the facts of a report. It does no I/O.
func Build(in Input) Facts {
	r := in.Run
	f := Facts{Run: RunFacts{ID: r.ID, Kind: r.Kind, Status: r.Status, From: r.From, To: r.To, Trigger: r.Trigger, By: r.By,
		Reason: r.Reason, Severity: r.Severity, Forced: r.Forced, StartEpoch: r.StartEpoch, Epoch: r.Epoch,
		CreatedAt: r.CreatedAt, FinishedAt: r.FinishedAt, Error: r.Error}}
	if in.Drill != nil {
		f.Run.Drill = in.Drill.Scenario
	}
	if !r.StartedAt.IsZero() && !r.FinishedAt.IsZero() {
		f.Run.Seconds = ptr(ms(r.FinishedAt.Sub(r.StartedAt)))
	}
	for _, e := range in.Events {
		if e.Run == r.ID && e.Type == control.EventRun {
			f.Run.Cite = e.Seq
		}
	}
	f.Fault = fault(in)
	// The timeline starts at the fault (or the run) and keeps the events
	// of this run, not the drills and runs before it.
	start := r.CreatedAt.Add(-time.Second)
	if f.Fault != nil && f.Fault.At.Before(start) {
		start = f.Fault.At.Add(-time.Second)
	}
	f.Timeline = timeline(in.Events, start, r.ID)
	f.Steps = steps(r)
	if in.Status != nil {
		f.Status = statusNow(*in.Status)
	}
	f.Integrity = integrity(in)
	f.Impact, f.Objectives = outcome(in, f.Fault)
	f.NextSteps = nextSteps(in, f)
	f.Estimate = estimate(in, f.Fault)
	return f
}

// fault finds the first evidence of the fault: a drill's injection, or
// the first "down" of the run's source region before the run was raised
// (a region event, or a verdict of one of its services). Planned runs
// have none.
func fault(in Input) *Evidence {
	if in.Drill != nil && !in.Drill.FaultAt.IsZero() {
		return &Evidence{At: in.Drill.FaultAt, Message: fmt.Sprintf("%s injected by the drill", in.Drill.Scenario)}
	}
	if in.Run.Kind != runbook.KindFailover {
		return nil
	}
	// The latest region-down of the source before the run, then the first
	// service verdict down that led to it (within 30s before).
	var down *control.Event
	for i := range in.Events {
		e := &in.Events[i]
		if e.Time.After(in.Run.CreatedAt) {
			break
		}
		if e.Type == control.EventRegion && e.Region == in.Run.From && e.Status == "down" {
			down = e
		}
	}
	if down == nil {
		return nil
	}
	first := down
	for i := range in.Events {
		e := &in.Events[i]
		if e.Seq >= down.Seq {
			break
		}
		if e.Type == control.EventVerdict && e.Region == in.Run.From && e.Status == "down" && down.Time.Sub(e.Time) <= 30*time.Second {
			first = e
			break
		}
	}
	return &Evidence{At: first.Time, Cite: first.Seq, Message: first.Message}
}

func timeline(events []control.Event, start time.Time, run string) []Entry {
	var out []Entry
	for _, e := range events {
		if e.Time.Before(start) || (e.Run != "" && e.Run != run) {
			continue
		}
		if len(out) == 0 {
			out = append(out, Entry{Seq: e.Seq, Time: e.Time, Type: e.Type, Status: e.Status, Message: e.Message})
			continue
		}
		out = append(out, Entry{Seq: e.Seq, Time: e.Time, Offset: ms(e.Time.Sub(out[0].Time)), Type: e.Type, Status: e.Status, Message: e.Message})
	}
	return out
}

func steps(r *runbook.Run) []StepFacts {
	var out []StepFacts
	for _, s := range append(append([]*runbook.StepRun(nil), r.Steps...), r.Rollback...) {
		sf := StepFacts{Name: s.Name, Action: s.Action, Status: s.Status, Attempts: s.Attempts, Error: s.Error}
		if s.Group >= 0 && s.Group < len(r.Groups) {
			sf.Group = r.Groups[s.Group]
		}
		if !s.StartedAt.IsZero() && !s.FinishedAt.IsZero() {
			sf.Seconds = ptr(ms(s.FinishedAt.Sub(s.StartedAt)))
		}
		out = append(out, sf)
	}
	return out
}

func statusNow(st observe.Status) *StatusNow {
	out := &StatusNow{At: st.Time, ActiveRegion: st.ActiveRegion}
	for _, r := range st.Regions {
		out.Regions = append(out.Regions, RegionNow{Name: r.Name, Role: r.Role, State: string(r.State), Reason: r.Reason})
	}
	for _, s := range st.Services {
		sn := ServiceNow{Name: s.Name, Kind: s.Kind, Health: map[string]string{}}
		for _, ep := range s.Endpoints {
			sn.Health[ep.Region] = string(ep.Health)
			if ep.Role == "primary" {
				sn.Primaries = append(sn.Primaries, ep.Region)
			}
		}
		out.Services = append(out.Services, sn)
	}
	for _, r := range st.Readiness {
		out.Readiness = append(out.Readiness, ReadinessNow{Region: r.Region, Ready: r.Ready, Reasons: r.Reasons})
	}
	for _, e := range st.Exposure {
		out.Exposure = append(out.Exposure, ExposureFigure{Service: e.Service, Standby: e.Standby, LagSeconds: math.Round(e.LagSeconds*1000) / 1000, LagBytes: e.LagBytes, Status: string(e.Status)})
	}
	return out
}

func integrity(in Input) Integrity {
	r := in.Run
	var g Integrity
	for _, e := range r.Exposure {
		g.AtStart = append(g.AtStart, ExposureFigure{Service: e.Service, Standby: e.Standby, LagSeconds: math.Round(e.LagSeconds*1000) / 1000, LagBytes: e.LagBytes, Status: string(e.Status)})
	}
	g.EstimatedLossBytes = r.EstimatedLossBytes
	if d := in.Drill; d != nil {
		g.WritesAcked, g.WritesLost, g.PredictedLossSeconds, g.SplitBrainViolations = ptr(d.WritesAcked), d.WritesLost, d.PredictedLossSeconds, d.SplitBrainViolations
	}
	for _, s := range r.Steps {
		if strings.HasSuffix(s.Action, ".fence") {
			g.Fences = append(g.Fences, fmt.Sprintf("%s: %s", s.Name, s.Status))
		}
		if strings.HasSuffix(s.Action, ".reprotect") && s.Output != "" {
			if _, wal, ok := strings.Cut(s.Output, "; "); ok && (strings.Contains(wal, "divergent WAL") || strings.Contains(wal, "nothing diverged")) {
				g.DivergentWAL = append(g.DivergentWAL, fmt.Sprintf("%s: %s", s.Name, wal))
			}
		}
	}
	switch {
	case g.WritesLost != nil && *g.WritesLost > 0:
		g.Assessment = fmt.Sprintf("%d acknowledged writes were lost", *g.WritesLost)
	case g.SplitBrainViolations != nil && *g.SplitBrainViolations > 0:
		g.Assessment = fmt.Sprintf("%d writes were accepted outside the active epoch (split brain)", *g.SplitBrainViolations)
	case g.WritesLost != nil:
		g.Assessment = fmt.Sprintf("no acknowledged write was lost (%d checked)", *g.WritesAcked)
	case r.Kind == runbook.KindFailover && g.EstimatedLossBytes > 0:
		g.Assessment = fmt.Sprintf("forced past the lag gate: up to %d bytes of WAL may be lost", g.EstimatedLossBytes)
	case caughtUp(r) != nil:
		g.Assessment = "the new primary caught up with the old one before promotion: no data loss expected"
	default:
		lag := maxLag(r)
		if lag != nil {
			g.Assessment = fmt.Sprintf("not measured outside a drill; %s's replication toward %s was %.3f s (%d bytes) behind when the run started", lag.Service, r.To, lag.LagSeconds, lag.LagBytes)
		} else {
			g.Assessment = "not measured outside a drill; no replication exposure was recorded"
		}
	}
	return g
}

// caughtUp is the succeeded wait-for-catch-up step of a run, if any.
func caughtUp(r *runbook.Run) *runbook.StepRun {
	for _, s := range r.Steps {
		if s.Action == "postgres.wait_caught_up" && s.Status == runbook.StatusSucceeded {
			return s
		}
	}
	return nil
}

// maxLag is the largest exposure toward the run's target at its start.
func maxLag(r *runbook.Run) *ExposureFigure {
	var best *ExposureFigure
	for _, e := range r.Exposure {
		if e.Standby != "" && e.Standby != r.To {
			continue
		}
		if best == nil || e.LagSeconds > best.LagSeconds {
			best = &ExposureFigure{Service: e.Service, Standby: e.Standby, LagSeconds: math.Round(e.LagSeconds*1000) / 1000, LagBytes: e.LagBytes, Status: string(e.Status)}
		}
	}
	return best
}

func stepByAction(r *runbook.Run, action string, last bool) *runbook.StepRun {
	var found *runbook.StepRun
	for _, s := range r.Steps {
		if s.Action == action && s.Status == runbook.StatusSucceeded {
			found = s
			if !last {
				return s
			}
		}
	}
	return found
}

// outcome computes the downtime and the objectives achieved.
func outcome(in Input, fe *Evidence) (Impact, Objectives) {
	r := in.Run
	o := Objectives{RTOPolicySeconds: in.Policy.RTO.D().Seconds(), RPOPolicySeconds: in.Policy.RPO.D().Seconds()}
	var im Impact
	// Recovery: the data plane released to the new region, else the last
	// promotion, else the epoch switch.
	var recovered time.Time
	if s := stepByAction(r, "traffic.release", true); s != nil {
		recovered = s.FinishedAt
	} else if s := stepByAction(r, "postgres.promote", true); s != nil {
		recovered = s.FinishedAt
	} else if !r.SwitchedAt.IsZero() {
		recovered = r.SwitchedAt
	}
	hold := stepByAction(r, "traffic.hold", false)
	switch {
	case in.Drill != nil && in.Drill.RecoverSeconds != nil:
		im.DowntimeStart = in.Drill.FaultAt
		im.DowntimeEnd = in.Drill.FaultAt.Add(time.Duration(*in.Drill.RecoverSeconds * float64(time.Second)))
		im.Basis = "measured by the drill's workload: fault → first acknowledged write in the new region"
		if r.Kind != runbook.KindFailover {
			im.Held = hold != nil
			im.Basis = "measured by the drill's workload: request → first acknowledged write in the new region"
		}
		o.RTOBasis = im.Basis
	case fe != nil && !recovered.IsZero():
		im.DowntimeStart, im.DowntimeEnd = fe.At, recovered
		im.Basis = "first evidence of the fault → traffic released to the new region"
		if fe.Cite != 0 {
			im.Basis += fmt.Sprintf(" (fault evidence [#%d])", fe.Cite)
		}
		o.RTOBasis = im.Basis
	case hold != nil && !recovered.IsZero():
		im.DowntimeStart, im.DowntimeEnd, im.Held = hold.StartedAt, recovered, true
		im.Basis = "planned: new requests were held (not failed) from the hold to the release"
		o.RTOBasis = "planned run: writes unavailable while held"
	case hold != nil && undoHold(r) != nil:
		im.DowntimeStart, im.DowntimeEnd, im.Held = hold.StartedAt, undoHold(r).FinishedAt, true
		im.Basis = fmt.Sprintf("the run %s: new requests were held from the hold to its undo (each waits at most the hold timeout, then fails); %s stayed active", r.Status, r.From)
		o.RTOBasis = "no recovery: the run did not switch"
	default:
		im.Basis = "no recovery recorded (the run did not reach the switch)"
		o.RTOBasis = im.Basis
	}
	if !im.DowntimeEnd.IsZero() {
		im.DowntimeSeconds = ptr(ms(im.DowntimeEnd.Sub(im.DowntimeStart)))
		if !recovered.IsZero() || in.Drill != nil {
			o.RTOAchievedSeconds = im.DowntimeSeconds
			o.RTOMet = ptr(*im.DowntimeSeconds <= o.RTOPolicySeconds)
		}
	}
	if in.Drill != nil {
		im.FailedRequests, im.ErrorWindowSeconds = ptr(in.Drill.ClientErrors), in.Drill.ErrorWindowSeconds
	}

	switch d := in.Drill; {
	case d != nil && d.WritesLost != nil && *d.WritesLost == 0:
		o.RPOAchievedSeconds = ptr(0.0)
		o.RPOBasis = fmt.Sprintf("measured: 0 of %d acknowledged writes lost", d.WritesAcked)
	case d != nil && d.WritesLost != nil && d.PredictedLossSeconds != nil:
		o.RPOAchievedSeconds = d.PredictedLossSeconds
		o.RPOBasis = fmt.Sprintf("measured: %d of %d acknowledged writes lost; the exposure at the fault was %.3f s", *d.WritesLost, d.WritesAcked, *d.PredictedLossSeconds)
	case caughtUp(r) != nil:
		o.RPOAchievedSeconds = ptr(0.0)
		o.RPOBasis = fmt.Sprintf("step %s: the new primary had replayed everything the old one wrote before promotion", caughtUp(r).Name)
	default:
		if lag := maxLag(r); lag != nil {
			o.RPOAchievedSeconds = ptr(lag.LagSeconds)
			o.RPOBasis = fmt.Sprintf("estimated: %s's replication lag toward %s when the run started", lag.Service, r.To)
		} else {
			o.RPOBasis = "no replication exposure recorded"
		}
	}
	if o.RPOAchievedSeconds != nil {
		o.RPOMet = ptr(*o.RPOAchievedSeconds <= o.RPOPolicySeconds)
	}
	return im, o
}

// undoHold is the rollback step that released a hold, if it ran.
func undoHold(r *runbook.Run) *runbook.StepRun {
	for _, s := range r.Rollback {
		if s.Action == "traffic.hold" && s.Status == runbook.StatusSucceeded {
			return s
		}
	}
	return nil
}

// nextSteps derives what an operator should do now from the run and the
// state.
func nextSteps(in Input, f Facts) []string {
	r := in.Run
	var out []string
	switch r.Status {
	case runbook.StatusFailed, runbook.StatusRolledBack:
		failed := ""
		for _, s := range r.Steps {
			if s.Status == runbook.StatusFailed {
				failed = s.Name
				break
			}
		}
		if failed != "" {
			out = append(out, fmt.Sprintf("The run %s at step %s: fix its cause, then start the %s again (lifeboat %s --to %s).", r.Status, failed, r.Kind, r.Kind, r.To))
		} else {
			out = append(out, fmt.Sprintf("The run %s: %s. Fix the cause, then start it again.", r.Status, r.Error))
		}
	case runbook.StatusWaitingApproval:
		out = append(out, fmt.Sprintf("The run waits for an approval: lifeboat approve %s.", r.ID))
	case runbook.StatusPending, runbook.StatusRunning:
		out = append(out, "The run is still in progress: this report will be written again when it ends.")
	case runbook.StatusSucceeded:
		switch r.Kind {
		case runbook.KindFailover, runbook.KindSwitchover:
			fenced := false
			for _, s := range r.Steps {
				if strings.HasSuffix(s.Action, ".fence") && s.Status == runbook.StatusSucceeded {
					fenced = true
				}
			}
			if regionState(in.Status, r.From) == "down" {
				out = append(out, fmt.Sprintf("Region %s is still down: restore it, then run lifeboat failback to make its databases standbys of %s and move back.", r.From, r.To))
			} else if fenced {
				out = append(out, fmt.Sprintf("The old primaries in %s are fenced: run lifeboat failback (it reprotects them as standbys of %s, then moves back).", r.From, r.To))
			} else {
				out = append(out, fmt.Sprintf("Run lifeboat failback when %s should be active again.", r.From))
			}
		case runbook.KindFailback:
			out = append(out, fmt.Sprintf("None for this run: %s is active again; schedule the next drill.", r.To))
		}
	}
	if f.Status != nil {
		for _, rd := range f.Status.Readiness {
			if !rd.Ready {
				out = append(out, fmt.Sprintf("Standby %s is not ready (%s): there is no safe failover target there until it is.", rd.Region, strings.Join(rd.Reasons, "; ")))
			}
		}
		for _, e := range f.Status.Exposure {
			if e.Status == "breached" {
				out = append(out, fmt.Sprintf("%s toward %s is behind the RPO (lag %.3f s): find why replication lags.", e.Service, e.Standby, e.LagSeconds))
			}
		}
	}
	if g := f.Integrity; g.WritesLost != nil && *g.WritesLost > 0 {
		out = append(out, fmt.Sprintf("Investigate the %d lost acknowledged writes: the replication mode or the lag gate let them go.", *g.WritesLost))
	}
	if g := f.Integrity; g.SplitBrainViolations != nil && *g.SplitBrainViolations > 0 {
		out = append(out, fmt.Sprintf("Investigate the %d writes accepted outside the active epoch: fencing did not hold.", *g.SplitBrainViolations))
	}
	if m := f.Objectives.RTOMet; m != nil && !*m {
		out = append(out, fmt.Sprintf("The RTO was breached (%.3f s against %.0f s): review detection and the slowest steps.", *f.Objectives.RTOAchievedSeconds, f.Objectives.RTOPolicySeconds))
	}
	if m := f.Objectives.RPOMet; m != nil && !*m {
		out = append(out, fmt.Sprintf("The RPO was breached (%.3f s against %.0f s): consider synchronous replication or a tighter lag gate.", *f.Objectives.RPOAchievedSeconds, f.Objectives.RPOPolicySeconds))
	}
	return out
}

func regionState(st *observe.Status, region string) string {
	if st == nil {
		return ""
	}
	for _, r := range st.Regions {
		if r.Name == region {
			return string(r.State)
		}
	}
	return ""
}

// estimate lays out the recovery timeline: for a finished run, its
// measured phases and a failback estimate from them; for an unfinished
// one, the worst case of what remains (the sum of the remaining steps'
// timeouts, group by group).
func estimate(in Input, fe *Evidence) []Phase {
	r := in.Run
	var out []Phase
	if fe != nil && fe.At.Before(r.CreatedAt) && r.Kind == runbook.KindFailover {
		out = append(out, Phase{Phase: "detection and decision", Seconds: ms(r.CreatedAt.Sub(fe.At)), Basis: "measured: fault evidence → run raised"})
	}
	if !r.StartedAt.IsZero() && r.StartedAt.After(r.CreatedAt) {
		out = append(out, Phase{Phase: "approval and start", Seconds: ms(r.StartedAt.Sub(r.CreatedAt)), Basis: "measured: run raised → run started"})
	}
	var executed float64
	for gi, g := range r.Groups {
		var start, end time.Time
		remaining := 0.0
		for _, s := range r.Steps {
			if s.Group != gi {
				continue
			}
			if !s.StartedAt.IsZero() && (start.IsZero() || s.StartedAt.Before(start)) {
				start = s.StartedAt
			}
			if !s.FinishedAt.IsZero() && s.FinishedAt.After(end) {
				end = s.FinishedAt
			}
			if s.FinishedAt.IsZero() && s.Status != runbook.StatusSkipped {
				remaining = math.Max(remaining, s.TimeoutSeconds*float64(s.Retries+1))
			}
		}
		switch {
		case remaining > 0 && runbook.Terminal(r.Status):
			out = append(out, Phase{Phase: g, Seconds: remaining, Basis: "not run: worst case when run again (the step timeouts)"})
		case remaining > 0:
			out = append(out, Phase{Phase: g, Seconds: remaining, Basis: "remaining: worst case (the step timeouts)"})
		case !start.IsZero() && !end.IsZero():
			d := ms(end.Sub(start))
			executed += d
			out = append(out, Phase{Phase: g, Seconds: d, Basis: "measured"})
		}
	}
	if r.Status == runbook.StatusSucceeded && r.Kind != runbook.KindFailback {
		out = append(out, Phase{Phase: "failback (estimate)", Seconds: math.Round(executed*1000) / 1000,
			Basis: "this run's measured execution, plus reprotecting the old primaries (pg_rewind: depends on the divergent WAL)"})
	}
	return out
}
