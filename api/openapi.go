package api

import (
	"encoding"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/observe"
	"github.com/lifeboat-dr/lifeboat/replication"
	"github.com/lifeboat-dr/lifeboat/report"
	"github.com/lifeboat-dr/lifeboat/runbook"
)

// The API's OpenAPI 3.1 document, served at GET /api/v1/openapi.json. It
// is made from operations, the one table of every route: Handler
// registers each route through it (route), so the role an operation is
// documented with is the role it enforces, and its request type is the
// type its body is checked against. The schemas are derived from the Go
// types the API encodes and decodes.

// operation is one route and its documentation.
type operation struct {
	method, pattern string // as registered: "GET /api/v1/runs/{id}"
	id, tag         string
	summary, desc   string
	// role is the least role a token needs (viewer, operator, admin);
	// "" for public routes.
	role   string
	params []param
	// body is the request type (nil: the call takes no body, or {});
	// required lists its fields a request must set.
	body     reflect.Type
	required []string
	// bodyDesc and bodySchema (merged into the body's schema) say more.
	bodyDesc   string
	bodySchema map[string]any
	responses  []response
}

type param struct {
	name, in, desc string
	schema         map[string]any
}

type response struct {
	code    int
	desc    string
	media   string       // default application/json
	typ     reflect.Type // JSON body type; nil with schema or none
	schema  map[string]any
	headers map[string]any
}

var pathID = param{"id", "path", "The run's id.", map[string]any{"type": "string"}}

func typeOf[T any]() reflect.Type { return reflect.TypeFor[T]() }

func ok(t reflect.Type, desc string) response { return response{code: 200, desc: desc, typ: t} }

func fail(code int, desc string) response { return response{code: code, desc: desc} }

