package notify

import (
	"context"
	"fmt"
	"strings"
)

// slackSink posts to a Slack incoming webhook: {"text": ..., "blocks": [...]},
// the text being the fallback shown in notifications.
type slackSink struct{ poster }

// Slack's limits on a header's and a section's text.
const (
	slackHeaderMax  = 150
	slackSectionMax = 3000
)

// slackMessage is the incoming webhook's payload.
type slackMessage struct {
	Text   string       `json:"text"`
	Blocks []slackBlock `json:"blocks"`
}

type slackBlock struct {
	Type     string      `json:"type"`
	Text     *slackText  `json:"text,omitempty"`
	Elements []slackText `json:"elements,omitempty"`
}

type slackText struct {
	Type string `json:"type"` // plain_text or mrkdwn
	Text string `json:"text"`
}

// Send posts n once.
func (s *slackSink) Send(ctx context.Context, n Notification) error {
	return s.send(ctx, "slack", slackPayload(n))
}

// slackPayload is a header (the title), a section (the text) and a
// context line with the facts.
func slackPayload(n Notification) slackMessage {
	var ctxLine []string
	for _, f := range facts(n) {
		ctxLine = append(ctxLine, fmt.Sprintf("*%s:* %s", f.Name, slackEscape(f.Value)))
	}
	blocks := []slackBlock{{Type: "header", Text: &slackText{Type: "plain_text", Text: oneLine(n.Title, slackHeaderMax)}}}
	if n.Text != "" {
		text := slackEscape(n.Text)
		if r := []rune(text); len(r) > slackSectionMax {
			text = string(r[:slackSectionMax-1]) + "…"
		}
		blocks = append(blocks, slackBlock{Type: "section", Text: &slackText{Type: "mrkdwn", Text: text}})
	}
	blocks = append(blocks, slackBlock{Type: "context", Elements: []slackText{{Type: "mrkdwn", Text: strings.Join(ctxLine, " · ")}}})
	return slackMessage{Text: fmt.Sprintf("[%s] %s", strings.ToUpper(n.Severity), n.Title), Blocks: blocks}
}

// slackEscape escapes the three characters mrkdwn gives a meaning to.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
