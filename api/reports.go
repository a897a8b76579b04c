package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/report"
	"github.com/lifeboat-dr/lifeboat/runbook"
)

// Reports is what the API needs to serve runs' reports and take drills'
// outcomes.
type Reports interface {
	// Get returns a run's report (stored, or computed now while the run
	// has none).
	Get(ctx context.Context, runID string) (*report.Report, error)
	// Kick asks the leader's reporter to look for reports to write.
	Kick()
}

// reportPath is where a run's report is served.
func reportPath(id string) string { return "/api/v1/runs/" + id + "/report" }

// showReport serves GET /api/v1/runs/{id}/report?format=md|json|html.
func (s *Server) showReport(w http.ResponseWriter, r *http.Request) {
	format := r.URL.Query().Get("format")
	if format == "" {
		format = report.FormatJSON
	}
	contentType := map[string]string{
		report.FormatJSON:     "application/json",
		report.FormatMarkdown: "text/markdown; charset=utf-8",
		report.FormatHTML:     "text/html; charset=utf-8",
	}[format]
	if contentType == "" {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("format=%q: use md, json or html", format))
		return
	}
	id := r.PathValue("id")
	rep, err := s.cfg.Reports.Get(r.Context(), id)
	if errors.Is(err, runbook.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no run %q (see GET /api/v1/runs)", id))
		return
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "report: "+err.Error())
		return
	}
	var b bytes.Buffer
	if err := report.Render(&b, rep, format); err != nil {
		writeError(w, http.StatusInternalServerError, "report: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-store")
	if format == report.FormatHTML {
		// The page is self-contained: no scripts, no external assets.
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	}
	w.Write(b.Bytes())
}

// attachDrill serves POST /api/v1/runs/{id}/drill: a drill's measured
// outcome, kept with the run; the run's report is written again with it.
func (s *Server) attachDrill(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.authenticate(w, r, config.TokenOperator); !ok {
		return
	}
	var d report.Drill
	if !decodeBody(w, r, &d) {
		return
	}
	if err := d.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, "request body: "+err.Error())
		return
	}
	id := r.PathValue("id")
	run, ok := s.getRun(w, r)
	if !ok {
		return
	}
	b, _ := json.Marshal(d)
	store := s.cfg.Control.Store()
	if err := store.SaveDrill(r.Context(), id, b); err != nil {
		writeError(w, http.StatusServiceUnavailable, "drill: "+err.Error())
		return
	}
	e := control.Event{Type: control.EventDrill, Run: id, Severity: control.SeverityInfo, Status: "measured", Message: drillMessage(run, &d)}
	if (d.WritesLost != nil && *d.WritesLost > 0) || (d.SplitBrainViolations != nil && *d.SplitBrainViolations > 0) {
		e.Severity = control.SeverityCritical
	}
	if _, err := store.Append(r.Context(), e); err != nil {
		s.logger.Warn("drill event", "run", id, "err", err)
	}
	s.cfg.Reports.Kick()
	writeJSON(w, http.StatusAccepted, map[string]string{"run": id, "report": reportPath(id)})
}

func drillMessage(run *runbook.Run, d *report.Drill) string {
	msg := fmt.Sprintf("drill %s (%s %s → %s): %s", d.Scenario, run.Kind, run.From, run.To, run.Status)
	if d.RecoverSeconds != nil {
		msg += fmt.Sprintf(", recovered in %.3f s", *d.RecoverSeconds)
	}
	if d.WritesLost != nil {
		msg += fmt.Sprintf(", %d of %d acknowledged writes lost", *d.WritesLost, d.WritesAcked)
	}
	if d.SplitBrainViolations != nil {
		msg += fmt.Sprintf(", %d split-brain violations", *d.SplitBrainViolations)
	}
	return msg
}