// operations are every route of the API, in the order of the document.
var operations = []operation{
	{method: "GET", pattern: "/api/v1/status", id: "getStatus", tag: "status", role: config.TokenViewer,
		summary:   "The node's view: regions, services, exposure, readiness, traffic and the control plane",
		responses: []response{ok(typeOf[StatusResponse](), "The status.")}},
	{method: "GET", pattern: "/api/v1/regions", id: "listRegions", tag: "status", role: config.TokenViewer,
		summary: "Each region's state (by quorum of the nodes' verdicts)", responses: []response{ok(typeOf[[]health.RegionStatus](), "The regions.")}},
	{method: "GET", pattern: "/api/v1/services", id: "listServices", tag: "status", role: config.TokenViewer,
		summary: "Each service's endpoints, health and replication", responses: []response{ok(typeOf[[]observe.ServiceStatus](), "The services.")}},
	{method: "GET", pattern: "/api/v1/exposure", id: "listExposure", tag: "status", role: config.TokenViewer,
		summary: "The data each service stands to lose against its RPO", responses: []response{ok(typeOf[[]replication.Exposure](), "The exposure.")}},
	{method: "GET", pattern: "/api/v1/readiness", id: "listReadiness", tag: "status", role: config.TokenViewer,
		summary: "Whether each standby region is ready to take over", responses: []response{ok(typeOf[[]health.Readiness](), "The readiness.")}},
	{method: "GET", pattern: "/api/v1/events", id: "listEvents", tag: "events", role: config.TokenViewer,
		summary: "Events of the control plane's stream, oldest first",
		params: []param{
			{"after", "query", "Only events with a sequence number above this one.", map[string]any{"type": "integer", "minimum": 0, "default": 0}},
			{"limit", "query", "At most this many events.", map[string]any{"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
		},
		responses: []response{ok(typeOf[[]control.Event](), "The events."), fail(400, "A bad after or limit."),
			fail(404, "This node runs no control plane."), fail(503, "The control plane does not answer.")}},
	{method: "GET", pattern: "/api/v1/events/stream", id: "streamEvents", tag: "events", role: config.TokenViewer,
		summary: "Server-Sent Events: the status, then each new event",
		desc: "`status` messages carry the status (as GET /api/v1/status) at connect and then at most every second; `event` messages carry " +
			"each new event (`id:` its sequence number). By default the stream starts with the next event; `after` or Last-Event-ID resumes after an event. " +
			"A comment line keeps the connection alive every 15 s.",
		params: []param{
			{"after", "query", "Resume after this event.", map[string]any{"type": "integer", "minimum": 0}},
			{"Last-Event-ID", "header", "Resume after this event (as sent by EventSource).", map[string]any{"type": "integer", "minimum": 0}},
		},
		responses: []response{{code: 200, desc: "The stream.", media: "text/event-stream", schema: map[string]any{"type": "string"}},
			fail(400, "A bad after or Last-Event-ID."), fail(503, "The control plane does not answer.")}},
	{method: "GET", pattern: "/api/v1/lag", id: "getLag", tag: "status", role: config.TokenViewer,
		summary:   "Recent replication lag of each data service toward each standby, with the RPO",
		params:    []param{{"minutes", "query", "How far back.", map[string]any{"type": "integer", "minimum": 1, "maximum": 60, "default": 15}}},
		responses: []response{ok(typeOf[observe.LagWindow](), "The lag."), fail(400, "A bad minutes.")}},
	{method: "GET", pattern: "/api/v1/runs", id: "listRuns", tag: "runs", role: config.TokenViewer,
		summary: "Every run, newest first", responses: []response{ok(typeOf[[]*runbook.Run](), "The runs."), fail(503, "The control plane does not answer.")}},
	{method: "POST", pattern: "/api/v1/runs", id: "createRun", tag: "runs", role: config.TokenOperator,
		summary: "Start a failover, switchover or failback, or plan one (dry_run)",
		desc:    "One run at a time. A dry run plans the run and runs the pre-checks, and changes nothing.",
		body:    typeOf[RunRequest](), required: []string{"kind"},
		bodyDesc: "`to` is required except for a failback (default: the most preferred region).",
		bodySchema: map[string]any{"properties": map[string]any{
			"kind": map[string]any{"enum": []string{runbook.KindFailover, runbook.KindSwitchover, runbook.KindFailback}}}},
		responses: []response{{code: 201, desc: "The run, created.", typ: typeOf[runbook.Run]()}, ok(typeOf[DryRunResponse](), "The plan and pre-checks of a dry run."),
			fail(409, "Another run is active."), fail(503, "This node cannot reach a quorum of the control plane.")}},
	{method: "GET", pattern: "/api/v1/runs/{id}", id: "getRun", tag: "runs", role: config.TokenViewer, params: []param{pathID},
		summary: "One run, with its steps", responses: []response{ok(typeOf[runbook.Run](), "The run."), fail(404, "No such run."), fail(503, "The control plane does not answer.")}},
	{method: "POST", pattern: "/api/v1/runs/{id}/approve", id: "approveRun", tag: "runs", role: config.TokenOperator, params: []param{pathID},
		summary: "Approve a run's step that waits for approval",
		desc:    "The step's own approver role applies on top (a step may need an admin).",
		body:    typeOf[ApproveRequest](), bodyDesc: "Without `step` (`{}`), the step waiting for approval.",
		responses: []response{{code: 200, desc: "Approved.", schema: objectSchema("run", "string", "step", "string", "approved_by", "string", "at", "date-time")},
			fail(404, "No such run or step."), fail(409, "Nothing waits for approval, the step needs none, or the run has ended."), fail(503, "The control plane does not answer.")}},
	{method: "POST", pattern: "/api/v1/runs/{id}/cancel", id: "cancelRun", tag: "runs", role: config.TokenOperator, params: []param{pathID},
		summary: "Cancel a run before it commits its epoch",
		desc:    "The run stops before its next group and undoes what it can. Takes no body (or `{}`).",
		responses: []response{{code: 202, desc: "Cancelling.", schema: objectSchema("run", "string", "status", "string")},
			fail(404, "No such run."), fail(409, "The run has ended, or has committed its epoch."), fail(503, "The control plane does not answer.")}},
	{method: "GET", pattern: "/api/v1/runs/{id}/report", id: "getReport", tag: "reports", role: config.TokenViewer,
		summary: "A run's DR report",
		params:  []param{pathID, {"format", "query", "json, md (Markdown) or html (a self-contained page).", map[string]any{"type": "string", "enum": []string{"json", "md", "html"}, "default": "json"}}},
		responses: []response{ok(typeOf[report.Report](), "The report."),
			{code: 200, media: "text/markdown", schema: map[string]any{"type": "string"}}, {code: 200, media: "text/html", schema: map[string]any{"type": "string"}},
			fail(400, "A bad format."), fail(404, "No such run."), fail(503, "The control plane does not answer.")}},
	{method: "POST", pattern: "/api/v1/runs/{id}/drill", id: "attachDrill", tag: "reports", role: config.TokenOperator, params: []param{pathID},
		summary: "Attach a drill's measured outcome to its run",
		desc:    "The run's report is written again with it; lost writes or split-brain violations make a critical event.",
		body:    typeOf[report.Drill](), required: []string{"scenario", "fault_at"},
		responses: []response{{code: 202, desc: "Kept.", schema: objectSchema("run", "string", "report", "string")},
			fail(404, "No such run."), fail(503, "The control plane does not answer.")}},
	{method: "GET", pattern: "/api/v1/drills", id: "listDrills", tag: "reports", role: config.TokenViewer,
		summary: "Every drill's measurements, newest first", responses: []response{ok(typeOf[[]DrillEntry](), "The drills."), fail(503, "The control plane does not answer.")}},
	{method: "GET", pattern: "/api/v1/audit", id: "exportAudit", tag: "audit", role: config.TokenAdmin,
		summary: "Export the audit trail (the hash-chained event stream) as JSON lines",
		desc: "Each line is an event as stored. Trailers make the export verifiable on its own: " +
			strings.Join([]string{HeaderAuditCount, HeaderAuditFirst, HeaderAuditLast, HeaderAuditPrev, HeaderAuditHead, HeaderAuditError}, ", ") + ".",
		params: []param{{"since", "query", "From the first entry at or after this time (RFC 3339).", map[string]any{"type": "string", "format": "date-time"}}},
		responses: []response{{code: 200, desc: "The entries, one control.Event a line.", media: "application/x-ndjson", typ: typeOf[control.Event]()},
			fail(400, "A bad since."), fail(503, "The control plane does not answer.")}},
	{method: "GET", pattern: "/api/v1/audit/verify", id: "verifyAudit", tag: "audit", role: config.TokenAdmin,
		summary: "Verify the audit trail's hash chain",
		responses: []response{ok(typeOf[control.VerifyReport](), "Intact."), {code: 409, desc: "Broken: the report names the first bad entry.", typ: typeOf[control.VerifyReport]()},
			fail(503, "The control plane does not answer.")}},
	{method: "GET", pattern: "/api/v1/openapi.json", id: "getOpenAPI", tag: "meta",
		summary: "This document", responses: []response{{code: 200, desc: "The OpenAPI document.", schema: map[string]any{"type": "object"}}}},
	{method: "GET", pattern: "/healthz", id: "healthz", tag: "meta", summary: "Liveness: the process serves (not an API route: no token)",
		responses: []response{{code: 200, desc: "ok", media: "text/plain", schema: map[string]any{"type": "string", "const": "ok\n"}}}},
	{method: "GET", pattern: "/metrics", id: "metrics", tag: "meta", summary: "Prometheus metrics (not an API route: no token)",
		responses: []response{{code: 200, desc: "The text exposition format.", media: "text/plain", schema: map[string]any{"type": "string"}}}},
	{method: "GET", pattern: "/{$}", id: "dashboard", tag: "meta", summary: "The web dashboard (when the node serves it)",
		desc:      "The page asks for a token when the API has tokens; the page itself needs none.",
		responses: []response{{code: 200, desc: "The dashboard's page.", media: "text/html", schema: map[string]any{"type": "string"}}}},
	{method: "GET", pattern: "/ui/", id: "dashboardAssets", tag: "meta", summary: "The dashboard's pages and assets: /ui/ and every path under it",
		responses: []response{{code: 200, desc: "A page, script or style sheet.", media: "*/*", schema: map[string]any{"type": "string"}}, fail(404, "No such file.")}},
}

// operationFor is the operation of a route.
func operationFor(method, pattern string) *operation {
	for i := range operations {
		if operations[i].method == method && operations[i].pattern == pattern {
			return &operations[i]
		}
	}
	return nil
}

// openAPIPath is the OpenAPI path of a route's pattern.
func openAPIPath(pattern string) string {
	p := strings.TrimSuffix(pattern, "{$}")
	return strings.ReplaceAll(p, "...}", "}")
}

func objectSchema(kv ...string) map[string]any {
	props := map[string]any{}
	var names []string
	for i := 0; i+1 < len(kv); i += 2 {
		s := map[string]any{"type": kv[i+1]}
		if kv[i+1] == "date-time" {
			s = map[string]any{"type": "string", "format": "date-time"}
		}
		props[kv[i]] = s
		names = append(names, kv[i])
	}
	return map[string]any{"type": "object", "properties": props, "required": names}
}

var (
	openAPIOnce sync.Once
	openAPIDoc  []byte
)

// openAPIJSON is the document, made once.
func openAPIJSON() []byte {
	openAPIOnce.Do(func() {
		b, err := json.MarshalIndent(openAPIDocument(), "", "  ")
		if err != nil {
			panic("api: the OpenAPI document does not encode: " + err.Error())
		}
		openAPIDoc = append(b, '\n')
	})
	return openAPIDoc
}

func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(openAPIJSON())
}

// errorResponses are the answers any route may give, by status.
var errorResponses = map[int]string{
	400: "Bad request: the message says what (a query parameter, or the body: the field, its type, data after the object, an empty body).",
	401: "No token, a malformed Authorization header, or an unknown token (only when tokens are configured).",
	403: "The token's role is too low (the message names the role needed), a cross-origin mutating call, or, without tokens, a Host that is not loopback.",
	404: "Not found.",
	409: "Conflict with the state of the run or of the audit trail.",
	413: "The body is larger than 64 KiB.",
	415: "A body that is not Content-Type: application/json.",
	429: "Too many mutating calls from this caller (its token, else its address); Retry-After says when to try again.",
	503: "The control plane does not answer.",
}

func openAPIDocument() map[string]any {
	g := &schemaGen{schemas: map[string]any{}, names: map[reflect.Type]string{}, requests: map[reflect.Type]bool{}}
	for _, op := range operations {
		if op.body != nil {
			g.requests[op.body] = true
		}
	}
	paths := map[string]any{}
	for i := range operations {
		op := &operations[i]
		path := openAPIPath(op.pattern)
		item, _ := paths[path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[path] = item
		}
		item[strings.ToLower(op.method)] = g.operation(op)
	}
	errSchema := g.ref(typeOf[Error]())
	responses := map[string]any{}
	for code, desc := range errorResponses {
		r := map[string]any{"description": desc, "content": map[string]any{"application/json": map[string]any{"schema": errSchema}}}
		if code == 429 {
			r["headers"] = map[string]any{"Retry-After": map[string]any{"description": "Seconds to wait.", "schema": map[string]any{"type": "integer"}}}
		}
		if code == 401 {
			r["headers"] = map[string]any{"WWW-Authenticate": map[string]any{"schema": map[string]any{"type": "string"}}}
		}
		responses[fmt.Sprint(code)] = r
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":   "Lifeboat API",
			"version": "v1",
			"description": "The HTTP API of a Lifeboat node: status, events, runs (failover, switchover, failback), reports, drills and the audit trail. " +
				"Errors are JSON: {\"error\": \"what is wrong\"}. Mutating calls (POST) must be same-origin and carry a JSON body as Content-Type: application/json; " +
				"they are rate limited per caller. Without tokens configured, the API listens on loopback only and every local caller is an admin.",
		},
		"tags": []any{
			map[string]any{"name": "status", "description": "What the node observes."},
			map[string]any{"name": "events", "description": "The control plane's event stream."},
			map[string]any{"name": "runs", "description": "Failovers, switchovers and failbacks."},
			map[string]any{"name": "reports", "description": "DR reports and drills."},
			map[string]any{"name": "audit", "description": "The audit trail (admin only)."},
			map[string]any{"name": "meta", "description": "Not API routes: this document, health, metrics, the dashboard. No token needed."},
		},
		"paths": paths,
		"components": map[string]any{
			"schemas":   g.schemas,
			"responses": responses,
			"securitySchemes": map[string]any{
				"bearer": map[string]any{"type": "http", "scheme": "bearer",
					"description": "A token of api.tokens (the configuration keeps its SHA-256). Roles: viewer < operator < admin; each operation's x-lifeboat-role is the least it needs. " +
						"Without tokens configured, no token is needed (the API then listens on loopback only)."},
				"clientCertificate": map[string]any{"type": "mutualTLS",
					"description": "With api.tls.ca set, every connection must present a client certificate signed by that CA (on top of the bearer token)."},
			},
		},
	}
}

