package drill

// workload.go is the drill's client: it writes transactions through the
// global endpoint at a steady rate, each under a client-chosen id, and
// records what the client saw: acknowledgements, errors and their window.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	workloadDefaultRate    = 50
	workloadMaxRate        = 100_000
	workloadDefaultTimeout = 2 * time.Second
	// lostBatch is how many ids one call of Lost's present receives.
	lostBatch         = 1000
	workloadMaxAnswer = 64 << 10
)

// WorkloadConfig shapes a workload. The zero value of every field but URL
// takes the default.
type WorkloadConfig struct {
	// URL is the base URL of the global endpoint (the Lifeboat HTTP front
	// door), e.g. http://127.0.0.1:18080; the workload posts to
	// URL/transactions.
	URL string
	// Host is the Host header to send (the route's host); empty sends the
	// URL's host.
	Host string
	// Rate is requests per second (default 50, at most 100000). Each
	// request carries the next id in sequence, or an id to retry.
	Rate int
	// Timeout bounds each request (default 2s).
	Timeout time.Duration
	// NoRetry gives up on an id after its first failure. By default an id
	// that was not acknowledged is sent again, with the same id and
	// content, until it is: retries take the place of new ids in the
	// schedule, oldest first, so the rate holds during an outage.
	NoRetry bool
	// Reads also GETs the most recently acknowledged id after each write.
	Reads bool
	// Client sends the requests; nil uses a client of the workload's own.
	Client *http.Client
	// FirstID is the first id. Default: the start time in microseconds
	// since 1970, so that a run's ids are above those of every earlier run
	// (ids advance far slower than a microsecond each). Each run's notes
	// also carry a random token, so an id another run stored is a 409, not
	// an acknowledgement.
	FirstID int64
}

// Ack is one acknowledged write: the server answered 201 for this id.
type Ack struct {
	ID int64
	// At is when the acknowledgement arrived.
	At time.Time
	// Region is the region that served the acknowledged request (the
	// answer's epoch_region, else its X-Lifeboat-Region header).
	Region string
	// Latency is the acknowledged request's, from sending to the answer.
	Latency time.Duration
	// FirstSent is when the id was first sent: the earliest moment the
	// write can have been accepted, earlier than At-Latency when an
	// earlier attempt failed (it may have committed all the same).
	FirstSent time.Time
	// Attempts is how many requests carried the id, this one included.
	Attempts int
	// RowRegion is the region recorded with the row (the answer's
	// region): the instance that inserted it, which differs from Region
	// when a retry found the row an earlier attempt wrote.
	RowRegion string
	// DB is the database server that confirmed the write, as the
	// application reports it (its cluster_name), "" if unknown.
	DB string
}

// ClientError is one write request that was not acknowledged.
type ClientError struct {
	ID int64
	// At is when the failure was seen (the answer, or the timeout).
	At  time.Time
	Err string
	// Status is the HTTP status, 0 when no answer came.
	Status int
}

// Result is what a workload saw.
type Result struct {
	// Acks are the acknowledged writes, one per id, by time of
	// acknowledgement.
	Acks []Ack
	// Errors are the failed write requests, by time.
	Errors []ClientError
	// Attempted is how many distinct ids were sent at least once.
	Attempted int64
	// Requests is how many write requests were sent, retries included.
	Requests int64
	// Unacknowledged are the ids sent but never acknowledged, ascending:
	// given up (NoRetry, or a refusal such as 409) or still unacknowledged
	// when the workload stopped. Their writes may or may not be stored.
	Unacknowledged []int64
	// FirstErrorAt and LastErrorAt bound the client-visible error window;
	// zero when there was no error.
	FirstErrorAt, LastErrorAt time.Time
	// Reads is how many reads were sent (Reads set), ReadErrors how many
	// failed or did not return the acknowledged row.
	Reads      int64
	ReadErrors int
}

