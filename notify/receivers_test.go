package notify

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/lifeboat-dr/lifeboat/control"
)

// secretPath is the token part of the receivers' URLs, as in a Slack or
// Teams webhook URL: it must never show in an error or a record.
const secretPath = "/hooks/T0001/B0002/xoxb-s3cr3t-t0ken"

// received is one request a receiver got.
type received struct {
	header http.Header
	body   []byte
	at     time.Time
}

// receiver is a webhook endpoint on loopback. It answers the first fail
// requests with 500, then 200; a request to another path than secretPath
// gets 404.
type receiver struct {
	srv  *httptest.Server
	mu   sync.Mutex
	fail int
	reqs []received
	got  chan received
}

func newReceiver(t *testing.T, fail int) *receiver {
	t.Helper()
	r := &receiver{fail: fail, got: make(chan received, 100)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if req.URL.Path != secretPath {
			http.Error(w, "no_service", http.StatusNotFound)
			return
		}
		rec := received{header: req.Header.Clone(), body: body, at: time.Now()}
		r.mu.Lock()
		r.reqs = append(r.reqs, rec)
		failing := len(r.reqs) <= r.fail
		r.mu.Unlock()
		if failing {
			http.Error(w, "try again later", http.StatusInternalServerError)
			return
		}
		r.got <- rec
		w.Write([]byte("ok"))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// url is the receiver's secret URL.
func (r *receiver) url() string { return r.srv.URL + secretPath }

// requests returns every request so far, failed ones included.
func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.reqs...)
}

// next waits for the next request answered 200.
func (r *receiver) next(t *testing.T, within time.Duration) received {
	t.Helper()
	return receive(t, r.got, within, "delivery")
}

// receive waits for a value from ch; what names it in the failure.
func receive[T any](t *testing.T, ch <-chan T, within time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(within):
		var zero T
		t.Fatalf("no %s within %s", what, within)
		return zero
	}
}

// none fails when a request is answered 200 within d.
func (r *receiver) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case rec := <-r.got:
		t.Fatalf("unexpected delivery: %s", rec.body)
	case <-time.After(d):
	}
}

// records collects delivery records.
type records struct {
	mu  sync.Mutex
	evs []control.Event
	ch  chan control.Event
}

func newRecords() *records { return &records{ch: make(chan control.Event, 1000)} }

func (r *records) record(e control.Event) {
	r.mu.Lock()
	r.evs = append(r.evs, e)
	r.mu.Unlock()
	r.ch <- e
}

// next waits for the next record.
func (r *records) next(t *testing.T, within time.Duration) control.Event {
	t.Helper()
	return receive(t, r.ch, within, "delivery record")
}

// gotMail is one message an SMTP receiver got.
type gotMail struct {
	from string
	to   []string
	data []byte
	tls  bool
	user string
}

// smtpReceiver is an SMTP server on loopback (emersion/go-smtp). With
// cert, it offers STARTTLS; with a user, it requires AUTH PLAIN.
type smtpReceiver struct {
	addr      string
	user, pwd string
	got       chan gotMail
}

func newSMTPReceiver(t *testing.T, cert *tls.Certificate, user, pwd string) *smtpReceiver {
	t.Helper()
	r := &smtpReceiver{user: user, pwd: pwd, got: make(chan gotMail, 10)}
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &smtpSession{r: r, c: c}, nil
	}))
	s.Domain = "localhost"
	s.ErrorLog = log.New(io.Discard, "", 0) // clients that hang up are part of the tests
	s.AllowInsecureAuth = true              // net/smtp itself only sends PLAIN in clear to localhost
	s.ReadTimeout, s.WriteTimeout = 10*time.Second, 10*time.Second
	if cert != nil {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = l.Addr().String()
	var wg sync.WaitGroup
	wg.Go(func() { s.Serve(l) })
	t.Cleanup(func() {
		s.Close()
		wg.Wait()
	})
	return r
}

// smtpSession is one client's session with the receiver.
type smtpSession struct {
	r    *smtpReceiver
	c    *smtp.Conn
	user string
	m    gotMail
}

func (s *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *smtpSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pwd string) error {
		if user != s.r.user || pwd != s.r.pwd {
			return errors.New("invalid username or password")
		}
		s.user = user
		return nil
	}), nil
}

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.r.user != "" && s.user == "" {
		return smtp.ErrAuthRequired
	}
	s.m = gotMail{from: from, user: s.user}
	_, s.m.tls = s.c.TLSConnectionState()
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.m.to = append(s.m.to, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.m.data = b
	s.r.got <- s.m
	return nil
}

func (s *smtpSession) Reset()        { s.m = gotMail{} }
func (s *smtpSession) Logout() error { return nil }

// testCert is a self-signed certificate for 127.0.0.1 and the pool that
// trusts it.
func testCert(t *testing.T) (*tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lifeboat test mail"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}
