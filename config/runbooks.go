package config

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// PGManage is how Lifeboat runs the PostgreSQL programs (pg_ctl,
// pg_rewind, pg_basebackup) for one region's server.
//
// The local form names the data directory, the OS user that owns it and
// the programs' directory. The remote form adds Command, a template run
// with "sh -c" in which {cmd} stands for the whole command line as one
// shell-quoted word: "ssh -o BatchMode=yes pg-east {cmd}" or
// "kubectl exec -n db pg-0 -- sh -c {cmd}".
type PGManage struct {
	DataDir string `yaml:"data_dir"`
	// OSUser runs the programs (locally). Default: the user Lifeboat runs as.
	OSUser string `yaml:"os_user,omitempty"`
	// BinDir holds the programs. Default /usr/lib/postgresql/15/bin.
	BinDir  string `yaml:"bin_dir"`
	Command string `yaml:"command,omitempty"`
}

// DefaultPGBinDir is where Debian's PostgreSQL 15 programs live.
const DefaultPGBinDir = "/usr/lib/postgresql/15/bin"

func (m *PGManage) setDefaults() { m.BinDir = DefaultPGBinDir }

// Runbooks holds the user's changes to the generated plans, per kind.
type Runbooks struct {
	Failover   *Runbook `yaml:"failover,omitempty"`
	Switchover *Runbook `yaml:"switchover,omitempty"`
	Failback   *Runbook `yaml:"failback,omitempty"`
}

// Runbook changes one generated plan: Pre steps run first and Post steps
// last, one after the other; Approve gates the first step that changes
// anything behind the approval of a role; Groups, when set, replace the
// generated plan entirely.
type Runbook struct {
	Pre     []RunbookStep  `yaml:"pre,omitempty"`
	Post    []RunbookStep  `yaml:"post,omitempty"`
	Approve string         `yaml:"approve,omitempty"`
	Groups  []RunbookGroup `yaml:"groups,omitempty"`
}

// RunbookGroup is a set of steps that run in parallel; groups run in order.
type RunbookGroup struct {
	Name  string        `yaml:"name"`
	Steps []RunbookStep `yaml:"steps"`
}

// On-failure behaviours of a step.
const (
	OnFailureAbort    = "abort"
	OnFailureContinue = "continue"
	OnFailureRollback = "rollback"
)

// RunbookStep is one action with its arguments.
type RunbookStep struct {
	Name   string            `yaml:"name"`
	Action string            `yaml:"action"`
	Args   map[string]string `yaml:"args,omitempty"`
	// Timeout of one attempt. Default 30s.
	Timeout Duration `yaml:"timeout"`
	// Retries after a failed attempt. Default 0.
	Retries int `yaml:"retries"`
	// OnFailure is abort, continue or rollback. Default abort.
	OnFailure string `yaml:"on_failure"`
	// When runs the step only if the run matches: "key=value" or
	// "key!=value" with key severity, trigger or forced.
	When string `yaml:"when,omitempty"`
	// Approve is the role (operator or admin) that must approve the step
	// before it runs.
	Approve string `yaml:"approve,omitempty"`
}

func (s *RunbookStep) setDefaults() {
	s.Timeout = Duration(30 * time.Second)
	s.OnFailure = OnFailureAbort
}

// Actions lists the step actions a runbook may name.
func Actions() []string {
	return []string{
		"check.target", "wait", "exec", "http.request", "verify", "notify",
		"traffic.hold", "traffic.switch", "traffic.release",
		"postgres.fence", "postgres.unfence", "postgres.wait_caught_up", "postgres.promote", "postgres.reprotect",
		"redis.fence", "redis.promote", "redis.replicate",
		"files.sync",
		"kubernetes.scale",
	}
}

var whenRe = regexp.MustCompile(`^(severity|trigger|forced)\s*(!=|=)\s*([a-z0-9-]+)$`)

