package files

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

const (
	// defaultConcurrency is Options.Concurrency's default.
	defaultConcurrency = 8
	// defaultTimeout is Options.Timeout's default.
	defaultTimeout = time.Minute
	// defaultManifestEvery is how often a long pass saves its progress.
	defaultManifestEvery = 30 * time.Second
	// maxListed caps Report.ToCopy and Report.ToDelete.
	maxListed = 1000
)

// Options of a sync.
type Options struct {
	// Delete propagates deletions: objects of the destination that the
	// source does not have are deleted. Never when the source could not be
	// listed whole, nor when the source is empty and the destination is not
	// (an unmounted share looks empty).
	Delete bool
	// Concurrency is the number of objects copied (or compared) at once.
	// Default 8.
	Concurrency int
	// Checksum compares content hashes even when size and modification
	// time say the copy is up to date.
	Checksum bool
	// DryRun lists what would be copied and deleted and changes nothing
	// (content may still be read to compare it).
	DryRun bool
	// Timeout bounds each request that is not a copy (a listing page, a
	// delete, the manifest), and a copy or comparison that makes no
	// progress for that long. Default 1 minute.
	Timeout time.Duration
	// Logger receives per-pass summaries and per-object failures.
	// Default: discard.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Concurrency <= 0 {
		o.Concurrency = defaultConcurrency
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Report is the outcome of one pass.
type Report struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// DryRun is set when the pass only planned.
	DryRun bool `json:"dry_run,omitempty"`
	// Copied objects and their bytes; Deleted objects of the destination;
	// Unchanged objects already up to date (or found so by comparing
	// content).
	Copied      int   `json:"copied"`
	Deleted     int   `json:"deleted"`
	Unchanged   int   `json:"unchanged"`
	BytesCopied int64 `json:"bytes_copied"`
	// Hashed counts objects whose content was compared.
	Hashed int `json:"hashed,omitempty"`
	// Skipped counts source entries that are not objects: named pipes,
	// sockets, devices, symbolic links to directories, "folder" markers.
	Skipped int `json:"skipped,omitempty"`
	// ToCopy and ToDelete are the keys the pass found to copy and to
	// delete (on a dry run: would have), at most 1000 each.
	ToCopy   []string `json:"to_copy,omitempty"`
	ToDelete []string `json:"to_delete,omitempty"`
	// DeletesWithheld says why deletions were not propagated although
	// Options.Delete is set (the source listing was incomplete or empty).
	DeletesWithheld string `json:"deletes_withheld,omitempty"`
	// Failed are the objects the pass could not handle; the rest was
	// synced.
	Failed []ObjectError `json:"failed,omitempty"`
	// PendingObjects and PendingBytes are what remained unsynced after
	// the pass: 0 after a successful pass, what would be copied after a
	// dry run.
	PendingObjects int   `json:"pending_objects"`
	PendingBytes   int64 `json:"pending_bytes"`
	// PendingDeletes counts destination objects the source does not have
	// that are still there.
	PendingDeletes int `json:"pending_deletes,omitempty"`
	// OldestPending is the source modification time of the oldest object
	// not (yet) at the destination; zero when nothing is pending.
	OldestPending time.Time `json:"oldest_pending,omitzero"`
}

// ObjectError is one object a pass could not handle.
type ObjectError struct {
	Key string `json:"key"`
	// Op is what failed: "list" (the source), "list destination",
	// "stat", "read" (the source), "read destination", "write", "delete",
	// "write manifest".
	Op  string `json:"op"`
	Err string `json:"error"`
}

// String is `<op> "<key>": <why>`.
func (e ObjectError) String() string { return fmt.Sprintf("%s %q: %s", e.Op, e.Key, e.Err) }

// Syncer copies one store to another: every pass lists both, copies what
// is missing or changed, and deletes what the source no longer has (with
// Options.Delete). What the destination holds of each key is kept in a
// manifest object at the destination (".lifeboat/manifest-<hash of the
// source URL>.bin"), so that a pass after a crash copies only what is not
// there yet. Open it with OpenSyncer; it is safe for concurrent use
// (passes run one at a time).
type Syncer struct {
	src, dst    *store
	opts        Options
	log         *slog.Logger
	manifestKey string
	// manifestKeyV1 is where format 1 kept it (see loadManifest).
	manifestKeyV1 string
	// manifestEvery is how often a long pass saves its manifest.
	manifestEvery time.Duration

	mu       sync.Mutex // one pass at a time
	closedMu sync.Mutex
	closed   bool

	// Test hooks, nil outside tests.
	beforeCopy func(key string)
	afterCopy  func(key string)
}

