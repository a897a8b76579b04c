package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/observe"
	"github.com/lifeboat-dr/lifeboat/report"
	"github.com/lifeboat-dr/lifeboat/runbook"
)

// LagSource answers the recent replication lag (observe.LagHistory).
type LagSource interface {
	Window(since time.Time) observe.LagWindow
}

// tokens are the configured API tokens (none: the API is open on
// loopback): Config.API's when it has any, else the runs' configuration's.
func (s *Server) tokens() []config.Token {
	if len(s.cfg.API.Tokens) > 0 {
		return s.cfg.API.Tokens
	}
	if s.cfg.Runs == nil {
		return nil
	}
	return s.cfg.Runs.Config.API.Tokens
}

func (s *Server) statusResponse(ctx context.Context) StatusResponse {
	resp := StatusResponse{Status: s.cfg.Status.Status()}
	if s.cfg.Traffic != nil {
		t := s.cfg.Traffic.Status()
		resp.Traffic = &t
	}
	if s.cfg.Control != nil {
		c := s.cfg.Control.Status(ctx)
		resp.Control = &c
	}
	return resp
}

func (s *Server) regions(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.cfg.Status.Status().Regions)
}

func (s *Server) services(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.cfg.Status.Status().Services)
}

func (s *Server) exposure(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.cfg.Status.Status().Exposure)
}

func (s *Server) readiness(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.cfg.Status.Status().Readiness)
}

// lag serves GET /api/v1/lag?minutes=15: each data service's lag toward
// each standby over the last minutes (at most 60), with the RPO.
func (s *Server) lag(w http.ResponseWriter, r *http.Request) {
	minutes := 15
	if v := r.URL.Query().Get("minutes"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 60 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("minutes=%q: a whole number from 1 to 60", v))
			return
		}
		minutes = n
	}
	writeJSON(w, http.StatusOK, s.cfg.Lag.Window(time.Now().Add(-time.Duration(minutes)*time.Minute)))
}

// DrillEntry is one drill's outcome with its run, in GET /api/v1/drills.
type DrillEntry struct {
	Run    string       `json:"run"`
	Kind   string       `json:"kind"`
	From   string       `json:"from"`
	To     string       `json:"to"`
	Status string       `json:"status"`
	Drill  report.Drill `json:"drill"`
	Report string       `json:"report"`
}

// drills serves GET /api/v1/drills: every drill's measurements, newest
// first.
func (s *Server) drills(w http.ResponseWriter, r *http.Request) {
	all, err := s.cfg.Control.Store().Drills(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "drills: "+err.Error())
		return
	}
	out := []DrillEntry{}
	for id, b := range all {
		e := DrillEntry{Run: id, Report: reportPath(id)}
		if err := json.Unmarshal(b, &e.Drill); err != nil {
			writeError(w, http.StatusInternalServerError, fmt.Sprintf("drill of run %s is corrupt: %v", id, err))
			return
		}
		if run, err := s.cfg.Runs.Store.GetRun(r.Context(), id); err == nil {
			e.Kind, e.From, e.To, e.Status = run.Kind, run.From, run.To, run.Status
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Run > out[j].Run })
	writeJSON(w, http.StatusOK, out)
}

// cancelRun serves POST /api/v1/runs/{id}/cancel: the run stops before
// its next group and undoes what it can — unless it has switched its
// epoch, after which it must run to the end (undoing the fence then could
// give the old region writes again).
func (s *Server) cancelRun(w http.ResponseWriter, r *http.Request) {
	who, ok := s.authenticate(w, r, config.TokenOperator)
	if !ok {
		return
	}
	id := r.PathValue("id")
	rs := s.cfg.Runs
	run, ok := s.getRun(w, r)
	if !ok {
		return
	}
	switch {
	case runbook.Terminal(run.Status):
		writeError(w, http.StatusConflict, fmt.Sprintf("run %s has already ended (%s)", id, run.Status))
		return
	case run.Epoch != 0:
		writeError(w, http.StatusConflict, fmt.Sprintf("run %s has committed epoch %d: it can no longer be cancelled; let it finish, then fail back", id, run.Epoch))
		return
	}
	if err := rs.Store.Cancel(r.Context(), id, runbook.Approval{By: who.name, Role: who.role, At: time.Now().UTC()}); err != nil {
		writeError(w, http.StatusServiceUnavailable, "cancel: "+err.Error())
		return
	}
	if rs.Started != nil {
		rs.Started(run) // wake the executor
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"run": id, "status": "cancelling"})
}

// stream serves GET /api/v1/events/stream: Server-Sent Events. "status"
// events carry the status (as GET /api/v1/status) once at connect and
// then at most every second; "event" events carry each new event of the
// stream (id: its sequence number). ?after=N or Last-Event-ID resumes
// after event N; by default the stream starts with the next event.
func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "this connection cannot stream")
		return
	}
	store := s.cfg.Control.Store()
	after, err := streamStart(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx := r.Context()
	if after < 0 {
		last, err := store.LastSeq(ctx)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "events: "+err.Error())
			return
		}
		after = int64(last)
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	var buf bytes.Buffer
	send := func(event string, id string, v any) error {
		buf.Reset()
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if id != "" {
			fmt.Fprintf(&buf, "id: %s\n", id)
		}
		fmt.Fprintf(&buf, "event: %s\ndata: %s\n\n", event, b)
		if _, err := w.Write(buf.Bytes()); err != nil {
			return err
		}
		flusher.Flush()
		return nil
	}
	events := time.NewTicker(250 * time.Millisecond)
	defer events.Stop()
	var lastStatus time.Time
	lastWrite := time.Now()
	for {
		if time.Since(lastStatus) >= time.Second {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			st := s.statusResponse(sctx)
			cancel()
			if err := send("status", "", st); err != nil {
				return
			}
			lastStatus, lastWrite = time.Now(), time.Now()
		}
		evs, err := store.Events(ctx, uint64(after), 100)
		if err == nil {
			for _, e := range evs {
				e.Message = s.redact(e.Message)
				if err := send("event", strconv.FormatUint(e.Seq, 10), e); err != nil {
					return
				}
				after = int64(e.Seq)
				lastWrite = time.Now()
			}
		}
		if time.Since(lastWrite) > 15*time.Second {
			if _, err := w.Write([]byte(": keep-alive\n\n")); err != nil {
				return
			}
			flusher.Flush()
			lastWrite = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-s.done:
			return
		case <-events.C:
		}
	}
}

// streamStart reads where a stream resumes: ?after=N or Last-Event-ID;
// -1 when neither is given.
func streamStart(r *http.Request) (int64, error) {
	v, name := r.URL.Query().Get("after"), "after"
	if v == "" {
		v, name = r.Header.Get("Last-Event-ID"), "Last-Event-ID"
	}
	if v == "" {
		return -1, nil
	}
	n, err := strconv.ParseUint(v, 10, 63)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: not a sequence number", name, v)
	}
	return int64(n), nil
}

// redact scrubs configured secrets from a text served by the API.
func (s *Server) redact(text string) string {
	if s.cfg.Runs == nil {
		return text
	}
	return s.cfg.Runs.Config.Redact(text)
}