// Workload is a running workload.
type Workload struct {
	cfg    WorkloadConfig
	base   string // URL without a trailing slash
	note   string // the content every write of this run carries
	client *http.Client
	own    *http.Transport // closed at Stop when the workload made it
	setup  error           // a configuration that cannot send anything

	stop     chan struct{}
	loopDone chan struct{}
	inflight sync.WaitGroup
	stopOnce sync.Once
	result   Result

	mu         sync.Mutex
	next       int64
	retryQ     []int64 // ids whose last attempt failed, oldest first
	ids        map[int64]*idState
	stopping   bool
	acks       []Ack
	errs       []ClientError
	requests   int64
	reads      int64
	readErrors int
	lastAck    int64
	haveAck    bool
}

type idState struct {
	first    time.Time
	attempts int
	acked    bool
}

// StartWorkload starts writing at once and keeps on until Stop. A
// configuration that cannot work (no URL, a bad one) sends nothing and
// reports why as the result's only error.
func StartWorkload(cfg WorkloadConfig) *Workload {
	if cfg.Rate <= 0 {
		cfg.Rate = workloadDefaultRate
	}
	cfg.Rate = min(cfg.Rate, workloadMaxRate)
	if cfg.Timeout <= 0 {
		cfg.Timeout = workloadDefaultTimeout
	}
	if cfg.FirstID == 0 {
		cfg.FirstID = time.Now().UnixMicro()
	}
	w := &Workload{
		cfg:      cfg,
		base:     strings.TrimRight(cfg.URL, "/"),
		note:     "lifeboat drill " + runToken(),
		client:   cfg.Client,
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
		next:     cfg.FirstID,
		ids:      map[int64]*idState{},
	}
	if u, err := url.Parse(w.base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		w.setup = fmt.Errorf("drill: workload URL %q is not an http(s) URL with a host", cfg.URL)
		close(w.loopDone)
		return w
	}
	if w.client == nil {
		w.own = &http.Transport{
			Proxy:               nil,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     30 * time.Second,
		}
		w.client = &http.Client{Transport: w.own}
	}
	go w.run()
	return w
}

// Stop stops sending, waits for the requests in flight (each ends within
// Timeout), and returns what the workload saw. Calling it again returns
// the same result.
func (w *Workload) Stop() Result {
	w.stopOnce.Do(func() {
		if w.setup == nil {
			close(w.stop)
		}
		<-w.loopDone
		w.mu.Lock()
		w.stopping = true
		w.mu.Unlock()
		w.inflight.Wait()
		if w.own != nil {
			w.own.CloseIdleConnections()
		}
		w.result = w.collect()
	})
	return w.result
}

func (w *Workload) run() {
	defer close(w.loopDone)
	t := time.NewTicker(time.Second / time.Duration(w.cfg.Rate))
	defer t.Stop()
	for {
		w.launch()
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
	}
}

// launch sends the oldest id waiting for a retry, else the next id.
func (w *Workload) launch() {
	w.mu.Lock()
	var id int64
	if len(w.retryQ) > 0 {
		id, w.retryQ = w.retryQ[0], w.retryQ[1:]
	} else {
		id = w.next
		w.next++
		w.ids[id] = &idState{}
	}
	st := w.ids[id]
	st.attempts++
	if st.first.IsZero() {
		st.first = time.Now()
	}
	w.requests++
	w.inflight.Add(1)
	w.mu.Unlock()
	go func() {
		defer w.inflight.Done()
		w.write(id)
		if w.cfg.Reads {
			w.read()
		}
	}()
}

// workloadAmount is the content of id's write: the same on every retry.
func workloadAmount(id int64) int64 { return id % 1_000_000 }

// ackAnswer is the part of a 201 the workload checks and records.
type ackAnswer struct {
	ID          *int64 `json:"id"`
	Region      string `json:"region"`
	EpochRegion string `json:"epoch_region"`
	DB          string `json:"db"`
}