// operation is the OpenAPI operation object of op.
func (g *schemaGen) operation(op *operation) map[string]any {
	o := map[string]any{"operationId": op.id, "summary": op.summary, "tags": []string{op.tag}}
	desc := op.desc
	if op.role != "" {
		o["security"] = []any{map[string]any{"bearer": []string{}}}
		o["x-lifeboat-role"] = op.role
		desc = strings.TrimSpace(desc + "\n\nNeeds a token of role " + op.role + " or above (when tokens are configured).")
	} else {
		o["security"] = []any{}
	}
	if desc != "" {
		o["description"] = desc
	}
	var params []any
	for _, p := range op.params {
		params = append(params, map[string]any{"name": p.name, "in": p.in, "description": p.desc, "required": p.in == "path", "schema": p.schema})
	}
	if params != nil {
		o["parameters"] = params
	}
	write := mutating(op.method)
	if op.body != nil {
		schema := g.ref(op.body)
		if len(op.required) > 0 || op.bodySchema != nil {
			extra := map[string]any{}
			for k, v := range op.bodySchema {
				extra[k] = v
			}
			if len(op.required) > 0 {
				extra["required"] = op.required
			}
			schema = map[string]any{"allOf": []any{schema, extra}}
		}
		rb := map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": schema}}}
		if op.bodyDesc != "" {
			rb["description"] = op.bodyDesc
		}
		o["requestBody"] = rb
	}
	responses := map[string]any{}
	for _, r := range op.responses {
		code := fmt.Sprint(r.code)
		if r.desc == "" && r.typ == nil && r.schema == nil {
			continue
		}
		if r.typ == nil && r.schema == nil { // an error: the shared answer, described here
			responses[code] = map[string]any{"description": r.desc, "content": map[string]any{"application/json": map[string]any{"schema": g.ref(typeOf[Error]())}}}
			continue
		}
		media := r.media
		if media == "" {
			media = "application/json"
		}
		schema := r.schema
		if schema == nil {
			schema = g.ref(r.typ)
		}
		existing, _ := responses[code].(map[string]any)
		if existing == nil {
			existing = map[string]any{"description": r.desc, "content": map[string]any{}}
			responses[code] = existing
		}
		existing["content"].(map[string]any)[media] = map[string]any{"schema": schema}
	}
	shared := func(code int) {
		if _, ok := responses[fmt.Sprint(code)]; !ok {
			responses[fmt.Sprint(code)] = map[string]any{"$ref": fmt.Sprintf("#/components/responses/%d", code)}
		}
	}
	if op.role != "" {
		shared(401)
	}
	if op.role != "" || write {
		shared(403)
	}
	if write {
		shared(400)
		shared(413)
		shared(415)
		shared(429)
	}
	o["responses"] = responses
	return o
}

