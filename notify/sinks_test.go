package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/http"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

// runFailed is a notification with a non-ASCII text and every fact.
func runFailed() Notification {
	n, _ := Classify(control.Event{Seq: 12, Time: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), Type: control.EventRun,
		Severity: control.SeverityCritical, Status: "failed", Node: "east-1", Run: "r-20260301-1", Region: "west",
		Message: "failover east → west failed after 3.2s: promote db: timeout <5s> & more"})
	n.ID = "0123456789abcdef"
	return n
}

// testSink makes the sink of ch with a client closed when the test ends.
func testSink(t *testing.T, ch config.Channel, tlsConf *tls.Config) Sink {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	s, err := newSink(ch, &http.Client{Transport: tr, CheckRedirect: noRedirect}, tlsConf)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestWebhookSignsTheExactBody(t *testing.T) {
	r := newReceiver(t, 0)
	const secret = "whsec-0123456789"
	s := testSink(t, config.Channel{Name: "ops", Type: "webhook", URL: config.Secret(r.url()), Secret: secret}, nil)
	n := runFailed()
	if err := s.Send(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	got := r.next(t, 5*time.Second)
	body := got.body
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	want := "sha256=" + hex.EncodeToString(m.Sum(nil))
	if sig := got.header.Get("X-Lifeboat-Signature"); !hmac.Equal([]byte(sig), []byte(want)) {
		t.Errorf("X-Lifeboat-Signature %q, want %q", sig, want)
	}
	if k := got.header.Get("X-Lifeboat-Event"); k != config.NotifyRunFailed {
		t.Errorf("X-Lifeboat-Event %q", k)
	}
	if id := got.header.Get("X-Lifeboat-Delivery"); id != n.ID {
		t.Errorf("X-Lifeboat-Delivery %q, want %q", id, n.ID)
	}
	if ct := got.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var back Notification
	if err := json.Unmarshal(body, &back); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, body)
	}
	if back.Kind != n.Kind || back.Severity != n.Severity || back.Title != n.Title || back.Key != n.Key || back.ID != n.ID ||
		!back.Event.Time.Equal(n.Event.Time) || back.Event.Run != n.Event.Run || back.Event.Message != n.Event.Message || back.Event.Seq != 12 {
		t.Errorf("body decodes to %+v, want %+v", back, n)
	}
	// A tampered body does not verify.
	m = hmac.New(sha256.New, []byte(secret))
	m.Write(append(body, ' '))
	if "sha256="+hex.EncodeToString(m.Sum(nil)) == got.header.Get("X-Lifeboat-Signature") {
		t.Error("the signature does not depend on the body")
	}
}

func TestWebhookWithoutSecretIsNotSigned(t *testing.T) {
	r := newReceiver(t, 0)
	s := testSink(t, config.Channel{Name: "ops", Type: "webhook", URL: config.Secret(r.url())}, nil)
	n := runFailed()
	n.ID = ""
	if err := s.Send(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	got := r.next(t, 5*time.Second)
	if sig, ok := got.header["X-Lifeboat-Signature"]; ok {
		t.Errorf("unsigned channel sent X-Lifeboat-Signature %q", sig)
	}
	if id := got.header.Get("X-Lifeboat-Delivery"); len(id) != 32 {
		t.Errorf("a notification without ID got delivery id %q, want one made up", id)
	}
}

func TestHTTPErrorsNameTheStatusNotTheURL(t *testing.T) {
	r := newReceiver(t, 0)
	refused := fmt.Sprintf("http://127.0.0.1:%d%s", testenv.FreePort(t), secretPath)
	for _, tc := range []struct {
		name, url, want string
		permanent       bool
	}{
		{"404", r.srv.URL + "/hooks/T0001/B0002/other-t0ken", "HTTP 404 Not Found", true},
		{"refused", refused, "connection refused", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, typ := range []string{"webhook", "slack", "teams"} {
				s := testSink(t, config.Channel{Name: "ops", Type: typ, URL: config.Secret(tc.url)}, nil)
				err := s.Send(context.Background(), runFailed())
				if err == nil {
					t.Fatalf("%s: no error", typ)
				}
				msg := err.Error()
				if !strings.Contains(msg, tc.want) || !strings.HasPrefix(msg, typ+": ") {
					t.Errorf("%s: error %q, want it to start with %q and say %q", typ, msg, typ+": ", tc.want)
				}
				if strings.Contains(msg, "t0ken") || strings.Contains(msg, "/hooks/") {
					t.Errorf("%s: error %q shows the URL", typ, msg)
				}
				if permanent(err) != tc.permanent {
					t.Errorf("%s: permanent(%q) = %v", typ, msg, !tc.permanent)
				}
			}
		})
	}
}

