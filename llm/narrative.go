package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// Narrative is the prose of a DR report written by the model.
type Narrative struct {
	// Summary is the executive summary.
	Summary string `json:"summary"`
	// Impact is the impact analysis.
	Impact string `json:"impact"`
	// NextSteps are the recommended next steps, one per line ("1. …").
	NextSteps string `json:"next_steps"`
}

// systemPrompt asks for the three parts as one JSON object. The word JSON
// must appear in the messages for response_format json_object.
const systemPrompt = `You write the narrative parts of a disaster-recovery (DR) report for executives and on-call engineers.
The user message holds the facts of the report as a JSON document, measured by Lifeboat, a multi-region disaster-recovery control plane (regions, services, failovers, drills, replication lag against the RPO, downtime against the RTO).

Write:
- "summary": an executive summary in 2 to 4 sentences: what happened or was tested, and the outcome.
- "impact": an impact analysis: which regions, services and users were affected, for how long, and what data was at risk, as far as the facts tell.
- "next_steps": recommended next steps, a numbered list with one step per line.

Rules:
- Use ONLY figures present in the facts, written as they are there or rounded. Never compute new figures (no sums, differences, ratios, percentages or unit conversions other than milliseconds to seconds), never estimate, never invent numbers, dates, times, names or causes.
- When the facts do not say something, say it is not known; do not guess.
- "<redacted>" marks a removed secret: do not mention or guess it.
- Plain text in each value, no Markdown headings.

Answer with one JSON object and nothing else: {"summary": "...", "impact": "...", "next_steps": "..."}`

const userPrompt = "Facts of the DR report (JSON):\n"

// Narrate asks the model for the narrative of a report. facts is any value
// encoding/json marshals (a json.RawMessage or []byte is taken as JSON
// already); every string in it, object keys included, goes through
// Options.Redact before it is sent, then the whole message does. The reply
// must be the JSON object {"summary","impact","next_steps"} (requested with
// response_format json_object); a reply in ```json fences, or with text
// around the object, is accepted, and so is next_steps as an array of
// strings (joined as a numbered list). Each part must be non-empty.
//
// Narrate does not check the figures: see Checked.
func (c *Client) Narrate(ctx context.Context, facts any) (Narrative, error) {
	n, _, err := c.narrate(ctx, facts)
	return n, err
}

// Checked is Narrate followed by CheckNumbers over the three parts, against
// the facts exactly as the model received them (redacted). rejected lists
// the numbers the narrative cites that the facts do not hold, each once, in
// the order of Summary, Impact, NextSteps. The narrative is fit for a report
// only when err is nil and rejected is empty; otherwise the caller uses its
// template text (and says why).
func (c *Client) Checked(ctx context.Context, facts any) (n Narrative, rejected []string, err error) {
	n, sent, err := c.narrate(ctx, facts)
	if err != nil {
		return Narrative{}, nil, err
	}
	seen := map[string]bool{}
	for _, text := range []string{n.Summary, n.Impact, n.NextSteps} {
		for _, tok := range CheckNumbers(text, sent) {
			if !seen[tok] {
				seen[tok] = true
				rejected = append(rejected, tok)
			}
		}
	}
	if len(rejected) > 0 {
		c.log.Warn("llm narrative cites numbers absent from the facts", "numbers", rejected)
	}
	return n, rejected, nil
}

// narrate returns the narrative and the facts as sent.
func (c *Client) narrate(ctx context.Context, facts any) (Narrative, []byte, error) {
	sent, err := c.factsJSON(facts)
	if err != nil {
		return Narrative{}, nil, err
	}
	reply, err := c.complete(ctx, systemPrompt, userPrompt+string(sent), true)
	if err != nil {
		return Narrative{}, nil, err
	}
	n, err := parseNarrative(reply)
	if err != nil {
		return Narrative{}, nil, err
	}
	return n, sent, nil
}

