package runbook

import (
	"fmt"
	"io"
	"strings"

	"github.com/lifeboat-dr/lifeboat/config"
)

// WriteText writes the plan as text: groups in order, each step with its
// target resolved and what it changes. Secrets are redacted.
func (p *Plan) WriteText(w io.Writer, cfg *config.Config) {
	fmt.Fprintf(w, "%s %s → %s", p.Kind, p.From, p.To)
	if p.Forced {
		fmt.Fprint(w, " (forced)")
	}
	fmt.Fprintln(w)
	for g, name := range p.Groups {
		fmt.Fprintf(w, "%2d. %s\n", g+1, name)
		for _, s := range p.Steps {
			if s.Group != g {
				continue
			}
			fmt.Fprintf(w, "    - %s [%s]%s\n", s.Name, s.Action, attrs(s))
			fmt.Fprintf(w, "      %s\n", cfg.Redact(Describe(cfg, s)))
		}
	}
	for _, n := range p.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func attrs(s Step) string {
	var a []string
	a = append(a, fmt.Sprintf("timeout %s", s.Timeout()))
	if s.Retries > 0 {
		a = append(a, fmt.Sprintf("retries %d", s.Retries))
	}
	if s.OnFailure != config.OnFailureAbort {
		a = append(a, "on failure "+s.OnFailure)
	}
	if s.When != "" {
		a = append(a, "when "+s.When)
	}
	if s.Approve != "" {
		a = append(a, "needs approval by "+s.Approve)
	}
	return " " + strings.Join(a, ", ")
}

// target names a service's endpoint in a region without its secrets.
func target(cfg *config.Config, service, region string) string {
	svc, ok := cfg.Service(service)
	if !ok {
		return fmt.Sprintf("%s@%s (undeclared service)", service, region)
	}
	ep, ok := svc.Endpoints[region]
	if !ok {
		return fmt.Sprintf("%s@%s (no endpoint)", service, region)
	}
	return fmt.Sprintf("%s@%s (%s)", service, region, config.RedactURL(ep))
}

// Describe says what a step does to what.
func Describe(cfg *config.Config, s Step) string {
	a := s.Args
	t := func() string { return target(cfg, a["service"], a["region"]) }
	switch s.Action {
	case "check.target":
		return fmt.Sprintf("check that %s is ready: its critical services up, its data services within max_lag_on_failover", a["region"])
	case "traffic.hold":
		return "hold new requests and connections in every node's data plane (bounded by the hold timeout)"
	case "traffic.switch":
		return fmt.Sprintf("commit a new epoch with %s active: DNS answers, HTTP routes and writer endpoints move to %s", a["region"], a["region"])
	case "traffic.release":
		return "release held requests and connections to the active region"
	case "postgres.fence":
		if a["mode"] == "stop" {
			return t() + ": stop the server (pg_ctl stop -m fast through its manage entry)"
		}
		return t() + ": default_transaction_read_only = on, reload, terminate client sessions"
	case "postgres.unfence":
		return t() + ": reset default_transaction_read_only, reload"
	case "postgres.wait_caught_up":
		return fmt.Sprintf("%s: wait until it has replayed the WAL flushed by %s", t(), target(cfg, a["service"], primaryArg(s)))
	case "postgres.promote":
		return t() + ": pg_promote(wait => true), unless already a primary"
	case "postgres.reprotect":
		where := "its host"
		if svc, ok := cfg.Service(a["service"]); ok {
			if m, ok := svc.Manage[a["region"]]; ok {
				where = "data directory " + m.DataDir
				if m.Command != "" {
					where += " through " + m.Command
				}
			}
		}
		return fmt.Sprintf("%s: stop, pg_rewind from %s (pg_basebackup if that fails, old data kept), start as its standby (%s)", t(), target(cfg, a["service"], primaryArg(s)), where)
	case "redis.fence":
		return t() + ": refuse writes (min-replicas-to-write), disconnect clients"
	case "redis.promote":
		return t() + ": REPLICAOF NO ONE, accept writes"
	case "redis.replicate":
		return fmt.Sprintf("%s: REPLICAOF %s, wait for the link", t(), target(cfg, a["service"], primaryArg(s)))
	case "files.sync":
		return fmt.Sprintf("%s: copy what differs from %s (final sync)", t(), target(cfg, a["service"], primaryArg(s)))
	case "verify":
		if a["service"] != "" {
			return fmt.Sprintf("probe %s until it answers", t())
		}
		return fmt.Sprintf("probe every service in %s until each answers", a["region"])
	case "wait":
		return "wait " + a["duration"]
	case "exec":
		return "run: " + a["command"]
	case "http.request":
		m := a["method"]
		if m == "" {
			m = "POST"
		}
		return m + " " + config.RedactURL(a["url"])
	case "notify":
		return "notify: " + a["message"]
	case "kubernetes.scale":
		return fmt.Sprintf("scale %s %s/%s to %s replicas in kube context %q", a["kind"], a["namespace"], a["name"], a["replicas"], a["context"])
	}
	return s.Action
}

func primaryArg(s Step) string {
	if p := s.Args["primary"]; p != "" {
		return p
	}
	return "the active region"
}