// sendDecoded sends runFailed through a sink of type typ and decodes what
// its receiver got into msg, refusing fields msg does not know.
func sendDecoded(t *testing.T, typ string, msg any) (Notification, []byte) {
	t.Helper()
	r := newReceiver(t, 0)
	s := testSink(t, config.Channel{Name: "chat", Type: typ, URL: config.Secret(r.url())}, nil)
	n := runFailed()
	if err := s.Send(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	body := r.next(t, 5*time.Second).body
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(msg); err != nil {
		t.Fatalf("not a %s message: %v: %s", typ, err, body)
	}
	return n, body
}

func TestSlackMessageShape(t *testing.T) {
	var msg struct {
		Text   string `json:"text"`
		Blocks []struct {
			Type string `json:"type"`
			Text *struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"text"`
			Elements []struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"elements"`
		} `json:"blocks"`
	}
	n, body := sendDecoded(t, "slack", &msg)
	if msg.Text != "[CRITICAL] "+n.Title {
		t.Errorf("text %q", msg.Text)
	}
	if len(msg.Blocks) != 3 {
		t.Fatalf("%d blocks, want header, section, context: %s", len(msg.Blocks), body)
	}
	h, sec, cx := msg.Blocks[0], msg.Blocks[1], msg.Blocks[2]
	if h.Type != "header" || h.Text == nil || h.Text.Type != "plain_text" || h.Text.Text != n.Title {
		t.Errorf("header block %+v", h)
	}
	// mrkdwn: <, > and & are escaped.
	if sec.Type != "section" || sec.Text == nil || sec.Text.Type != "mrkdwn" ||
		!strings.Contains(sec.Text.Text, "east → west failed") || !strings.Contains(sec.Text.Text, "&lt;5s&gt; &amp; more") {
		t.Errorf("section block %+v", sec)
	}
	if cx.Type != "context" || len(cx.Elements) != 1 || cx.Elements[0].Type != "mrkdwn" ||
		!strings.Contains(cx.Elements[0].Text, "*Severity:* critical") || !strings.Contains(cx.Elements[0].Text, "*Run:* r-20260301-1") {
		t.Errorf("context block %+v", cx)
	}
}

func TestTeamsAdaptiveCardShape(t *testing.T) {
	var msg struct {
		Type        string `json:"type"`
		Attachments []struct {
			ContentType string  `json:"contentType"`
			ContentURL  *string `json:"contentUrl"`
			Content     struct {
				Schema  string `json:"$schema"`
				Type    string `json:"type"`
				Version string `json:"version"`
				Body    []struct {
					Type   string `json:"type"`
					Text   string `json:"text"`
					Weight string `json:"weight"`
					Size   string `json:"size"`
					Color  string `json:"color"`
					Wrap   bool   `json:"wrap"`
					Facts  []struct {
						Title string `json:"title"`
						Value string `json:"value"`
					} `json:"facts"`
				} `json:"body"`
			} `json:"content"`
		} `json:"attachments"`
	}
	n, body := sendDecoded(t, "teams", &msg)
	if msg.Type != "message" || len(msg.Attachments) != 1 {
		t.Fatalf("message %s", body)
	}
	a := msg.Attachments[0]
	if a.ContentType != "application/vnd.microsoft.card.adaptive" || a.Content.Type != "AdaptiveCard" ||
		a.Content.Version == "" || !strings.Contains(a.Content.Schema, "adaptivecards.io") {
		t.Errorf("attachment %+v", a)
	}
	items := a.Content.Body
	if len(items) != 3 {
		t.Fatalf("card body has %d items, want title, text, facts: %s", len(items), body)
	}
	if items[0].Type != "TextBlock" || items[0].Text != n.Title || items[0].Color != "Attention" || !items[0].Wrap {
		t.Errorf("title block %+v", items[0])
	}
	if items[1].Type != "TextBlock" || items[1].Text != n.Text {
		t.Errorf("text block %+v", items[1])
	}
	facts := map[string]string{}
	for _, f := range items[2].Facts {
		facts[f.Title] = f.Value
	}
	if items[2].Type != "FactSet" || facts["Severity"] != "critical" || facts["Kind"] != "run-failed" ||
		facts["Run"] != "r-20260301-1" || facts["Region"] != "west" || facts["Time"] != "2026-03-01T12:00:00Z" {
		t.Errorf("fact set %+v", items[2])
	}
}

// readMail parses a message the SMTP receiver got and decodes its body.
func readMail(t *testing.T, data []byte) (*mail.Message, string) {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("not an RFC 5322 message: %v\n%s", err, data)
	}
	if cte := msg.Header.Get("Content-Transfer-Encoding"); cte != "quoted-printable" {
		t.Fatalf("Content-Transfer-Encoding %q", cte)
	}
	body, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
	if err != nil {
		t.Fatal(err)
	}
	return msg, string(body)
}

