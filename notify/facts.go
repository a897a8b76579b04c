package notify

import "time"

// fact is one labelled detail of a notification, shown by the chat and
// email sinks.
type fact struct{ Name, Value string }

// facts lists what a reader needs besides the text: severity, kind and the
// event's run, step, service, region, node and time, those it has.
func facts(n Notification) []fact {
	e := n.Event
	out := []fact{{"Severity", n.Severity}, {"Kind", n.Kind}}
	for _, f := range []fact{{"Run", e.Run}, {"Step", e.Step}, {"Service", e.Service}, {"Region", e.Region}, {"Node", e.Node}} {
		if f.Value != "" {
			out = append(out, f)
		}
	}
	if !e.Time.IsZero() {
		out = append(out, fact{"Time", e.Time.UTC().Format(time.RFC3339)})
	}
	return out
}