// OpenSyncer opens the source and destination stores: file:///dir,
// s3://bucket?endpoint=...&region=...&use_path_style=true, azblob://...,
// gs://... (or an absolute path). Credentials come from the environment,
// as each driver reads them. It lists one object of each to fail early,
// and clearly, on a missing directory or bucket, an unreachable endpoint
// or refused credentials. Errors name the store (secrets redacted).
func OpenSyncer(ctx context.Context, srcURL, dstURL string, opts Options) (*Syncer, error) {
	opts = opts.withDefaults()
	src, err := openStore(ctx, srcURL, opts.Timeout)
	if err != nil {
		return nil, fmt.Errorf("files sync: source: %w", err)
	}
	dst, err := openStore(ctx, dstURL, opts.Timeout)
	if err != nil {
		src.close()
		return nil, fmt.Errorf("files sync: destination: %w", err)
	}
	if src.url == dst.url || src.contains(dst) || dst.contains(src) {
		src.close()
		dst.close()
		return nil, fmt.Errorf("files sync: %s and %s overlap", src.redacted, dst.redacted)
	}
	return &Syncer{
		src:           src,
		dst:           dst,
		opts:          opts,
		log:           opts.Logger.With("source", src.redacted, "destination", dst.redacted),
		manifestKey:   manifestKey(src.redacted),
		manifestKeyV1: manifestKeyV1(src.redacted),
		manifestEvery: defaultManifestEvery,
	}, nil
}

// Close closes both stores; a pass under way ends with an error. It does
// not wait for that pass.
func (s *Syncer) Close() error {
	s.closedMu.Lock()
	defer s.closedMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return errors.Join(s.src.close(), s.dst.close())
}

func (s *Syncer) isClosed() bool {
	s.closedMu.Lock()
	defer s.closedMu.Unlock()
	return s.closed
}

// Source is the source's URL, secrets redacted.
func (s *Syncer) Source() string { return s.src.redacted }

// Destination is the destination's URL, secrets redacted.
func (s *Syncer) Destination() string { return s.dst.redacted }

// Sync runs one pass. It returns an error when the pass could not run
// (either store cannot be listed) or was cut short by ctx; failures of
// single objects are in Report.Failed and the rest is synced. With
// Options.DryRun it only plans.
func (s *Syncer) Sync(ctx context.Context) (Report, error) {
	return s.sync(ctx, s.opts.DryRun)
}

// sync runs one pass; dryRun overrides Options.DryRun.
func (s *Syncer) sync(ctx context.Context, dryRun bool) (Report, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rep := Report{Started: time.Now(), DryRun: dryRun}
	if s.isClosed() {
		return rep, fmt.Errorf("files sync %s → %s: syncer is closed", s.src.redacted, s.dst.redacted)
	}
	p := &pass{s: s, ctx: ctx, dryRun: dryRun, rep: &rep, pending: map[string]object{}, failed: map[string]ObjectError{}}
	err := p.run()
	rep.Finished = time.Now()
	if err != nil {
		return rep, fmt.Errorf("files sync %s → %s: %w", s.src.redacted, s.dst.redacted, err)
	}
	return rep, nil
}

// pass is the state of one Sync.
type pass struct {
	s      *Syncer
	ctx    context.Context
	dryRun bool

	mu      sync.Mutex // guards the fields below
	rep     *Report
	man     *manifest
	pending map[string]object      // objects to copy or check, not done yet
	failed  map[string]ObjectError // by key
	retry   []object               // copies that failed to write, tried again after deletions

	flushMu sync.Mutex // one manifest write at a time
}

type taskKind int

const (
	taskCopy   taskKind = iota
	taskVerify          // compare content, copy when it differs
)

type task struct {
	kind taskKind
	src  object
	dst  object // taskVerify
}