// ParseWhen splits a step's condition into key, operator and value.
func ParseWhen(s string) (key, op, value string, err error) {
	m := whenRe.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return "", "", "", fmt.Errorf("%q is not a condition: write key=value or key!=value with key severity, trigger or forced", s)
	}
	return m[1], m[2], m[3], nil
}

func (v *validator) manage(p string, s *Service) {
	if len(s.Manage) == 0 {
		return
	}
	mp := p + ".manage"
	if s.Kind != KindPostgres {
		v.errorf(mp, ErrInvalid, "manage is for postgres services, not %s", s.Kind)
		return
	}
	for region, m := range s.Manage {
		kp := mp + "." + region
		if _, ok := s.Endpoints[region]; !ok {
			v.errorf(kp, ErrInvalid, "region %q has no endpoint in this service", region)
			continue
		}
		if v.required(kp+".data_dir", m.DataDir) && m.Command == "" && !filepath.IsAbs(m.DataDir) {
			v.errorf(kp+".data_dir", ErrInvalid, "%q is not an absolute path", m.DataDir)
		}
		if m.Command != "" && !strings.Contains(m.Command, "{cmd}") {
			v.errorf(kp+".command", ErrInvalid, "the template has no {cmd} (where the command line goes)")
		}
	}
}

func (v *validator) runbooks() {
	rb := v.c.Runbooks
	for _, k := range []struct {
		name string
		r    *Runbook
	}{{"failover", rb.Failover}, {"switchover", rb.Switchover}, {"failback", rb.Failback}} {
		if k.r == nil {
			continue
		}
		p := "runbooks." + k.name
		if k.r.Approve != "" {
			v.oneOf(p+".approve", k.r.Approve, TokenOperator, TokenAdmin)
		}
		names := map[string]bool{}
		v.steps(p+".pre", k.r.Pre, names)
		v.steps(p+".post", k.r.Post, names)
		for i, g := range k.r.Groups {
			gp := fmt.Sprintf("%s.groups[%d]", p, i)
			v.required(gp+".name", g.Name)
			if len(g.Steps) == 0 {
				v.errorf(gp+".steps", ErrMissing, "a group needs at least one step")
			}
			v.steps(gp+".steps", g.Steps, names)
		}
	}
}

func (v *validator) steps(p string, steps []RunbookStep, names map[string]bool) {
	for i, s := range steps {
		sp := fmt.Sprintf("%s[%d]", p, i)
		if v.required(sp+".name", s.Name) {
			if names[s.Name] {
				v.errorf(sp+".name", ErrInvalid, "step %q is named twice in this runbook", s.Name)
			}
			names[s.Name] = true
		}
		v.oneOf(sp+".action", s.Action, Actions()...)
		if s.Timeout <= 0 {
			v.errorf(sp+".timeout", ErrInvalid, "must be above 0")
		}
		if s.Retries < 0 || s.Retries > 100 {
			v.errorf(sp+".retries", ErrInvalid, "%d is not from 0 to 100", s.Retries)
		}
		v.oneOf(sp+".on_failure", s.OnFailure, OnFailureAbort, OnFailureContinue, OnFailureRollback)
		if s.When != "" {
			if _, _, _, err := ParseWhen(s.When); err != nil {
				v.errorf(sp+".when", ErrInvalid, "%s", err)
			}
		}
		if s.Approve != "" {
			v.oneOf(sp+".approve", s.Approve, TokenOperator, TokenAdmin)
		}
		if svc := s.Args["service"]; svc != "" {
			if _, ok := v.c.Service(svc); !ok {
				v.errorf(sp+".args.service", ErrInvalid, "service %q is not declared", svc)
			}
		}
		if r := s.Args["region"]; r != "" && r != "{from}" && r != "{to}" {
			if _, ok := v.c.Region(r); !ok {
				v.errorf(sp+".args.region", ErrInvalid, "region %q is not declared", r)
			}
		}
	}
}
