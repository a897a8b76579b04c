package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// The OpenAPI document describes exactly the routes the router serves
// (a server with every source registers every operation), every $ref
// resolves, every path parameter is declared, and each operation's
// documented role is the one enforced.
func TestOpenAPIMatchesRouter(t *testing.T) {
	s := fullServer(t, true)
	h := s.Handler()
	w := serve(h, "GET", "/api/v1/openapi.json", "", "")
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET /api/v1/openapi.json: %d %v %s", w.Code, w.Header(), w.Body)
	}
	var doc struct {
		OpenAPI    string                               `json:"openapi"`
		Paths      map[string]map[string]map[string]any `json:"paths"`
		Components map[string]map[string]any            `json:"components"`
	}
	raw := w.Body.Bytes()
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi = %q", doc.OpenAPI)
	}

	var documented, registered []string
	for path, item := range doc.Paths {
		for method := range item {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	for _, r := range s.routes {
		method, pattern, _ := strings.Cut(r, " ")
		registered = append(registered, method+" "+openAPIPath(pattern))
	}
	sort.Strings(documented)
	sort.Strings(registered)
	for _, r := range registered {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is not in the document", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(registered, d) {
			t.Errorf("the document has %s, which the router does not serve", d)
		}
	}
	if len(registered) != len(operations) || len(documented) != len(operations) {
		t.Errorf("%d operations, %d routes registered, %d documented", len(operations), len(registered), len(documented))
	}

	// Every reference resolves.
	for _, m := range regexp.MustCompile(`"\$ref": "#/components/(\w+)/([^"]+)"`).FindAllStringSubmatch(string(raw), -1) {
		if _, ok := doc.Components[m[1]][m[2]]; !ok {
			t.Errorf("$ref %s/%s resolves to nothing", m[1], m[2])
		}
	}
	ids := map[string]bool{}
	for path, item := range doc.Paths {
		for method, op := range item {
			where := strings.ToUpper(method) + " " + path
			id, _ := op["operationId"].(string)
			if id == "" || ids[id] {
				t.Errorf("%s: operationId %q missing or not unique", where, id)
			}
			ids[id] = true
			if rs, _ := op["responses"].(map[string]any); len(rs) == 0 {
				t.Errorf("%s: no responses", where)
			}
			// Path parameters: those of the path, declared.
			var want, have []string
			for _, m := range regexp.MustCompile(`\{(\w+)\}`).FindAllStringSubmatch(path, -1) {
				want = append(want, m[1])
			}
			params, _ := op["parameters"].([]any)
			for _, p := range params {
				p := p.(map[string]any)
				if p["in"] == "path" {
					have = append(have, p["name"].(string))
					if p["required"] != true {
						t.Errorf("%s: path parameter %v is not required", where, p["name"])
					}
				}
			}
			if !slices.Equal(want, have) {
				t.Errorf("%s: path parameters %v declared, want %v", where, have, want)
			}
			role, _ := op["x-lifeboat-role"].(string)
			sec, _ := op["security"].([]any)
			if (role != "") != (len(sec) > 0) {
				t.Errorf("%s: role %q but security %v", where, role, sec)
			}
			if method == "post" {
				for _, code := range []string{"400", "403", "413", "415", "429"} {
					if op["responses"].(map[string]any)[code] == nil {
						t.Errorf("%s: no %s response", where, code)
					}
				}
			}
		}
	}
	// The mutating calls' request bodies are their Go types.
	for path, typ := range map[string]string{"/api/v1/runs": "RunRequest", "/api/v1/runs/{id}/approve": "ApproveRequest", "/api/v1/runs/{id}/drill": "report.Drill"} {
		b, _ := json.Marshal(doc.Paths[path]["post"]["requestBody"])
		if !strings.Contains(string(b), `"#/components/schemas/`+typ+`"`) {
			t.Errorf("POST %s: request body %s, want %s", path, b, typ)
		}
	}
	// A request type's fields are required only as its operation says.
	for _, typ := range []string{"RunRequest", "ApproveRequest", "report.Drill"} {
		if r := doc.Components["schemas"][typ].(map[string]any)["required"]; r != nil {
			t.Errorf("%s requires %v", typ, r)
		}
	}
	if e, _ := json.Marshal(doc.Components["schemas"]["Error"]); !strings.Contains(string(e), `"required":["error"]`) {
		t.Errorf("the error shape: %s", e)
	}

	// Each role is enforced as documented: without a token, 401 (from
	// the router); with a viewer's, 403 naming the role needed above
	// viewer (from the operation's guard, in front of a stub: the fakes
	// have no control plane to answer reads).
	mux := s.mux()
	reached := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	for i, op := range operations {
		path := strings.ReplaceAll(openAPIPath(op.pattern), "{id}", "r-1")
		w := serve(mux, op.method, path, "", "")
		if got := w.Code == 401; got != (op.role != "") {
			t.Errorf("%s %s (role %q) without a token: %d %s", op.method, path, op.role, w.Code, w.Body)
		}
		w = serve(s.guard(&operations[i], reached), op.method, path, "viewer-token", "")
		if op.role == "operator" || op.role == "admin" {
			if want := fmt.Sprintf("this call needs %s", op.role); w.Code != 403 || !strings.Contains(w.Body.String(), want) {
				t.Errorf("%s %s with a viewer's token: %d %s, want 403 %q", op.method, path, w.Code, w.Body, want)
			}
		} else if w.Code != http.StatusTeapot {
			t.Errorf("%s %s with a viewer's token: %d %s", op.method, path, w.Code, w.Body)
		}
	}
}

// A route that is not in the document cannot be registered.
func TestRouteNotDocumented(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "not in the OpenAPI document") {
			t.Errorf("recovered %v", r)
		}
	}()
	s := New(Config{Status: fixedStatus{}})
	saved := operations
	defer func() { operations = saved }()
	operations = operations[1:] // the document loses GET /api/v1/openapi.json
	s.Handler()
}
