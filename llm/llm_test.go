package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

func TestMain(m *testing.M) { testenv.MainWithLeakCheck(m) }

const (
	testKey    = "sk-test-key-8f3a91c2"
	testSecret = "hunter2-db-pass-5521"
	// oddSecret is changed by JSON encoding ("\"", "\\", "\u003c"): only
	// redaction before encoding can find it.
	oddSecret = `pa"ss\<w0rd>-77`
)

// seen is one request as the server received it.
type seen struct {
	method, path string
	apiVersion   string
	auth, apiKey string
	body         []byte
	req          chatRequest
}

// chatRequest is the part of the chat-completions request the tests read.
type chatRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
	ResponseFormat *struct {
		Type string `json:"type"`
	} `json:"response_format"`
}

// fakeLLM is a chat-completions server: it records every request and
// answers the n-th with handlers[n] (the last one repeats).
type fakeLLM struct {
	t        *testing.T
	mu       sync.Mutex
	reqs     []seen
	handlers []http.HandlerFunc
}

func (f *fakeLLM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		f.t.Errorf("reading the request: %v", err)
	}
	s := seen{method: r.Method, path: r.URL.Path, apiVersion: r.URL.Query().Get("api-version"),
		auth: r.Header.Get("Authorization"), apiKey: r.Header.Get("api-key"), body: body}
	if err := json.Unmarshal(body, &s.req); err != nil {
		f.t.Errorf("request body is not chat-completions JSON: %v: %s", err, body)
	}
	f.mu.Lock()
	n := len(f.reqs)
	f.reqs = append(f.reqs, s)
	h := f.handlers[min(n, len(f.handlers)-1)]
	f.mu.Unlock()
	h(w, r)
}

func (f *fakeLLM) requests() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

// onlyNarration checks that the server saw one narration request, a POST
// to path asking for a JSON object, and returns it.
func (f *fakeLLM) onlyNarration(t *testing.T, path string) seen {
	t.Helper()
	reqs := f.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.method != http.MethodPost || r.path != path {
		t.Errorf("request %s %s, want POST %s", r.method, r.path, path)
	}
	if r.req.ResponseFormat == nil || r.req.ResponseFormat.Type != "json_object" {
		t.Errorf("response_format = %+v, want json_object", r.req.ResponseFormat)
	}
	return r
}

// reply answers with a chat.completion whose message is content.
func reply(content string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id":      "chatcmpl-test-1",
			"object":  "chat.completion",
			"created": 1767225600,
			"model":   "gpt-test",
			"choices": []any{map[string]any{
				"index":         0,
				"message":       map[string]any{"role": "assistant", "content": content, "refusal": nil},
				"logprobs":      nil,
				"finish_reason": "stop",
			}},
			"usage": map[string]any{"prompt_tokens": 321, "completion_tokens": 123, "total_tokens": 444},
		})
	}
}

// apiError answers with an OpenAI error body.
func apiError(status int, header map[string]string, message string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
			"message": message, "type": "server_error", "param": nil, "code": nil}})
	}
}

// hang answers after the client gave up (or 10s).
func hang(w http.ResponseWriter, r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(10 * time.Second):
	}
}

