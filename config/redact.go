package config

import (
	"io"
	"net/url"
	"regexp"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// minScrubLen is the shortest secret value scrubbed from free text; shorter
// ones would mangle unrelated words. Structured places (DSN passwords,
// Secret fields, credential headers) are masked whatever their length.
const minScrubLen = 3

var kvPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// URLRedacted replaces a password inside a URL; unlike Redacted it is valid
// in a URL's user information, so a redacted DSN still parses.
const URLRedacted = "xxxxx"

// RedactURL masks the password of a URL or DSN ("postgres://u:pw@h/db" →
// "postgres://u:<redacted>@h/db"; "host=h password=pw" → "host=h
// password=<redacted>"). Other text is returned as it is.
func RedactURL(s string) string {
	if i := strings.Index(s, "://"); i > 0 {
		rest := s[i+3:]
		end := strings.IndexAny(rest, "/?#")
		if end < 0 {
			end = len(rest)
		}
		hostPart := rest[:end]
		if at := strings.LastIndex(hostPart, "@"); at >= 0 {
			user := hostPart[:at]
			if c := strings.IndexByte(user, ':'); c >= 0 && c < len(user)-1 {
				user = user[:c] + ":" + URLRedacted
			}
			s = s[:i+3] + user + hostPart[at:] + rest[end:]
		}
		if u, err := url.Parse(s); err == nil {
			q := u.Query()
			changed := false
			for k := range q {
				if secretName(k) {
					q.Set(k, URLRedacted)
					changed = true
				}
			}
			if changed {
				u.RawQuery = q.Encode()
				s = u.String()
			}
		}
		return s
	}
	return kvPassword.ReplaceAllString(s, "${1}"+Redacted)
}

// Redact removes every secret the configuration knows of from text: values
// of secret-looking environment variables, URL/DSN passwords and Secret
// fields. Use it on anything derived from the configuration before it is
// logged or shown.
func (c *Config) Redact(text string) string {
	if c == nil {
		return text
	}
	secrets := c.secretValues()
	if len(secrets) == 0 {
		return text
	}
	pairs := make([]string, 0, 2*len(secrets))
	for _, s := range secrets {
		pairs = append(pairs, s, Redacted)
	}
	return strings.NewReplacer(pairs...).Replace(text)
}

// secretValues lists the secrets to scrub, longest first so a secret that
// contains another is masked whole.
func (c *Config) secretValues() []string {
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		if len(s) >= minScrubLen && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, s := range c.secrets {
		add(s)
	}
	for _, s := range c.Services {
		for _, ep := range s.Endpoints {
			if u, err := url.Parse(ep); err == nil && u.User != nil {
				if pw, ok := u.User.Password(); ok {
					add(pw)
				}
			}
			for _, m := range kvPassword.FindAllStringSubmatch(ep, -1) {
				add(strings.Trim(m[2], "'"))
			}
		}
		for name, v := range s.Health.Headers {
			if credentialHeader(name) {
				add(v)
			}
		}
	}
	for _, ch := range c.Notify.Channels {
		add(ch.URL.Value())
		add(ch.Secret.Value())
		if ch.SMTP != nil {
			add(ch.SMTP.Password.Value())
		}
	}
	if c.Report.LLM != nil {
		add(c.Report.LLM.APIKey.Value())
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

func credentialHeader(name string) bool {
	n := strings.ToLower(name)
	return n == "authorization" || n == "proxy-authorization" || n == "cookie" || secretName(name)
}

// Redacted returns a copy of the configuration that is safe to show:
// endpoint passwords and credential headers are masked. Secret fields mask
// themselves when marshalled.
func (c *Config) Redacted() *Config {
	out := *c
	out.Services = make([]Service, len(c.Services))
	for i, s := range c.Services {
		eps := make(map[string]string, len(s.Endpoints))
		for r, ep := range s.Endpoints {
			eps[r] = RedactURL(ep)
		}
		s.Endpoints = eps
		if len(s.Health.Headers) > 0 {
			hs := make(map[string]string, len(s.Health.Headers))
			for k, v := range s.Health.Headers {
				if credentialHeader(k) {
					v = Redacted
				}
				hs[k] = v
			}
			s.Health.Headers = hs
		}
		out.Services[i] = s
	}
	return &out
}

// Print writes the configuration, defaults filled in and secrets masked, as
// YAML that Parse accepts again.
func (c *Config) Print(w io.Writer) error {
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c.Redacted()); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	// A literal "${" in a value is written "$${" so that the output parses
	// back to the same value instead of expanding a variable.
	out := strings.ReplaceAll(c.Redact(b.String()), "${", "$${")
	_, err := io.WriteString(w, out)
	return err
}