func (p *pass) run() error {
	s := p.s
	// Both stores are listed, and the manifest read, at once: a listing
	// mostly waits (on stat calls, on listing pages).
	var (
		dst              *listing
		entries          []manifestItem
		v1               bool
		dstErr, entryErr error
		wg               sync.WaitGroup
	)
	wg.Go(func() { dst, dstErr = s.dst.list(p.ctx, s.opts.Timeout) })
	wg.Go(func() { entries, v1, entryErr = s.loadManifest(p.ctx) })
	src, err := s.src.list(p.ctx, s.opts.Timeout)
	wg.Wait()
	if err == nil {
		err = cmp.Or(dstErr, entryErr)
	}
	if err != nil {
		return err
	}
	// A manifest of format 1 is written again in format 2.
	p.man = newManifest(entries)
	p.man.dirty, p.man.v1 = v1, v1

	tasks, deletes := p.plan(src, dst)
	p.runTasks(tasks)
	if p.ctx.Err() == nil {
		p.deleteAll(deletes)
	}
	if len(p.retry) > 0 && p.rep.Deleted > 0 && p.ctx.Err() == nil {
		// A deletion may have cleared the way (a directory where a file
		// goes, or the other way round).
		retry := p.retry
		p.retry = nil
		ts := make([]task, len(retry))
		for i, o := range retry {
			delete(p.failed, o.Key)
			ts[i] = task{kind: taskCopy, src: o}
		}
		p.runTasks(ts)
	}
	if !p.dryRun {
		if err := p.flush(true); err != nil {
			p.fail(s.manifestKey, "write manifest", err)
		}
	}
	p.finish()
	if err := p.ctx.Err(); err != nil {
		return err
	}
	if p.dryRun {
		s.log.Debug("files sync planned", "to_copy", p.rep.PendingObjects, "to_delete", p.rep.PendingDeletes, "unchanged", p.rep.Unchanged)
	} else if p.rep.Copied+p.rep.Deleted+len(p.rep.Failed) > 0 {
		s.log.Info("files sync pass", "copied", p.rep.Copied, "bytes", p.rep.BytesCopied, "deleted", p.rep.Deleted,
			"unchanged", p.rep.Unchanged, "failed", len(p.rep.Failed), "pending", p.rep.PendingObjects)
	}
	return nil
}

// plan compares the listings and the manifest: what to copy, what to
// compare by content, what to delete. Objects found up to date are
// counted (and their manifest entries completed) here.
func (p *pass) plan(src, dst *listing) ([]task, []string) {
	s := p.s
	for _, e := range src.problems {
		p.failed[e.Key] = e
	}
	for _, e := range dst.problems {
		// Copies below an unreadable directory of the destination are
		// attempted again, and fail there if it cannot be written either.
		e.Op = "list destination"
		p.failed[e.Key] = e
	}
	p.rep.Skipped = src.skipped
	// Both listings are sorted by key: walked side by side, the
	// destination's objects that the source does not have (extra) come
	// out on the way.
	var tasks []task
	var extra []string
	notInSource := func(d object) {
		if !src.present[d.Key] {
			extra = append(extra, d.Key)
		}
	}
	// The manifest's entries as loaded are sorted too: looked up on the
	// way (m), as no entry has changed yet but those of keys already
	// passed.
	j, m := 0, 0
	loaded := p.man.base
	recorded := 0 // source objects with an entry
	for _, o := range src.objects {
		for j < len(dst.objects) && dst.objects[j].Key < o.Key {
			notInSource(dst.objects[j])
			j++
		}
		var d object
		ok := j < len(dst.objects) && dst.objects[j].Key == o.Key
		if ok {
			d = dst.objects[j]
			j++
		}
		for m < len(loaded) && loaded[m].key < o.Key {
			m++
		}
		var e manifestEntry
		hasEntry := m < len(loaded) && loaded[m].key == o.Key
		if hasEntry {
			e = loaded[m].manifestEntry
			recorded++
		}
		switch {
		case !ok, d.Size != o.Size:
			tasks = append(tasks, task{kind: taskCopy, src: o})
		case o.MD5 != "" && d.MD5 != "":
			// Both stores know the content's MD5: no need to read it.
			if o.MD5 == d.MD5 {
				p.upToDateFrom(o, d, e, hasEntry)
			} else {
				tasks = append(tasks, task{kind: taskCopy, src: o})
			}
		case s.opts.Checksum:
			tasks = append(tasks, task{kind: taskVerify, src: o, dst: d})
		case hasEntry && e.matches(o) && (e.DstModTime.IsZero() || e.DstModTime.Equal(d.ModTime)):
			p.upToDateFrom(o, d, e, hasEntry)
		case !hasEntry && !d.ModTime.Before(o.ModTime):
			// Written after the source last changed, with the same size,
			// but not recorded: a copy made by a pass that did not get to
			// save its manifest.
			p.upToDateFrom(o, d, e, hasEntry)
		default:
			// Same size, but the source changed since it was recorded, or
			// the copy was changed, or it predates the source: only the
			// content can tell.
			tasks = append(tasks, task{kind: taskVerify, src: o, dst: d})
		}
	}
	for ; j < len(dst.objects); j++ {
		notInSource(dst.objects[j])
	}
	for _, t := range tasks {
		p.pending[t.src.Key] = t.src
	}

	// Entries of keys the source no longer has, if any (the manifest
	// had more entries than source objects with one).
	if !src.incomplete && len(loaded) > recorded {
		j := 0
		for _, it := range loaded {
			for j < len(src.objects) && src.objects[j].Key < it.key {
				j++
			}
			inSource := j < len(src.objects) && src.objects[j].Key == it.key
			if !inSource && !src.present[it.key] {
				p.man.remove(it.key)
			}
		}
	}
	p.rep.ToDelete = capped(extra)
	p.rep.PendingDeletes = len(extra)
	if !s.opts.Delete || len(extra) == 0 {
		return tasks, nil
	}
	switch {
	case src.incomplete:
		p.rep.DeletesWithheld = "the source could not be listed whole"
	case len(src.objects) == 0 && len(src.present) == 0:
		p.rep.DeletesWithheld = "the source is empty and the destination is not (an unmounted share?)"
	case p.dryRun:
	default:
		return tasks, extra
	}
	if p.rep.DeletesWithheld != "" {
		s.log.Warn("files sync: deletions withheld", "reason", p.rep.DeletesWithheld, "to_delete", len(extra))
	}
	return tasks, nil
}

