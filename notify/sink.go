package notify

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"unicode"

	"github.com/lifeboat-dr/lifeboat/config"
)

// Sink delivers a notification to one destination.
//
// Send makes one attempt and returns when the destination has accepted the
// notification, refused it, or ctx ends; the dispatcher bounds it with the
// channel's timeout and retries it. It is not idempotent: every call that
// succeeds delivers once more (receivers can recognise a retry by the
// notification's ID). Errors never contain the destination's URL or any
// credential.
type Sink interface {
	Send(ctx context.Context, n Notification) error
}

var (
	_ Sink = (*webhookSink)(nil)
	_ Sink = (*slackSink)(nil)
	_ Sink = (*teamsSink)(nil)
	_ Sink = (*emailSink)(nil)
)

// StatusError is an HTTP answer outside 2xx. It names the status, never the
// URL it came from.
type StatusError struct {
	Code   int
	Status string // "404 Not Found"
	// Body is the start of the answer, on one line.
	Body string
}

// Error is "HTTP <status>", followed by the start of the answer.
func (e *StatusError) Error() string {
	if e.Body == "" {
		return "HTTP " + e.Status
	}
	return "HTTP " + e.Status + ": " + e.Body
}

// Permanent reports whether retrying cannot help: a 4xx other than 408
// (timeout), 425 (too early) and 429 (too many requests).
func (e *StatusError) Permanent() bool {
	return e.Code >= 400 && e.Code < 500 && e.Code != http.StatusRequestTimeout &&
		e.Code != http.StatusTooEarly && e.Code != http.StatusTooManyRequests
}

// permanent reports whether err says that retrying cannot help.
func permanent(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Permanent()
}

// newSink makes the sink of a channel. client posts the HTTP channels'
// bodies; tlsConf is the base of the email channels' STARTTLS.
func newSink(ch config.Channel, client *http.Client, tlsConf *tls.Config) (Sink, error) {
	switch ch.Type {
	case "webhook", "slack", "teams":
		u, err := url.Parse(ch.URL.Value())
		// The URL is a secret: say what is wrong without quoting it.
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("url is not an http:// or https:// URL")
		}
		p := poster{client: client, url: ch.URL.Value()}
		switch ch.Type {
		case "webhook":
			return &webhookSink{poster: p, secret: []byte(ch.Secret.Value())}, nil
		case "slack":
			return &slackSink{poster: p}, nil
		default:
			return &teamsSink{poster: p}, nil
		}
	case "email":
		return newEmail(ch.SMTP, tlsConf)
	case "":
		return nil, errors.New("type is missing (webhook, slack, teams or email)")
	}
	return nil, fmt.Errorf("type %q is not webhook, slack, teams or email", ch.Type)
}

// poster posts JSON to a URL that is a secret.
type poster struct {
	client *http.Client
	url    string
}

// send posts payload as JSON; errors start with what ("slack: ...").
func (p poster) send(ctx context.Context, what string, payload any) error {
	body, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", what, err)
	}
	if err := p.post(ctx, body, nil); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// post sends body with the headers; a non-2xx answer is a *StatusError.
// Errors do not contain the URL.
func (p poster) post(ctx context.Context, body []byte, header http.Header) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return errors.New("cannot make the request (is the url valid?)")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "lifeboat-notify")
	resp, err := p.client.Do(req)
	if err != nil {
		// *url.Error quotes the URL: keep only what went wrong.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("post: %w", ctx.Err())
		}
		return fmt.Errorf("post: %w", err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	if resp.StatusCode/100 != 2 {
		return &StatusError{Code: resp.StatusCode, Status: resp.Status, Body: oneLine(string(snippet), 200)}
	}
	return nil
}

// noRedirect makes a client return 3xx answers instead of following them:
// a signed body goes only where it was configured to.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// oneLine squeezes s onto one line of at most max runes.
func oneLine(s string, max int) string {
	s = strings.Join(strings.FieldsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }), " ")
	if r := []rune(s); len(r) > max {
		s = string(r[:max-1]) + "…"
	}
	return s
}

// newID returns a random identifier (32 hex digits).
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ensureID gives n an ID when it has none.
func ensureID(n *Notification) {
	if n.ID == "" {
		n.ID = newID()
	}
}

// redactor masks a channel's secrets in free text (errors, records, logs).
type redactor struct{ r *strings.Replacer }

// newRedactor masks the channel's URL (whole, and its path and query, which
// usually hold the token), signing secret and SMTP password.
func newRedactor(ch config.Channel) redactor {
	var secrets []string
	add := func(s string) {
		if len(s) >= 3 {
			secrets = append(secrets, s)
		}
	}
	add(ch.URL.Value())
	if u, err := url.Parse(ch.URL.Value()); err == nil {
		if p := u.EscapedPath(); len(p) > 1 {
			add(p)
			add(strings.TrimPrefix(p, "/"))
		}
		add(u.RawQuery)
		if u.User != nil {
			if pw, ok := u.User.Password(); ok {
				add(pw)
			}
		}
	}
	add(ch.Secret.Value())
	if ch.SMTP != nil {
		add(ch.SMTP.Password.Value())
	}
	// Longest first: a secret that contains another is masked whole.
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	pairs := make([]string, 0, 2*len(secrets))
	for _, s := range secrets {
		pairs = append(pairs, s, config.Redacted)
	}
	return redactor{strings.NewReplacer(pairs...)}
}

// String masks the secrets in s.
func (r redactor) String(s string) string { return r.r.Replace(s) }
