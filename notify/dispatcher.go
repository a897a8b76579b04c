package notify

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
)

// Defaults of Options and of a channel's settings left at zero.
const (
	DefaultBaseBackoff = time.Second
	DefaultMaxBackoff  = 30 * time.Second
	DefaultDedupWindow = 10 * time.Minute
	DefaultQueueSize   = 64
	DefaultTimeout     = 10 * time.Second
)

// Delivery outcomes: the Status of a delivery record.
const (
	StatusDelivered = "delivered"
	StatusFailed    = "failed"
)

// ErrClosed: the dispatcher was closed before a notification was delivered.
var ErrClosed = errors.New("notify: dispatcher closed")

// Options tunes a Dispatcher.
type Options struct {
	// Record receives the delivery record of every notification's final
	// outcome (a control.EventNotification event); nil: none. It is called
	// from the channels' goroutines, and from Notify's caller when a queue
	// is full, so it should not block (control.Plane.Record queues).
	Record func(control.Event)
	// Logger gets a line per failed delivery (debug per success); nil:
	// discarded.
	Logger *slog.Logger
	// BaseBackoff is the wait before the first retry, doubled before each
	// next one up to MaxBackoff. Defaults: 1s and 30s.
	BaseBackoff time.Duration
	MaxBackoff  time.Duration
	// DedupWindow is how long a channel ignores a notification whose Key
	// it has queued already. Default 10m; negative: never ignore.
	DedupWindow time.Duration
	// QueueSize is how many notifications wait per channel before new ones
	// are dropped. Default 64.
	QueueSize int
	// TLS is the base configuration of the email channels' STARTTLS (a
	// private CA's roots); nil: the system's roots.
	TLS *tls.Config
}

