// Package drill measures disaster-recovery drills. history.go checks a
// drill's write history for split brain.
package drill

import (
	"fmt"
	"sort"
	"time"
)

// EpochCommit is one change of the active region, as committed in the
// control plane's store.
type EpochCommit struct {
	Epoch  uint64
	Region string
	Time   time.Time
}

// Write is one write a workload sent, with where and under which epoch it
// was accepted.
type Write struct {
	ID     string
	Region string // the region whose primary accepted it
	Epoch  uint64 // the epoch the writer endpoint routed it under
	Acked  bool   // acknowledged to the client
	Time   time.Time
}

// Violation is one breach of single-writer safety.
type Violation struct {
	Kind   string // "two-writers", "wrong-region", "after-newer-epoch", "unknown-epoch"
	Write  Write
	Detail string
}

func (v Violation) String() string { return v.Kind + ": " + v.Detail }

// CheckHistory proves, from the epoch commits and the acknowledged writes,
// that no two regions accepted writes in the same epoch, that every
// epoch's writes went to that epoch's region, and that no region accepted
// a write after a newer epoch was committed. It returns every violation,
// in time order; none means the history is safe.
func CheckHistory(commits []EpochCommit, writes []Write) []Violation {
	byEpoch := map[uint64]EpochCommit{}
	for _, c := range commits {
		byEpoch[c.Epoch] = c
	}
	ordered := append([]EpochCommit(nil), commits...)
	sort.Slice(ordered, func(i, j int) bool { return ordered[i].Time.Before(ordered[j].Time) })
	ws := append([]Write(nil), writes...)
	sort.SliceStable(ws, func(i, j int) bool { return ws[i].Time.Before(ws[j].Time) })

	var out []Violation
	writerOf := map[uint64]string{}
	for _, w := range ws {
		if !w.Acked {
			continue
		}
		c, ok := byEpoch[w.Epoch]
		if !ok {
			out = append(out, Violation{"unknown-epoch", w, fmt.Sprintf("write %s acknowledged under epoch %d, which was never committed", w.ID, w.Epoch)})
			continue
		}
		if first, seen := writerOf[w.Epoch]; seen && first != w.Region {
			out = append(out, Violation{"two-writers", w, fmt.Sprintf("epoch %d: write %s accepted by %s after %s accepted writes in the same epoch", w.Epoch, w.ID, w.Region, first)})
		} else if !seen {
			writerOf[w.Epoch] = w.Region
		}
		if w.Region != c.Region {
			out = append(out, Violation{"wrong-region", w, fmt.Sprintf("epoch %d belongs to %s, but write %s was accepted by %s", w.Epoch, c.Region, w.ID, w.Region)})
		}
		for _, later := range ordered {
			if later.Epoch > w.Epoch && later.Time.Before(w.Time) {
				out = append(out, Violation{"after-newer-epoch", w, fmt.Sprintf("write %s accepted by %s under epoch %d at %s, after epoch %d (%s) was committed at %s",
					w.ID, w.Region, w.Epoch, w.Time.Format(time.RFC3339Nano), later.Epoch, later.Region, later.Time.Format(time.RFC3339Nano))})
				break
			}
		}
	}
	return out
}
