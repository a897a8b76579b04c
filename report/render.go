package report

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"strings"
	"time"
)

// Formats a report renders to.
const (
	FormatMarkdown = "md"
	FormatJSON     = "json"
	FormatHTML     = "html"
)

// Formats lists the formats Render accepts.
func Formats() []string { return []string{FormatMarkdown, FormatJSON, FormatHTML} }

// Render writes the report in format (md, json or html).
func Render(w io.Writer, rep *Report, format string) error {
	switch format {
	case FormatMarkdown, "markdown":
		return Markdown(w, rep)
	case FormatJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	case FormatHTML:
		return HTML(w, rep)
	}
	return fmt.Errorf("report: format %q is not one of md, json, html", format)
}

func secs(v *float64) string {
	if v == nil {
		return "—"
	}
	return fmt.Sprintf("%.3f s", *v)
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000Z")
}

// cell escapes a table cell's text.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// Markdown writes the report as markdown.
func Markdown(w io.Writer, rep *Report) error {
	var b bytes.Buffer
	f := rep.Facts
	r := f.Run
	title := fmt.Sprintf("%s %s → %s", r.Kind, r.From, r.To)
	if r.Drill != "" {
		title = fmt.Sprintf("drill %s: %s", r.Drill, title)
	}
	fmt.Fprintf(&b, "# DR report: %s\n\n", title)
	fmt.Fprintf(&b, "Run `%s` · status **%s** · trigger %s", r.ID, r.Status, r.Trigger)
	if r.By != "" {
		fmt.Fprintf(&b, " (%s)", r.By)
	}
	fmt.Fprintf(&b, " · epoch %d → %d · generated %s\n\n", r.StartEpoch, max(r.Epoch, r.StartEpoch), stamp(rep.GeneratedAt))
	if r.Reason != "" {
		fmt.Fprintf(&b, "Reason: %s\n\n", r.Reason)
	}

	b.WriteString("## 1. Executive summary\n\n")
	b.WriteString(rep.Narrative.Summary + "\n\n")
	if rep.Narrative.Source == "llm" {
		b.WriteString("_Written by a language model from the facts below; every figure in it was checked against them._\n\n")
	}
	if rep.Narrative.Note != "" {
		fmt.Fprintf(&b, "_Note: %s._\n\n", rep.Narrative.Note)
	}

	b.WriteString("## 2. Timeline of events\n\n")
	if f.Fault != nil {
		fmt.Fprintf(&b, "Fault: %s at %s", f.Fault.Message, stamp(f.Fault.At))
		if f.Fault.Cite != 0 {
			fmt.Fprintf(&b, " [#%d]", f.Fault.Cite)
		}
		b.WriteString("\n\n")
	}
	if len(f.Timeline) == 0 {
		b.WriteString("No events recorded in the run's window.\n\n")
	} else {
		b.WriteString("| event | time (UTC) | +s | type | what |\n|---:|---|---:|---|---|\n")
		for _, e := range f.Timeline {
			fmt.Fprintf(&b, "| #%d | %s | %.3f | %s | %s |\n", e.Seq, stamp(e.Time), e.Offset, e.Type, cell(e.Message))
		}
		b.WriteString("\n")
	}
	b.WriteString("### Steps\n\n| step | group | action | status | duration | attempts |\n|---|---|---|---|---:|---:|\n")
	for _, s := range f.Steps {
		status := s.Status
		if s.Error != "" {
			status += ": " + s.Error
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %d |\n", s.Name, s.Group, s.Action, cell(status), secs(s.Seconds), s.Attempts)
	}
	fmt.Fprintf(&b, "\nExecution: %s.\n\n", secs(r.Seconds))

	b.WriteString("## 3. Current service status\n\n")
	if st := f.Status; st == nil {
		b.WriteString("Not known when the report was written.\n\n")
	} else {
		fmt.Fprintf(&b, "As of %s, active region **%s**.\n\n", stamp(st.At), st.ActiveRegion)
		b.WriteString("| region | role | state | reason |\n|---|---|---|---|\n")
		for _, rg := range st.Regions {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", rg.Name, rg.Role, rg.State, cell(rg.Reason))
		}
		regions := make([]string, 0, len(st.Regions))
		for _, rg := range st.Regions {
			regions = append(regions, rg.Name)
		}
		fmt.Fprintf(&b, "\n| service | kind | %s |\n|---|---|%s\n", strings.Join(regions, " | "), strings.Repeat("---|", len(regions)))
		for _, s := range st.Services {
			cells := make([]string, len(regions))
			for i, rg := range regions {
				cells[i] = healthCell(s, rg)
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", s.Name, s.Kind, strings.Join(cells, " | "))
		}
		b.WriteString("\n")
		for _, rd := range st.Readiness {
			if rd.Ready {
				fmt.Fprintf(&b, "- standby %s: ready\n", rd.Region)
			} else {
				fmt.Fprintf(&b, "- standby %s: not ready (%s)\n", rd.Region, strings.Join(rd.Reasons, "; "))
			}
		}
		for _, e := range st.Exposure {
			if e.Standby == "" {
				fmt.Fprintf(&b, "- exposure %s: %s (no standby measured)\n", e.Service, e.Status)
				continue
			}
			fmt.Fprintf(&b, "- exposure %s → %s: %s (lag %.3f s, %d bytes)\n", e.Service, e.Standby, e.Status, e.LagSeconds, e.LagBytes)
		}
		b.WriteString("\n")
	}

	b.WriteString("## 4. Data integrity assessment\n\n")
	g := f.Integrity
	fmt.Fprintf(&b, "**%s.**\n\n", upperFirst(g.Assessment))
	for _, e := range g.AtStart {
		if e.Standby == "" {
			fmt.Fprintf(&b, "- exposure when the run started, %s: %s (no standby measured)\n", e.Service, e.Status)
			continue
		}
		fmt.Fprintf(&b, "- exposure when the run started, %s → %s: lag %.3f s, %d bytes (%s)\n", e.Service, e.Standby, e.LagSeconds, e.LagBytes, e.Status)
	}
	if g.EstimatedLossBytes > 0 {
		fmt.Fprintf(&b, "- forced past the lag gate: up to %d bytes\n", g.EstimatedLossBytes)
	}
	if g.WritesLost != nil {
		fmt.Fprintf(&b, "- measured by the drill: %d acknowledged writes, %d lost\n", derefInt(g.WritesAcked), *g.WritesLost)
	}
	if g.PredictedLossSeconds != nil {
		fmt.Fprintf(&b, "- exposure reported just before the fault: %.3f s\n", *g.PredictedLossSeconds)
	}
	if g.SplitBrainViolations != nil {
		fmt.Fprintf(&b, "- writes accepted outside the active epoch (split brain): %d\n", *g.SplitBrainViolations)
	}
	for _, s := range g.Fences {
		fmt.Fprintf(&b, "- fence %s\n", s)
	}
	for _, s := range g.DivergentWAL {
		fmt.Fprintf(&b, "- reprotect %s\n", s)
	}
	b.WriteString("\n")

	b.WriteString("## 5. Impact analysis\n\n")
	b.WriteString(rep.Narrative.Impact + "\n\n")
	o := f.Objectives
	b.WriteString("| objective | policy | achieved | verdict | basis |\n|---|---:|---:|---|---|\n")
	fmt.Fprintf(&b, "| RTO | %.0f s | %s | %s | %s |\n", o.RTOPolicySeconds, secs(o.RTOAchievedSeconds), metWord(o.RTOMet), cell(o.RTOBasis))
	fmt.Fprintf(&b, "| RPO | %.0f s | %s | %s | %s |\n\n", o.RPOPolicySeconds, secs(o.RPOAchievedSeconds), metWord(o.RPOMet), cell(o.RPOBasis))

	b.WriteString("## 6. Recommended next steps\n\n")
	b.WriteString(rep.Narrative.NextSteps + "\n\n")

	b.WriteString("## 7. Estimated recovery timeline\n\n")
	if len(f.Estimate) == 0 {
		b.WriteString("Nothing to estimate.\n")
	} else {
		b.WriteString("| phase | seconds | basis |\n|---|---:|---|\n")
		for _, p := range f.Estimate {
			fmt.Fprintf(&b, "| %s | %.3f | %s |\n", p.Phase, p.Seconds, cell(p.Basis))
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

func derefInt(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

//go:embed report.html.tmpl
var htmlTemplate string

var htmlTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"secs":   secs,
	"stamp":  stamp,
	"met":    metWord,
	"upper":  upperFirst,
	"deref":  derefInt,
	"max":    func(a, b uint64) uint64 { return max(a, b) },
	"lines":  func(s string) []string { return strings.Split(strings.TrimSpace(s), "\n") },
	"f3":     func(v float64) string { return fmt.Sprintf("%.3f", v) },
	"f0":     func(v float64) string { return fmt.Sprintf("%.0f", v) },
	"region": healthCell,
	"regions": func(st *StatusNow) []string {
		var out []string
		for _, r := range st.Regions {
			out = append(out, r.Name)
		}
		return out
	},
}).Parse(htmlTemplate))

func healthCell(s ServiceNow, region string) string {
	h := s.Health[region]
	if h == "" {
		h = "—"
	}
	for _, p := range s.Primaries {
		if p == region {
			h += " (primary)"
		}
	}
	return h
}

// HTML writes the report as a standalone HTML page (no external assets).
func HTML(w io.Writer, rep *Report) error {
	return htmlTmpl.Execute(w, rep)
}
