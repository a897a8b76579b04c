package config

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Drill scenarios (lifeboat drill SCENARIO, lifeboat lab drill SCENARIO).
const (
	DrillRegionOutage     = "region-outage"     // everything in the active region dies at once
	DrillDBCrash          = "db-crash"          // only the primary database dies
	DrillNetworkPartition = "network-partition" // the active region is cut off from the others
	DrillReplicationLag   = "replication-lag"   // the standby falls behind, then the region dies: the lag gate must refuse
	DrillSwitchover       = "switchover"        // planned move
	DrillFailback         = "failback"          // planned move back to the preferred region
)

// DrillScenarios lists every drill scenario, the unplanned ones first.
func DrillScenarios() []string {
	return []string{DrillRegionOutage, DrillDBCrash, DrillNetworkPartition, DrillReplicationLag, DrillSwitchover, DrillFailback}
}

// PlannedDrill reports whether a scenario is a planned move (a run
// Lifeboat starts itself) rather than a fault injected by a command.
func PlannedDrill(scenario string) bool {
	return scenario == DrillSwitchover || scenario == DrillFailback
}

// Drills configures drills outside the lab (lifeboat drill SCENARIO) and
// scheduled drills (run by the leader of lifeboat serve).
type Drills struct {
	// Workload is what a drill writes through while it runs.
	Workload DrillWorkload `yaml:"workload"`
	// Scenarios say how each unplanned fault is injected and undone:
	// region-outage, db-crash, network-partition, replication-lag.
	// Planned scenarios (switchover, failback) take no commands.
	Scenarios map[string]*DrillScenario `yaml:"scenarios,omitempty"`
	// Schedule runs drills on the leader at cron times.
	Schedule []DrillSchedule `yaml:"schedule,omitempty"`
	// Token is the API bearer token (role operator or admin) scheduled
	// drills call their node's API with; required when api.tokens is set
	// and the schedule is not empty. Usually "${LIFEBOAT_DRILL_TOKEN}".
	// lifeboat drill uses it too when neither --token nor
	// $LIFEBOAT_TOKEN is given.
	Token Secret `yaml:"token,omitempty"`
}

// DrillWorkload names the Postgres service whose writer endpoint (in
// traffic.postgres) carries the drill's writes. The drill connects with
// the credentials and database of the service's endpoint DSN (the
// configured active region's), at the writer endpoint's address, and
// writes to lifeboat_drill.writes (created if missing).
type DrillWorkload struct {
	Service string `yaml:"service"`
	// Rate of writes per second, from 1 to 1000. Default 20.
	Rate int `yaml:"rate"`
	// Address is host:port where the drill reaches the writer endpoint,
	// when its listen address is not reachable from where the drill runs.
	// Default: the listen address (an unspecified host is 127.0.0.1).
	Address string `yaml:"address,omitempty"`
}

// DrillScenario injects a fault with a command and undoes it with
// another. Both run with sh -c, with LIFEBOAT_SCENARIO, LIFEBOAT_FROM (the
// active region) and LIFEBOAT_TO (the standby expected to take over) in
// their environment; their output goes to the drill's notes (redacted).
type DrillScenario struct {
	// Inject causes the fault. Required.
	Inject string `yaml:"inject"`
	// Restore undoes it; it runs once the drill has measured, and also
	// when the drill fails. Required ("true" when the fault undoes
	// itself).
	Restore string `yaml:"restore"`
	// Timeout bounds each command. Default 5m, at most 1h.
	Timeout Duration `yaml:"timeout"`
}

// DrillSchedule runs a scenario at the times of a cron expression.
type DrillSchedule struct {
	Scenario string `yaml:"scenario"`
	// Cron is a standard 5-field expression (minute hour day-of-month
	// month day-of-week) or a descriptor (@daily, @weekly, @every 12h), in
	// UTC unless it starts with CRON_TZ=Zone ("CRON_TZ=Europe/Paris 0 3 * * 1").
	Cron string `yaml:"cron"`
	// AllowFaults lets an unplanned scenario (one that injects a real
	// fault) run on a schedule. Without it only planned scenarios
	// (switchover, failback) may be scheduled.
	AllowFaults bool `yaml:"allow_faults,omitempty"`
}

// Default values of the drills section.
const (
	DefaultDrillRate    = 20
	DefaultDrillTimeout = Duration(5 * time.Minute)
	maxDrillRate        = 1000
	maxDrillTimeout     = time.Hour
)

func (d *Drills) setDefaults() { d.Workload.setDefaults() }

func (w *DrillWorkload) setDefaults() { w.Rate = DefaultDrillRate }

func (s *DrillScenario) setDefaults() { s.Timeout = DefaultDrillTimeout }

// CommandTimeout is the scenario's timeout, the default when unset.
func (s *DrillScenario) CommandTimeout() time.Duration {
	if s == nil || s.Timeout <= 0 {
		return DefaultDrillTimeout.D()
	}
	return s.Timeout.D()
}

