package api

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/lifeboat-dr/lifeboat/config"
)

// The API's defences. Every route goes through guard, which applies, in
// this order:
//
//  1. Without tokens (the API then listens on loopback and every caller is
//     the local admin), the Host header must be localhost or a loopback
//     address: a web page cannot reach the API through DNS rebinding.
//  2. Mutating calls (any method but GET, HEAD and OPTIONS) must not be
//     cross-origin: an Origin header, when present, must name this server
//     (its Host), and Sec-Fetch-Site must not be cross-site (403). The API
//     sets no cookie and sends no CORS header, so a browser cannot read a
//     cross-origin answer either.
//  3. Mutating calls are rate limited per caller (429, Retry-After).
//  4. The operation's role (see the OpenAPI document): viewer for reads
//     once tokens are configured, operator or admin for the rest (401,
//     403).
//  5. A mutating call's body, when present, must be Content-Type:
//     application/json (415), at most 64 KiB (413), and exactly one JSON
//     object of the operation's request type: no unknown field, no value
//     of the wrong type, nothing after it (400 naming the field). A body
//     the operation needs cannot be empty (400).

// maxBody is the largest request body the API reads.
const maxBody = 64 << 10

// Default rate of mutating calls per caller.
const (
	DefaultRatePerMinute = 30
	DefaultRateBurst     = 10
)

// RateLimit bounds the mutating calls of each caller (a token's name, or
// the client's IP address for calls without a known token): a token
// bucket of Burst calls refilled at PerMinute a minute. Reads are not
// limited. Zero fields take the defaults (30 a minute, bursts of 10); a
// negative PerMinute disables the limit.
type RateLimit struct {
	PerMinute int
	Burst     int
}

// guard wraps op's handler with the checks above.
func (s *Server) guard(op *operation, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.hostAllowed(w, r) {
			return
		}
		write := mutating(r.Method)
		if write && !sameOrigin(w, r) {
			return
		}
		if write && !s.limiter.allow(w, s.rateKey(r)) {
			return
		}
		if op.role != "" {
			if _, ok := s.authenticate(w, r, op.role); !ok {
				return
			}
		}
		if write && !readBody(w, r, op) {
			return
		}
		h.ServeHTTP(w, r)
	})
}