// schemaGen derives JSON Schemas from Go types as encoding/json encodes
// them; named struct types become components.
type schemaGen struct {
	schemas map[string]any
	names   map[reflect.Type]string
	// requests are the request types: their fields are not all required
	// (each operation says which are).
	requests map[reflect.Type]bool
}

var (
	timeType      = reflect.TypeFor[time.Time]()
	durationType  = reflect.TypeFor[time.Duration]()
	rawType       = reflect.TypeFor[json.RawMessage]()
	marshalerType = reflect.TypeFor[json.Marshaler]()
	textType      = reflect.TypeFor[encoding.TextMarshaler]()
)

// ref is t's schema: a $ref for a named struct, inline otherwise.
func (g *schemaGen) ref(t reflect.Type) map[string]any {
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t == durationType:
		return map[string]any{"type": "integer", "description": "nanoseconds"}
	case t == rawType:
		return map[string]any{}
	case t.Kind() != reflect.Pointer && (t.Implements(marshalerType) || reflect.PointerTo(t).Implements(marshalerType)):
		// Its own encoding: judge by the zero value's.
		b, _ := json.Marshal(reflect.New(t).Interface())
		switch {
		case len(b) > 0 && b[0] == '"':
			return map[string]any{"type": "string"}
		case len(b) > 0 && (b[0] == '-' || b[0] >= '0' && b[0] <= '9'):
			return map[string]any{"type": "number"}
		}
		return map[string]any{}
	case t.Kind() != reflect.Pointer && t.Implements(textType):
		return map[string]any{"type": "string"}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return g.ref(t.Elem())
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return map[string]any{"type": "integer"}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer", "minimum": 0}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 && t.Kind() == reflect.Slice {
			return map[string]any{"type": "string", "contentEncoding": "base64"}
		}
		return map[string]any{"type": "array", "items": g.ref(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.ref(t.Elem())}
	case reflect.Struct:
		if t.Name() == "" {
			return g.object(t)
		}
		name, done := g.names[t]
		if !done {
			name = componentName(t)
			g.names[t] = name
			g.schemas[name] = map[string]any{} // placeholder: a type may refer to itself
			g.schemas[name] = g.object(t)
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	}
	return map[string]any{} // interfaces: any JSON
}

