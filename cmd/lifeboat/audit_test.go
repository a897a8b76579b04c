package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

func tokenHash(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// audit export and audit verify against a serving node, then offline on
// the exported file: intact, with a line edited, with the tail cut; and
// the refusals and usage errors.
func TestAuditCommands(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer web.Close()
	port := testenv.FreePort(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "lifeboat.yaml")
	doc := fmt.Sprintf(`cluster: auditcli
api:
  listen: 127.0.0.1:%d
  tokens:
    - {name: ops, role: operator, sha256: %s}
    - {name: root, role: admin, sha256: %s}
regions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
services:
  - name: web
    kind: http
    critical: true
    endpoints: {east: %q, west: %q}
    health: {interval: 100ms, timeout: 80ms, rise: 1}
`, port, tokenHash("ops-token"), tokenHash("admin-token"), web.URL, web.URL)
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	stderr := serving(t, nil, "admin-token", "-c", path, "--node", "n1", "--data-dir", t.TempDir())
	server := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, _, code := run(t, nil, "status", "--server", server, "--token", "ops-token"); code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node never answered\nserve stderr:\n%s", stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	admin := map[string]string{"LIFEBOAT_TOKEN": "admin-token"}

	// A refused mutating call is in the trail.
	if _, errs, code := run(t, nil, "approve", "nope", "--server", server, "--token", "ops-token"); code != 1 || !strings.Contains(errs, `no run "nope"`) {
		t.Fatalf("approve nope: exit %d: %s", code, errs)
	}

	// The trail needs an admin.
	if _, errs, code := run(t, nil, "audit", "verify", "--server", server); code != 1 || !strings.Contains(errs, "401 Unauthorized: this call needs a bearer token") {
		t.Errorf("verify without a token: exit %d: %s", code, errs)
	}
	if _, errs, code := run(t, nil, "audit", "export", "--server", server, "--token", "ops-token"); code != 1 || !strings.Contains(errs, `token "ops" has role operator; this call needs admin`) {
		t.Errorf("export as an operator: exit %d: %s", code, errs)
	}
	out, errs, code := run(t, admin, "audit", "verify", "--server", server)
	if code != 0 || !regexp.MustCompile(`^intact: \d+ entries \(seq 1\.\.\d+\), head [0-9a-f]{64}\n$`).MatchString(out) {
		t.Fatalf("verify on the node: exit %d %s\n%s", code, errs, out)
	}

	// Export to a file; the summary goes to stderr.
	file := filepath.Join(dir, "audit.jsonl")
	out, errs, code = run(t, admin, "audit", "export", "--since", "1h", "-o", file, "--server", server)
	m := regexp.MustCompile(`^exported (\d+) entries \(seq 1\.\.(\d+)\), head ([0-9a-f]{64}), prev \(none\)\n$`).FindStringSubmatch(errs)
	if code != 0 || out != "" || m == nil || m[1] != m[2] {
		t.Fatalf("export: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	head := m[3]
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	if fmt.Sprint(len(lines)) != m[1] {
		t.Fatalf("%d lines in the file, %s exported", len(lines), m[1])
	}
	var last control.Event
	json.Unmarshal([]byte(lines[len(lines)-1]), &last)
	if last.Hash != head {
		t.Errorf("the printed head %s is not the last line's hash %s", head, last.Hash)
	}
	found := false
	for _, l := range lines {
		var e control.Event
		json.Unmarshal([]byte(l), &e)
		found = found || (e.Type == control.EventAudit && e.Actor == "ops" && e.Action == "POST /api/v1/runs/{id}/approve" && e.Status == "404" && e.Run == "nope")
	}
	if !found {
		t.Errorf("the export lacks the refused approval:\n%s", raw)
	}
	// To stdout, the same lines (and maybe newer ones).
	out, _, code = run(t, admin, "audit", "export", "--server", server)
	if code != 0 || !strings.HasPrefix(out, string(raw)) {
		t.Errorf("export to stdout: exit %d\n%s", code, out)
	}
	if _, errs, code := run(t, admin, "audit", "export", "--since", "2999-01-01", "--server", server); code != 0 || errs != "exported 0 entries\n" {
		t.Errorf("export of the future: exit %d: %q", code, errs)
	}

	// Offline: intact, edited, cut.
	out, errs, code = run(t, nil, "audit", "verify", "--file", file, "--head", head)
	if code != 0 || !strings.HasPrefix(out, fmt.Sprintf("intact: %s entries (seq 1..%s), head %s", m[1], m[1], head)) {
		t.Errorf("verify --file: exit %d %s\n%s", code, errs, out)
	}
	var e control.Event
	json.Unmarshal([]byte(lines[1]), &e)
	e.Message = "nothing to see"
	b, _ := json.Marshal(e)
	edited := append(append([]string{lines[0], string(b)}, lines[2:]...), "")
	editedFile := filepath.Join(dir, "edited.jsonl")
	os.WriteFile(editedFile, []byte(strings.Join(edited, "\n")), 0o600)
	out, errs, code = run(t, nil, "audit", "verify", "--file", editedFile)
	if code != 1 || !strings.Contains(out, "broken: entry 2: edited (hash mismatch)") || !strings.Contains(errs, "the audit trail is broken: entry 2: edited (hash mismatch)") {
		t.Errorf("verify of an edited file: exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
	out, _, code = run(t, nil, "audit", "verify", "--file", editedFile, "--json")
	var rep control.VerifyReport
	if err := json.Unmarshal([]byte(out), &rep); code != 1 || err != nil || rep.Intact || rep.Broken.Seq != 2 || rep.Broken.Kind != control.ProblemEdited {
		t.Errorf("verify --json of an edited file: exit %d %v\n%s", code, err, out)
	}
	cutFile := filepath.Join(dir, "cut.jsonl")
	os.WriteFile(cutFile, []byte(strings.Join(lines[:len(lines)-1], "\n")+"\n"), 0o600)
	if _, errs, code := run(t, nil, "audit", "verify", "--file", cutFile, "--head", head); code != 1 || !strings.Contains(errs, fmt.Sprintf("head mismatch: the archive ends at entry %d", len(lines)-1)) {
		t.Errorf("verify of a cut file with --head: exit %d: %s", code, errs)
	}

	// Usage errors exit 2.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"audit", "verify", "--head", head}, "--head checks an exported file: give it with --file"},
		{[]string{"audit", "verify", "--file", file, "--head", "abc"}, `--head "abc" is not a hash`},
		{[]string{"audit", "verify", "--file", filepath.Join(dir, "nope.jsonl")}, "nope.jsonl does not exist"},
		{[]string{"audit", "export", "--since", "last tuesday", "--server", server}, `--since "last tuesday" is not an RFC 3339 time`},
		{[]string{"audit", "verify", "extra"}, `unexpected argument "extra"`},
	} {
		if _, errs, code := run(t, admin, c.args...); code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d: %s; want 2 and %q", c.args, code, errs, c.want)
		}
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                     {},
		"24h":                  now.Add(-24 * time.Hour),
		"90m ago":              now.Add(-90 * time.Minute),
		"7d":                   now.Add(-7 * 24 * time.Hour),
		"2026-03-01":           time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC),
		"2026-03-01T08:30:00Z": time.Date(2026, 3, 1, 8, 30, 0, 0, time.UTC),
	} {
		got, err := parseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v %v, want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"-5m", "yesterday", "7 days"} {
		if _, err := parseSince(in, now); err == nil {
			t.Errorf("parseSince(%q) accepted", in)
		}
	}
}
