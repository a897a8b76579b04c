package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/runbook"
	"github.com/lifeboat-dr/lifeboat/traffic"
)

// Runs is what the API needs to plan, start, show and approve runs.
type Runs struct {
	Config *config.Config
	Store  runbook.Store
	// State is the routing state: the active region a run starts from.
	State traffic.StateSource
	Lags  *runbook.LagMemory
	// Started is called after a run is created (to wake the executor).
	Started func(*runbook.Run)
}

// RunRequest is the body of POST /api/v1/runs.
type RunRequest struct {
	// Kind is failover, switchover or failback.
	Kind string `json:"kind"`
	// To is the region to make active; for failback it defaults to the
	// most preferred region.
	To     string `json:"to"`
	Force  bool   `json:"force"`
	DryRun bool   `json:"dry_run"`
	Reason string `json:"reason"`
}

// DryRunResponse is the answer to a dry run: the plan, as data and as
// text, and the pre-checks.
type DryRunResponse struct {
	Plan   *runbook.Plan   `json:"plan"`
	Text   string          `json:"text"`
	Checks []runbook.Check `json:"checks"`
}

// ApproveRequest is the body of POST /api/v1/runs/{id}/approve.
type ApproveRequest struct {
	Step string `json:"step"`
}

// caller is who called: a configured token's name and role, or the local
// operator when no token is configured (the API then listens on loopback).
type caller struct {
	name, role string
}

// authenticate checks the bearer token of a call; minRole is viewer,
// operator or admin. 401 says what is wrong with the credentials (none,
// a malformed header, an unknown token), 403 which role the call needs.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, minRole string) (caller, bool) {
	tokens := s.tokens()
	if len(tokens) == 0 {
		return caller{name: "local", role: config.TokenAdmin}, true
	}
	tok, problem := bearerToken(r)
	if problem != "" {
		challenge := `Bearer realm="lifeboat"`
		if r.Header.Get("Authorization") != "" {
			challenge += `, error="invalid_request"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
		writeError(w, http.StatusUnauthorized, problem)
		return caller{}, false
	}
	t, ok := tokenFor(tokens, tok)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="lifeboat", error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, "the bearer token matches no configured token")
		return caller{}, false
	}
	noteCaller(r, t.Name) // the actor of the call's audit entry (api/audit.go)
	if rank(t.Role) < rank(minRole) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="lifeboat", error="insufficient_scope"`)
		writeError(w, http.StatusForbidden, fmt.Sprintf("token %q has role %s; this call needs %s", t.Name, t.Role, minRole))
		return caller{}, false
	}
	return caller{name: t.Name, role: t.Role}, true
}

func rank(role string) int {
	switch role {
	case config.TokenViewer:
		return 1
	case config.TokenOperator:
		return 2
	case config.TokenAdmin:
		return 3
	}
	return 0
}

// decodeBody reads a JSON body strictly: unknown fields are errors.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "request body: "+err.Error())
		return false
	}
	return true
}

func (s *Server) listRuns(w http.ResponseWriter, r *http.Request) {
	runs, err := s.cfg.Runs.Store.ListRuns(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "runs: "+err.Error())
		return
	}
	for _, run := range runs {
		s.redactRun(run)
	}
	writeJSON(w, http.StatusOK, runs)
}

func (s *Server) showRun(w http.ResponseWriter, r *http.Request) {
	run, ok := s.getRun(w, r)
	if !ok {
		return
	}
	s.redactRun(run)
	writeJSON(w, http.StatusOK, run)
}

// getRun reads the run named in the path, answering 404 or 503 itself
// when it cannot.
func (s *Server) getRun(w http.ResponseWriter, r *http.Request) (*runbook.Run, bool) {
	id := r.PathValue("id")
	run, err := s.cfg.Runs.Store.GetRun(r.Context(), id)
	if errors.Is(err, runbook.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no run %q (see GET /api/v1/runs)", id))
		return nil, false
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "runs: "+err.Error())
		return nil, false
	}
	return run, true
}

// redactRun scrubs secrets from the arguments and texts of a run and
// links the run's report.
func (s *Server) redactRun(run *runbook.Run) {
	run.Redact(s.cfg.Runs.Config.Redact)
	if s.cfg.Reports != nil {
		run.Report = reportPath(run.ID)
	}
}

