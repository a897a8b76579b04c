package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
)

// Webhook headers.
const (
	// HeaderSignature is "sha256=" + the hex HMAC-SHA256 of the exact body,
	// keyed with the channel's secret (only when it has one).
	HeaderSignature = "X-Lifeboat-Signature"
	// HeaderEvent is the notification's kind.
	HeaderEvent = "X-Lifeboat-Event"
	// HeaderDelivery is the notification's ID, the same for every attempt.
	HeaderDelivery = "X-Lifeboat-Delivery"
)

// webhookSink posts the notification as JSON (the Notification, its event
// included) to a URL, signed when the channel has a secret.
type webhookSink struct {
	poster
	secret []byte
}

// Send posts n once.
func (w *webhookSink) Send(ctx context.Context, n Notification) error {
	ensureID(&n)
	body, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("webhook: encode: %w", err)
	}
	h := http.Header{}
	h.Set(HeaderEvent, n.Kind)
	h.Set(HeaderDelivery, n.ID)
	if len(w.secret) > 0 {
		h.Set(HeaderSignature, Sign(w.secret, body))
	}
	if err := w.post(ctx, body, h); err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	return nil
}

// Sign returns the X-Lifeboat-Signature of body: "sha256=" followed by the
// hex HMAC-SHA256 of body keyed with secret. A receiver recomputes it over
// the body it got and compares with hmac.Equal.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}
