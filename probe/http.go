// Package probe checks network services: HTTP endpoints (health and version)
// and TCP ports. Each prober implements health.Prober.
package probe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/health"
)

// maxBody bounds what a probe reads of a response body.
const maxBody = 64 << 10

// NewTransport returns the HTTP transport probes share: keep-alive
// connections (a thousand targets at 1s must not dial a thousand times a
// second), no proxy from the environment, no compression.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        4096,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   true,
	}
}

// HTTP probes an HTTP endpoint: a request with the configured method, path
// and headers succeeds when the status is in range and, if set, the body
// contains the expected text.
type HTTP struct {
	client  *http.Client
	url     string
	host    string
	method  string
	lo, hi  int
	body    string
	headers http.Header
}

var _ health.Prober = (*HTTP)(nil)

// NewHTTP makes a prober for endpoint with the service's health settings.
// client carries the shared transport; it must not set a Timeout (the
// checker's context bounds each probe).
func NewHTTP(client *http.Client, endpoint string, h config.Health) (*HTTP, error) {
	u, err := joinURL(endpoint, h.Path)
	if err != nil {
		return nil, err
	}
	lo, hi, err := config.ParseStatusRange(h.ExpectStatus)
	if err != nil {
		return nil, err
	}
	hdr := http.Header{}
	for k, v := range h.Headers {
		hdr.Set(k, v)
	}
	if hdr.Get("User-Agent") == "" {
		hdr.Set("User-Agent", "lifeboat-probe")
	}
	// net/http sends req.Host, not a Host header: move it there.
	host := hdr.Get("Host")
	hdr.Del("Host")
	return &HTTP{client: client, url: u, host: host, method: h.Method, lo: lo, hi: hi, body: h.BodyContains, headers: hdr}, nil
}

// joinURL appends path to the endpoint URL's path.
func joinURL(endpoint, path string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("probe: %q is not a URL", config.RedactURL(endpoint))
	}
	if path == "" {
		return u.String(), nil
	}
	p, err := url.Parse(path)
	if err != nil {
		return "", fmt.Errorf("probe: path %q: %w", path, err)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + p.Path
	if p.RawQuery != "" {
		u.RawQuery = p.RawQuery
	}
	return u.String(), nil
}

// Probe sends one request.
func (p *HTTP) Probe(ctx context.Context) health.Result {
	req, err := http.NewRequestWithContext(ctx, p.method, p.url, nil)
	if err != nil {
		return health.Result{Err: err}
	}
	req.Header = p.headers.Clone()
	if p.host != "" {
		req.Host = p.host
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return health.Result{Err: cleanErr(err)}
	}
	defer resp.Body.Close()
	var body []byte
	if p.body != "" {
		body, err = io.ReadAll(io.LimitReader(resp.Body, maxBody))
		if err != nil {
			return health.Result{Err: fmt.Errorf("read body: %w", cleanErr(err))}
		}
	}
	// Drain a little so the connection can be reused.
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	if resp.StatusCode < p.lo || resp.StatusCode > p.hi {
		return health.Result{Err: fmt.Errorf("status %d, want %d-%d", resp.StatusCode, p.lo, p.hi)}
	}
	if p.body != "" && !strings.Contains(string(body), p.body) {
		return health.Result{Err: fmt.Errorf("body does not contain %q", p.body)}
	}
	return health.Result{}
}

// cleanErr shortens net/http's errors to what an operator needs: the URL
// error's method and URL are known from the target, the cause is not.
func cleanErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err
}

// TCP probes a TCP port: a connection that opens is healthy.
type TCP struct {
	addr   string
	dialer net.Dialer
}

var _ health.Prober = (*TCP)(nil)

// NewTCP makes a prober for host:port.
func NewTCP(addr string) *TCP { return &TCP{addr: addr} }

// Probe opens and closes one connection.
func (p *TCP) Probe(ctx context.Context) health.Result {
	c, err := p.dialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return health.Result{Err: err}
	}
	c.Close()
	return health.Result{}
}

// Version reads a version from an HTTP endpoint: a JSON field of the body
// or a response header.
type Version struct {
	client    *http.Client
	url       string
	jsonField string
	header    string
}

// NewVersion makes a version reader for one region's endpoint. A relative
// v.URL is resolved against endpoint; an absolute one has "{region}"
// replaced.
func NewVersion(client *http.Client, endpoint, region string, v config.VersionProbe) (*Version, error) {
	var u string
	var err error
	if strings.HasPrefix(v.URL, "/") {
		u, err = joinURL(endpoint, v.URL)
	} else {
		u = strings.ReplaceAll(v.URL, "{region}", region)
	}
	if err != nil {
		return nil, err
	}
	return &Version{client: client, url: u, jsonField: v.JSONField, header: v.Header}, nil
}

// Fetch returns the version the endpoint reports now.
func (v *Version) Fetch(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.url, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("User-Agent", "lifeboat-probe")
	resp, err := v.client.Do(req)
	if err != nil {
		return "", cleanErr(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("version: status %d", resp.StatusCode)
	}
	if v.header != "" {
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
		h := resp.Header.Get(v.header)
		if h == "" {
			return "", fmt.Errorf("version: no %s header", v.header)
		}
		return h, nil
	}
	dec := json.NewDecoder(io.LimitReader(resp.Body, maxBody))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return "", fmt.Errorf("version: body is not JSON: %w", err)
	}
	return JSONField(doc, v.jsonField)
}

// JSONField follows a dotted path ("model.version", "data.0.id") into a
// decoded JSON document and returns the value as text.
func JSONField(doc any, path string) (string, error) {
	cur := doc
	for _, part := range strings.Split(path, ".") {
		switch node := cur.(type) {
		case map[string]any:
			next, ok := node[part]
			if !ok {
				return "", fmt.Errorf("version: no field %q in the JSON body", path)
			}
			cur = next
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(node) {
				return "", fmt.Errorf("version: %q: no element %q in a list of %d", path, part, len(node))
			}
			cur = node[i]
		default:
			return "", fmt.Errorf("version: %q: %q is not inside an object or list", path, part)
		}
	}
	switch val := cur.(type) {
	case string:
		return val, nil
	case json.Number:
		return val.String(), nil
	case bool:
		return strconv.FormatBool(val), nil
	case nil:
		return "", fmt.Errorf("version: %q is null", path)
	default:
		b, _ := json.Marshal(val)
		return string(b), nil
	}
}
