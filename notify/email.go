package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
)

// emailSink sends a plain-text message (RFC 5322) through an SMTP server:
// STARTTLS when the server offers it, AUTH PLAIN when a username is set.
// Go's net/smtp refuses PLAIN authentication without TLS except to
// localhost, so a remote server that does not offer STARTTLS and asks for
// a password fails instead of getting it in clear.
type emailSink struct {
	addr, host string
	from       *mail.Address
	to         []*mail.Address
	username   string
	password   string
	tls        *tls.Config
}

// newEmail checks an email channel's server and addresses. tlsConf is the
// base of STARTTLS (nil: the system's roots); its ServerName is the host of
// addr.
func newEmail(s *config.SMTP, tlsConf *tls.Config) (*emailSink, error) {
	if s == nil {
		return nil, errors.New("smtp is missing: an email channel needs smtp: {addr, from, to}")
	}
	host, _, err := net.SplitHostPort(s.Addr)
	if err != nil {
		return nil, fmt.Errorf("smtp.addr %q is not host:port", s.Addr)
	}
	from, err := mail.ParseAddress(s.From)
	if err != nil {
		return nil, fmt.Errorf("smtp.from %q is not a mail address", s.From)
	}
	if len(s.To) == 0 {
		return nil, errors.New("smtp.to: needs at least one recipient")
	}
	e := &emailSink{addr: s.Addr, host: host, from: from, username: s.Username, password: s.Password.Value()}
	for i, t := range s.To {
		a, err := mail.ParseAddress(t)
		if err != nil {
			return nil, fmt.Errorf("smtp.to[%d] %q is not a mail address", i, t)
		}
		e.to = append(e.to, a)
	}
	if tlsConf != nil {
		e.tls = tlsConf.Clone()
	} else {
		e.tls = &tls.Config{}
	}
	e.tls.ServerName = host
	return e, nil
}

// Send delivers n once: one SMTP session, every recipient in it. It ends
// when ctx does, wherever the session is.
func (e *emailSink) Send(ctx context.Context, n Notification) error {
	ensureID(&n)
	msg := e.message(n, time.Now())
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", e.addr)
	if err != nil {
		return fmt.Errorf("email: %w", ctxCause(ctx, err))
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// net/smtp knows no context: a past deadline unblocks what it waits for.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c, err := smtp.NewClient(conn, e.host)
	if err != nil {
		conn.Close()
		return e.fail(ctx, "greeting", err)
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(e.tls); err != nil {
			return e.fail(ctx, "starttls", err)
		}
	}
	if e.username != "" {
		if err := c.Auth(smtp.PlainAuth("", e.username, e.password, e.host)); err != nil {
			return e.fail(ctx, "auth", err)
		}
	}
	if err := c.Mail(e.from.Address); err != nil {
		return e.fail(ctx, "mail from", err)
	}
	for _, to := range e.to {
		if err := c.Rcpt(to.Address); err != nil {
			return e.fail(ctx, "rcpt to <"+to.Address+">", err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return e.fail(ctx, "data", err)
	}
	if _, err := w.Write(msg); err != nil {
		return e.fail(ctx, "data", err)
	}
	if err := w.Close(); err != nil {
		return e.fail(ctx, "data", err)
	}
	if err := c.Quit(); err != nil {
		return e.fail(ctx, "quit", err)
	}
	return nil
}

// fail names the SMTP step that failed and the server; when ctx ended, that
// is the cause rather than the I/O error it provoked.
func (e *emailSink) fail(ctx context.Context, step string, err error) error {
	return fmt.Errorf("email: smtp %s at %s: %w", step, e.addr, ctxCause(ctx, err))
}

// ctxCause is ctx's error when ctx has ended (or its deadline, which the
// connection's deadline equals, has just passed), else err.
func ctxCause(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return err
}

// message writes the RFC 5322 message: headers, then the text and the
// facts as quoted-printable UTF-8.
func (e *emailSink) message(n Notification, now time.Time) []byte {
	var b bytes.Buffer
	header := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	to := make([]string, len(e.to))
	for i, a := range e.to {
		to[i] = a.String()
	}
	domain := "lifeboat"
	if at := strings.LastIndexByte(e.from.Address, '@'); at >= 0 && at < len(e.from.Address)-1 {
		domain = e.from.Address[at+1:]
	}
	subject := fmt.Sprintf("[Lifeboat] %s: %s", strings.ToUpper(n.Severity), oneLine(n.Title, 200))
	header("From", e.from.String())
	header("To", strings.Join(to, ", "))
	header("Subject", mime.QEncoding.Encode("utf-8", subject))
	header("Date", now.Format(time.RFC1123Z))
	header("Message-ID", "<"+n.ID+"@"+domain+">")
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "quoted-printable")
	header(HeaderEvent, oneLine(n.Kind, 100))
	b.WriteString("\r\n")
	var text strings.Builder
	text.WriteString(n.Title + "\n\n")
	if n.Text != "" {
		text.WriteString(n.Text + "\n\n")
	}
	for _, f := range facts(n) {
		fmt.Fprintf(&text, "%s: %s\n", f.Name, f.Value)
	}
	qp := quotedprintable.NewWriter(&b)
	qp.Write([]byte(strings.ReplaceAll(text.String(), "\n", "\r\n")))
	qp.Close()
	return b.Bytes()
}
