package runbook

import (
	"fmt"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
)

// Step is one action of a plan with its resolved arguments.
type Step struct {
	Name   string            `json:"name"`
	Action string            `json:"action"`
	Args   map[string]string `json:"args,omitempty"`
	// Group is the index of the step's group in Run.Groups / Plan.Groups.
	Group          int     `json:"group"`
	TimeoutSeconds float64 `json:"timeout_seconds"`
	Retries        int     `json:"retries,omitempty"`
	OnFailure      string  `json:"on_failure"`
	When           string  `json:"when,omitempty"`
	Approve        string  `json:"approve,omitempty"`
}

// Timeout is the step's timeout per attempt.
func (s Step) Timeout() time.Duration { return time.Duration(s.TimeoutSeconds * float64(time.Second)) }

// Plan is what a run will do: groups of steps in order.
type Plan struct {
	Kind     string   `json:"kind"`
	From     string   `json:"from"`
	To       string   `json:"to"`
	Forced   bool     `json:"forced,omitempty"`
	Severity string   `json:"severity,omitempty"`
	Groups   []string `json:"groups"`
	Steps    []Step   `json:"steps"`
	// Notes say what the plan leaves out and why (no manage section for a
	// reprotect, a hook's condition).
	Notes []string `json:"notes,omitempty"`
}

// Request asks for a plan.
type Request struct {
	Kind string
	// From is the region active now; To the region to make active.
	From, To string
	Forced   bool
	Severity string
	// Approve, when set, gates the first step that changes anything behind
	// this role's approval (a failover raised under policy.failover:
	// manual).
	Approve string
}

// Default step timeouts.
const (
	quickTimeout   = 5 * time.Second
	fenceTimeout   = 2 * time.Second
	defaultTimeout = 30 * time.Second
	longTimeout    = 5 * time.Minute
)

// builder assembles a plan group by group.
type builder struct {
	p     *Plan
	names map[string]bool
}

func (b *builder) group(name string, steps ...Step) {
	if len(steps) == 0 {
		return
	}
	g := len(b.p.Groups)
	b.p.Groups = append(b.p.Groups, name)
	for _, s := range steps {
		s.Group = g
		if s.OnFailure == "" {
			s.OnFailure = config.OnFailureAbort
		}
		if s.TimeoutSeconds == 0 {
			s.TimeoutSeconds = defaultTimeout.Seconds()
		}
		b.p.Steps = append(b.p.Steps, s)
	}
}

func step(name, action string, timeout time.Duration, onFailure string, args ...string) Step {
	s := Step{Name: name, Action: action, TimeoutSeconds: timeout.Seconds(), OnFailure: onFailure}
	if len(args) > 0 {
		s.Args = map[string]string{}
		for i := 0; i+1 < len(args); i += 2 {
			s.Args[args[i]] = args[i+1]
		}
	}
	return s
}

// Generate makes the plan for req from the topology, with the config's
// runbooks section applied.
func Generate(cfg *config.Config, req Request) (*Plan, error) {
	if err := checkRequest(cfg, req); err != nil {
		return nil, err
	}
	p := &Plan{Kind: req.Kind, From: req.From, To: req.To, Forced: req.Forced, Severity: req.Severity}
	b := &builder{p: p, names: map[string]bool{}}
	rb := userRunbook(cfg, req.Kind)
	if rb != nil {
		for _, s := range rb.Pre {
			b.group("pre: "+s.Name, userStep(s, req))
		}
	}
	if rb != nil && len(rb.Groups) > 0 {
		for _, g := range rb.Groups {
			var steps []Step
			for _, s := range g.Steps {
				steps = append(steps, userStep(s, req))
			}
			b.group(g.Name, steps...)
		}
	} else {
		switch req.Kind {
		case KindFailover:
			failover(cfg, b, req)
		case KindSwitchover:
			switchover(cfg, b, req.From, req.To, "")
		case KindFailback:
			failback(cfg, b, req)
		}
	}
	if rb != nil {
		for _, s := range rb.Post {
			b.group("post: "+s.Name, userStep(s, req))
		}
	}
	approve := req.Approve
	if rb != nil && rb.Approve != "" {
		approve = rb.Approve
	}
	if approve != "" {
		for i := range p.Steps {
			if changes(p.Steps[i].Action) {
				if p.Steps[i].Approve == "" {
					p.Steps[i].Approve = approve
				}
				break
			}
		}
	}
	return p, nil
}

