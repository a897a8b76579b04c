package control

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Keys of reports, under the cluster's prefix:
//
//	reports/<run>   a run's DR report (JSON, written by the report package)
//	drills/<run>    a drill's measured outcome, attached to its run

// ErrNoReport: the run has no stored report (yet).
var ErrNoReport = errors.New("control: no report stored for this run")

// SaveReport stores a run's report.
func (s *Store) SaveReport(ctx context.Context, run string, b []byte) error {
	_, err := s.cli.Put(ctx, s.key("reports/"+run), string(b))
	return err
}

// Report reads a run's stored report (ErrNoReport when there is none).
func (s *Store) Report(ctx context.Context, run string) ([]byte, error) {
	return s.getBlob(ctx, "reports/"+run, ErrNoReport)
}

// ErrNoDrill: no drill outcome is attached to the run.
var ErrNoDrill = errors.New("control: no drill outcome attached to this run")

// SaveDrill attaches a drill's measured outcome to its run and, in the
// same transaction, drops the run's report so that it is written again
// with the measurements.
func (s *Store) SaveDrill(ctx context.Context, run string, b []byte) error {
	_, err := s.cli.Txn(ctx).Then(
		clientv3.OpPut(s.key("drills/"+run), string(b)),
		clientv3.OpDelete(s.key("reports/"+run)),
	).Commit()
	return err
}

// Drill reads the drill outcome attached to a run (ErrNoDrill when none).
func (s *Store) Drill(ctx context.Context, run string) ([]byte, error) {
	return s.getBlob(ctx, "drills/"+run, ErrNoDrill)
}

func (s *Store) getBlob(ctx context.Context, k string, missing error) ([]byte, error) {
	resp, err := s.cli.Get(ctx, s.key(k))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, missing
	}
	return resp.Kvs[0].Value, nil
}

// LastSeq is the sequence number of the newest event (0 when none).
func (s *Store) LastSeq(ctx context.Context) (uint64, error) {
	resp, err := s.cli.Get(ctx, s.key("events-seq"))
	if err != nil || len(resp.Kvs) == 0 {
		return 0, err
	}
	// The value is "<seq>" or "<seq> <head hash>".
	v, _, _ := strings.Cut(string(resp.Kvs[0].Value), " ")
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("control: events-seq is corrupt: %q", v)
	}
	return n, nil
}

// EventsBetween returns the events whose time is within [from, to], oldest
// first, at most limit of them. Events are appended in time order (give or
// take clock skew between nodes), so the first one is found by a binary
// search over sequence numbers: O(log n) reads, not the whole stream.
func (s *Store) EventsBetween(ctx context.Context, from, to time.Time, limit int) ([]Event, error) {
	last, err := s.LastSeq(ctx)
	if err != nil || last == 0 {
		return nil, err
	}
	// Find the first seq whose event is at or after from.
	lo, hi := uint64(1), last+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		evs, err := s.Events(ctx, mid-1, 1)
		if err != nil {
			return nil, err
		}
		if len(evs) == 0 || !evs[0].Time.Before(from) {
			hi = mid
		} else {
			lo = evs[0].Seq + 1
		}
	}
	var out []Event
	after := lo - 1
	for len(out) < limit {
		page, err := s.Events(ctx, after, 200)
		if err != nil {
			return nil, err
		}
		for _, e := range page {
			if e.Time.After(to) {
				return out, nil
			}
			if !e.Time.Before(from) {
				out = append(out, e)
			}
			if len(out) == limit {
				return out, nil
			}
		}
		if len(page) < 200 {
			return out, nil
		}
		after = page[len(page)-1].Seq
	}
	return out, nil
}

// Drills returns every drill outcome attached to a run, by run id.
func (s *Store) Drills(ctx context.Context) (map[string][]byte, error) {
	prefix := s.key("drills/")
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), prefix)] = kv.Value
	}
	return out, nil
}