// Dispatcher delivers notifications to channels: one bounded queue and one
// goroutine per channel, so a channel that is slow or dead delays only
// itself and Notify never blocks.
type Dispatcher struct {
	opts      Options
	channels  []*channel
	transport *http.Transport

	mu     sync.Mutex // guards the queues against Close, and each channel's seen
	opened bool
	closed bool
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// channel is one destination with its queue and its settings.
type channel struct {
	name     string
	sink     Sink
	kinds    map[string]bool // nil: every kind
	minRank  int
	attempts int
	timeout  time.Duration
	redact   redactor
	queue    chan Notification
	// seen maps a Key to when it was last queued.
	seen      map[string]time.Time
	lastPrune time.Time
}

// New checks the channels and makes their sinks. Errors name the channel
// and the key at fault, never a URL or a secret. Nothing runs until Open.
func New(channels []config.Channel, opts Options) (*Dispatcher, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.BaseBackoff <= 0 {
		opts.BaseBackoff = DefaultBaseBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.MaxBackoff < opts.BaseBackoff {
		opts.MaxBackoff = opts.BaseBackoff
	}
	if opts.DedupWindow == 0 {
		opts.DedupWindow = DefaultDedupWindow
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	client := &http.Client{Transport: tr, CheckRedirect: noRedirect}
	d := &Dispatcher{opts: opts, transport: tr}
	seen := map[string]bool{}
	var errs []error
	for i, ch := range channels {
		where := fmt.Sprintf("notify.channels[%d] (%s)", i, ch.Name)
		if ch.Name == "" {
			errs = append(errs, fmt.Errorf("notify: notify.channels[%d]: name is missing", i))
			continue
		}
		if seen[ch.Name] {
			errs = append(errs, fmt.Errorf("notify: %s: the name is used twice", where))
			continue
		}
		seen[ch.Name] = true
		red := newRedactor(ch)
		sink, err := newSink(ch, client, opts.TLS)
		if err != nil {
			errs = append(errs, fmt.Errorf("notify: %s: %s", where, red.String(err.Error())))
			continue
		}
		c := &channel{name: ch.Name, sink: sink, attempts: 1 + max(ch.Retries, 0), timeout: ch.Timeout.D(),
			redact: red, queue: make(chan Notification, opts.QueueSize), seen: map[string]time.Time{}}
		if c.timeout <= 0 {
			c.timeout = DefaultTimeout
		}
		if ch.MinSeverity != "" {
			if !validSeverity(ch.MinSeverity) {
				errs = append(errs, fmt.Errorf("notify: %s: min_severity %q is not info, warning or critical", where, ch.MinSeverity))
				continue
			}
			c.minRank = severityRank(ch.MinSeverity)
		}
		if len(ch.Events) > 0 {
			c.kinds = map[string]bool{}
			for j, k := range ch.Events {
				if !slices.Contains(config.NotificationKinds(), k) {
					errs = append(errs, fmt.Errorf("notify: %s: events[%d] %q is not a notification kind", where, j, k))
				}
				c.kinds[k] = true
			}
		}
		d.channels = append(d.channels, c)
	}
	if len(errs) > 0 {
		tr.CloseIdleConnections()
		return nil, errors.Join(errs...)
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d, nil
}

// Open starts one delivery goroutine per channel. Notifications given to
// Notify before Open wait in the queues.
func (d *Dispatcher) Open() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.opened || d.closed {
		return errors.New("notify: dispatcher opened twice or after Close")
	}
	d.opened = true
	for _, c := range d.channels {
		d.wg.Go(func() { d.run(c) })
	}
	return nil
}

// Close stops taking notifications, delivers those queued while ctx
// allows, then cancels what is left (each recorded as failed), waits for
// the channels' goroutines and closes idle connections. It returns ctx's
// error when it had to cancel deliveries.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	for _, c := range d.channels {
		close(c.queue)
	}
	opened := d.opened
	d.mu.Unlock()
	if !opened {
		d.cancel()
		// Never started: what waits in the queues is given up now.
		for _, c := range d.channels {
			for n := range c.queue {
				d.record(c, n, StatusFailed, 0, ErrClosed)
			}
		}
	}
	// Every sink ends its attempt when d.ctx is cancelled, and the
	// back-off waits watch it too: after cancel, Wait returns promptly.
	stop := context.AfterFunc(ctx, d.cancel)
	d.wg.Wait()
	cut := !stop()
	d.cancel()
	d.transport.CloseIdleConnections()
	if cut {
		return fmt.Errorf("notify: close: deliveries cancelled: %w", ctx.Err())
	}
	return nil
}

// Notify queues n for every channel that takes its kind and severity and
// has not queued the same Key within the de-duplication window. It never
// blocks: a full queue drops n for that channel, with a failed delivery
// record. After Close it does nothing.
func (d *Dispatcher) Notify(n Notification) {
	if n.Kind == "" {
		return
	}
	now := time.Now()
	type drop struct {
		c *channel
		n Notification
	}
	var drops []drop
	// Records of drops are made after the lock is released: Record may
	// take its time, or even notify.
	defer func() {
		for _, x := range drops {
			d.record(x.c, x.n, StatusFailed, 0, fmt.Errorf("dropped: the queue is full (%d waiting)", cap(x.c.queue)))
		}
	}()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		d.opts.Logger.Debug("notification after close dropped", "kind", n.Kind)
		return
	}
	for _, c := range d.channels {
		if !c.takes(n) {
			continue
		}
		if d.duplicate(c, n.Key, now) {
			d.opts.Logger.Debug("duplicate notification ignored", "channel", c.name, "kind", n.Kind, "key", n.Key)
			continue
		}
		m := n
		m.ID = newID()
		select {
		case c.queue <- m:
		default:
			delete(c.seen, n.Key)
			drops = append(drops, drop{c, m})
		}
	}
}

// takes reports whether the channel wants n: its kind is listed (or none
// is) and its severity is at least the channel's minimum.
func (c *channel) takes(n Notification) bool {
	return (c.kinds == nil || c.kinds[n.Kind]) && severityRank(n.Severity) >= c.minRank
}

