package api

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/observe"
	"github.com/lifeboat-dr/lifeboat/replication"
)

// The event stream over a real control plane: a status at once, then each
// new event with its sequence number as the SSE id; ?after resumes.
func TestEventStream(t *testing.T) {
	rs := topology(t, true)
	cp := openControl(t, rs.Config)
	lags := observe.NewLagHistory(time.Hour)
	now := time.Now()
	lags.Record(observe.Status{Time: now, Services: []observe.ServiceStatus{{Name: "db",
		Replication: []replication.Lag{{Service: "db", Region: "west", Time: now, Seconds: 0.25, SecondsKnown: true}}}},
		Exposure: []replication.Exposure{{Service: "db", RPOSeconds: 60}}})
	srv := openServer(t, Config{Status: fixedStatus{Cluster: "apitest", ActiveRegion: "east"}, Runs: rs, Control: cp,
		Reports: noReports{}, Lag: lags, RateLimit: RateLimit{PerMinute: -1}})
	base := "http://" + srv.Addr()

	get := func(path, token string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if resp := get("/api/v1/events/stream", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("stream without a token: %s", resp.Status)
	}
	if resp := get("/api/v1/events/stream?after=x", "viewer-token"); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("stream after=x: %s", resp.Status)
	}

	first, err := cp.Store().Append(t.Context(), control.Event{Type: control.EventDecision, Message: "before the stream"})
	if err != nil {
		t.Fatal(err)
	}
	resp := get("/api/v1/events/stream?after="+itoa(first.Seq-1), "viewer-token")
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("stream: %s %s", resp.Status, ct)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		cp.Store().Append(t.Context(), control.Event{Type: control.EventDecision, Message: "during the stream"})
	}()
	type sse struct{ id, event, data string }
	var got []sse
	var cur sse
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	deadline := time.AfterFunc(10*time.Second, func() { resp.Body.Close() })
	defer deadline.Stop()
	messages := map[string]bool{}
	for sc.Scan() && !(messages["before the stream"] && messages["during the stream"]) {
		line := sc.Text()
		switch {
		case line == "":
			got = append(got, cur)
			if cur.event == "event" {
				var e control.Event
				if err := json.Unmarshal([]byte(cur.data), &e); err != nil {
					t.Fatalf("event data: %v: %s", err, cur.data)
				}
				if itoa(e.Seq) != cur.id {
					t.Errorf("event %d sent with id %q", e.Seq, cur.id)
				}
				messages[e.Message] = true
			}
			cur = sse{}
		case strings.HasPrefix(line, "id: "):
			cur.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			cur.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			cur.data = line[6:]
		}
	}
	if !messages["before the stream"] || !messages["during the stream"] {
		t.Fatalf("stream gave %+v", got)
	}
	if len(got) == 0 || got[0].event != "status" || !strings.Contains(got[0].data, `"active_region":"east"`) {
		t.Fatalf("the stream did not open with the status: %+v", got)
	}

	// The lag chart's data and its bounds.
	var w observe.LagWindow
	r := get("/api/v1/lag?minutes=15", "viewer-token")
	if err := json.NewDecoder(r.Body).Decode(&w); err != nil || r.StatusCode != 200 {
		t.Fatalf("lag: %s %v", r.Status, err)
	}
	r.Body.Close()
	if w.RPOSeconds != 60 || len(w.Series) != 1 || w.Series[0].Points[0].LagSeconds != 0.25 {
		t.Fatalf("lag window: %+v", w)
	}
	for _, bad := range []string{"0", "61", "x"} {
		if r := get("/api/v1/lag?minutes="+bad, "viewer-token"); r.StatusCode != http.StatusBadRequest {
			t.Errorf("lag minutes=%s: %s", bad, r.Status)
		}
	}

	// Drills: attached outcomes, newest run first.
	for _, id := range []string{"20261122-080000.000-aaaaaa", "20261122-090000.000-bbbbbb"} {
		if err := cp.Store().SaveDrill(t.Context(), id, []byte(`{"scenario":"db-crash","fault_at":"2026-11-22T08:00:00Z","writes_acked":10,"writes_lost":0}`)); err != nil {
			t.Fatal(err)
		}
	}
	var drills []DrillEntry
	r = get("/api/v1/drills", "viewer-token")
	if err := json.NewDecoder(r.Body).Decode(&drills); err != nil || r.StatusCode != 200 {
		t.Fatalf("drills: %s %v", r.Status, err)
	}
	r.Body.Close()
	if len(drills) != 2 || drills[0].Run != "20261122-090000.000-bbbbbb" || drills[0].Drill.Scenario != "db-crash" ||
		drills[0].Report != "/api/v1/runs/20261122-090000.000-bbbbbb/report" {
		t.Fatalf("drills: %+v", drills)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