// factsJSON encodes facts, redacts every string in place (so that escaping
// cannot hide a secret from Redact, and a replacement cannot break the
// JSON), keeps the order of the keys, indents, then scrubs the whole text.
func (c *Client) factsJSON(facts any) ([]byte, error) {
	var raw []byte
	switch v := facts.(type) {
	case json.RawMessage:
		raw = v
	case []byte:
		raw = v
	default:
		b, err := json.Marshal(facts)
		if err != nil {
			return nil, fmt.Errorf("llm: facts: %w", err)
		}
		raw = b
	}
	compact, err := mapStrings(raw, c.scrub)
	if err != nil {
		return nil, fmt.Errorf("llm: facts are not JSON: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, compact, "", "  "); err != nil {
		return nil, fmt.Errorf("llm: facts: %w", err)
	}
	return []byte(c.scrub(out.String())), nil
}

// mapStrings re-encodes the first JSON value of data compactly, passing
// every string (keys included) through f and keeping everything else, key
// order included, as it is.
func mapStrings(data []byte, f func(string) string) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	type frame struct {
		object bool
		n      int // values (and keys) written so far
	}
	var (
		out   bytes.Buffer
		stack []frame
	)
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil, io.ErrUnexpectedEOF
		}
		if err != nil {
			return nil, err
		}
		if d, ok := tok.(json.Delim); !ok || (d != '}' && d != ']') {
			if len(stack) > 0 {
				top := &stack[len(stack)-1]
				switch {
				case top.object && top.n%2 == 1:
					out.WriteByte(':')
				case top.n > 0:
					out.WriteByte(',')
				}
				top.n++
			}
		}
		switch v := tok.(type) {
		case json.Delim:
			out.WriteByte(byte(v))
			if v == '{' || v == '[' {
				stack = append(stack, frame{object: v == '{'})
			} else {
				stack = stack[:len(stack)-1]
			}
		case string:
			b, err := marshalString(f(v))
			if err != nil {
				return nil, err
			}
			out.Write(b)
		case json.Number:
			out.WriteString(v.String())
		case bool:
			out.WriteString(strconv.FormatBool(v))
		case nil:
			out.WriteString("null")
		}
		if len(stack) == 0 {
			return out.Bytes(), nil
		}
	}
}

// marshalString encodes s without HTML escaping, so "<redacted>" reads as
// it is.
func marshalString(s string) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// parseNarrative reads the model's reply.
func parseNarrative(reply string) (Narrative, error) {
	s := strings.TrimSpace(reply)
	if rest, ok := strings.CutPrefix(s, "```"); ok {
		// ```json\n{…}\n```
		if i := strings.IndexByte(rest, '\n'); i >= 0 {
			rest = rest[i+1:]
		}
		if i := strings.LastIndex(rest, "```"); i >= 0 {
			rest = rest[:i]
		}
		s = strings.TrimSpace(rest)
	}
	if i, j := strings.IndexByte(s, '{'), strings.LastIndexByte(s, '}'); i > 0 && j > i {
		s = s[i : j+1]
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &fields); err != nil {
		return Narrative{}, fmt.Errorf("llm: the reply is not a JSON object: %w", err)
	}
	var n Narrative
	var missing []string
	for _, p := range []struct {
		key string
		dst *string
	}{{"summary", &n.Summary}, {"impact", &n.Impact}, {"next_steps", &n.NextSteps}} {
		text, err := part(fields[p.key])
		if err != nil {
			return Narrative{}, fmt.Errorf("llm: the reply's %s: %w", p.key, err)
		}
		if text == "" {
			missing = append(missing, p.key)
		}
		*p.dst = text
	}
	if len(missing) > 0 {
		return Narrative{}, fmt.Errorf("llm: the reply lacks %s", strings.Join(missing, ", "))
	}
	return n, nil
}

// listMarker is a marker a list item may already carry ("1. ", "2) ").
var listMarker = regexp.MustCompile(`^\s*\d{1,3}[.)]\s+`)

// part reads one part of the reply: a string, or a list of strings made a
// numbered list. Absent or null is "".
func part(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return strings.TrimSpace(s), nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return "", errors.New("neither a string nor a list of strings")
	}
	var b strings.Builder
	i := 0
	for _, item := range list {
		if item = strings.TrimSpace(listMarker.ReplaceAllString(item, "")); item == "" {
			continue
		}
		i++
		if i > 1 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%d. %s", i, item)
	}
	return b.String(), nil
}
