// Package runbook plans and executes failover, switchover and failback:
// ordered groups of steps (a group's steps run in parallel), each an
// idempotent action on one system, with timeouts, retries, conditions,
// approval gates and a rule for failure (abort, continue, roll back).
//
// A Run is persisted after every step's start and end, so a new leader
// resumes a run where the old one stopped; actions are idempotent, so a
// step that was running when a leader died runs again safely (a promotion
// that already happened is recognised, never repeated).
package runbook

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/replication"
)

// Run kinds.
const (
	KindFailover   = "failover"
	KindSwitchover = "switchover"
	KindFailback   = "failback"
	KindDrill      = "drill"
)

// Run and step statuses.
const (
	StatusPending         = "pending"
	StatusRunning         = "running"
	StatusWaitingApproval = "waiting-approval"
	StatusSucceeded       = "succeeded"
	StatusFailed          = "failed"
	StatusRolledBack      = "rolled-back"
	// StatusCancelled: an operator cancelled the run before its epoch
	// switch; what could be undone was.
	StatusCancelled = "cancelled"
	// Steps only.
	StatusSkipped = "skipped"
)

// Triggers of a run.
const (
	TriggerManual = "manual"
	TriggerAuto   = "auto"
)

// Errors of the run store.
var (
	// ErrBusy: another run is active (one run at a time per cluster).
	ErrBusy = errors.New("runbook: another run is active")
	// ErrNotFound: no such run.
	ErrNotFound = errors.New("runbook: no such run")
	// ErrNotLeader: this node may not execute runs (it is not the leader,
	// or lost leadership during the run).
	ErrNotLeader = errors.New("runbook: this node is not the leader")
)

// Run is one execution of a plan: the timeline of its steps.
type Run struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	Status string `json:"status"`
	From   string `json:"from"`
	To     string `json:"to"`
	// Epoch is the epoch the run committed (0 until traffic.switch ran);
	// StartEpoch the epoch in force when the run was created.
	Epoch      uint64 `json:"epoch"`
	StartEpoch uint64 `json:"start_epoch"`
	Trigger    string `json:"trigger"`
	Severity   string `json:"severity,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Forced     bool   `json:"forced,omitempty"`
	// EstimatedLossBytes is the target's replication lag when a forced run
	// started beyond max_lag_on_failover.
	EstimatedLossBytes int64 `json:"estimated_loss_bytes,omitempty"`
	// By is who asked for the run (a token name, "policy" for automatic
	// runs).
	By         string    `json:"by,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// SwitchedAt is when traffic.switch committed the new epoch.
	SwitchedAt time.Time `json:"switched_at,omitzero"`
	Error      string    `json:"error,omitempty"`
	// Resumed counts the times a new leader took the run over.
	Resumed  int        `json:"resumed,omitempty"`
	Steps    []*StepRun `json:"steps"`
	Groups   []string   `json:"groups"`
	Notes    []string   `json:"notes,omitempty"`
	Rollback []*StepRun `json:"rollback,omitempty"`
	// Exposure is what Lifeboat reported, when the run was created, of the
	// data each service stood to lose (its standbys' lag against the RPO).
	Exposure []replication.Exposure `json:"exposure,omitempty"`
	// Report is where the run's DR report is served (set by the API).
	Report string `json:"report,omitempty"`
}

// StepRun is one step of a run and what became of it.
type StepRun struct {
	Step
	Status     string    `json:"status"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	Attempts   int       `json:"attempts,omitempty"`
	Output     string    `json:"output,omitempty"`
	Error      string    `json:"error"`
	ApprovedBy string    `json:"approved_by,omitempty"`
	ApprovedAt time.Time `json:"approved_at,omitzero"`
}

// Approval is a named role's consent to a gated step.
type Approval struct {
	By   string    `json:"by"`
	Role string    `json:"role"`
	At   time.Time `json:"at"`
}

// Terminal reports whether a run status is final.
func Terminal(status string) bool {
	switch status {
	case StatusSucceeded, StatusFailed, StatusRolledBack, StatusCancelled:
		return true
	}
	return false
}

// NewID makes a run id that sorts by creation time.
func NewID(now time.Time) string {
	var b [3]byte
	rand.Read(b[:])
	return now.UTC().Format("20060102-150405.000") + "-" + hex.EncodeToString(b[:])
}

// NewRun makes a pending run of plan.
func NewRun(p *Plan, trigger, by, reason string, now time.Time) *Run {
	r := &Run{ID: NewID(now), Kind: p.Kind, Status: StatusPending, From: p.From, To: p.To,
		Trigger: trigger, By: by, Reason: reason, Forced: p.Forced, Severity: p.Severity, CreatedAt: now.UTC(),
		Groups: append([]string(nil), p.Groups...), Notes: append([]string(nil), p.Notes...)}
	for _, s := range p.Steps {
		r.Steps = append(r.Steps, &StepRun{Step: s, Status: StatusPending})
	}
	return r
}

// Step returns the named step.
func (r *Run) Step(name string) *StepRun {
	for _, s := range r.Steps {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Redact scrubs secrets from the run's step arguments (URLs lose their
// passwords) and texts, with redact (config.Config.Redact).
func (r *Run) Redact(redact func(string) string) {
	for _, st := range append(append([]*StepRun(nil), r.Steps...), r.Rollback...) {
		for k, v := range st.Args {
			st.Args[k] = config.RedactURL(redact(v))
		}
		st.Output, st.Error = redact(st.Output), redact(st.Error)
	}
	r.Error, r.Reason = redact(r.Error), redact(r.Reason)
}