func (s *Server) createRun(w http.ResponseWriter, r *http.Request) {
	who, ok := s.authenticate(w, r, config.TokenOperator)
	if !ok {
		return
	}
	var req RunRequest
	if !decodeBody(w, r, &req) {
		return
	}
	rs := s.cfg.Runs
	st := rs.State.Current()
	if req.Kind == runbook.KindFailback && req.To == "" {
		req.To = rs.Config.ActiveRegion()
	}
	if req.To == "" {
		writeError(w, http.StatusBadRequest, "to: the region to make active is required")
		return
	}
	plan, err := runbook.Generate(rs.Config, runbook.Request{Kind: req.Kind, From: st.Active, To: req.To, Forced: req.Force, Severity: "manual"})
	if err != nil {
		writeError(w, http.StatusBadRequest, strings.TrimPrefix(err.Error(), "runbook: "))
		return
	}
	if req.DryRun {
		var text bytes.Buffer
		plan.WriteText(&text, rs.Config)
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		checks := runbook.PreCheck(ctx, rs.Config, plan, s.cfg.Status.Status(), rs.Lags, &http.Client{Timeout: 5 * time.Second})
		writeJSON(w, http.StatusOK, DryRunResponse{Plan: plan, Text: text.String(), Checks: checks})
		return
	}
	if st.NoQuorum {
		writeError(w, http.StatusServiceUnavailable, "this node cannot reach a quorum of the control plane: ask a node that can")
		return
	}
	run := runbook.NewRun(plan, runbook.TriggerManual, who.name, req.Reason, time.Now())
	run.StartEpoch = st.Epoch
	run.Exposure = s.cfg.Status.Status().Exposure
	if err := rs.Store.CreateRun(r.Context(), run); err != nil {
		if errors.Is(err, runbook.ErrBusy) {
			writeError(w, http.StatusConflict, strings.TrimPrefix(err.Error(), "runbook: ")+" (one run at a time; wait for it or see GET /api/v1/runs)")
			return
		}
		writeError(w, http.StatusServiceUnavailable, "runs: "+err.Error())
		return
	}
	s.logger.Info("run created", "run", run.ID, "kind", run.Kind, "from", run.From, "to", run.To, "by", who.name)
	if rs.Started != nil {
		rs.Started(run)
	}
	s.redactRun(run)
	writeJSON(w, http.StatusCreated, run)
}

func (s *Server) approveRun(w http.ResponseWriter, r *http.Request) {
	who, ok := s.authenticate(w, r, config.TokenOperator)
	if !ok {
		return
	}
	var req ApproveRequest
	if !decodeBody(w, r, &req) {
		return
	}
	id := r.PathValue("id")
	run, ok := s.getRun(w, r)
	if !ok {
		return
	}
	if req.Step == "" {
		for _, st := range run.Steps {
			if st.Status == runbook.StatusWaitingApproval {
				req.Step = st.Name
			}
		}
	}
	step := run.Step(req.Step)
	switch {
	case req.Step == "":
		writeError(w, http.StatusConflict, fmt.Sprintf("run %s has no step waiting for approval", id))
		return
	case step == nil:
		writeError(w, http.StatusNotFound, fmt.Sprintf("run %s has no step %q", id, req.Step))
		return
	case step.Approve == "":
		writeError(w, http.StatusConflict, fmt.Sprintf("step %s needs no approval", req.Step))
		return
	case runbook.Terminal(run.Status):
		writeError(w, http.StatusConflict, fmt.Sprintf("run %s has ended (%s)", id, run.Status))
		return
	case rank(who.role) < rank(step.Approve):
		writeError(w, http.StatusForbidden, fmt.Sprintf("step %s needs the approval of a %s; token %q is a %s", req.Step, step.Approve, who.name, who.role))
		return
	}
	a := runbook.Approval{By: who.name, Role: who.role, At: time.Now().UTC()}
	if err := s.cfg.Runs.Store.Approve(r.Context(), id, req.Step, a); err != nil {
		writeError(w, http.StatusServiceUnavailable, "approve: "+err.Error())
		return
	}
	s.logger.Info("step approved", "run", id, "step", req.Step, "by", who.name)
	writeJSON(w, http.StatusOK, map[string]any{"run": id, "step": req.Step, "approved_by": a.By, "at": a.At})
}