func TestEmailDelivery(t *testing.T) {
	r := newSMTPReceiver(t, nil, "lifeboat", "mail-pa55word")
	s := testSink(t, config.Channel{Name: "mail", Type: "email", SMTP: &config.SMTP{Addr: r.addr,
		From: "Lifeboat <lifeboat@example.com>", To: []string{"oncall@example.com", "Ops Team <ops@example.com>"},
		Username: "lifeboat", Password: "mail-pa55word"}}, nil)
	n := runFailed()
	if err := s.Send(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	var got gotMail
	select {
	case got = <-r.got:
	case <-time.After(5 * time.Second):
		t.Fatal("no mail within 5s")
	}
	if got.from != "lifeboat@example.com" || strings.Join(got.to, ",") != "oncall@example.com,ops@example.com" || got.user != "lifeboat" {
		t.Errorf("envelope: from %q to %q user %q", got.from, got.to, got.user)
	}
	msg, body := readMail(t, got.data)
	subject, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if err != nil || subject != "[Lifeboat] CRITICAL: "+n.Title {
		t.Errorf("Subject %q %v", subject, err)
	}
	if from, err := mail.ParseAddress(msg.Header.Get("From")); err != nil || from.Address != "lifeboat@example.com" || from.Name != "Lifeboat" {
		t.Errorf("From %q %v", msg.Header.Get("From"), err)
	}
	if to, err := msg.Header.AddressList("To"); err != nil || len(to) != 2 || to[1].Address != "ops@example.com" {
		t.Errorf("To %q %v", msg.Header.Get("To"), err)
	}
	if d, err := msg.Header.Date(); err != nil || time.Since(d) > time.Minute {
		t.Errorf("Date %q %v", msg.Header.Get("Date"), err)
	}
	if id := msg.Header.Get("Message-ID"); id != "<"+n.ID+"@example.com>" {
		t.Errorf("Message-ID %q", id)
	}
	if !strings.Contains(body, "failover east → west failed after 3.2s") || !strings.Contains(body, "Run: r-20260301-1\r\n") ||
		!strings.HasPrefix(body, n.Title+"\r\n") {
		t.Errorf("body:\n%s", body)
	}
}

func TestEmailStartTLS(t *testing.T) {
	cert, pool := testCert(t)
	r := newSMTPReceiver(t, cert, "lifeboat", "mail-pa55word")
	ch := config.Channel{Name: "mail", Type: "email", SMTP: &config.SMTP{Addr: r.addr,
		From: "lifeboat@example.com", To: []string{"oncall@example.com"}, Username: "lifeboat", Password: "mail-pa55word"}}
	s := testSink(t, ch, &tls.Config{RootCAs: pool})
	if err := s.Send(context.Background(), runFailed()); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-r.got:
		if !got.tls || got.user != "lifeboat" {
			t.Errorf("mail arrived with TLS %v, user %q; want STARTTLS and AUTH", got.tls, got.user)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no mail within 5s")
	}
	// A certificate the client does not trust stops the delivery.
	s = testSink(t, ch, nil)
	err := s.Send(context.Background(), runFailed())
	if err == nil || !strings.Contains(err.Error(), "starttls") || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted certificate: %v, want a starttls certificate error", err)
	}
	select {
	case got := <-r.got:
		t.Errorf("mail delivered over an untrusted TLS connection: %+v", got)
	default:
	}
}