// componentName names t's schema: bare for this package's types, with
// the package otherwise ("runbook.Run").
func componentName(t reflect.Type) string {
	pkg := t.PkgPath()
	if i := strings.LastIndex(pkg, "/"); i >= 0 {
		pkg = pkg[i+1:]
	}
	name := strings.NewReplacer("[", "_", "]", "", "*", "", "/", ".", " ", "").Replace(t.Name())
	if pkg == "api" || pkg == "" {
		return name
	}
	return pkg + "." + name
}

// object is the schema of a struct's JSON object: its fields as
// encoding/json sees them (embedded structs flattened); the fields
// without omitempty or omitzero are always present (required, except in
// request types). A pointer field is null when nil unless omitted.
func (g *schemaGen) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	for _, f := range jsonFields(t) {
		s := g.ref(f.typ)
		if f.quoted {
			s = map[string]any{"type": "string"}
		}
		if f.typ.Kind() == reflect.Pointer && !f.omit {
			s = map[string]any{"anyOf": []any{s, map[string]any{"type": "null"}}}
		}
		props[f.name] = s
		if !f.omit {
			required = append(required, f.name)
		}
	}
	out := map[string]any{"type": "object", "properties": props}
	if len(required) > 0 && !g.requests[t] {
		sort.Strings(required)
		out["required"] = required
	}
	return out
}

