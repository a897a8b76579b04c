package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

// webhook is a webhook channel to url with a signing secret.
func webhook(name, url string, retries int) config.Channel {
	return config.Channel{Name: name, Type: "webhook", URL: config.Secret(url), Secret: config.Secret("whsec-k3y-" + name),
		Retries: retries, Timeout: config.Duration(2 * time.Second)}
}

// open makes and opens a dispatcher closed when the test ends.
func open(t *testing.T, channels []config.Channel, opts Options) *Dispatcher {
	t.Helper()
	d, err := New(channels, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.Close(ctx)
	})
	return d
}

// note is a notification of kind and severity about key.
func note(kind, severity, key string) Notification {
	return Notification{Kind: kind, Severity: severity, Title: kind + " " + key, Key: key,
		Event: control.Event{Seq: 5, Type: "test", Run: "r-" + key, Service: "db", Region: "west", Message: key}}
}

func TestRetriesWithBackoffThenSuccess(t *testing.T) {
	r := newReceiver(t, 2)
	recs := newRecords()
	d := open(t, []config.Channel{webhook("ops", r.url(), 3)}, Options{Record: recs.record, BaseBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	d.Notify(note(config.NotifyRunFailed, control.SeverityCritical, "a"))
	r.next(t, 5*time.Second)
	rec := recs.next(t, 5*time.Second)
	if rec.Type != control.EventNotification || rec.Status != StatusDelivered || rec.Channel != "ops" ||
		rec.Message != "run-failed delivered to ops (attempt 3)" {
		t.Errorf("record %+v", rec)
	}
	reqs := r.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3 (two 500s, then 200)", len(reqs))
	}
	// Back-off: 100ms, then 200ms.
	if gap := reqs[1].at.Sub(reqs[0].at); gap < 100*time.Millisecond {
		t.Errorf("first retry after %s, want ≥ 100ms", gap)
	}
	if gap := reqs[2].at.Sub(reqs[1].at); gap < 200*time.Millisecond {
		t.Errorf("second retry after %s, want ≥ 200ms (doubled)", gap)
	}
	id := reqs[0].header.Get(HeaderDelivery)
	for i, q := range reqs {
		if q.header.Get(HeaderDelivery) != id || id == "" {
			t.Errorf("attempt %d has delivery id %q, want %q for every attempt", i+1, q.header.Get(HeaderDelivery), id)
		}
	}
}

func TestRetriesGiveUp(t *testing.T) {
	r := newReceiver(t, 1000)
	recs := newRecords()
	d := open(t, []config.Channel{
		webhook("flaky", r.url(), 2),
		// A 404 is permanent: one attempt only.
		webhook("gone", r.srv.URL+"/hooks/removed", 5),
	}, Options{Record: recs.record, BaseBackoff: time.Millisecond})
	d.Notify(note(config.NotifyRegionDown, control.SeverityCritical, "east"))
	got := map[string]control.Event{}
	for range 2 {
		rec := recs.next(t, 5*time.Second)
		got[rec.Channel] = rec
	}
	if m := got["flaky"].Message; got["flaky"].Status != StatusFailed ||
		m != "region-down to flaky failed after 3 attempts: webhook: HTTP 500 Internal Server Error: try again later" {
		t.Errorf("flaky: %+v", got["flaky"])
	}
	if m := got["gone"].Message; got["gone"].Status != StatusFailed || m != "region-down to gone failed after 1 attempts: webhook: HTTP 404 Not Found: no_service" {
		t.Errorf("gone: %+v", got["gone"])
	}
	if n := len(r.requests()); n != 3 {
		t.Errorf("the receiver got %d requests, want 3 (1 + 2 retries)", n)
	}
}

func TestDeadSinkNeverBlocks(t *testing.T) {
	live := newReceiver(t, 0)
	recs := newRecords()
	refused := fmt.Sprintf("http://127.0.0.1:%d%s", testenv.FreePort(t), secretPath)
	d, err := New([]config.Channel{
		webhook("hung", "http://"+testenv.Blackhole(t)+secretPath, 5),
		webhook("refused", refused, 5),
		webhook("live", live.url(), 0),
	}, Options{Record: recs.record, BaseBackoff: 50 * time.Millisecond, QueueSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Open(); err != nil {
		t.Fatal(err)
	}
	const total = 30
	start := time.Now()
	notified := make(chan struct{})
	go func() {
		defer close(notified)
		for i := range total {
			d.Notify(note(config.NotifyRegionDown, control.SeverityCritical, fmt.Sprint(i)))
		}
	}()
	select {
	case <-notified:
	case <-time.After(5 * time.Second):
		t.Fatalf("Notify blocked with a dead channel")
	}
	if took := time.Since(start); took > 200*time.Millisecond {
		t.Errorf("Notify took %s for %d notifications with a dead channel", took, total)
	}
	// The live channel delivers while the others hang or fail.
	live.next(t, 5*time.Second)
	// The hung channel's queue overflowed: the rest is dropped, recorded.
	dropped := map[string]int{}
	deadline := time.After(5 * time.Second)
	for dropped["hung"] < total-11 {
		select {
		case e := <-recs.ch:
			if e.Status == StatusFailed && strings.Contains(e.Message, "the queue is full (10 waiting)") {
				dropped[e.Channel]++
			}
		case <-deadline:
			t.Fatalf("drops recorded: %v, want ≥ %d for hung", dropped, total-11)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start = time.Now()
	if err := d.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close with deliveries hung: %v, want the deadline", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Close took %s with a 500ms deadline", took)
	}
	// What was left is recorded as failed, with the reason.
	recs.mu.Lock()
	defer recs.mu.Unlock()
	closed := 0
	for _, e := range recs.evs {
		if e.Channel == "hung" && strings.Contains(e.Message, ErrClosed.Error()) {
			closed++
		}
	}
	if closed == 0 {
		t.Error("no record says the hung channel's notifications were given up at Close")
	}
}

func TestDeduplication(t *testing.T) {
	r := newReceiver(t, 0)
	recs := newRecords()
	refused := fmt.Sprintf("http://127.0.0.1:%d%s", testenv.FreePort(t), secretPath)
	d := open(t, []config.Channel{webhook("ops", r.url(), 0), webhook("down", refused, 0)},
		Options{Record: recs.record, DedupWindow: 500 * time.Millisecond})
	a := note(config.NotifyRegionDown, control.SeverityCritical, "east")
	for range 3 {
		d.Notify(a)
	}
	d.Notify(note(config.NotifyRegionDown, control.SeverityCritical, "west"))
	for _, want := range []string{"east", "west"} {
		var got Notification
		if err := json.Unmarshal(r.next(t, 5*time.Second).body, &got); err != nil || got.Key != want {
			t.Errorf("delivery %q %v, want key %s", got.Key, err, want)
		}
	}
	r.none(t, 200*time.Millisecond)
	// After the window, the same key goes out again.
	time.Sleep(400 * time.Millisecond)
	d.Notify(a)
	var got Notification
	if err := json.Unmarshal(r.next(t, 5*time.Second).body, &got); err != nil || got.Key != "east" {
		t.Errorf("after the window: %q %v", got.Key, err)
	}
	// A delivery that failed does not suppress the next one: the down
	// channel tries each of these (east, west, east again, and east once
	// more), while ops ignores the last one (inside its window).
	counts := map[string]int{}
	wait := func(ops, down int) {
		for counts["ops"] < ops || counts["down"] < down {
			e := recs.next(t, 5*time.Second)
			if want := map[string]string{"ops": StatusDelivered, "down": StatusFailed}[e.Channel]; e.Status != want {
				t.Errorf("record %+v, want %s", e, want)
			}
			counts[e.Channel]++
		}
	}
	wait(3, 3)
	d.Notify(a)
	wait(3, 4)
	r.none(t, 200*time.Millisecond)
	if counts["ops"] != 3 {
		t.Errorf("ops records: %d, want 3", counts["ops"])
	}
}

func TestRoutingByKindAndSeverity(t *testing.T) {
	all, crit, runs := newReceiver(t, 0), newReceiver(t, 0), newReceiver(t, 0)
	chAll := webhook("all", all.url(), 0)
	chCrit := webhook("critical", crit.url(), 0)
	chCrit.MinSeverity = control.SeverityCritical
	chRuns := webhook("runs", runs.url(), 0)
	chRuns.Events = []string{config.NotifyRunStarted, config.NotifyRunFailed}
	chRuns.MinSeverity = control.SeverityInfo
	d := open(t, []config.Channel{chAll, chCrit, chRuns}, Options{})
	for _, n := range []Notification{
		note(config.NotifyRegionDown, control.SeverityCritical, "1"),
		note(config.NotifyRunStarted, control.SeverityInfo, "2"),
		note(config.NotifyApprovalNeeded, control.SeverityWarning, "3"),
		note(config.NotifyRunFailed, control.SeverityCritical, "4"),
	} {
		d.Notify(n)
	}
	for _, tc := range []struct {
		r    *receiver
		want []string
	}{{all, []string{"1", "2", "3", "4"}}, {crit, []string{"1", "4"}}, {runs, []string{"2", "4"}}} {
		var keys []string
		for range tc.want {
			var n Notification
			if err := json.Unmarshal(tc.r.next(t, 5*time.Second).body, &n); err != nil {
				t.Fatal(err)
			}
			keys = append(keys, n.Key)
		}
		if strings.Join(keys, ",") != strings.Join(tc.want, ",") {
			t.Errorf("got %v, want %v in order", keys, tc.want)
		}
		tc.r.none(t, 100*time.Millisecond)
	}
}

// leakySink fails with an error that quotes its URL, secret and password,
// as a careless library would.
type leakySink struct{ ch config.Channel }

func (s leakySink) Send(context.Context, Notification) error {
	return fmt.Errorf("Post %q (secret %s, password %s): connection reset", s.ch.URL.Value(), s.ch.Secret.Value(), s.ch.SMTP.Password.Value())
}

func TestRecordsAndLogsHoldNoSecrets(t *testing.T) {
	ch := config.Channel{Name: "ops", Type: "webhook", URL: "https://hooks.example.com/services/T0/B0/xoxb-s3cr3t-t0ken?sig=qu3ry-s3cr3t",
		Secret: "whsec-s3cr3t", SMTP: &config.SMTP{Password: "smtp-s3cr3t"}, Timeout: config.Duration(time.Second)}
	var logs bytes.Buffer
	var mu sync.Mutex
	recs := newRecords()
	d, err := New([]config.Channel{{Name: ch.Name, Type: ch.Type, URL: ch.URL, Secret: ch.Secret}},
		Options{Record: recs.record, Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	d.channels[0].sink = leakySink{ch}
	d.channels[0].redact = newRedactor(ch)
	if err := d.Open(); err != nil {
		t.Fatal(err)
	}
	n := note(config.NotifyRunFailed, control.SeverityCritical, "x")
	d.Notify(n)
	rec := recs.next(t, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if rec.Status != StatusFailed || rec.Channel != "ops" || rec.Severity != control.SeverityCritical ||
		rec.Run != n.Event.Run || rec.Service != "db" || rec.Region != "west" ||
		!strings.HasPrefix(rec.Message, "run-failed to ops failed after 1 attempts: Post ") || !strings.Contains(rec.Message, "connection reset") {
		t.Errorf("record %+v", rec)
	}
	mu.Lock()
	defer mu.Unlock()
	for what, text := range map[string]string{"record": fmt.Sprintf("%+v", rec), "log": logs.String()} {
		if !strings.Contains(text, config.Redacted) {
			t.Errorf("%s does not show where secrets were masked: %s", what, text)
		}
		for _, s := range []string{"s3cr3t", "hooks.example.com/services"} {
			if strings.Contains(text, s) {
				t.Errorf("%s shows %q: %s", what, s, text)
			}
		}
	}
}

// lockedWriter serialises writes to a buffer read by the test.
type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// panicSink panics on every send.
type panicSink struct{}

func (panicSink) Send(context.Context, Notification) error { panic("boom") }

func TestPanickingSinkFailsTheAttempt(t *testing.T) {
	recs := newRecords()
	d, err := New([]config.Channel{webhook("ops", "http://127.0.0.1:1/x", 1)}, Options{Record: recs.record, BaseBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	d.channels[0].sink = panicSink{}
	d.Open()
	d.Notify(note(config.NotifyRunFailed, control.SeverityCritical, "x"))
	rec := recs.next(t, 5*time.Second)
	if rec.Status != StatusFailed || rec.Message != "run-failed to ops failed after 2 attempts: sink panicked: boom" {
		t.Errorf("record %+v", rec)
	}
	if err := d.Close(context.Background()); err != nil {
		t.Error(err)
	}
}

func TestCloseBeforeOpenGivesUpTheQueue(t *testing.T) {
	recs := newRecords()
	d, err := New([]config.Channel{webhook("ops", "http://127.0.0.1:1/x", 0)}, Options{Record: recs.record})
	if err != nil {
		t.Fatal(err)
	}
	d.Notify(note(config.NotifyRunFailed, control.SeverityCritical, "x"))
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rec := recs.next(t, time.Second); rec.Status != StatusFailed || !strings.Contains(rec.Message, "dispatcher closed") {
		t.Errorf("record %+v", rec)
	}
	d.Notify(note(config.NotifyRunFailed, control.SeverityCritical, "y")) // after Close: ignored, no panic
	if d.Open() == nil {
		t.Error("Open after Close succeeded")
	}
}
