package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/api"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/runbook"
)

// call sends a JSON request to a node's API, with the lab's token, and
// decodes the answer.
func (l *Lab) call(ctx context.Context, n Region, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, n.APIURL()+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+l.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if resp.StatusCode >= 300 {
		return &statusError{code: resp.StatusCode, msg: fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(raw)))}
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// statusError is a node's answer with a status of 300 or more.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string { return e.msg }

// liveNode is the first node that answers its status, preferring the
// last (the witness).
func (l *Lab) liveNode(ctx context.Context) (Region, api.StatusResponse, error) {
	var lastErr error
	for i := len(l.Nodes) - 1; i >= 0; i-- {
		st, err := l.NodeStatus(ctx, l.Nodes[i])
		if err == nil {
			return l.Nodes[i], st, nil
		}
		lastErr = err
	}
	return Region{}, api.StatusResponse{}, fmt.Errorf("no Lifeboat node answers: %w", lastErr)
}

// startRun asks a node for a run. A request that gets no answer (the
// control plane busy electing, a write slow to commit) may still have
// created the run: it is asked again, and a run of this kind and target
// created since the first attempt is taken as ours (the store holds one
// run at a time, so a second request cannot create a second run).
func (l *Lab) startRun(ctx context.Context, n Region, kind, to string) (*runbook.Run, error) {
	since := time.Now().Add(-time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for {
		var r runbook.Run
		err := l.call(ctx, n, http.MethodPost, "/api/v1/runs", api.RunRequest{Kind: kind, To: to, Reason: "lab drill"}, &r)
		if err == nil {
			return &r, nil
		}
		if runs, lerr := l.runs(ctx, n); lerr == nil {
			for _, r := range runs {
				if r.Kind == kind && r.To == to && r.Reason == "lab drill" && !r.CreatedAt.Before(since) {
					return r, nil
				}
			}
		}
		if !retryStart(err) || time.Now().After(deadline) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// retryStart says whether a refused run request may succeed if sent again:
// no answer, or the node busy (no quorum, another run still ending).
func retryStart(err error) bool {
	var se *statusError
	if errors.As(err, &se) {
		return se.code == http.StatusServiceUnavailable || se.code == http.StatusConflict
	}
	return true
}

// runs lists the runs, newest first.
func (l *Lab) runs(ctx context.Context, n Region) ([]*runbook.Run, error) {
	var out []*runbook.Run
	err := l.call(ctx, n, http.MethodGet, "/api/v1/runs", nil, &out)
	return out, err
}

// waitRun waits for a run to end.
func (l *Lab) waitRun(ctx context.Context, id string, limit time.Duration) (*runbook.Run, error) {
	deadline := time.Now().Add(limit)
	for {
		n, _, err := l.liveNode(ctx)
		if err == nil {
			var r runbook.Run
			if err = l.call(ctx, n, http.MethodGet, "/api/v1/runs/"+id, nil, &r); err == nil && runbook.Terminal(r.Status) {
				return &r, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("run %s did not end within %s (%v)", id, limit, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// events reads the event stream from a node.
func (l *Lab) events(ctx context.Context, n Region) ([]control.Event, error) {
	var all []control.Event
	after := uint64(0)
	for {
		var evs []control.Event
		if err := l.call(ctx, n, http.MethodGet, fmt.Sprintf("/api/v1/events?after=%d&limit=1000", after), nil, &evs); err != nil {
			return all, err
		}
		all = append(all, evs...)
		if len(evs) < 1000 {
			return all, nil
		}
		after = evs[len(evs)-1].Seq
	}
}