func checkRequest(cfg *config.Config, req Request) error {
	switch req.Kind {
	case KindFailover, KindSwitchover, KindFailback:
	default:
		return fmt.Errorf("runbook: kind %q is not failover, switchover or failback", req.Kind)
	}
	for _, r := range []struct{ what, name string }{{"from", req.From}, {"to", req.To}} {
		reg, ok := cfg.Region(r.name)
		if !ok {
			return fmt.Errorf("runbook: %s region %q is not declared (regions: %s)", r.what, r.name, strings.Join(regionNames(cfg), ", "))
		}
		if reg.Role == config.RoleWitness {
			return fmt.Errorf("runbook: %s region %q is a witness: it runs no services", r.what, r.name)
		}
	}
	if req.From == req.To {
		return fmt.Errorf("runbook: region %q is already active", req.To)
	}
	return nil
}

func regionNames(cfg *config.Config) []string {
	var out []string
	for _, r := range cfg.RegionsByPriority() {
		if r.Role != config.RoleWitness {
			out = append(out, r.Name)
		}
	}
	return out
}

func userRunbook(cfg *config.Config, kind string) *config.Runbook {
	switch kind {
	case KindFailover:
		return cfg.Runbooks.Failover
	case KindSwitchover:
		return cfg.Runbooks.Switchover
	case KindFailback:
		return cfg.Runbooks.Failback
	}
	return nil
}

// userStep resolves a configured step: {from} and {to} in its arguments
// become the run's regions.
func userStep(s config.RunbookStep, req Request) Step {
	out := Step{Name: s.Name, Action: s.Action, TimeoutSeconds: s.Timeout.D().Seconds(), Retries: s.Retries,
		OnFailure: s.OnFailure, When: s.When, Approve: s.Approve}
	if len(s.Args) > 0 {
		out.Args = map[string]string{}
		r := strings.NewReplacer("{from}", req.From, "{to}", req.To)
		for k, v := range s.Args {
			out.Args[k] = r.Replace(v)
		}
	}
	return out
}

// services returns the names of the services of kind, in config order.
func services(cfg *config.Config, kind string) []*config.Service {
	var out []*config.Service
	for i := range cfg.Services {
		if cfg.Services[i].Kind == kind {
			out = append(out, &cfg.Services[i])
		}
	}
	return out
}

// perService makes one step per service of kind.
func perService(cfg *config.Config, kind, prefix, action, region string, timeout time.Duration, onFailure string) []Step {
	var out []Step
	for _, s := range services(cfg, kind) {
		out = append(out, step(prefix+"-"+s.Name+"-"+region, action, timeout, onFailure, "service", s.Name, "region", region))
	}
	return out
}

// withPrimary names the primary region the steps read from.
func withPrimary(primary string, steps []Step) []Step {
	for i := range steps {
		steps[i].Args["primary"] = primary
	}
	return steps
}

// failover: the active region is lost. Fence what can be fenced, commit
// the new epoch, promote, release.
func failover(cfg *config.Config, b *builder, req Request) {
	from, to := req.From, req.To
	b.group("check", step("check-"+to, "check.target", quickTimeout, config.OnFailureAbort, "region", to))
	b.group("hold", step("hold", "traffic.hold", quickTimeout, config.OnFailureAbort))
	// The old region may be gone: a fence that fails does not stop the
	// failover (so it gets little time), the new epoch fences the data
	// plane, and promotion waits until every live node routes by it when a
	// primary could not be fenced.
	fence := append(perService(cfg, config.KindPostgres, "fence", "postgres.fence", from, fenceTimeout, config.OnFailureContinue),
		perService(cfg, config.KindRedis, "fence", "redis.fence", from, fenceTimeout, config.OnFailureContinue)...)
	// A last copy of the files from the lost region, if it still answers.
	fence = append(fence, withPrimary(from, perService(cfg, config.KindFiles, "sync", "files.sync", to, defaultTimeout, config.OnFailureContinue))...)
	b.group("fence", fence...)
	b.group("epoch", step("switch-"+to, "traffic.switch", quickTimeout, config.OnFailureAbort, "region", to))
	promote := append(perService(cfg, config.KindPostgres, "promote", "postgres.promote", to, time.Minute, config.OnFailureAbort),
		perService(cfg, config.KindRedis, "promote", "redis.promote", to, defaultTimeout, config.OnFailureAbort)...)
	b.group("promote", promote...)
	b.group("release", step("release", "traffic.release", quickTimeout, config.OnFailureAbort))
	b.group("verify", step("verify-"+to, "verify", defaultTimeout, config.OnFailureContinue, "region", to))
	b.p.Notes = append(b.p.Notes, fmt.Sprintf("the old primaries in %s stay fenced; run failback to make them standbys of %s and move back", from, to))
}