// matches reports whether the entry was recorded for the source object
// as it is now.
func (e manifestEntry) matches(o object) bool {
	return e.Size == o.Size && e.ModTime.Equal(o.ModTime) &&
		(e.MD5 == "" || o.MD5 == "" || e.MD5 == o.MD5)
}

// upToDate counts o as synced and records it with d, the destination's
// object.
func (p *pass) upToDate(o, d object) {
	old, recorded := p.man.get(o.Key)
	p.upToDateFrom(o, d, old, recorded)
}

// upToDateFrom is upToDate with o's manifest entry (old, if recorded)
// at hand.
func (p *pass) upToDateFrom(o, d object, old manifestEntry, recorded bool) {
	p.rep.Unchanged++
	e := manifestEntry{Size: o.Size, ModTime: o.ModTime, MD5: o.MD5, DstModTime: d.ModTime}
	if recorded && old.sameAs(e) {
		// Recorded already. Times are compared with Equal: those read
		// back from the manifest are in UTC, those of a listing may be
		// local, and the manifest would be rewritten on every pass.
		return
	}
	p.man.set(o.Key, e)
}

// sameAs reports whether two entries record the same thing.
func (e manifestEntry) sameAs(f manifestEntry) bool {
	return e.Size == f.Size && e.MD5 == f.MD5 && e.ModTime.Equal(f.ModTime) && e.DstModTime.Equal(f.DstModTime)
}

func hexOrEmpty(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return hex.EncodeToString(b)
}

func capped(keys []string) []string {
	if len(keys) > maxListed {
		return slices.Clone(keys[:maxListed])
	}
	return keys
}

