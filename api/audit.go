package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
)

// The audit trail of the API. Every mutating call (any method but GET,
// HEAD and OPTIONS) is recorded as an event of type control.EventAudit in
// the control plane's hash-chained event stream, whatever its outcome:
// refused calls (401, 403, 400, 404, 405) too.
//
//   - Actor is the name of the configured token the call presented (also
//     when its role was too low), "local" when the API has no tokens (it
//     then listens on loopback and every caller is the local operator),
//     else "anonymous".
//   - Source is the host of the connection's remote address. The
//     X-Forwarded-For header is not used: nothing configures which
//     proxies to trust, and a client can write any address in it.
//   - Action is the route pattern that matched, with its method ("POST
//     /api/v1/runs/{id}/approve"), or the method and path when no route
//     did.
//   - Status is the HTTP status code; Severity is info below 400, warning
//     from 400. Run is the run id of the path, or of the run created.
//   - Message is the status and, for a refusal, the API's error message
//     (what the caller was told, redacted); never the request body.
//
// The entry is appended after the handler ran and before its response
// leaves: the response (status, headers, body) is buffered, the entry
// appended synchronously, then the response is sent. A client that got
// an answer can rely on the call being in the trail. When the append
// fails (no quorum), the call's effect stands, so the response is sent
// anyway, with the header X-Lifeboat-Audit: not-recorded, and the failure
// is logged as an error.

// Headers of the audit API.
const (
	// HeaderAuditHead (a trailer of GET /api/v1/audit) is the hash of the
	// last entry exported.
	HeaderAuditHead = "X-Lifeboat-Audit-Head"
	// HeaderAuditPrev (a trailer) is the Prev of the first entry exported:
	// the hash the archive links to.
	HeaderAuditPrev = "X-Lifeboat-Audit-Prev"
	// HeaderAuditCount, HeaderAuditFirst and HeaderAuditLast (trailers)
	// are the number of entries exported and their first and last
	// sequence numbers.
	HeaderAuditCount = "X-Lifeboat-Audit-Count"
	HeaderAuditFirst = "X-Lifeboat-Audit-First"
	HeaderAuditLast  = "X-Lifeboat-Audit-Last"
	// HeaderAuditError (a trailer) is set when the export stopped early;
	// the lines before it are whole entries.
	HeaderAuditError = "X-Lifeboat-Audit-Error"
	// HeaderAudit is "not-recorded" on the response of a mutating call
	// whose audit entry could not be appended.
	HeaderAudit = "X-Lifeboat-Audit"
)

// auditNote carries what a mutating call's handler learns for its audit
// entry: the caller's token name, noted by authenticate.
type auditNote struct {
	actor string
}

type auditNoteKey struct{}

// noteCaller records the name of the token that r presented, for r's
// audit entry (a no-op outside a mutating call).
func noteCaller(r *http.Request, name string) {
	if n, ok := r.Context().Value(auditNoteKey{}).(*auditNote); ok {
		n.actor = name
	}
}

// mutating reports whether a call with this method changes something.
func mutating(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// audited wraps the API's routes so that every mutating call is recorded
// in the audit trail before its response is sent (see above). Without a
// control plane there is no trail: mux is returned as is.
func (s *Server) audited(mux *http.ServeMux) http.Handler {
	if s.cfg.Control == nil {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !mutating(r.Method) {
			mux.ServeHTTP(w, r)
			return
		}
		note := &auditNote{}
		r = r.WithContext(context.WithValue(r.Context(), auditNoteKey{}, note))
		rec := &bufferedResponse{w: w}
		// The mux sets r.Pattern and r's path values on this request.
		mux.ServeHTTP(rec, r)
		e := s.auditEvent(r, note, rec)
		// The call happened: record it even if the client has gone.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
		_, err := s.cfg.Control.Store().Append(ctx, e)
		cancel()
		if err != nil {
			s.logger.Error("audit: the call is not recorded", "action", e.Action, "status", e.Status, "actor", e.Actor, "source", e.Source, "err", err)
			w.Header().Set(HeaderAudit, "not-recorded")
		}
		rec.send()
	})
}