// hostAllowed refuses, when no token is configured, a request whose Host
// is not localhost or a loopback address.
func (s *Server) hostAllowed(w http.ResponseWriter, r *http.Request) bool {
	if len(s.tokens()) > 0 {
		return true
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if loopbackHost(host) {
		return true
	}
	writeError(w, http.StatusForbidden, fmt.Sprintf("Host %q refused: without API tokens this API answers only requests to localhost or a loopback address (configure api.tokens to serve other names)", clip(r.Host, 100)))
	return false
}

// loopbackHost reports whether host (without a port) is localhost or a
// loopback address.
func loopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// sameOrigin refuses a cross-origin mutating call: Sec-Fetch-Site:
// cross-site, or an Origin that is not this server.
func sameOrigin(w http.ResponseWriter, r *http.Request) bool {
	if strings.EqualFold(r.Header.Get("Sec-Fetch-Site"), "cross-site") {
		writeError(w, http.StatusForbidden, "cross-origin request refused (Sec-Fetch-Site: cross-site): the API takes mutating calls only from its own pages and from non-browser clients")
		return false
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if u, err := url.Parse(origin); err == nil && u.Host != "" && strings.EqualFold(hostPort(u.Host, u.Scheme), hostPort(r.Host, scheme)) {
		return true
	}
	writeError(w, http.StatusForbidden, fmt.Sprintf("cross-origin request refused: Origin %q is not this server (%s)", clip(origin, 100), clip(r.Host, 100)))
	return false
}

// hostPort is host with its port, the scheme's default when it has none.
func hostPort(host, scheme string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	port := "80"
	if strings.EqualFold(scheme, "https") {
		port = "443"
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}

// bearerToken is the token of r's Authorization header; problem says
// what is wrong with the header when there is none to use.
func bearerToken(r *http.Request) (token, problem string) {
	h := strings.TrimSpace(r.Header.Get("Authorization"))
	if h == "" {
		return "", "this call needs a bearer token (Authorization: Bearer <token>)"
	}
	scheme, tok, _ := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	switch {
	case !strings.EqualFold(scheme, "Bearer"):
		return "", `malformed Authorization header: it must be "Bearer <token>" (another scheme, or a token without "Bearer ")`
	case tok == "":
		return "", `malformed Authorization header: "Bearer" without a token`
	case strings.ContainsAny(tok, " \t"):
		return "", `malformed Authorization header: it must be "Bearer <token>", with no space in the token`
	}
	return tok, ""
}

// tokenFor is the configured token whose hash is token's.
func tokenFor(tokens []config.Token, token string) (config.Token, bool) {
	sum := sha256.Sum256([]byte(token))
	hexSum := []byte(hex.EncodeToString(sum[:]))
	for _, t := range tokens {
		if subtle.ConstantTimeCompare(hexSum, []byte(t.SHA256)) == 1 {
			return t, true
		}
	}
	return config.Token{}, false
}

// rateKey is who r's caller is, for the rate limit: the name of a
// configured token it presents, else its IP address.
func (s *Server) rateKey(r *http.Request) string {
	if tok, problem := bearerToken(r); problem == "" {
		if t, ok := tokenFor(s.tokens(), tok); ok {
			return "token " + strconv.Quote(t.Name)
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "address " + host
}

// limiter keeps a token bucket per caller. A bucket left alone until it
// is full again is forgotten: a new one is the same.
type limiter struct {
	perMinute, burst int
	every            rate.Limit
	refill           time.Duration // from empty to full

	mu      sync.Mutex
	callers map[string]*bucket
	swept   time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newLimiter(rl RateLimit) *limiter {
	if rl.PerMinute < 0 {
		return nil
	}
	if rl.PerMinute == 0 {
		rl.PerMinute = DefaultRatePerMinute
	}
	if rl.Burst <= 0 {
		rl.Burst = DefaultRateBurst
	}
	l := &limiter{perMinute: rl.PerMinute, burst: rl.Burst, every: rate.Limit(float64(rl.PerMinute) / 60), callers: map[string]*bucket{}}
	l.refill = time.Duration(float64(rl.Burst) / float64(l.every) * float64(time.Second))
	return l
}

// allow takes one call from key's bucket, or answers 429 with the time
// until the next call is allowed. A nil limiter allows everything.
func (l *limiter) allow(w http.ResponseWriter, key string) bool {
	if l == nil {
		return true
	}
	wait := l.reserve(key, time.Now())
	if wait == 0 {
		return true
	}
	secs := int(math.Ceil(wait.Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeError(w, http.StatusTooManyRequests, fmt.Sprintf("too many calls: %s may make %d mutating calls a minute, %d at once; retry in %d s", key, l.perMinute, l.burst, secs))
	return false
}

// reserve takes a call from key's bucket at now; when it is empty, it
// takes nothing and returns how long until it holds one.
func (l *limiter) reserve(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) >= l.refill {
		for k, b := range l.callers {
			if now.Sub(b.seen) >= l.refill {
				delete(l.callers, k)
			}
		}
		l.swept = now
	}
	b := l.callers[key]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(l.every, l.burst)}
		l.callers[key] = b
	}
	b.seen = now
	res := b.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return d
	}
	return 0
}

// readBody checks a mutating call's body against op (see above) and
// leaves it, read, in r.Body for the handler.
func readBody(w http.ResponseWriter, r *http.Request, op *operation) bool {
	body := bufio.NewReader(http.MaxBytesReader(w, r.Body, maxBody))
	present := r.ContentLength > 0
	if r.ContentLength < 0 { // unknown length: look
		_, err := body.Peek(1)
		present = err == nil
	}
	if present {
		ct := r.Header.Get("Content-Type")
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			msg := "the request has a body but no Content-Type: a body must be JSON, sent as Content-Type: application/json"
			if ct != "" {
				msg = fmt.Sprintf("Content-Type %q: a request body must be JSON, sent as Content-Type: application/json", clip(ct, 100))
			}
			writeError(w, http.StatusUnsupportedMediaType, msg)
			return false
		}
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body: larger than %d KiB", maxBody>>10))
		} else {
			writeError(w, http.StatusBadRequest, "request body: "+err.Error())
		}
		return false
	}
	target := op.body
	if target == nil {
		target = reflect.TypeFor[struct{}]()
	}
	if code, msg := checkJSON(raw, target, op.body != nil); code != 0 {
		writeError(w, code, msg)
		return false
	}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	r.ContentLength = int64(len(raw))
	return true
}

// checkJSON decodes raw strictly into a new value of type t: one JSON
// object, no unknown field, no value of the wrong type, nothing after
// it. An empty body is an error when required. It returns the status
// and message of the first problem, or 0.
func checkJSON(raw []byte, t reflect.Type, required bool) (int, string) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 {
		if required {
			return http.StatusBadRequest, "request body: empty; this call needs a JSON object (Content-Type: application/json)"
		}
		return 0, ""
	}
	if trimmed[0] != '{' {
		return http.StatusBadRequest, "request body: must be a JSON object ({...})"
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	v := reflect.New(t).Interface()
	if err := dec.Decode(v); err != nil {
		return http.StatusBadRequest, "request body: " + jsonProblem(err, raw, t)
	}
	if _, err := dec.Token(); err != io.EOF {
		return http.StatusBadRequest, "request body: unexpected data after the JSON object"
	}
	return 0, ""
}

// jsonProblem says what err, from decoding raw into a t, is about.
func jsonProblem(err error, raw []byte, t reflect.Type) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d: %s", syn.Offset, syn.Error())
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "invalid JSON: the object is cut short"
	case errors.As(err, &typ) && typ.Field != "":
		if n, ok := strings.CutPrefix(typ.Value, "number "); ok {
			if want := expected(typ.Type); strings.HasPrefix(want, "a whole number") && strings.ContainsAny(n, ".eE") {
				return fmt.Sprintf("field %q: %s is not %s", typ.Field, n, want)
			} else if strings.Contains(want, "number") {
				return fmt.Sprintf("field %q: %s is out of range", typ.Field, n)
			}
		}
		return fmt.Sprintf("field %q: %s where %s is expected", typ.Field, article(typ.Value), expected(typ.Type))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return err.Error()
	}
	// A value's own decoding failed (a time, say): find its field.
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) == nil {
		names := make([]string, 0, len(fields))
		for k := range fields {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			one, _ := json.Marshal(map[string]json.RawMessage{k: fields[k]})
			if json.Unmarshal(one, reflect.New(t).Interface()) != nil {
				return fmt.Sprintf("field %q: %s", k, strings.TrimPrefix(err.Error(), "json: "))
			}
		}
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// article prefixes a JSON value's kind ("number", "string", "number
// -1") with a or an.
func article(kind string) string {
	if kind != "" && strings.ContainsRune("aeiou", rune(kind[0])) {
		return "an " + kind
	}
	return "a " + kind
}

// expected describes the JSON a Go type takes.
func expected(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number, 0 or more"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "an object"
}
