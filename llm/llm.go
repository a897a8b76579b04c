// Package llm is the optional narrative writer of DR reports: one chat
// completion against an OpenAI-compatible endpoint (OpenAI, Ollama,
// llama.cpp, or an Azure OpenAI deployment) that turns the facts of a report
// into an executive summary, an impact analysis and recommended next steps.
//
// The model only writes prose around figures Lifeboat measured: every text
// sent is redacted first, and [CheckNumbers] rejects a narrative that cites
// a number absent from the facts, so that the report can fall back to its
// template text. [Client.Checked] does both in one call.
//
// Requests go through github.com/openai/openai-go/v3 (its azure package for
// Azure), with the SDK's own retries off: this package retries itself, so
// that a request that times out is retried too (the SDK returns at once on a
// per-attempt timeout) and every retry is logged.
package llm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/azure"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"
)

// Providers.
const (
	// ProviderOpenAI is the OpenAI API and every server that speaks it
	// (Ollama, llama.cpp, vLLM): POST {url}/chat/completions with a bearer
	// key, or no Authorization header when the key is empty.
	ProviderOpenAI = "openai"
	// ProviderAzure is an Azure OpenAI deployment: POST
	// {url}/openai/deployments/{deployment}/chat/completions?api-version=…
	// with an api-key header. The endpoint must be HTTPS.
	ProviderAzure = "azure"
)

// DefaultURL is the API base of the openai provider when none is set.
const DefaultURL = "https://api.openai.com/v1"

const (
	defaultTimeout = 30 * time.Second
	// defaultBackoff is the first wait before a retry; it doubles with every
	// attempt up to maxBackoff, minus up to a quarter of jitter.
	defaultBackoff = 500 * time.Millisecond
	maxBackoff     = 8 * time.Second
	// maxRetryAfter is the longest Retry-After a retry waits for; a server
	// that asks for more gets no retry and the caller its error at once (a
	// report does not wait minutes for prose it can do without).
	maxRetryAfter = 10 * time.Second
	// maxErrorText bounds the API's error message quoted in an error.
	maxErrorText = 300
	// minKeyScrub is the shortest API key scrubbed from text, as config
	// does: a shorter one (a placeholder for a keyless local server) would
	// mangle unrelated words and figures.
	minKeyScrub = 3
)

// Options are the collaborators of a Client.
type Options struct {
	// Redact is applied to every text sent: the system prompt, the user
	// prompt, and every string of the facts. Nil sends them as they are
	// (the API key itself is always scrubbed from what is sent).
	Redact func(string) string
	// Logger receives one line per retry and per completion. Nil discards.
	Logger *slog.Logger
	// HTTPClient carries the requests. Nil is a plain client; Timeout applies
	// per attempt whatever its own settings.
	HTTPClient *http.Client
}

// Client writes report narratives through one chat-completions endpoint.
// It is safe for concurrent use.
type Client struct {
	chat     openai.ChatCompletionService
	provider string
	model    string // the body's "model": the model, or Azure's deployment
	timeout  time.Duration
	retries  int
	redact   func(string) string
	log      *slog.Logger
	apiKey   string // only to scrub it from what is sent and from errors

	// backoff is the first retry's wait; tests shorten it.
	backoff time.Duration
}