// duplicate reports whether the channel queued key within the window, and
// otherwise remembers it. Called with d.mu held.
func (d *Dispatcher) duplicate(c *channel, key string, now time.Time) bool {
	w := d.opts.DedupWindow
	if key == "" || w < 0 {
		return false
	}
	if now.Sub(c.lastPrune) > w {
		for k, t := range c.seen {
			if now.Sub(t) >= w {
				delete(c.seen, k)
			}
		}
		c.lastPrune = now
	}
	if t, ok := c.seen[key]; ok && now.Sub(t) < w {
		return true
	}
	c.seen[key] = now
	return false
}

// forget lets the next notification with key through: the last one was not
// delivered.
func (d *Dispatcher) forget(c *channel, key string) {
	d.mu.Lock()
	delete(c.seen, key)
	d.mu.Unlock()
}

// run delivers a channel's notifications in order until its queue is
// closed and empty.
func (d *Dispatcher) run(c *channel) {
	for n := range c.queue {
		d.deliver(c, n)
	}
}

// deliver tries n up to the channel's attempts, each bounded by its
// timeout, with exponential back-off between them; a permanent refusal
// (a 4xx) is not retried. It records the outcome.
func (d *Dispatcher) deliver(c *channel, n Notification) {
	var err error
	attempt := 0
	for attempt < c.attempts {
		if attempt > 0 && !d.sleep(d.backoff(attempt)) {
			break
		}
		if d.ctx.Err() != nil {
			break
		}
		attempt++
		err = d.send(c, n)
		if err == nil {
			d.record(c, n, StatusDelivered, attempt, nil)
			return
		}
		d.opts.Logger.Debug("notification attempt failed", "channel", c.name, "kind", n.Kind, "attempt", attempt, "err", c.redact.String(err.Error()))
		if permanent(err) {
			break
		}
	}
	if d.ctx.Err() != nil {
		if err == nil {
			err = ErrClosed
		} else {
			err = fmt.Errorf("%w (last error: %v)", ErrClosed, err)
		}
	}
	d.forget(c, n.Key)
	d.record(c, n, StatusFailed, attempt, err)
}

// send makes one attempt within the channel's timeout; a sink that panics
// fails the attempt.
func (d *Dispatcher) send(c *channel, n Notification) (err error) {
	ctx, cancel := context.WithTimeout(d.ctx, c.timeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("sink panicked: %v", p)
		}
	}()
	return c.sink.Send(ctx, n)
}

// backoff is the wait before attempt+1 (attempt ≥ 1): BaseBackoff doubled
// attempt-1 times, at most MaxBackoff.
func (d *Dispatcher) backoff(attempt int) time.Duration {
	b := d.opts.BaseBackoff
	for i := 1; i < attempt && b < d.opts.MaxBackoff; i++ {
		b *= 2
	}
	return min(b, d.opts.MaxBackoff)
}

// sleep waits for wait, or returns false when the dispatcher is cancelled.
func (d *Dispatcher) sleep(wait time.Duration) bool {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-d.ctx.Done():
		return false
	}
}

// record logs the outcome and hands the delivery record to Options.Record.
// Nothing in it can hold the channel's URL or secrets: the error is
// redacted.
func (d *Dispatcher) record(c *channel, n Notification, status string, attempts int, err error) {
	e := control.Event{Type: control.EventNotification, Status: status, Channel: c.name, Severity: n.Severity,
		Run: n.Event.Run, Service: n.Event.Service, Region: n.Event.Region}
	if status == StatusDelivered {
		e.Message = fmt.Sprintf("%s delivered to %s (attempt %d)", n.Kind, c.name, attempts)
		d.opts.Logger.Debug("notification delivered", "channel", c.name, "kind", n.Kind, "attempts", attempts)
	} else {
		msg := c.redact.String(err.Error())
		if attempts == 0 {
			e.Message = fmt.Sprintf("%s to %s failed: %s", n.Kind, c.name, msg)
		} else {
			e.Message = fmt.Sprintf("%s to %s failed after %d attempts: %s", n.Kind, c.name, attempts, msg)
		}
		d.opts.Logger.Warn("notification not delivered", "channel", c.name, "kind", n.Kind, "attempts", attempts, "err", msg)
	}
	if d.opts.Record != nil {
		d.opts.Record(e)
	}
}