func TestEmailWrongPassword(t *testing.T) {
	r := newSMTPReceiver(t, nil, "lifeboat", "mail-pa55word")
	s := testSink(t, config.Channel{Name: "mail", Type: "email", SMTP: &config.SMTP{Addr: r.addr,
		From: "lifeboat@example.com", To: []string{"oncall@example.com"}, Username: "lifeboat", Password: "wr0ng-pa55"}}, nil)
	err := s.Send(context.Background(), runFailed())
	if err == nil || !strings.Contains(err.Error(), "smtp auth") {
		t.Fatalf("wrong password: %v, want an smtp auth error", err)
	}
	if strings.Contains(err.Error(), "wr0ng-pa55") {
		t.Errorf("error shows the password: %v", err)
	}
}

func TestEmailEndsWithItsContext(t *testing.T) {
	s := testSink(t, config.Channel{Name: "mail", Type: "email", SMTP: &config.SMTP{Addr: testenv.Blackhole(t),
		From: "lifeboat@example.com", To: []string{"oncall@example.com"}}}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.Send(ctx, runFailed())
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
		t.Errorf("server that never greets: %v after %s, want the deadline within 300ms", err, time.Since(start))
	}
}

func TestNewRejectsBadChannels(t *testing.T) {
	const url = "https://hooks.example.com/services/T0/B0/xoxb-s3cr3t"
	for _, tc := range []struct {
		name string
		ch   config.Channel
		want string
	}{
		{"no name", config.Channel{Type: "slack", URL: url}, "name is missing"},
		{"bad type", config.Channel{Name: "a", Type: "pager", URL: url}, `type "pager"`},
		{"bad url", config.Channel{Name: "a", Type: "slack", URL: "ftp://x/xoxb-s3cr3t"}, "url is not an http"},
		{"no smtp", config.Channel{Name: "a", Type: "email"}, "smtp is missing"},
		{"bad from", config.Channel{Name: "a", Type: "email", SMTP: &config.SMTP{Addr: "mx:25", From: "nobody", To: []string{"a@b.c"}}}, "smtp.from"},
		{"bad severity", config.Channel{Name: "a", Type: "slack", URL: url, MinSeverity: "loud"}, "min_severity"},
		{"bad kind", config.Channel{Name: "a", Type: "slack", URL: url, Events: []string{"region-up"}}, `events[0] "region-up"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New([]config.Channel{tc.ch}, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("error shows the URL: %v", err)
			}
		})
	}
	_, err := New([]config.Channel{{Name: "a", Type: "slack", URL: url}, {Name: "a", Type: "teams", URL: url}}, Options{})
	if err == nil || !strings.Contains(err.Error(), "used twice") {
		t.Errorf("two channels named a: %v", err)
	}
}