// New checks cfg and returns a client for it. The provider defaults to
// openai, the openai URL to DefaultURL, the timeout to 30s; retries must not
// be negative. Azure needs the URL, a deployment, an API version and a key;
// openai needs a model.
func New(cfg *config.LLM, opts Options) (*Client, error) {
	if cfg == nil {
		return nil, errors.New("llm: no configuration")
	}
	c := &Client{
		provider: cfg.Provider,
		timeout:  cfg.Timeout.D(),
		retries:  cfg.Retries,
		redact:   opts.Redact,
		log:      opts.Logger,
		apiKey:   cfg.APIKey.Value(),
		backoff:  defaultBackoff,
	}
	if c.provider == "" {
		c.provider = ProviderOpenAI
	}
	if c.timeout <= 0 {
		c.timeout = defaultTimeout
	}
	if c.retries < 0 {
		return nil, fmt.Errorf("llm: retries: %d is negative", c.retries)
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("provider", c.provider)
	httpClient := opts.HTTPClient
	if httpClient == nil {
		httpClient = &http.Client{}
	}

	base := cfg.URL
	if base == "" && c.provider == ProviderOpenAI {
		base = DefaultURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("llm: url: %q is not an http(s) URL", c.safeText(config.RedactURL(base)))
	}
	if c.provider == ProviderAzure && u.Scheme != "https" {
		// The azure package sends a key over HTTPS only.
		return nil, fmt.Errorf("llm: url: %q: azure needs https", c.safeText(config.RedactURL(base)))
	}
	reqOpts := []option.RequestOption{
		option.WithHTTPClient(httpClient),
		option.WithMaxRetries(0),
	}
	switch c.provider {
	case ProviderOpenAI:
		if cfg.Model == "" {
			return nil, errors.New("llm: model: is required")
		}
		c.model = cfg.Model
		reqOpts = append(reqOpts, option.WithBaseURL(base))
		if c.apiKey != "" {
			reqOpts = append(reqOpts, option.WithAPIKey(c.apiKey))
		}
	case ProviderAzure:
		switch {
		case cfg.Deployment == "":
			return nil, errors.New("llm: deployment: is required for azure")
		case cfg.APIVersion == "":
			return nil, errors.New("llm: api_version: is required for azure")
		case c.apiKey == "":
			return nil, errors.New("llm: api_key: is required for azure")
		}
		// The azure package routes a request by the body's model field:
		// /openai/deployments/{model}/chat/completions.
		c.model = cfg.Deployment
		reqOpts = append(reqOpts, azure.WithEndpoint(base, cfg.APIVersion), azure.WithAPIKey(c.apiKey))
	default:
		return nil, fmt.Errorf("llm: provider: %q is not openai or azure", c.provider)
	}
	// NewChatCompletionService, unlike openai.NewClient, reads no
	// OPENAI_* environment variable: the configuration is the only input.
	c.chat = openai.NewChatCompletionService(reqOpts...)
	c.log = c.log.With("model", c.model)
	return c, nil
}

// Complete sends one chat completion (a system and a user message, both
// redacted) and returns the reply's text. Each attempt has the configured
// timeout; a timeout, a 408, a 429 or a 5xx is retried up to the configured
// number of times with exponential back-off, or after the server's
// Retry-After when it asks for at most 10s. A reply without text, or cut at
// the token limit, is an error. Errors never contain the API key.
func (c *Client) Complete(ctx context.Context, system, user string) (string, error) {
	return c.complete(ctx, system, user, false)
}

func (c *Client) complete(ctx context.Context, system, user string, jsonObject bool) (string, error) {
	params := openai.ChatCompletionNewParams{
		Model: shared.ChatModel(c.model),
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage(c.scrub(system)),
			openai.UserMessage(c.scrub(user)),
		},
	}
	if jsonObject {
		params.ResponseFormat = openai.ChatCompletionNewParamsResponseFormatUnion{
			OfJSONObject: &shared.ResponseFormatJSONObjectParam{},
		}
	}
	for attempt := 0; ; attempt++ {
		start := time.Now()
		res, err := c.attempt(ctx, params)
		if err == nil {
			return c.reply(res, time.Since(start))
		}
		wait, retry := c.retryable(ctx, err, attempt)
		err = c.safeError(err)
		if !retry || attempt >= c.retries {
			return "", fmt.Errorf("llm: chat completion failed after %d attempt(s): %w", attempt+1, err)
		}
		c.log.Warn("llm request failed, retrying", "attempt", attempt+1, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("llm: chat completion: %w (after: %w)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

func (c *Client) attempt(ctx context.Context, params openai.ChatCompletionNewParams) (*openai.ChatCompletion, error) {
	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	res, err := c.chat.New(actx, params)
	if err != nil && ctx.Err() == nil && actx.Err() != nil {
		return nil, &timeoutError{after: c.timeout, err: err}
	}
	return res, err
}

func (c *Client) reply(res *openai.ChatCompletion, took time.Duration) (string, error) {
	if len(res.Choices) == 0 {
		return "", errors.New("llm: the reply has no choices")
	}
	choice := res.Choices[0]
	c.log.Debug("llm completion", "id", res.ID, "took", took, "finish_reason", choice.FinishReason,
		"prompt_tokens", res.Usage.PromptTokens, "completion_tokens", res.Usage.CompletionTokens)
	if choice.Message.Content == "" {
		if choice.Message.Refusal != "" {
			return "", fmt.Errorf("llm: the model refused: %s", c.safeText(choice.Message.Refusal))
		}
		return "", fmt.Errorf("llm: empty reply (finish_reason %q)", choice.FinishReason)
	}
	if choice.FinishReason == "length" {
		return "", errors.New("llm: the reply was cut at the token limit")
	}
	return choice.Message.Content, nil
}

// timeoutError is an attempt that ran out of its own time (not the caller's).
type timeoutError struct {
	after time.Duration
	err   error
}

func (e *timeoutError) Error() string { return fmt.Sprintf("no reply within %s", e.after) }
func (e *timeoutError) Unwrap() error { return e.err }

// retryable says whether err deserves another attempt and after how long.
func (c *Client) retryable(ctx context.Context, err error, attempt int) (time.Duration, bool) {
	if ctx.Err() != nil {
		return 0, false
	}
	backoff := maxBackoff
	if b := c.backoff << min(attempt, 30); b > 0 && b < maxBackoff {
		backoff = b
	}
	if j := int64(backoff / 4); j > 0 {
		backoff -= time.Duration(rand.Int64N(j))
	}
	var te *timeoutError
	var ne net.Error
	if errors.As(err, &te) || (errors.As(err, &ne) && ne.Timeout()) {
		return backoff, true
	}
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		return 0, false
	}
	switch s := apiErr.StatusCode; {
	case s == http.StatusRequestTimeout, s == http.StatusTooManyRequests, s >= 500:
	default:
		return 0, false
	}
	if apiErr.Response == nil {
		return backoff, true
	}
	if d, ok := retryAfter(apiErr.Response.Header, time.Now()); ok {
		return d, d <= maxRetryAfter
	}
	return backoff, true
}

// retryAfter reads Retry-After-Ms (OpenAI's) or Retry-After (seconds or an
// HTTP date).
func retryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms >= 0 && ms < 1e12 {
			return time.Duration(ms * float64(time.Millisecond)), true
		}
	}
	v := h.Get("Retry-After")
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 {
		if s > 1e9 {
			return time.Duration(1<<63 - 1), true
		}
		return time.Duration(s * float64(time.Second)), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// scrub is what every outgoing text goes through: Options.Redact, then the
// API key itself.
func (c *Client) scrub(s string) string {
	if c.redact != nil {
		s = c.redact(s)
	}
	if len(c.apiKey) >= minKeyScrub {
		s = strings.ReplaceAll(s, c.apiKey, config.Redacted)
	}
	return s
}

// safeText is scrub for incoming text quoted in an error or a log.
func (c *Client) safeText(s string) string {
	s = c.scrub(s)
	if len(s) > maxErrorText {
		s = strings.ToValidUTF8(s[:maxErrorText], "") + "…"
	}
	return s
}

// safeError keeps err for errors.Is/As but replaces its message with one
// that names the API's own error message (which may quote the key: "Incorrect
// API key provided: sk-…") only after scrubbing.
func (c *Client) safeError(err error) error {
	msg := err.Error()
	var apiErr *openai.Error
	if errors.As(err, &apiErr) && apiErr.Message != "" {
		msg += ": " + apiErr.Message
	}
	return &scrubbedError{msg: c.safeText(msg), err: err}
}

type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }
