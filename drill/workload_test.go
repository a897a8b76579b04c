package drill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lifeboat-dr/lifeboat/internal/testenv"
	"github.com/lifeboat-dr/lifeboat/lab/app"
)

func TestMain(m *testing.M) { testenv.MainWithLeakCheck(m) }

// fakeApp answers like the lab's application, from memory; refuse, when
// set, answers every write instead.
type fakeApp struct {
	mu      sync.Mutex
	stored  map[int64]string // id → note
	hosts   map[string]int
	refuse  func(id int64) (status int, body string)
	failing atomic.Bool // answer writes 503, as a read-only primary does
}

func newFakeApp(t *testing.T) (*fakeApp, *httptest.Server) {
	f := &fakeApp{stored: map[int64]string{}, hosts: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /transactions", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID     int64  `json:"id"`
			Amount int64  `json:"amount"`
			Note   string `json:"note"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.hosts[r.Host]++
		if f.refuse != nil {
			status, body := f.refuse(req.ID)
			w.WriteHeader(status)
			fmt.Fprint(w, body)
			return
		}
		if f.failing.Load() {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error":"database refused: cannot execute INSERT in a read-only transaction (SQLSTATE 25006)"}`)
			return
		}
		if have, ok := f.stored[req.ID]; ok && have != req.Note {
			w.WriteHeader(http.StatusConflict)
			fmt.Fprintf(w, `{"error":"transaction %d exists with different content"}`, req.ID)
			return
		}
		f.stored[req.ID] = req.Note
		w.Header().Set("X-Lifeboat-Region", "east")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":%d,"region":"east","epoch_region":"east","db":"pg-east"}`, req.ID)
	})
	mux.HandleFunc("GET /transactions/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
		f.mu.Lock()
		_, ok := f.stored[id]
		f.mu.Unlock()
		if !ok {
			http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
			return
		}
		fmt.Fprintf(w, `{"id":%d}`, id)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeApp) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.stored)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestWorkloadOutageWindowAndRetries(t *testing.T) {
	f, srv := newFakeApp(t)
	w := StartWorkload(WorkloadConfig{URL: srv.URL + "/", Host: "shop.lab.internal", Rate: 100, Reads: true, FirstID: 1000})
	waitUntil(t, "20 writes before the outage", func() bool { return f.count() >= 20 })
	outageStart := time.Now()
	f.failing.Store(true)
	time.Sleep(300 * time.Millisecond)
	outageEnd := time.Now()
	f.failing.Store(false)
	n := f.count()
	waitUntil(t, "20 writes after the outage", func() bool { return f.count() >= n+20 })
	r := w.Stop()
	if again := w.Stop(); len(again.Acks) != len(r.Acks) {
		t.Error("a second Stop returned another result")
	}

	// Every id sent was acknowledged once, the ones that failed included,
	// and exactly the ids the server stored.
	if len(r.Acks) == 0 || int64(len(r.Acks)) != r.Attempted || len(r.Unacknowledged) != 0 {
		t.Fatalf("%d acks, %d ids attempted, unacknowledged %v", len(r.Acks), r.Attempted, r.Unacknowledged)
	}
	ids := map[int64]Ack{}
	for i, a := range r.Acks {
		if _, dup := ids[a.ID]; dup {
			t.Errorf("id %d acknowledged twice", a.ID)
		}
		ids[a.ID] = a
		if i > 0 && a.At.Before(r.Acks[i-1].At) {
			t.Errorf("acks out of order at %d", i)
		}
		if a.Region != "east" || a.RowRegion != "east" || a.DB != "pg-east" || a.Latency <= 0 || a.Attempts < 1 || a.FirstSent.After(a.At.Add(-a.Latency)) {
			t.Errorf("ack %+v", a)
		}
	}
	for id := int64(1000); id < 1000+r.Attempted; id++ {
		if _, ok := ids[id]; !ok {
			t.Errorf("id %d (in the sequence) not acknowledged", id)
		}
	}
	f.mu.Lock()
	if len(f.stored) != len(ids) {
		t.Errorf("server stored %d ids, workload acknowledged %d", len(f.stored), len(ids))
	}
	hosts := fmt.Sprint(f.hosts)
	f.mu.Unlock()
	if hosts != "map[shop.lab.internal:"+strconv.FormatInt(r.Requests, 10)+"]" {
		t.Errorf("Host headers %s, want shop.lab.internal on all %d requests", hosts, r.Requests)
	}

	// The errors are the outage, and each failed id was acknowledged later.
	if len(r.Errors) < 5 {
		t.Fatalf("%d errors during a 300ms outage at 100/s", len(r.Errors))
	}
	if r.Requests != int64(len(r.Acks)+len(r.Errors)) {
		t.Errorf("%d requests, but %d acks + %d errors", r.Requests, len(r.Acks), len(r.Errors))
	}
	retried := 0
	for _, e := range r.Errors {
		if e.Status != http.StatusServiceUnavailable || !strings.Contains(e.Err, "read-only transaction") {
			t.Errorf("error %+v, want the 503 and its reason", e)
		}
		if e.At.Before(outageStart) || e.At.After(outageEnd.Add(200*time.Millisecond)) {
			t.Errorf("error at %s, outside the outage (%s .. %s)", e.At, outageStart, outageEnd)
		}
		if a := ids[e.ID]; !a.At.After(e.At) || a.Attempts < 2 || a.FirstSent.After(e.At) {
			t.Errorf("id %d failed at %s; its ack %+v should come later, after 2+ attempts", e.ID, e.At, a)
		} else {
			retried++
		}
	}
	if r.FirstErrorAt != r.Errors[0].At || r.LastErrorAt != r.Errors[len(r.Errors)-1].At {
		t.Errorf("error window %s .. %s does not match the errors", r.FirstErrorAt, r.LastErrorAt)
	}
	if win := r.ErrorWindow(); win < 150*time.Millisecond || win > 500*time.Millisecond {
		t.Errorf("error window %s for an outage of %s", win, outageEnd.Sub(outageStart))
	}
	t.Logf("%d requests, %d ids, %d errors over %s (outage %s), %d retried ids", r.Requests, r.Attempted, len(r.Errors), r.ErrorWindow(), outageEnd.Sub(outageStart), retried)

	// Retries took the place of new ids: no burst of new ids during the outage.
	var during int
	for _, a := range r.Acks {
		if a.FirstSent.After(outageStart.Add(50*time.Millisecond)) && a.FirstSent.Before(outageEnd) {
			during++
		}
	}
	if during > 5 {
		t.Errorf("%d new ids first sent during the outage; retries should take their place", during)
	}

	// The first write acknowledged after the outage.
	a, ok := r.FirstAckAfter(outageEnd, "east")
	if !ok || a.At.Before(outageEnd) {
		t.Errorf("FirstAckAfter(end of outage, east) = %+v, %v", a, ok)
	}
	if a2, _ := r.FirstAckAfter(outageEnd, ""); a2 != a {
		t.Errorf("FirstAckAfter any region = %+v, want %+v", a2, a)
	}
	if _, ok := r.FirstAckAfter(outageEnd, "west"); ok {
		t.Error("FirstAckAfter found a write served by west")
	}
	if r.Reads == 0 || r.ReadErrors != 0 {
		t.Errorf("%d reads, %d read errors; want reads of acknowledged ids, all found", r.Reads, r.ReadErrors)
	}
}

// Only a 201 naming the id is an acknowledgement.
func TestWorkloadCountsOnly201(t *testing.T) {
	f, srv := newFakeApp(t)
	f.refuse = func(id int64) (int, string) {
		switch id % 4 {
		case 0:
			return http.StatusOK, fmt.Sprintf(`{"id":%d,"region":"east"}`, id)
		case 1:
			return http.StatusCreated, fmt.Sprintf(`{"id":%d,"region":"east"}`, id+1)
		case 2:
			return http.StatusCreated, `created`
		default:
			return http.StatusAccepted, fmt.Sprintf(`{"id":%d}`, id)
		}
	}
	w := StartWorkload(WorkloadConfig{URL: srv.URL, Rate: 200, NoRetry: true, Reads: true, FirstID: 4})
	time.Sleep(200 * time.Millisecond)
	r := w.Stop()
	if len(r.Acks) != 0 || r.Reads != 0 {
		t.Fatalf("acknowledged %d writes (%d reads) on answers other than a 201 naming the id", len(r.Acks), r.Reads)
	}
	if r.Attempted < 4 || len(r.Errors) != int(r.Requests) || int64(len(r.Unacknowledged)) != r.Attempted || r.Requests != r.Attempted {
		t.Fatalf("%d ids, %d requests, %d errors, unacknowledged %v", r.Attempted, r.Requests, len(r.Errors), r.Unacknowledged)
	}
	for _, e := range r.Errors[:4] {
		want := map[int64]string{0: "200 OK", 1: "does not acknowledge id", 2: "does not acknowledge id", 3: "202 Accepted"}[e.ID%4]
		if !strings.Contains(e.Err, want) {
			t.Errorf("id %d: error %q, want %q", e.ID, e.Err, want)
		}
	}

	// A refusal that would repeat (409) is not retried, even with retries on;
	// a 503 is, until acknowledged.
	f.mu.Lock()
	f.refuse = func(id int64) (int, string) {
		if id%2 == 0 {
			return http.StatusConflict, `{"error":"transaction exists with different content"}`
		}
		return http.StatusCreated, fmt.Sprintf(`{"id":%d}`, id)
	}
	f.mu.Unlock()
	w = StartWorkload(WorkloadConfig{URL: srv.URL, Rate: 200, FirstID: 10})
	time.Sleep(200 * time.Millisecond)
	r = w.Stop()
	if r.Requests != r.Attempted || len(r.Acks)+len(r.Unacknowledged) != int(r.Attempted) {
		t.Errorf("409s were retried: %d requests for %d ids", r.Requests, r.Attempted)
	}
	for _, id := range r.Unacknowledged {
		if id%2 != 0 {
			t.Errorf("id %d unacknowledged", id)
		}
	}
	for _, e := range r.Errors {
		if e.Status != http.StatusConflict || !strings.Contains(e.Err, "different content") {
			t.Errorf("error %+v", e)
		}
	}
}

func TestWorkloadNoRetryTimeoutsAndRefusedConnections(t *testing.T) {
	// NoRetry: ids that failed stay unacknowledged.
	f, srv := newFakeApp(t)
	w := StartWorkload(WorkloadConfig{URL: srv.URL, Rate: 200, NoRetry: true})
	waitUntil(t, "10 writes", func() bool { return f.count() >= 10 })
	f.failing.Store(true)
	time.Sleep(100 * time.Millisecond)
	f.failing.Store(false)
	n := f.count()
	waitUntil(t, "10 more writes", func() bool { return f.count() >= n+10 })
	r := w.Stop()
	if len(r.Errors) == 0 || len(r.Unacknowledged) != len(r.Errors) || r.Requests != r.Attempted {
		t.Errorf("NoRetry: %d errors, unacknowledged %v, %d requests for %d ids", len(r.Errors), r.Unacknowledged, r.Requests, r.Attempted)
	}
	for _, e := range r.Errors {
		if !slices.Contains(r.Unacknowledged, e.ID) {
			t.Errorf("failed id %d not in Unacknowledged", e.ID)
		}
	}

	// A server that never answers: each request ends at the timeout, and
	// Stop returns within it.
	w = StartWorkload(WorkloadConfig{URL: "http://" + testenv.Blackhole(t), Rate: 50, Timeout: 100 * time.Millisecond})
	time.Sleep(250 * time.Millisecond)
	stopAt := time.Now()
	r = w.Stop()
	if d := time.Since(stopAt); d > time.Second {
		t.Errorf("Stop took %s with requests hanging, want about the 100ms timeout", d)
	}
	if len(r.Acks) != 0 || len(r.Errors) == 0 || !strings.Contains(r.Errors[0].Err, "no answer within 100ms") || r.Errors[0].Status != 0 {
		t.Errorf("hung server: %d acks, errors %v", len(r.Acks), r.Errors)
	}

	// Nothing listening: connection refused, retried at the rate.
	ln := httptest.NewServer(http.NotFoundHandler())
	addr := ln.URL
	ln.Close()
	w = StartWorkload(WorkloadConfig{URL: addr, Rate: 100})
	time.Sleep(150 * time.Millisecond)
	r = w.Stop()
	if len(r.Errors) == 0 || !strings.Contains(r.Errors[0].Err, "connection refused") || r.Attempted != 1 {
		t.Errorf("refused: %d ids attempted, errors %v; want one id retried", r.Attempted, r.Errors)
	}

	// A URL that cannot work says so.
	r = StartWorkload(WorkloadConfig{URL: "shop.lab.internal:8080"}).Stop()
	if len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Err, "not an http(s) URL") || r.Requests != 0 {
		t.Errorf("bad URL: %+v", r)
	}
}

func TestLost(t *testing.T) {
	var r Result
	for id := int64(2500); id >= 1; id-- {
		r.Acks = append(r.Acks, Ack{ID: id})
	}
	missing := map[int64]bool{3: true, 7: true, 2001: true}
	calls := 0
	lost, err := r.Lost(func(ids []int64) (map[int64]bool, error) {
		calls++
		if len(ids) > 1000 {
			t.Errorf("present called with %d ids", len(ids))
		}
		out := map[int64]bool{}
		for _, id := range ids {
			if !missing[id] {
				out[id] = true
			}
		}
		out[7] = false // false is missing too
		return out, nil
	})
	if err != nil || !slices.Equal(lost, []int64{3, 7, 2001}) || calls != 3 {
		t.Errorf("Lost = %v, %v after %d calls; want [3 7 2001] after 3", lost, err, calls)
	}
	_, err = r.Lost(func([]int64) (map[int64]bool, error) { return nil, errors.New("connection refused") })
	if err == nil || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "1..1000") {
		t.Errorf("Lost with a failing store: %v", err)
	}
	if lost, err := (Result{}).Lost(nil); lost != nil || err != nil {
		t.Errorf("Lost with no acks = %v, %v", lost, err)
	}
}

