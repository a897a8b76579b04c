package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

// The dashboard in headless Chromium against a real node over real
// Postgres, with tokens configured: the page asks for the token, shows east
// active, then follows a switchover to west live — the epoch, the region
// cards and the run's steps change without a reload — and opens the run's
// report, fetched with the token, in a window of its own. Screenshots go
// to the test's artifact directory (go test -artifacts keeps them).
func TestDashboard(t *testing.T) {
	browser := chromiumPath(t)
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	port, pgPort := testenv.FreePort(t), testenv.FreePort(t)
	const token = "dashboard-operator-token"
	path := filepath.Join(t.TempDir(), "lifeboat.yaml")
	doc := fmt.Sprintf(`cluster: dash
api:
  listen: 127.0.0.1:%d
  tokens:
    - {name: ops, role: operator, sha256: %s}
regions:
  - {name: east, priority: 1}
  - {name: west, priority: 2}
services:
  - name: db
    kind: postgres
    critical: true
    endpoints:
      east: postgres://lifeboat:${DB_PASSWORD}@127.0.0.1:%d/postgres?sslmode=disable
      west: postgres://lifeboat:${DB_PASSWORD}@127.0.0.1:%d/postgres?sslmode=disable
    health: {interval: 250ms, timeout: 250ms, rise: 1}
    replication: {heartbeat: 100ms}
    manage:
      east: {data_dir: %s, os_user: %s, bin_dir: %s}
      west: {data_dir: %s, os_user: %s, bin_dir: %s}
traffic:
  postgres:
    - {listen: "127.0.0.1:%d", service: db, role: writer}
`, port, tokenHash(token), pg.Primary.Port, pg.Standby.Port,
		pg.Primary.DataDir, pg.Primary.OSUser(), pg.Primary.Bin(), pg.Standby.DataDir, pg.Standby.OSUser(), pg.Standby.Bin(), pgPort)
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"DB_PASSWORD": pg.Primary.Password}
	stderr := serving(t, env, pg.Primary.Password, "-c", path, "--node", "n1", "--data-dir", t.TempDir())
	server := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitOK(t, server+"/healthz", "", 30*time.Second)

	page := openBrowser(t, browser)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s\npage text:\n%s\nbrowser exceptions:\n%s\nserve stderr:\n%s", fmt.Sprintf(format, args...), page.text(), page.exceptions(), stderr.String())
	}
	if err := page.do(30*time.Second, chromedp.Navigate(server+"/")); err != nil {
		fail("load the dashboard: %v", err)
	}
	// Tokens are configured: the page's first call answers 401 and the
	// page asks for a token.
	if err := page.do(30*time.Second,
		chromedp.WaitVisible(chromedp.ID("token-input")),
		chromedp.SendKeys(chromedp.ID("token-input"), token),
		chromedp.Click(chromedp.ID("token-submit"))); err != nil {
		fail("the token form: %v", err)
	}
	page.wait(fail, "east active, epoch 1, west ready, the stream live", 60*time.Second,
		`text('#active-region') === 'east' && text('#epoch') === '1' && text('#regions .region.active .name') === 'east' &&
		 text('#exposure li[data-region="west"] .chip') === 'ready' && document.getElementById('conn').textContent === 'live'`)
	// A marker a reload would lose, and the run statuses the page shows
	// while the switchover goes on.
	if _, err := page.eval(`window.__marker = 'loaded once'; window.__seen = new Set();
		new MutationObserver(() => { const c = document.querySelector('#run .run-head .chip'); if (c) __seen.add(c.textContent); })
			.observe(document.body, {subtree: true, childList: true, characterData: true}); true`); err != nil {
		fail("set the page marker: %v", err)
	}
	page.screenshot(t, "dashboard-before.png")

	// The switchover runs from the CLI while the page watches.
	type result struct {
		out, errs string
		code      int
	}
	done := make(chan result, 1)
	go func() {
		out, errs, code := run(t, nil, "switchover", "--to", "west", "--server", server, "--token", token)
		done <- result{out, errs, code}
	}()
	var res result
	select {
	case res = <-done:
	case <-time.After(90 * time.Second):
		fail("the switchover did not end within 90s")
	}
	m := regexp.MustCompile(`run (\S+): switchover east → west`).FindStringSubmatch(res.out)
	if res.code != 0 || m == nil {
		fail("switchover: exit %d: %s\n%s", res.code, res.errs, res.out)
	}
	page.wait(fail, "west active, epoch 2, the run's steps succeeded", 30*time.Second, fmt.Sprintf(
		`text('#active-region') === 'west' && text('#epoch') === '2' && text('#regions .region.active .name') === 'west' &&
		 document.querySelector('#run .run-head')?.dataset.run === %q && text('#run .run-head .chip') === 'succeeded' &&
		 text('#run [data-step="promote-db-west"] .status') === 'succeeded' && text('#history tbody tr .chip') === 'succeeded'`, m[1]))
	if marker, err := page.eval(`window.__marker`); err != nil || marker != "loaded once" {
		fail("the page was reloaded: marker %v (%v)", marker, err)
	}
	if seen, err := page.eval(`[...__seen].join(' ')`); err != nil || !strings.Contains(fmt.Sprint(seen), "running") {
		t.Errorf("the page never showed the run running, only: %v (%v)", seen, err)
	}
	page.screenshot(t, "dashboard-after.png")

	// The run's report opens in a window of its own, fetched with the
	// token (a link could not carry it).
	waitOK(t, server+"/api/v1/runs/"+m[1]+"/report?format=html", token, 20*time.Second) // written once the run has ended
	opened := chromedp.WaitNewTarget(page.ctx, func(i *target.Info) bool { return strings.HasPrefix(i.URL, "blob:") })
	page.click(fail, "#history tbody tr button.link")
	var tab target.ID
	select {
	case tab = <-opened:
	case <-time.After(15 * time.Second):
		fail("the report button opened no window")
	}
	tabCtx, closeTab := chromedp.NewContext(page.ctx, chromedp.WithTargetID(tab))
	defer closeTab()
	report := &browserPage{ctx: tabCtx}
	if err := chromedp.Do(report.ctx); err != nil { // attaches, for good: a first call with a timeout would detach at its end
		fail("attach to the report's window: %v", err)
	}
	// Its styles apply although they are inline (the page's CSP, which the
	// window inherits, forbids inline styles; the page adopts them).
	report.wait(fail, "the report, styled, in its window", 15*time.Second, `location.protocol === 'blob:' && text('h1') === 'DR report: switchover east → west' &&
		getComputedStyle(document.querySelector('table')).borderCollapse === 'collapse'`)
	report.screenshot(t, "report.png")
	if ex := page.exceptions(); ex != "" {
		t.Errorf("the page threw:\n%s", ex)
	}
}

