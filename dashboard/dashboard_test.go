package dashboard

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// get asks the handler for path and checks the security headers every
// answer carries.
func get(t *testing.T, h http.Handler, path string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	for k, v := range securityHeaders {
		if got := w.Header().Get(k); got != v {
			t.Errorf("GET %s: %s = %q, want %q", path, k, got, v)
		}
	}
	return w
}

func TestHandlerServesPageAndAssets(t *testing.T) {
	h := Handler()
	w := get(t, h, "/")
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "text/html; charset=utf-8" || !strings.Contains(w.Body.String(), "<title>Lifeboat</title>") {
		t.Fatalf("GET /: %d %q\n%s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
	if got := w.Header().Get("Content-Security-Policy"); !strings.Contains(got, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", got)
	}
	page := w.Body.String()

	// Every asset the page names exists, with its type.
	want := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(refs) < 3 {
		t.Fatalf("index.html references %d assets: %v", len(refs), refs)
	}
	for _, m := range refs {
		if !strings.HasPrefix(m[1], "/ui/") {
			t.Errorf("index.html references %q, not an asset under /ui/", m[1])
			continue
		}
		w := get(t, h, m[1])
		if w.Code != http.StatusOK || w.Header().Get("Content-Type") != want[filepath.Ext(m[1])] || w.Body.Len() == 0 {
			t.Errorf("GET %s: %d %q (%d bytes)", m[1], w.Code, w.Header().Get("Content-Type"), w.Body.Len())
		}
	}

	// The scripts' imports exist too.
	imports := regexp.MustCompile(`(?m)^import .* from '\./([^']+)';$`)
	for _, name := range names(t, ".js") {
		for _, m := range imports.FindAllStringSubmatch(read(t, name), -1) {
			if w := get(t, h, "/ui/"+m[1]); w.Code != http.StatusOK {
				t.Errorf("%s imports %s: GET answers %d", name, m[1], w.Code)
			}
		}
	}

	// Revalidation: the ETag answers 304.
	w = get(t, h, "/ui/app.js")
	if etag := w.Header().Get("ETag"); etag == "" || w.Header().Get("Cache-Control") != "no-cache" {
		t.Errorf("app.js: ETag %q, Cache-Control %q", etag, w.Header().Get("Cache-Control"))
	} else if w := get(t, h, "/ui/app.js", "If-None-Match", etag); w.Code != http.StatusNotModified {
		t.Errorf("If-None-Match: %d, want 304", w.Code)
	}
}

func TestHandlerRefusesUnknownPaths(t *testing.T) {
	h := Handler()
	for _, path := range []string{"/ui/nope.js", "/ui/", "/ui/assets/app.js", "/index.html", "/api/v1/status"} {
		if w := get(t, h, path); w.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404\n%s", path, w.Code, w.Body)
		}
	}
	// A path with dots is only redirected to its clean form.
	if w := get(t, h, "/ui/../dashboard.go"); w.Code/100 != 3 || w.Header().Get("Location") != "/dashboard.go" {
		t.Errorf("GET /ui/../dashboard.go: %d to %q", w.Code, w.Header().Get("Location"))
	}
	req := httptest.NewRequest(http.MethodPost, "/", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d, want 405", w.Code)
	}
}

// The page works offline: no asset loads anything from elsewhere. The
// SVG namespace is a name, never fetched.
func TestAssetsAreSelfContained(t *testing.T) {
	url := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	for _, name := range names(t, "") {
		text := strings.ReplaceAll(read(t, name), "http://www.w3.org/2000/svg", "")
		if m := url.FindString(text); m != "" {
			t.Errorf("%s references %s", name, m)
		}
		if strings.Contains(text, "http://") || strings.Contains(text, "https://") {
			t.Errorf("%s contains an http(s) URL", name)
		}
	}
	for _, name := range names(t, ".js") {
		js := read(t, name)
		// Data from the API becomes text nodes, never markup.
		for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
			if strings.Contains(js, bad) {
				t.Errorf("%s uses %s", name, bad)
			}
		}
		// No inline style (the CSP forbids it): colours come from classes.
		if m := inlineStyle.FindString(js); m != "" {
			t.Errorf("%s sets an inline style: %s", name, m)
		}
		for _, bad := range []string{"localStorage", "document.cookie"} {
			if strings.Contains(js, bad) {
				t.Errorf("%s uses %s: the token belongs in sessionStorage only", name, bad)
			}
		}
	}
	if html := read(t, "index.html"); strings.Contains(html, "style=") || regexp.MustCompile(`<script>|<style`).MatchString(html) {
		t.Error("index.html has inline scripts or styles, which the CSP forbids")
	}
}

// inlineStyle finds a script that sets a style attribute or property.
var inlineStyle = regexp.MustCompile(`setAttribute\(\s*['"]style|[{,]\s*style\s*:|\.style\b|cssText`)

// The scripts parse, when Node.js is there to check them (the browser
// test runs them for real).
func TestScriptsParse(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed (scripts/deps.sh installs nodejs): it checks that every script parses")
	}
	dir := t.TempDir()
	for _, name := range names(t, ".js") {
		// .mjs: Node parses it as a module, as the browser does.
		path := filepath.Join(dir, strings.TrimSuffix(name, ".js")+".mjs")
		if err := os.WriteFile(path, []byte(read(t, name)), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(node, "--check", path).CombinedOutput(); err != nil {
			t.Errorf("%s does not parse: %v\n%s", name, err, out)
		}
	}
}

// names lists the embedded assets whose names end with ext.
func names(t *testing.T, ext string) []string {
	t.Helper()
	entries, err := fs.ReadDir(assets, "assets")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ext) {
			out = append(out, e.Name())
		}
	}
	if len(out) == 0 {
		t.Fatalf("no asset ends with %q", ext)
	}
	return out
}

func read(t *testing.T, name string) string {
	t.Helper()
	b, err := fs.ReadFile(assets, "assets/"+name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