func newServer(t *testing.T, tls bool, handlers ...http.HandlerFunc) (*fakeLLM, *httptest.Server) {
	t.Helper()
	f := &fakeLLM{t: t, handlers: handlers}
	var srv *httptest.Server
	if tls {
		srv = httptest.NewTLSServer(f)
	} else {
		srv = httptest.NewServer(f)
	}
	t.Cleanup(srv.Close)
	return f, srv
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// openAIClient is a client of srv through the openai provider, with short
// back-off.
func openAIClient(t *testing.T, srv *httptest.Server, mod func(*config.LLM)) *Client {
	t.Helper()
	cfg := &config.LLM{Provider: "openai", URL: srv.URL + "/v1", Model: "gpt-test", APIKey: testKey,
		Timeout: config.Duration(5 * time.Second), Retries: 2}
	if mod != nil {
		mod(cfg)
	}
	c, err := New(cfg, Options{
		Redact: strings.NewReplacer(testSecret, config.Redacted, oddSecret, config.Redacted).Replace,
		Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	c.backoff = time.Millisecond
	return c
}

// drillFacts is what a report could give: figures, ids, and a secret that
// must not leave (a DSN pasted in a note).
type drillFacts struct {
	Drill          string  `json:"drill"`
	From           string  `json:"from"`
	To             string  `json:"to"`
	RTOSeconds     float64 `json:"rto_seconds"`
	MeasuredRTO    float64 `json:"measured_rto_seconds"`
	LagSeconds     float64 `json:"lag_seconds"`
	AckedWrites    int     `json:"acked_writes"`
	LostWrites     int     `json:"lost_writes"`
	Started        string  `json:"started"`
	Note           string  `json:"note"`
	LeakedKeyField string  `json:"leaked"`
}

func sampleFacts() drillFacts {
	return drillFacts{
		Drill: "drill-20260115-3", From: "us-east-1", To: "eu-west-2",
		RTOSeconds: 900, MeasuredRTO: 37.46, LagSeconds: 0.274, AckedWrites: 18231, LostWrites: 0,
		Started:        "2026-01-15T09:30:00Z",
		Note:           "primary postgres://app:" + testSecret + "@db.us-east-1/app",
		LeakedKeyField: "Bearer " + testKey,
	}
}

const faithfulReply = `{"summary": "Drill drill-20260115-3 moved service from us-east-1 to eu-west-2 in 37.5 s, well within the 900 s RTO.",
"impact": "No write was lost (0 of 18,231 acknowledged writes); replication lag was 274 ms at the switch.",
"next_steps": "1. Keep the drill schedule.\n2. Review the runbook of eu-west-2."}`

func TestNarrateOpenAI(t *testing.T) {
	f, srv := newServer(t, false, reply(faithfulReply))
	c := openAIClient(t, srv, nil)

	n, err := c.Narrate(t.Context(), sampleFacts())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(n.Summary, "37.5 s") || !strings.Contains(n.Impact, "274 ms") || !strings.HasPrefix(n.NextSteps, "1. Keep") {
		t.Errorf("narrative = %+v", n)
	}
	r := f.onlyNarration(t, "/v1/chat/completions")
	if r.auth != "Bearer "+testKey {
		t.Errorf("Authorization = %q", r.auth)
	}
	if r.req.Model != "gpt-test" {
		t.Errorf("model = %q", r.req.Model)
	}
	if len(r.req.Messages) != 2 || r.req.Messages[0].Role != "system" || r.req.Messages[1].Role != "user" {
		t.Fatalf("messages = %+v", r.req.Messages)
	}
	if sys := r.req.Messages[0].Content; !strings.Contains(sys, "ONLY figures present in the facts") || !strings.Contains(sys, `"next_steps"`) {
		t.Errorf("system prompt = %q", sys)
	}
	user := r.req.Messages[1].Content
	for _, want := range []string{`"measured_rto_seconds": 37.46`, `"drill": "drill-20260115-3"`, "postgres://app:<redacted>@"} {
		if !strings.Contains(user, want) {
			t.Errorf("user message lacks %q:\n%s", want, user)
		}
	}
	// The struct's field order is kept.
	if strings.Index(user, `"drill"`) > strings.Index(user, `"lost_writes"`) {
		t.Errorf("facts reordered:\n%s", user)
	}
}

func TestNarrateAzure(t *testing.T) {
	f, srv := newServer(t, true, reply(faithfulReply))
	c, err := New(&config.LLM{Provider: "azure", URL: srv.URL, Deployment: "dr-writer", APIVersion: "2024-10-21",
		APIKey: testKey, Timeout: config.Duration(5 * time.Second), Retries: 0},
		Options{HTTPClient: srv.Client(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Narrate(t.Context(), sampleFacts()); err != nil {
		t.Fatal(err)
	}
	r := f.onlyNarration(t, "/openai/deployments/dr-writer/chat/completions")
	if r.apiVersion != "2024-10-21" {
		t.Errorf("api-version = %q", r.apiVersion)
	}
	if r.apiKey != testKey {
		t.Errorf("api-key = %q", r.apiKey)
	}
	if r.auth != "" {
		t.Errorf("Authorization = %q, want none on Azure", r.auth)
	}
	if r.req.Model != "dr-writer" {
		t.Errorf("model = %q, want the deployment", r.req.Model)
	}
}

func TestCompletePlain(t *testing.T) {
	f, srv := newServer(t, false, reply("pong"))
	c := openAIClient(t, srv, func(l *config.LLM) { l.APIKey = "" }) // Ollama: no key
	got, err := c.Complete(t.Context(), "Answer pong.", "ping "+testSecret)
	if err != nil || got != "pong" {
		t.Fatalf("Complete = %q, %v", got, err)
	}
	r := f.requests()[0]
	if r.req.ResponseFormat != nil {
		t.Errorf("response_format = %+v, want none", r.req.ResponseFormat)
	}
	if r.auth != "" {
		t.Errorf("Authorization = %q without a key", r.auth)
	}
	if got := r.req.Messages[1].Content; got != "ping "+config.Redacted {
		t.Errorf("user message = %q, want it redacted", got)
	}
}

func TestRetriesAfter500And429(t *testing.T) {
	f, srv := newServer(t, false,
		apiError(http.StatusInternalServerError, nil, "boom"),
		apiError(http.StatusTooManyRequests, map[string]string{"Retry-After": "1"}, "slow down"),
		reply(faithfulReply))
	c := openAIClient(t, srv, nil)
	start := time.Now()
	if _, err := c.Narrate(t.Context(), sampleFacts()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Errorf("took %s: the 429's Retry-After of 1s was not respected", took)
	}
	reqs := f.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	if !slices.Equal(reqs[0].body, reqs[2].body) {
		t.Error("a retry sent another body")
	}
}

func TestRetryLimits(t *testing.T) {
	tests := []struct {
		name     string
		handler  http.HandlerFunc
		retries  int
		requests int
		errHas   string
	}{
		{"5xx until retries run out", apiError(http.StatusServiceUnavailable, nil, "down"), 2, 3, "503"},
		{"no retry when told to", apiError(http.StatusBadGateway, nil, "down"), 0, 1, "502"},
		{"400 is not retried", apiError(http.StatusBadRequest, nil, "bad model"), 2, 1, "bad model"},
		{"long Retry-After is not waited for", apiError(http.StatusTooManyRequests, map[string]string{"Retry-After": "3600"}, "quota"), 2, 1, "429"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, srv := newServer(t, false, tt.handler)
			c := openAIClient(t, srv, func(l *config.LLM) { l.Retries = tt.retries })
			start := time.Now()
			_, err := c.Complete(t.Context(), "s", "u")
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("err = %v, want one containing %q", err, tt.errHas)
			}
			if n := len(f.requests()); n != tt.requests {
				t.Errorf("%d requests, want %d", n, tt.requests)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("took %s", took)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	f, srv := newServer(t, false, hang)
	c := openAIClient(t, srv, func(l *config.LLM) {
		l.Timeout = config.Duration(150 * time.Millisecond)
		l.Retries = 1
	})
	start := time.Now()
	_, err := c.Narrate(t.Context(), sampleFacts())
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "no reply within 150ms") {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v does not wrap context.DeadlineExceeded", err)
	}
	if n := len(f.requests()); n != 2 {
		t.Errorf("%d requests, want 2 (the timeout is retried once)", n)
	}
	if took < 300*time.Millisecond || took > 3*time.Second {
		t.Errorf("took %s, want two attempts of 150ms", took)
	}
}

func TestCallerContextEndsBackoff(t *testing.T) {
	_, srv := newServer(t, false, apiError(http.StatusInternalServerError, nil, "boom"))
	c := openAIClient(t, srv, func(l *config.LLM) { l.Retries = 5 })
	c.backoff = time.Minute
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Complete(ctx, "s", "u")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the caller's deadline", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %s: the back-off ignored the caller's context", took)
	}
}

func TestCheckedRejectsInventedNumber(t *testing.T) {
	invented := `{"summary": "Failover from us-east-1 to eu-west-2 took 42 s.",
"impact": "About 99.9% of 18,231 writes were safe.",
"next_steps": "1. Cut the RTO to 600 s."}`
	_, srv := newServer(t, false, reply(invented))
	c := openAIClient(t, srv, nil)
	n, rejected, err := c.Checked(t.Context(), sampleFacts())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"42", "99.9", "600"}; !slices.Equal(rejected, want) {
		t.Errorf("rejected = %q, want %q", rejected, want)
	}
	if n.Summary == "" {
		t.Error("the narrative is not returned with its rejected numbers")
	}
}

func TestCheckedAcceptsFaithfulModel(t *testing.T) {
	fenced := "```json\n" + faithfulReply + "\n```"
	_, srv := newServer(t, false, reply(fenced))
	c := openAIClient(t, srv, nil)
	n, rejected, err := c.Checked(t.Context(), sampleFacts())
	if err != nil {
		t.Fatal(err)
	}
	if len(rejected) != 0 {
		t.Errorf("rejected = %q, want none", rejected)
	}
	if !strings.HasPrefix(n.Summary, "Drill drill-20260115-3") {
		t.Errorf("summary = %q", n.Summary)
	}
}

func TestSecretsNeverSent(t *testing.T) {
	f, srv := newServer(t, false,
		apiError(http.StatusInternalServerError, nil, "boom"),
		reply(faithfulReply))
	c := openAIClient(t, srv, nil)
	facts := sampleFacts()
	// Also as a map key and inside JSON escapes the encoder would add.
	raw, _ := json.Marshal(map[string]any{"facts": facts, testSecret: "<" + testSecret + ">", "k": testKey + `"`, "odd": oddSecret})
	if _, _, err := c.Checked(t.Context(), json.RawMessage(raw)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Complete(t.Context(), "system "+testKey, "user "+testSecret); err != nil {
		t.Fatal(err)
	}
	reqs := f.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	for i, r := range reqs {
		texts := []string{string(r.body)}
		for _, m := range r.req.Messages {
			texts = append(texts, m.Content)
			var facts any // the facts, decoded once more
			if _, js, ok := strings.Cut(m.Content, "\n"); ok && json.Unmarshal([]byte(js), &facts) == nil {
				b, _ := json.Marshal(facts)
				texts = append(texts, string(b), fmt.Sprint(facts))
			}
		}
		for _, text := range texts {
			for _, secret := range []string{testKey, testSecret, oddSecret} {
				if strings.Contains(text, secret) {
					t.Errorf("request %d holds %q:\n%s", i, secret, text)
				}
			}
		}
		if !strings.Contains(string(r.body), config.Redacted) {
			t.Errorf("request %d's body shows no redaction:\n%s", i, r.body)
		}
	}
}

func TestErrorsNeverHoldTheKey(t *testing.T) {
	_, srv := newServer(t, false,
		apiError(http.StatusUnauthorized, nil, "Incorrect API key provided: "+testKey+". You can find your API key at …"))
	c := openAIClient(t, srv, nil)
	_, err := c.Complete(t.Context(), "s", "u")
	if err == nil {
		t.Fatal("no error for a 401")
	}
	if !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "Incorrect API key provided: <redacted>") {
		t.Errorf("err = %v, want the status and the API's message", err)
	}
	for _, form := range []string{err.Error(), fmtAll(err)} {
		if strings.Contains(form, testKey) {
			t.Errorf("the error holds the key: %s", form)
		}
	}
}

// fmtAll formats err with the verbs a log line could use.
func fmtAll(err error) string {
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Error("x", "err", err)
	b.WriteString(err.Error())
	return b.String()
}

func TestBadReplies(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		errHas  string
	}{
		{"not JSON", reply("Here is your report: all fine."), "not a JSON object"},
		{"a part missing", reply(`{"summary": "s", "impact": ""}`), "lacks impact, next_steps"},
		{"a part of the wrong type", reply(`{"summary": 1, "impact": "i", "next_steps": "n"}`), "summary"},
		{"empty content", reply(""), "empty reply"},
		{"no choices", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[]}`)
		}, "no choices"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, srv := newServer(t, false, tt.handler)
			c := openAIClient(t, srv, nil)
			_, err := c.Narrate(t.Context(), sampleFacts())
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("err = %v, want one containing %q", err, tt.errHas)
			}
		})
	}
}

func TestParseNarrative(t *testing.T) {
	want := Narrative{Summary: "S.", Impact: "I.", NextSteps: "1. A.\n2. B."}
	for _, in := range []string{
		`{"summary": "S.", "impact": "I.", "next_steps": "1. A.\n2. B."}`,
		"```json\n{\"summary\": \"S.\", \"impact\": \"I.\", \"next_steps\": \"1. A.\\n2. B.\"}\n```",
		"```\n{\"summary\": \"S.\", \"impact\": \"I.\", \"next_steps\": [\"A.\", \"B.\"]}\n```",
		`Sure! {"summary": " S. ", "impact": "I.", "next_steps": ["1. A.", "", "2) B."]} Hope this helps.`,
	} {
		got, err := parseNarrative(in)
		if err != nil || got != want {
			t.Errorf("parseNarrative(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}

func TestNewRejects(t *testing.T) {
	ok := config.LLM{Provider: "azure", URL: "https://x.openai.azure.com", Deployment: "d", APIVersion: "2024-10-21", APIKey: testKey}
	tests := []struct {
		name   string
		mod    func(*config.LLM)
		errHas string
	}{
		{"provider", func(l *config.LLM) { l.Provider = "anthropic" }, "provider"},
		{"azure deployment", func(l *config.LLM) { l.Deployment = "" }, "deployment"},
		{"azure api version", func(l *config.LLM) { l.APIVersion = "" }, "api_version"},
		{"azure key", func(l *config.LLM) { l.APIKey = "" }, "api_key"},
		{"azure url", func(l *config.LLM) { l.URL = "" }, "url"},
		{"openai model", func(l *config.LLM) { l.Provider = "openai" }, "model"},
		{"url scheme", func(l *config.LLM) { l.URL = "ftp://user:" + testKey + "@host/" }, "url"},
		{"key in the url", func(l *config.LLM) { l.URL = "gopher://host/?k=" + testKey }, "url"},
		{"azure over http", func(l *config.LLM) { l.URL = "http://x.openai.azure.com" }, "azure needs https"},
		{"retries", func(l *config.LLM) { l.Retries = -1 }, "retries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.mod(&cfg)
			_, err := New(&cfg, Options{})
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("err = %v, want one about %s", err, tt.errHas)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Errorf("the error holds the key: %v", err)
			}
		})
	}
	if _, err := New(&ok, Options{}); err != nil {
		t.Errorf("valid azure config: %v", err)
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Error("nil config accepted")
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 15, 9, 30, 0, 0, time.UTC)
	tests := []struct {
		header map[string]string
		want   time.Duration
		ok     bool
	}{
		{map[string]string{"Retry-After": "2"}, 2 * time.Second, true},
		{map[string]string{"Retry-After": "0.5"}, 500 * time.Millisecond, true},
		{map[string]string{"Retry-After-Ms": "250", "Retry-After": "9"}, 250 * time.Millisecond, true},
		{map[string]string{"Retry-After": now.Add(3 * time.Second).Format(http.TimeFormat)}, 3 * time.Second, true},
		{map[string]string{"Retry-After": "soon"}, 0, false},
		{nil, 0, false},
	}
	for _, tt := range tests {
		h := http.Header{}
		for k, v := range tt.header {
			h.Set(k, v)
		}
		got, ok := retryAfter(h, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("retryAfter(%v) = %s, %v; want %s, %v", tt.header, got, ok, tt.want, tt.ok)
		}
	}
}
