package report

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/runbook"
)

// Report is a run's DR report: the facts and the narrative written from
// them.
type Report struct {
	GeneratedAt time.Time `json:"generated_at"`
	Narrative   Narrative `json:"narrative"`
	Facts       Facts     `json:"facts"`
}

// Narrative is the prose of the report: the executive summary, the impact
// analysis and the next steps.
type Narrative struct {
	Summary   string `json:"summary"`
	Impact    string `json:"impact"`
	NextSteps string `json:"next_steps"`
	// Source is "template" or "llm".
	Source string `json:"source"`
	// Note says why a model's text was not used, when it was not.
	Note string `json:"note,omitempty"`
	// Rejected lists the figures a model wrote that the facts do not hold.
	Rejected []string `json:"rejected,omitempty"`
}

// Narrator writes the prose from the facts (a language model). Every
// number in its text must be among the facts: it returns the figures it
// could not justify in rejected, and the report then keeps the template.
type Narrator interface {
	Narrate(ctx context.Context, facts []byte) (summary, impact, nextSteps string, rejected []string, err error)
}

// New makes a report from facts: the template narrative, or the
// narrator's when it gives one whose figures all check out.
func New(ctx context.Context, f Facts, n Narrator, now time.Time) *Report {
	rep := &Report{GeneratedAt: now.UTC(), Facts: f, Narrative: Template(f)}
	if n == nil {
		return rep
	}
	b, err := json.Marshal(f)
	if err != nil {
		rep.Narrative.Note = "the facts could not be encoded for the language model: " + err.Error()
		return rep
	}
	summary, impact, next, rejected, err := n.Narrate(ctx, b)
	switch {
	case err != nil:
		rep.Narrative.Note = "the language model failed (" + err.Error() + "): the template text is used"
	case len(rejected) > 0:
		rep.Narrative.Rejected = rejected
		rep.Narrative.Note = fmt.Sprintf("the language model's text was rejected: it states figures the facts do not hold (%s); the template text is used", strings.Join(rejected, ", "))
	case strings.TrimSpace(summary) == "":
		rep.Narrative.Note = "the language model returned no summary: the template text is used"
	default:
		rep.Narrative = Narrative{Summary: summary, Impact: impact, NextSteps: next, Source: "llm"}
	}
	return rep
}

// Template writes the narrative from the facts alone.
func Template(f Facts) Narrative {
	r := f.Run
	var b strings.Builder
	what := fmt.Sprintf("%s from %s to %s", r.Kind, r.From, r.To)
	if r.Drill != "" {
		what = fmt.Sprintf("%s drill (%s)", r.Drill, what)
	}
	fmt.Fprintf(&b, "The %s %s", what, r.Status)
	if r.Seconds != nil {
		fmt.Fprintf(&b, " in %.3f s", *r.Seconds)
	}
	if r.Cite != 0 {
		fmt.Fprintf(&b, " [#%d]", r.Cite)
	}
	b.WriteString(".")
	switch r.Trigger {
	case runbook.TriggerAuto:
		fmt.Fprintf(&b, " It was raised automatically by the policy: %s.", r.Reason)
	default:
		if r.By != "" {
			fmt.Fprintf(&b, " It was started by %s", r.By)
			if r.Reason != "" {
				fmt.Fprintf(&b, ": %s", r.Reason)
			}
			b.WriteString(".")
		}
	}
	if r.Epoch != 0 {
		fmt.Fprintf(&b, " %s became active at epoch %d.", r.To, r.Epoch)
	}
	o := f.Objectives
	if o.RTOAchievedSeconds != nil {
		fmt.Fprintf(&b, " Recovery took %.3f s against an RTO of %.0f s (%s)", *o.RTOAchievedSeconds, o.RTOPolicySeconds, metWord(o.RTOMet))
		if o.RPOAchievedSeconds != nil {
			fmt.Fprintf(&b, "; data loss %.3f s against an RPO of %.0f s (%s)", *o.RPOAchievedSeconds, o.RPOPolicySeconds, metWord(o.RPOMet))
		}
		b.WriteString(".")
	}
	fmt.Fprintf(&b, " Data integrity: %s.", f.Integrity.Assessment)
	summary := b.String()

	b.Reset()
	im := f.Impact
	if im.DowntimeSeconds != nil {
		verb := "unavailable"
		if im.Held {
			verb = "held (delayed, not failed)"
		}
		fmt.Fprintf(&b, "Writes were %s for %.3f s, from %s to %s (%s).", verb, *im.DowntimeSeconds,
			im.DowntimeStart.UTC().Format(time.RFC3339Nano), im.DowntimeEnd.UTC().Format(time.RFC3339Nano), im.Basis)
	} else {
		fmt.Fprintf(&b, "No downtime window was recorded: %s.", im.Basis)
	}
	if im.FailedRequests != nil {
		fmt.Fprintf(&b, " Clients saw %d failed requests", *im.FailedRequests)
		if im.ErrorWindowSeconds != nil {
			fmt.Fprintf(&b, " within %.3f s", *im.ErrorWindowSeconds)
		}
		b.WriteString(".")
	} else {
		b.WriteString(" Failed client requests are measured by drills only.")
	}
	impact := b.String()

	b.Reset()
	for i, s := range f.NextSteps {
		fmt.Fprintf(&b, "%d. %s\n", i+1, s)
	}
	if len(f.NextSteps) == 0 {
		b.WriteString("None.\n")
	}
	return Narrative{Summary: summary, Impact: impact, NextSteps: strings.TrimRight(b.String(), "\n"), Source: "template"}
}

func metWord(m *bool) string {
	switch {
	case m == nil:
		return "not measured"
	case *m:
		return "met"
	}
	return "breached"
}