func TestHistoryFeedsCheckHistory(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	commits := []EpochCommit{{1, "east", at(0)}, {2, "west", at(10)}}
	r := Result{Acks: []Ack{
		{ID: 1, FirstSent: at(1), At: at(1.1), Region: "east", RowRegion: "east", DB: "pg-east"},
		// In flight across the switch: sent before it, acknowledged after.
		{ID: 2, FirstSent: at(9.9), At: at(10.3), Region: "east", RowRegion: "east", DB: "pg-east"},
		// Retried through west, but the row was written by east before the switch.
		{ID: 3, FirstSent: at(9.95), At: at(11), Region: "west", RowRegion: "east", DB: "pg-east", Attempts: 2},
		{ID: 4, FirstSent: at(11), At: at(11.1), Region: "west", RowRegion: "west", DB: "pg-west"},
	}}
	// The drill knows each database server's region and epoch by time of
	// acceptance; here from the server name.
	epochOf := func(a Ack) (uint64, string) {
		if a.DB == "pg-west" {
			return 2, "west"
		}
		return 1, ""
	}
	h := r.History(epochOf)
	if len(h) != 4 || h[2].Region != "east" || h[2].Time != at(9.95) || h[0].ID != "1" || !h[0].Acked {
		t.Fatalf("history %+v", h)
	}
	if v := CheckHistory(commits, h); len(v) != 0 {
		t.Errorf("a safe run has violations: %v", v)
	}
	// east accepting a write first sent after epoch 2 committed is caught.
	r.Acks = append(r.Acks, Ack{ID: 5, FirstSent: at(12), At: at(12.1), Region: "east", RowRegion: "east", DB: "pg-east"})
	v := CheckHistory(commits, r.History(epochOf))
	if len(v) != 1 || v[0].Kind != "after-newer-epoch" || v[0].Write.ID != "5" {
		t.Errorf("violations %v, want write 5 after the newer epoch", v)
	}
}

// The workload against the lab's application over real Postgres: every
// acknowledged id is in the table.
func TestWorkloadAgainstApp(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	srv, err := app.New(app.Config{Listen: "127.0.0.1:0", Region: "east", DSN: pg.Primary.DSN()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	w := StartWorkload(WorkloadConfig{URL: "http://" + srv.Addr(), Rate: 100, Reads: true})
	time.Sleep(time.Second)
	r := w.Stop()
	if len(r.Acks) < 50 || len(r.Errors) != 0 || len(r.Unacknowledged) != 0 || r.ReadErrors != 0 {
		t.Fatalf("%d acks, errors %v, unacknowledged %v, %d read errors", len(r.Acks), r.Errors, r.Unacknowledged, r.ReadErrors)
	}
	for _, a := range r.Acks {
		if a.Region != "east" || a.RowRegion != "east" || a.DB != "primary" {
			t.Fatalf("ack %+v", a)
		}
	}
	conn := pg.Primary.Conn(t)
	present := func(ids []int64) (map[int64]bool, error) {
		rows, err := conn.Query(context.Background(), "SELECT id FROM transactions WHERE id = ANY($1)", ids)
		if err != nil {
			return nil, err
		}
		found, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		out := map[int64]bool{}
		for _, id := range found {
			out[id] = true
		}
		return out, err
	}
	lost, err := r.Lost(present)
	if err != nil || len(lost) != 0 {
		t.Fatalf("lost %v, %v", lost, err)
	}
	var stored int64
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM transactions").Scan(&stored); err != nil || stored != r.Attempted {
		t.Errorf("%d rows stored (%v), %d ids sent", stored, err, r.Attempted)
	}
	// A row deleted behind the workload's back is reported lost.
	if _, err := conn.Exec(context.Background(), "DELETE FROM transactions WHERE id = $1", r.Acks[3].ID); err != nil {
		t.Fatal(err)
	}
	if lost, err := r.Lost(present); err != nil || !slices.Equal(lost, []int64{r.Acks[3].ID}) {
		t.Errorf("after deleting %d: lost %v, %v", r.Acks[3].ID, lost, err)
	}
	t.Logf("%d writes acknowledged in 1s, %d reads; p50 latency %s", len(r.Acks), r.Reads, r.Acks[len(r.Acks)/2].Latency)
}
