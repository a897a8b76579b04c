// Package replication is the model of a data service's replication from the
// active region to the standbys, and of its exposure: what would be lost if
// the active region died now, compared with the recovery point objective.
//
// Measurements come from one Source per data service, implemented in the
// package of its system (postgres, redis, files).
package replication

import (
	"time"
)

// Lag is the latest measurement of one standby of one data service.
type Lag struct {
	Service string `json:"service"`
	// Region is the standby's region.
	Region string `json:"region"`
	// Time is when the measurement was taken.
	Time time.Time `json:"time"`

	// Seconds of writes on the primary not yet visible on the standby,
	// from Lifeboat's heartbeat (right even when the application is idle).
	// Valid when SecondsKnown.
	Seconds      float64 `json:"seconds"`
	SecondsKnown bool    `json:"seconds_known"`
	// Bytes of WAL / replication stream not yet replayed on the standby
	// (Postgres: LSN difference; Redis: offset difference; files: bytes
	// pending). Valid when BytesKnown.
	Bytes      int64 `json:"bytes"`
	BytesKnown bool  `json:"bytes_known"`
	// Objects pending (files services only).
	Objects int64 `json:"objects,omitempty"`

	// Broken is set when the standby does not replicate from the primary
	// (link down, not a replica, unreachable); Reason says why.
	Broken bool   `json:"broken"`
	Reason string `json:"reason,omitempty"`

	// Details are system-specific figures (sync state, write/flush/replay
	// lag, LSNs, offsets), shown as they are.
	Details map[string]string `json:"details,omitempty"`
}

// Source measures one data service's replication. Implementations run
// their own measuring loop between Open and Close.
type Source interface {
	// Lag returns the latest measurement of every standby region, in no
	// particular order. It does no I/O and returns at once; before the
	// first measurement a standby has a Lag with neither SecondsKnown nor
	// BytesKnown.
	Lag() []Lag
}
