package notify

import (
	"context"

	"github.com/lifeboat-dr/lifeboat/control"
)

// teamsSink posts an Adaptive Card to a Microsoft Teams incoming webhook
// (Workflows or the legacy connector): {"type": "message", "attachments":
// [{"contentType": "application/vnd.microsoft.card.adaptive", "content":
// {...}}]}.
type teamsSink struct{ poster }

// teamsMessage is the webhook's payload.
type teamsMessage struct {
	Type        string            `json:"type"`
	Attachments []teamsAttachment `json:"attachments"`
}

type teamsAttachment struct {
	ContentType string       `json:"contentType"`
	ContentURL  *string      `json:"contentUrl"`
	Content     adaptiveCard `json:"content"`
}

type adaptiveCard struct {
	Schema  string         `json:"$schema"`
	Type    string         `json:"type"`
	Version string         `json:"version"`
	Body    []adaptiveItem `json:"body"`
}

// adaptiveItem is a TextBlock or a FactSet.
type adaptiveItem struct {
	Type   string         `json:"type"`
	Text   string         `json:"text,omitempty"`
	Weight string         `json:"weight,omitempty"`
	Size   string         `json:"size,omitempty"`
	Color  string         `json:"color,omitempty"`
	Wrap   bool           `json:"wrap,omitempty"`
	Facts  []adaptiveFact `json:"facts,omitempty"`
}

type adaptiveFact struct {
	Title string `json:"title"`
	Value string `json:"value"`
}

// Send posts n once.
func (t *teamsSink) Send(ctx context.Context, n Notification) error {
	return t.send(ctx, "teams", teamsPayload(n))
}

// teamsPayload is a card with the title (coloured by severity), the text
// and the facts.
func teamsPayload(n Notification) teamsMessage {
	color := "Default"
	switch n.Severity {
	case control.SeverityCritical:
		color = "Attention"
	case control.SeverityWarning:
		color = "Warning"
	}
	body := []adaptiveItem{{Type: "TextBlock", Text: n.Title, Weight: "Bolder", Size: "Medium", Color: color, Wrap: true}}
	if n.Text != "" {
		body = append(body, adaptiveItem{Type: "TextBlock", Text: n.Text, Wrap: true})
	}
	set := adaptiveItem{Type: "FactSet"}
	for _, f := range facts(n) {
		set.Facts = append(set.Facts, adaptiveFact{Title: f.Name, Value: f.Value})
	}
	body = append(body, set)
	return teamsMessage{Type: "message", Attachments: []teamsAttachment{{
		ContentType: "application/vnd.microsoft.card.adaptive",
		Content: adaptiveCard{Schema: "http://adaptivecards.io/schemas/adaptive-card.json", Type: "AdaptiveCard",
			Version: "1.4", Body: body},
	}}}
}