// runTasks runs tasks on Options.Concurrency workers until they are done
// or the pass's context ends.
func (p *pass) runTasks(tasks []task) {
	if len(tasks) == 0 {
		return
	}
	ch := make(chan task)
	var wg sync.WaitGroup
	for range min(p.s.opts.Concurrency, len(tasks)) {
		wg.Go(func() {
			for t := range ch {
				p.runTask(t)
			}
		})
	}
feed:
	for _, t := range tasks {
		select {
		case ch <- t:
		case <-p.ctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
}

func (p *pass) runTask(t task) {
	s := p.s
	if p.ctx.Err() != nil {
		return
	}
	o := t.src
	if t.kind == taskVerify {
		p.mu.Lock()
		p.rep.Hashed++
		p.mu.Unlock()
		same, op, err := s.sameContent(p.ctx, o)
		if err != nil {
			p.fail(o.Key, op, err)
			return
		}
		if same {
			p.mu.Lock()
			p.upToDate(o, t.dst)
			delete(p.pending, o.Key)
			p.mu.Unlock()
			p.flush(false)
			return
		}
	}
	p.mu.Lock()
	if len(p.rep.ToCopy) < maxListed && !slices.Contains(p.rep.ToCopy, o.Key) {
		p.rep.ToCopy = append(p.rep.ToCopy, o.Key)
	}
	p.mu.Unlock()
	if p.dryRun {
		return
	}
	if s.beforeCopy != nil {
		s.beforeCopy(o.Key)
	}
	n, op, err := s.copyObject(p.ctx, o)
	if err != nil {
		p.fail(o.Key, op, err)
		if op == "write" {
			p.mu.Lock()
			p.retry = append(p.retry, o)
			p.mu.Unlock()
		}
		return
	}
	p.mu.Lock()
	p.rep.Copied++
	p.rep.BytesCopied += n
	delete(p.pending, o.Key)
	// The destination's modification time is taken from the next listing.
	p.man.set(o.Key, manifestEntry{Size: o.Size, ModTime: o.ModTime, MD5: o.MD5})
	p.mu.Unlock()
	s.log.Debug("files sync: copied", "key", o.Key, "bytes", n)
	if s.afterCopy != nil {
		s.afterCopy(o.Key)
	}
	p.flush(false)
}

// fail records a per-object failure; one cut short by the end of the
// pass's context is not one.
func (p *pass) fail(key, op string, err error) {
	if p.ctx.Err() != nil {
		return
	}
	e := ObjectError{Key: key, Op: op, Err: describeErr(err)}
	p.s.log.Debug("files sync: object failed", "key", key, "op", op, "error", e.Err)
	p.mu.Lock()
	p.failed[key] = e
	p.mu.Unlock()
}

// deleteAll deletes keys from the destination.
func (p *pass) deleteAll(keys []string) {
	if len(keys) == 0 {
		return
	}
	s := p.s
	ch := make(chan string)
	var wg sync.WaitGroup
	for range min(s.opts.Concurrency, len(keys)) {
		wg.Go(func() {
			for key := range ch {
				ctx, cancel := context.WithTimeout(p.ctx, s.opts.Timeout)
				err := s.dst.bucket.Delete(ctx, key)
				cancel()
				if err != nil && gcerrors.Code(err) != gcerrors.NotFound {
					p.fail(key, "delete", err)
					continue
				}
				s.dst.removeEmptyParents(key)
				p.mu.Lock()
				p.rep.Deleted++
				p.rep.PendingDeletes--
				p.man.remove(key)
				p.mu.Unlock()
			}
		})
	}
feed:
	for _, k := range keys {
		select {
		case ch <- k:
		case <-p.ctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
}

// flush writes the manifest when it changed: at once when force is set
// (the end of a pass, even one cut short), else at most every
// manifestEvery. A flush already under way is not waited for unless force
// is set.
func (p *pass) flush(force bool) error {
	s := p.s
	if p.dryRun {
		return nil
	}
	if force {
		p.flushMu.Lock()
	} else if !p.flushMu.TryLock() {
		return nil
	}
	defer p.flushMu.Unlock()
	p.mu.Lock()
	if !p.man.dirty || (!force && time.Since(p.man.lastWrite) < s.manifestEvery) {
		p.mu.Unlock()
		return nil
	}
	snap := p.man.fold()
	p.man.dirty = false
	p.man.lastWrite = time.Now()
	v1 := p.man.v1
	p.mu.Unlock()
	// Progress is saved even when the pass is being cancelled.
	ctx := context.WithoutCancel(p.ctx)
	err := s.writeManifest(ctx, snap)
	if err != nil {
		p.mu.Lock()
		p.man.dirty = true
		p.mu.Unlock()
		s.log.Warn("files sync: manifest not saved", "error", err.Error())
		return err
	}
	if v1 {
		if err := s.removeManifestV1(ctx); err != nil {
			// Harmless: the manifest of format 2 is read first.
			s.log.Warn("files sync: old manifest not removed", "error", err.Error())
		} else {
			p.mu.Lock()
			p.man.v1 = false
			p.mu.Unlock()
		}
	}
	return nil
}

// finish fills the report's pending figures and failures.
func (p *pass) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.rep
	for _, o := range p.pending {
		r.PendingObjects++
		r.PendingBytes += o.Size
		if r.OldestPending.IsZero() || o.ModTime.Before(r.OldestPending) {
			r.OldestPending = o.ModTime
		}
	}
	for _, e := range p.failed {
		r.Failed = append(r.Failed, e)
	}
	slices.SortFunc(r.Failed, func(a, b ObjectError) int { return strings.Compare(a.Key, b.Key) })
	slices.Sort(r.ToCopy)
}

// readError marks an error of the source side of a copy.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// progressReader reads r, feeding a watchdog on every read and marking
// read errors.
type progressReader struct {
	r  io.Reader
	wd *watchdog
}

func (pr *progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	pr.wd.feed()
	if err != nil && err != io.EOF {
		return n, &readError{err}
	}
	return n, err
}

// watchdog cancels a copy that makes no progress for its timeout.
type watchdog struct {
	d     time.Duration
	timer *time.Timer
	mu    sync.Mutex
	fired bool
}

func newWatchdog(d time.Duration, cancel context.CancelFunc) *watchdog {
	w := &watchdog{d: d}
	w.timer = time.AfterFunc(d, func() {
		w.mu.Lock()
		w.fired = true
		w.mu.Unlock()
		cancel()
	})
	return w
}

func (w *watchdog) feed() { w.timer.Reset(w.d) }
func (w *watchdog) stop() { w.timer.Stop() }
func (w *watchdog) hasFired() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fired
}

// copyBufSize is the size of the buffers that copies and hashes stream
// through.
const copyBufSize = 256 << 10

// copyBufs holds the buffers of copies and hashes (*[]byte of
// copyBufSize), reused across objects: one per object in flight.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// writerOnly hides every method of an io.Writer but Write.
type writerOnly struct{ io.Writer }

// copyObject streams one object from the source to the destination. The
// destination sees the object whole or not at all: fileblob publishes a
// temporary file with a rename, S3 and the others an upload on Close,
// and a failed copy is cancelled before Close. It returns the bytes
// copied, or the operation ("read" or "write") that failed.
func (s *Syncer) copyObject(ctx context.Context, o object) (int64, string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r, err := s.src.bucket.NewReader(ctx, o.Key, nil)
	if err != nil {
		return 0, "read", err
	}
	defer r.Close()
	w, err := s.dst.bucket.NewWriter(ctx, o.Key, &blob.WriterOptions{ContentType: r.ContentType()})
	if err != nil {
		return 0, "write", err
	}
	wd := newWatchdog(s.opts.Timeout, cancel)
	defer wd.stop()
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	// The writer is wrapped to hide its ReadFrom, which would allocate a
	// buffer of its own (1 MiB) for every object.
	n, err := io.CopyBuffer(writerOnly{w}, &progressReader{r: r, wd: wd}, *buf)
	if err != nil {
		cancel() // before Close, which then discards the write
		w.Close()
		op := "write"
		var re *readError
		if errors.As(err, &re) {
			op, err = "read", re.err
		}
		if wd.hasFired() {
			err = fmt.Errorf("no progress for %s: %w", s.opts.Timeout, err)
		}
		return n, op, err
	}
	if err := w.Close(); err != nil {
		if wd.hasFired() {
			err = fmt.Errorf("no progress for %s: %w", s.opts.Timeout, err)
		}
		return n, "write", err
	}
	return n, "", nil
}

// sameContent compares the SHA-256 of the object on both sides.
func (s *Syncer) sameContent(ctx context.Context, o object) (bool, string, error) {
	hs, err := s.hash(ctx, s.src, o.Key)
	if err != nil {
		return false, "read", err
	}
	hd, err := s.hash(ctx, s.dst, o.Key)
	if err != nil {
		return false, "read destination", err
	}
	return bytes.Equal(hs, hd), "", nil
}

func (s *Syncer) hash(ctx context.Context, st *store, key string) ([]byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r, err := st.bucket.NewReader(ctx, key, nil)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	wd := newWatchdog(s.opts.Timeout, cancel)
	defer wd.stop()
	h := sha256.New()
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	if _, err := io.CopyBuffer(h, &progressReader{r: r, wd: wd}, *buf); err != nil {
		var re *readError
		if errors.As(err, &re) {
			err = re.err
		}
		if wd.hasFired() {
			err = fmt.Errorf("no progress for %s: %w", s.opts.Timeout, err)
		}
		return nil, err
	}
	return h.Sum(nil), nil
}