func (w *Workload) write(id int64) {
	body, _ := json.Marshal(map[string]any{"id": id, "amount": workloadAmount(id), "note": w.note})
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.base+"/transactions", bytes.NewReader(body))
	if err != nil {
		w.failed(id, time.Now(), "building the request: "+err.Error(), 0, false)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if w.cfg.Host != "" {
		req.Host = w.cfg.Host
	}
	sent := time.Now()
	resp, err := w.client.Do(req)
	if err != nil {
		w.failed(id, time.Now(), w.describe(err), 0, true)
		return
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, workloadMaxAnswer))
	resp.Body.Close()
	at := time.Now()
	if err != nil {
		w.failed(id, at, fmt.Sprintf("%s, then reading the answer: %s", resp.Status, w.describe(err)), resp.StatusCode, true)
		return
	}
	if resp.StatusCode != http.StatusCreated {
		w.failed(id, at, resp.Status+": "+answerError(raw), resp.StatusCode, retryableWriteStatus(resp.StatusCode))
		return
	}
	// Only a 201 that names this id acknowledges it.
	var a ackAnswer
	if err := json.Unmarshal(raw, &a); err != nil || a.ID == nil || *a.ID != id {
		w.failed(id, at, fmt.Sprintf("201 whose body does not acknowledge id %d: %s", id, answerError(raw)), resp.StatusCode, true)
		return
	}
	region := a.EpochRegion
	if region == "" {
		region = resp.Header.Get("X-Lifeboat-Region")
	}
	w.acked(Ack{ID: id, At: at, Region: region, Latency: at.Sub(sent), RowRegion: a.Region, DB: a.DB})
}

func (w *Workload) acked(a Ack) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.ids[a.ID]
	st.acked = true
	a.FirstSent, a.Attempts = st.first, st.attempts
	w.acks = append(w.acks, a)
	w.lastAck, w.haveAck = a.ID, true
}

func (w *Workload) failed(id int64, at time.Time, msg string, status int, retry bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs = append(w.errs, ClientError{ID: id, At: at, Err: msg, Status: status})
	if retry && !w.cfg.NoRetry && !w.stopping {
		w.retryQ = append(w.retryQ, id)
	}
}