// waitOK waits until GET url (with the token, if any) answers 200.
func waitOK(t *testing.T, url, token string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("%s", resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: no 200 within %s (last: %v)", url, d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// chromiumPath finds the browser; the test fails without it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium is not installed (the dashboard's browser test needs it): run scripts/deps.sh")
	return ""
}

// browserPage is one headless tab and what its console reported.
type browserPage struct {
	ctx context.Context
	mu  sync.Mutex
	// thrown are the page's uncaught exceptions.
	thrown []string
}

// openBrowser starts headless Chromium (no sandbox: tests run as root) and
// collects the page's exceptions; the browser stops at the test's end, or
// after 5 minutes at the latest, which bounds every call.
func openBrowser(t *testing.T, path string) *browserPage {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.WindowSize(1280, 900))
	limit, cancelLimit := context.WithTimeout(context.Background(), 5*time.Minute)
	actx, cancelAlloc := chromedp.NewExecAllocator(limit, opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	p := &browserPage{ctx: ctx}
	if err := chromedp.Do(ctx); err != nil { // starts the browser, with no timeout of its own
		cancelTab()
		cancelAlloc()
		cancelLimit()
		t.Fatalf("start chromium (%s): %v", path, err)
	}
	console := chromedp.Console(ctx)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for m, err := range console {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleException {
				p.mu.Lock()
				p.thrown = append(p.thrown, m.Text)
				p.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		cancelLimit()
		<-drained
	})
	return p
}

// do runs actions within d.
func (p *browserPage) do(d time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(p.ctx, d)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// click clicks the element sel selects; a panel redrawn between the query
// and the click (the node is gone) is clicked again.
func (p *browserPage) click(fail func(string, ...any), sel string) {
	var err error
	for range 5 {
		if err = p.do(10*time.Second, chromedp.Click(chromedp.CSS(sel))); err == nil || !strings.Contains(err.Error(), "Could not find node") {
			break
		}
	}
	if err != nil {
		fail("click %s: %v", sel, err)
	}
}

// eval evaluates a JavaScript expression within 10s.
func (p *browserPage) eval(expr string) (any, error) {
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[any](expr))
}

// wait polls a JavaScript condition until it holds, for at most d; the
// condition may use text(selector), an element's trimmed text or null. A
// navigation during the poll (the document it ran in is gone) polls again.
func (p *browserPage) wait(fail func(string, ...any), what string, d time.Duration, cond string) {
	expr := `(() => { const text = (s) => document.querySelector(s)?.textContent.trim() ?? null; return (` + cond + `); })()`
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		ctx, cancel := context.WithTimeout(p.ctx, left+5*time.Second)
		_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(left), chromedp.WithPollingInterval(100*time.Millisecond)))
		cancel()
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "context was destroyed") || time.Now().After(deadline) {
			fail("waiting %s for %s: %v", d, what, err)
		}
	}
}

// text is the page's visible text, for failure messages.
func (p *browserPage) text() string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		return "(no page text: " + err.Error() + ")"
	}
	return s
}

func (p *browserPage) exceptions() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.thrown, "\n")
}

// screenshot brings the tab to the front (a tab behind draws nothing) and
// saves a full-page PNG in the test's artifact directory (kept by go test
// -artifacts).
func (p *browserPage) screenshot(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
	defer cancel()
	_, err := chromedp.Call(ctx, cdppage.BringToFront, cdp.Empty{})
	var png []byte
	if err == nil {
		png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100))
	}
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	t.Logf("screenshot: %s", path)
}