// switchover: both regions are up. Hold, fence, let the standby catch
// up, commit the new epoch, promote, release, then make the old primary
// a standby. Nothing acknowledged is lost.
func switchover(cfg *config.Config, b *builder, from, to, prefix string) {
	n := func(s string) string { return prefix + s }
	b.group(n("check"), step(n("check-"+to), "check.target", defaultTimeout, config.OnFailureAbort, "region", to))
	b.group(n("hold"), step(n("hold"), "traffic.hold", quickTimeout, config.OnFailureRollback))
	fence := append(perService(cfg, config.KindPostgres, n("fence"), "postgres.fence", from, quickTimeout, config.OnFailureRollback),
		perService(cfg, config.KindRedis, n("fence"), "redis.fence", from, quickTimeout, config.OnFailureRollback)...)
	b.group(n("fence"), fence...)
	catchUp := append(withPrimary(from, perService(cfg, config.KindPostgres, n("catch-up"), "postgres.wait_caught_up", to, defaultTimeout, config.OnFailureRollback)),
		withPrimary(from, perService(cfg, config.KindFiles, n("sync"), "files.sync", to, longTimeout, config.OnFailureRollback))...)
	b.group(n("catch-up"), catchUp...)
	b.group(n("epoch"), step(n("switch-"+to), "traffic.switch", quickTimeout, config.OnFailureRollback, "region", to))
	promote := append(perService(cfg, config.KindPostgres, n("promote"), "postgres.promote", to, time.Minute, config.OnFailureAbort),
		perService(cfg, config.KindRedis, n("promote"), "redis.promote", to, defaultTimeout, config.OnFailureAbort)...)
	b.group(n("promote"), promote...)
	b.group(n("release"), step(n("release"), "traffic.release", quickTimeout, config.OnFailureAbort))
	b.group(n("reprotect"), reprotect(cfg, b, from, to, n("reprotect"))...)
	b.group(n("verify"), step(n("verify-"+to), "verify", defaultTimeout, config.OnFailureContinue, "region", to))
}

// reprotect makes region's data services standbys of to's. A postgres
// service without a manage entry for region cannot be reprotected: the
// plan says so. Each step is tried once more after a failure: they are
// idempotent, traffic has moved already, and a server or link just back
// may drop the first connection.
func reprotect(cfg *config.Config, b *builder, region, to, prefix string) []Step {
	var out []Step
	for _, s := range services(cfg, config.KindPostgres) {
		if _, ok := s.Manage[region]; !ok {
			b.p.Notes = append(b.p.Notes, fmt.Sprintf("%s in %s is not reprotected: the service has no manage entry for %s (it stays fenced)", s.Name, region, region))
			continue
		}
		out = append(out, step(prefix+"-"+s.Name+"-"+region, "postgres.reprotect", longTimeout, config.OnFailureAbort, "service", s.Name, "region", region, "primary", to))
	}
	for _, s := range services(cfg, config.KindRedis) {
		out = append(out, step(strings.Replace(prefix, "reprotect", "replicate", 1)+"-"+s.Name+"-"+region, "redis.replicate", defaultTimeout, config.OnFailureAbort, "service", s.Name, "region", region, "primary", to))
	}
	for i := range out {
		out[i].Retries = 1
	}
	return out
}

// failback: the preferred region (req.To) comes back after a failover.
// Make its data services standbys of the active region, let them catch
// up, then switch over to it.
func failback(cfg *config.Config, b *builder, req Request) {
	prepare := append(reprotect(cfg, b, req.To, req.From, "reprotect"),
		withPrimary(req.From, perService(cfg, config.KindFiles, "sync-back", "files.sync", req.To, longTimeout, config.OnFailureAbort))...)
	b.group("prepare", prepare...)
	b.group("prepare-catch-up", withPrimary(req.From, perService(cfg, config.KindPostgres, "prepare-catch-up", "postgres.wait_caught_up", req.To, longTimeout, config.OnFailureAbort))...)
	switchover(cfg, b, req.From, req.To, "back-")
}

// changes reports whether an action changes a system Lifeboat manages
// (an approval gate goes before the first one that does; hooks that only
// tell people or call out run before it).
func changes(action string) bool {
	switch action {
	case "check.target", "wait", "verify", "notify", "postgres.wait_caught_up", "http.request", "exec":
		return false
	}
	return true
}