// ParseCron parses a drill schedule's cron expression (see
// DrillSchedule.Cron): times are UTC unless it names a CRON_TZ.
func ParseCron(expr string) (s cron.Schedule, err error) {
	expr = strings.TrimSpace(expr)
	if zone, ok := strings.CutPrefix(expr, "CRON_TZ="); ok || strings.HasPrefix(expr, "TZ=") {
		if !ok {
			zone = strings.TrimPrefix(expr, "TZ=")
		}
		if !strings.Contains(zone, " ") {
			return nil, fmt.Errorf("%q names a time zone but no schedule after it", expr)
		}
	}
	defer func() {
		// The parser must not bring a node down, whatever it is given.
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("%q cannot be parsed: %v", expr, r)
		}
	}()
	s, err = cron.ParseStandard(expr)
	if err != nil {
		return nil, err
	}
	if spec, ok := s.(*cron.SpecSchedule); ok && spec.Location == time.Local {
		spec.Location = time.UTC
	}
	return s, nil
}

// DrillWriter is the writer endpoint (traffic.postgres, role writer) of
// a Postgres service, if it has one.
func (c *Config) DrillWriter(service string) (PostgresPort, bool) {
	for _, p := range c.Traffic.Postgres {
		if p.Service == service && p.Role == PGWriter {
			return p, true
		}
	}
	return PostgresPort{}, false
}

// drills validates the drills section.
func (v *validator) drills() {
	d := v.c.Drills
	if d == nil {
		return
	}
	w := d.Workload
	if v.required("drills.workload.service", w.Service) {
		if s, ok := v.c.Service(w.Service); !ok {
			v.errorf("drills.workload.service", ErrInvalid, "service %q is not declared", w.Service)
		} else if s.Kind != KindPostgres {
			v.errorf("drills.workload.service", ErrInvalid, "service %q is %s; the drill's workload writes to a postgres service", w.Service, s.Kind)
		} else if _, ok := v.c.DrillWriter(w.Service); !ok {
			v.errorf("drills.workload.service", ErrInvalid, "service %q has no writer endpoint in traffic.postgres (the drill writes through it)", w.Service)
		}
	}
	if w.Rate < 1 || w.Rate > maxDrillRate {
		v.errorf("drills.workload.rate", ErrInvalid, "%d is not from 1 to %d writes per second", w.Rate, maxDrillRate)
	}
	if w.Address != "" {
		v.listen("drills.workload.address", w.Address)
	}
	scenarios := DrillScenarios()
	for name, s := range d.Scenarios {
		p := "drills.scenarios." + name
		switch {
		case !slices.Contains(scenarios, name):
			v.errorf(p, ErrInvalid, "unknown scenario %q (one of %s)", name, strings.Join(scenarios, ", "))
		case PlannedDrill(name):
			if s != nil && (s.Inject != "" || s.Restore != "") {
				v.errorf(p, ErrInvalid, "%s is a planned move that Lifeboat runs itself: it takes no inject or restore command", name)
			}
		default:
			if s == nil {
				s = &DrillScenario{}
			}
			v.required(p+".inject", s.Inject)
			if s.Restore == "" {
				v.errorf(p+".restore", ErrMissing, "is required: the command that undoes the fault (\"true\" if it undoes itself)")
			}
		}
		if s != nil && (s.Timeout <= 0 || s.Timeout.D() > maxDrillTimeout) {
			v.errorf(p+".timeout", ErrInvalid, "%s must be above 0 and at most %s", s.Timeout, maxDrillTimeout)
		}
	}
	for i, e := range d.Schedule {
		p := fmt.Sprintf("drills.schedule[%d]", i)
		if v.required(p+".scenario", e.Scenario) {
			switch {
			case !slices.Contains(scenarios, e.Scenario):
				v.errorf(p+".scenario", ErrInvalid, "unknown scenario %q (one of %s)", e.Scenario, strings.Join(scenarios, ", "))
			case PlannedDrill(e.Scenario):
			case !e.AllowFaults:
				v.errorf(p+".scenario", ErrInvalid, "%s injects a real fault: a scheduled run needs allow_faults: true", e.Scenario)
			case d.Scenarios[e.Scenario] == nil:
				v.errorf(p+".scenario", ErrInvalid, "%s has no commands: add drills.scenarios.%s (inject, restore)", e.Scenario, e.Scenario)
			}
		}
		if v.required(p+".cron", e.Cron) {
			if _, err := ParseCron(e.Cron); err != nil {
				v.errorf(p+".cron", ErrInvalid, "%q is not a cron expression (minute hour day-of-month month day-of-week): %v", e.Cron, err)
			}
		}
	}
	if len(d.Schedule) > 0 && len(v.c.API.Tokens) > 0 && d.Token == "" {
		v.errorf("drills.token", ErrMissing, "is required: scheduled drills call this node's API, which needs an operator token once api.tokens is set")
	}
}