// read GETs the most recently acknowledged id; anything but that row is a
// read error.
func (w *Workload) read() {
	w.mu.Lock()
	if !w.haveAck || w.stopping {
		w.mu.Unlock()
		return
	}
	id := w.lastAck
	w.reads++
	w.mu.Unlock()
	ok := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.base+"/transactions/"+strconv.FormatInt(id, 10), nil)
		if err != nil {
			return false
		}
		if w.cfg.Host != "" {
			req.Host = w.cfg.Host
		}
		resp, err := w.client.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var row struct {
			ID *int64 `json:"id"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, workloadMaxAnswer)).Decode(&row)
		return resp.StatusCode == http.StatusOK && err == nil && row.ID != nil && *row.ID == id
	}()
	if !ok {
		w.mu.Lock()
		w.readErrors++
		w.mu.Unlock()
	}
}

// retryableWriteStatus reports whether a refusal may pass: the server or the
// path to it failing, or asking to come back. Other 4xx (a 409: the id
// holds other content; a 400) would be refused again.
func retryableWriteStatus(code int) bool {
	return code >= 500 || code == http.StatusRequestTimeout || code == http.StatusTooEarly || code == http.StatusTooManyRequests
}

func (w *Workload) describe(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Sprintf("no answer within %s", w.cfg.Timeout)
	}
	return err.Error()
}

// answerError is an answer's "error" field, else its first bytes.
func answerError(raw []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(raw, &e) == nil && e.Error != "" {
		return e.Error
	}
	s := strings.TrimSpace(string(raw))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

func (w *Workload) collect() Result {
	if w.setup != nil {
		now := time.Now()
		return Result{Errors: []ClientError{{At: now, Err: w.setup.Error()}}, FirstErrorAt: now, LastErrorAt: now}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	r := Result{
		Acks:       append([]Ack(nil), w.acks...),
		Errors:     append([]ClientError(nil), w.errs...),
		Attempted:  int64(len(w.ids)),
		Requests:   w.requests,
		Reads:      w.reads,
		ReadErrors: w.readErrors,
	}
	sort.SliceStable(r.Acks, func(i, j int) bool { return r.Acks[i].At.Before(r.Acks[j].At) })
	sort.SliceStable(r.Errors, func(i, j int) bool { return r.Errors[i].At.Before(r.Errors[j].At) })
	for id, st := range w.ids {
		if !st.acked {
			r.Unacknowledged = append(r.Unacknowledged, id)
		}
	}
	sort.Slice(r.Unacknowledged, func(i, j int) bool { return r.Unacknowledged[i] < r.Unacknowledged[j] })
	if n := len(r.Errors); n > 0 {
		r.FirstErrorAt, r.LastErrorAt = r.Errors[0].At, r.Errors[n-1].At
	}
	return r
}

// ErrorWindow is the time from the first to the last error the client
// saw; 0 with fewer than two.
func (r Result) ErrorWindow() time.Duration {
	return r.LastErrorAt.Sub(r.FirstErrorAt)
}

// FirstAckAfter is the first acknowledgement that arrived at or after t
// from region ("" for any region).
func (r Result) FirstAckAfter(t time.Time, region string) (Ack, bool) {
	i := sort.Search(len(r.Acks), func(i int) bool { return !r.Acks[i].At.Before(t) })
	for ; i < len(r.Acks); i++ {
		if region == "" || r.Acks[i].Region == region {
			return r.Acks[i], true
		}
	}
	return Ack{}, false
}

// Lost returns the acknowledged ids missing from the store, ascending.
// present reports which of the ids it is given exist (ids absent from its
// map, or false, are missing); it is called with at most 1000 ids at a
// time, so one query with id = ANY($1) fits.
func (r Result) Lost(present func(ids []int64) (map[int64]bool, error)) ([]int64, error) {
	ids := make([]int64, 0, len(r.Acks))
	for _, a := range r.Acks {
		ids = append(ids, a.ID)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var lost []int64
	for start := 0; start < len(ids); start += lostBatch {
		batch := ids[start:min(start+lostBatch, len(ids))]
		have, err := present(append([]int64(nil), batch...))
		if err != nil {
			return nil, fmt.Errorf("drill: checking which of %d acknowledged ids (%d..%d) are stored: %w", len(batch), batch[0], batch[len(batch)-1], err)
		}
		for _, id := range batch {
			if !have[id] {
				lost = append(lost, id)
			}
		}
	}
	return lost, nil
}

// History turns the acknowledged writes into CheckHistory's input.
// epochOf says under which epoch, and by which region's primary, a write
// was accepted (from the epoch commits, and Ack.DB or Ack.RowRegion); an
// empty region stands for Ack.RowRegion, else Ack.Region. Each write's
// Time is Ack.FirstSent, the earliest it can have been accepted, so a
// write in flight across an epoch change is not reported as accepted after
// it, while one first sent after a newer epoch committed and still
// accepted under an older epoch is.
func (r Result) History(epochOf func(Ack) (epoch uint64, region string)) []Write {
	out := make([]Write, 0, len(r.Acks))
	for _, a := range r.Acks {
		epoch, region := epochOf(a)
		if region == "" {
			region = a.RowRegion
		}
		if region == "" {
			region = a.Region
		}
		out = append(out, Write{ID: strconv.FormatInt(a.ID, 10), Region: region, Epoch: epoch, Acked: true, Time: a.FirstSent})
	}
	return out
}

func runToken() string {
	b := make([]byte, 8)
	rand.Read(b) // crypto/rand does not fail
	return hex.EncodeToString(b)
}