type jsonField struct {
	name         string
	typ          reflect.Type
	omit, quoted bool
	depth        int
}

// jsonFields lists t's JSON fields, with encoding/json's rules: exported
// fields, "-" skipped, tags' names, embedded structs' fields promoted
// (the shallowest wins a name).
func jsonFields(t reflect.Type) []jsonField {
	var out []jsonField
	seen := map[string]int{}
	var walk func(t reflect.Type, depth int)
	walk = func(t reflect.Type, depth int) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			ft := f.Type
			if f.Anonymous && name == "" {
				et := ft
				if et.Kind() == reflect.Pointer {
					et = et.Elem()
				}
				if et.Kind() == reflect.Struct {
					walk(et, depth+1)
					continue
				}
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if d, dup := seen[name]; dup && d <= depth {
				continue
			}
			seen[name] = depth
			omit := strings.Contains(","+opts+",", ",omitempty,") || strings.Contains(","+opts+",", ",omitzero,")
			quoted := strings.Contains(","+opts+",", ",string,")
			out = slicesDeleteName(out, name)
			out = append(out, jsonField{name: name, typ: ft, omit: omit, quoted: quoted, depth: depth})
		}
	}
	walk(t, 0)
	return out
}

func slicesDeleteName(fs []jsonField, name string) []jsonField {
	out := fs[:0]
	for _, f := range fs {
		if f.name != name {
			out = append(out, f)
		}
	}
	return out
}
