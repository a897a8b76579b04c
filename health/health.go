// Package health runs the probes of every service endpoint and turns their
// results into verdicts (up, down, unknown) with separate fall and rise
// thresholds, then into region states and standby readiness.
//
// A probe is anything that implements Prober; the packages of the systems
// (postgres, redis, files, probe for http and tcp) provide them.
package health

import (
	"context"
	"time"
)

// State is an endpoint's health verdict.
type State string

// Endpoint verdicts.
const (
	Up      State = "up"
	Down    State = "down"
	Unknown State = "unknown" // no verdict yet (cold start)
)

// Role is what a data service's endpoint reports it is.
type Role string

// Data service roles.
const (
	RolePrimary Role = "primary"
	RoleStandby Role = "standby"
	RoleUnknown Role = "unknown"
)

// Result is what one probe found.
type Result struct {
	// Err is nil when the endpoint is healthy; otherwise it says why not,
	// in words an operator can act on, without secrets.
	Err error
	// Role is the endpoint's role, for data services; empty otherwise.
	Role Role
}

// Prober checks one endpoint once.
//
// Probe must return when ctx is done (the checker sets the timeout). It is
// never called twice at once for the same target. A panic is recovered by
// the checker and counted as a failure.
type Prober interface {
	Probe(ctx context.Context) Result
}

// ProberFunc adapts a function to Prober.
type ProberFunc func(ctx context.Context) Result

// Probe calls f.
func (f ProberFunc) Probe(ctx context.Context) Result { return f(ctx) }

// Observation is one probe result, from one observer (a Lifeboat node), for
// one service endpoint.
type Observation struct {
	Service  string        `json:"service"`
	Region   string        `json:"region"`
	Observer string        `json:"observer"`
	Time     time.Time     `json:"time"`
	Latency  time.Duration `json:"latency_ns"`
	OK       bool          `json:"ok"`
	Role     Role          `json:"role,omitempty"`
	Error    string        `json:"error,omitempty"`
}