// auditEvent describes the call r answered with rec.
func (s *Server) auditEvent(r *http.Request, note *auditNote, rec *bufferedResponse) control.Event {
	code := rec.code()
	e := control.Event{
		Type:     control.EventAudit,
		Severity: control.SeverityInfo,
		Actor:    note.actor,
		Source:   r.RemoteAddr,
		Action:   r.Pattern,
		Status:   strconv.Itoa(code),
		Run:      r.PathValue("id"),
		Message:  fmt.Sprintf("%d %s", code, http.StatusText(code)),
	}
	if e.Actor == "" {
		e.Actor = "anonymous"
		if len(s.tokens()) == 0 {
			e.Actor = "local"
		}
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		e.Source = host
	}
	if e.Action == "" || e.Action == "/" {
		e.Action = r.Method + " " + clip(r.URL.Path, 200) + " (no route)"
	} else if !strings.HasPrefix(e.Action, r.Method+" ") {
		e.Action = r.Method + " " + e.Action
	}
	var body struct {
		ID    string `json:"id"`
		Error string `json:"error"`
	}
	json.Unmarshal(rec.body.Bytes(), &body)
	if code >= 400 {
		e.Severity = control.SeverityWarning
		if body.Error != "" {
			e.Message += ": " + clip(body.Error, 300)
		}
	} else if e.Run == "" && code == http.StatusCreated {
		e.Run = body.ID
	}
	if s.cfg.Runs != nil {
		e.Message = s.cfg.Runs.Config.Redact(e.Message)
	}
	return e
}

// clip shortens s to at most n bytes (on a rune boundary), marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// bufferedResponse holds a response (its status and body; headers go to
// the real writer's header map, unsent) until send.
type bufferedResponse struct {
	w      http.ResponseWriter
	status int
	body   bytes.Buffer
}

// Header is the real response's header map: nothing is sent before send.
func (b *bufferedResponse) Header() http.Header { return b.w.Header() }

// WriteHeader keeps the first final status.
func (b *bufferedResponse) WriteHeader(code int) {
	if b.status == 0 && code >= 200 {
		b.status = code
	}
}

// Write buffers p.
func (b *bufferedResponse) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

// Unwrap is the real writer, for http.ResponseController.
func (b *bufferedResponse) Unwrap() http.ResponseWriter { return b.w }

func (b *bufferedResponse) code() int {
	if b.status == 0 {
		return http.StatusOK
	}
	return b.status
}

// send writes the buffered response.
func (b *bufferedResponse) send() {
	b.w.WriteHeader(b.code())
	b.w.Write(b.body.Bytes())
}

// auditExport serves GET /api/v1/audit?since=RFC3339: the audit trail (the
// whole event stream, from the first entry at or after since) as JSONL,
// each line an entry exactly as stored. What verifies the archive on its
// own comes in trailers, known once the last line is written: the count,
// the first and last sequence numbers, the Prev of the first entry and
// the hash of the last (see control.VerifyExport). Admin only.
func (s *Server) auditExport(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.authenticate(w, r, config.TokenAdmin); !ok {
		return
	}
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("since=%q: not an RFC 3339 time (like 2026-03-01T12:00:00Z)", v))
			return
		}
		since = t
	}
	h := w.Header()
	h.Set("Content-Type", "application/x-ndjson")
	h.Set("Cache-Control", "no-store")
	h.Set("Trailer", strings.Join([]string{HeaderAuditCount, HeaderAuditFirst, HeaderAuditLast, HeaderAuditPrev, HeaderAuditHead, HeaderAuditError}, ", "))
	out := &startedWriter{w: w}
	sum, err := s.cfg.Control.Store().Export(r.Context(), since, out)
	if err != nil && !out.started {
		h.Del("Trailer")
		writeError(w, http.StatusServiceUnavailable, "audit export: "+err.Error())
		return
	}
	if !out.started {
		w.WriteHeader(http.StatusOK)
	}
	h.Set(HeaderAuditCount, strconv.FormatUint(sum.Count, 10))
	h.Set(HeaderAuditFirst, strconv.FormatUint(sum.First, 10))
	h.Set(HeaderAuditLast, strconv.FormatUint(sum.Last, 10))
	h.Set(HeaderAuditPrev, sum.Prev)
	h.Set(HeaderAuditHead, sum.Head)
	if err != nil {
		h.Set(HeaderAuditError, err.Error())
	}
}

// startedWriter tells whether anything was written (the status is then
// sent).
type startedWriter struct {
	w       http.ResponseWriter
	started bool
}

func (s *startedWriter) Write(p []byte) (int, error) {
	s.started = true
	return s.w.Write(p)
}

// auditVerify serves GET /api/v1/audit/verify: the control.VerifyReport
// of the whole stream, 200 when intact, 409 when broken. Admin only.
func (s *Server) auditVerify(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.authenticate(w, r, config.TokenAdmin); !ok {
		return
	}
	rep, err := s.cfg.Control.Store().Verify(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "audit verify: "+err.Error())
		return
	}
	code := http.StatusOK
	if !rep.Intact {
		code = http.StatusConflict
	}
	writeJSON(w, code, rep)
}
