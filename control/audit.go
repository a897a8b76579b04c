package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The audit trail is the event stream itself: a mutating API call is
// recorded by appending an Event of Type EventAudit (Actor, Source,
// Action, Status: the HTTP status code) with Append, like any other
// event, so it is linked into the same hash chain. Verify checks the
// chain in the store, Export writes a piece of it that VerifyExport
// checks on its own.

// Kinds of Problem.
const (
	// ProblemEdited: the entry's content does not hash to its Hash.
	ProblemEdited = "edited"
	// ProblemRemoved: one or more sequence numbers are missing.
	ProblemRemoved = "removed"
	// ProblemOrder: the entry is not where its sequence number or its
	// Prev says it belongs (moved, swapped, inserted, or its predecessor
	// was rewritten with a new hash).
	ProblemOrder = "out of order"
	// ProblemAltered: the stored JSON is not what Append wrote (unknown
	// fields, duplicate or reordered keys, other spacing), although it may
	// still hash.
	ProblemAltered = "altered"
	// ProblemCorrupt: the stored value is not an event at all.
	ProblemCorrupt = "corrupt"
	// ProblemTruncated: the head promises more entries than the stream
	// holds (the tail was cut).
	ProblemTruncated = "truncated"
	// ProblemHead: the head does not match the last entry (entries added
	// behind the head's back, or the last entry rewritten with a new hash).
	ProblemHead = "head mismatch"
)

// maxListedProblems bounds VerifyReport.Problems; the rest are counted.
const maxListedProblems = 100

// verifyPage is how many entries Verify and Export read at a time.
const verifyPage = 500

// Problem is one break of the chain.
type Problem struct {
	// Seq is the entry concerned (for ProblemRemoved the first missing
	// one).
	Seq  uint64 `json:"seq"`
	Kind string `json:"kind"`
	// Message says what is wrong where, e.g. "entry 42: edited (hash
	// mismatch)".
	Message string `json:"message"`
}

// VerifyReport is the result of checking a chain (or a piece of it).
type VerifyReport struct {
	// Intact is true when no problem was found.
	Intact bool `json:"intact"`
	// Checked is how many entries were read.
	Checked uint64 `json:"checked"`
	// First and Last are the sequence numbers of the first and last
	// entries read.
	First uint64 `json:"first,omitempty"`
	Last  uint64 `json:"last,omitempty"`
	// Prev is what the first entry links to ("" for the genesis entry).
	Prev string `json:"prev,omitempty"`
	// Head is the hash of the last entry read.
	Head string `json:"head,omitempty"`
	// HeadSeq and HeadHash are the head recorded in the store (events-seq);
	// Verify only.
	HeadSeq  uint64 `json:"head_seq,omitempty"`
	HeadHash string `json:"head_hash,omitempty"`
	// Unchained counts entries written before the chain existed (no Prev,
	// no Hash, before the first hashed entry): they are not protected.
	Unchained uint64 `json:"unchained,omitempty"`
	// Broken is the first problem; nil when intact.
	Broken *Problem `json:"broken,omitempty"`
	// Problems lists the problems in stream order (at most 100);
	// ProblemCount counts them all.
	Problems     []Problem `json:"problems,omitempty"`
	ProblemCount int       `json:"problem_count,omitempty"`
}

// String is a one-line summary: "intact: ..." or "broken: <first problem>
// ...".
func (r VerifyReport) String() string {
	span := "no entries"
	if r.Checked > 0 {
		span = fmt.Sprintf("%d entries (seq %d..%d), head %s", r.Checked, r.First, r.Last, orNone(r.Head))
	}
	if r.Unchained > 0 {
		span += fmt.Sprintf(", %d written before the chain existed (unprotected)", r.Unchained)
	}
	if r.Intact {
		return "intact: " + span
	}
	msg := "broken: " + r.Broken.Message
	if r.ProblemCount > 1 {
		msg += fmt.Sprintf(" (and %d more problem(s))", r.ProblemCount-1)
	}
	return msg + "; " + span
}

func orNone(h string) string {
	if h == "" {
		return "(none)"
	}
	return h
}

// chain checks entries one at a time, in stream order, holding only the
// state of the last one: a walk of any length uses constant memory.
//
// Each entry is checked for, in this order: being an event, sitting
// under the key of its sequence number, coming right after the previous
// one (a gap is a removal), canonical JSON (re-marshalling yields the
// stored bytes), linking to the previous entry's hash, and hashing to its
// own Hash; one problem is reported per entry. The next entry's link is
// not checked against an entry found under another entry's key, without
// a hash or unreadable (there is no hash of its own to link to), so one
// swap is named once per moved entry rather than cascading.
type chain struct {
	rep VerifyReport
	// next is the sequence number expected next; 0 before the first entry
	// when any start is accepted.
	next uint64
	// keyed: entries come with the sequence number of their key (a store
	// walk) rather than in a file.
	keyed bool
	prev  string
	// prevSet: the first entry's Prev must equal prev.
	prevSet bool
	// chained: a hashed entry was seen (no unhashed entry may follow).
	chained bool
	// skipLink: do not compare the next entry's Prev (its predecessor was
	// out of place or unreadable).
	skipLink bool
}

func (c *chain) problem(seq uint64, kind, format string, args ...any) {
	p := Problem{Seq: seq, Kind: kind, Message: fmt.Sprintf(format, args...)}
	if c.rep.Broken == nil {
		c.rep.Broken = &p
	}
	if len(c.rep.Problems) < maxListedProblems {
		c.rep.Problems = append(c.rep.Problems, p)
	}
	c.rep.ProblemCount++
}

// Where an entry sits relative to the one expected.
const (
	inPlace = iota
	afterGap
	behind
)

// position counts the entry at seq and reports a gap before it or a step
// back.
func (c *chain) position(seq uint64) int {
	c.rep.Checked++
	if c.rep.Checked == 1 {
		c.rep.First = seq
	}
	switch {
	case c.next == 0 || seq == c.next:
		return inPlace
	case seq > c.next:
		what := fmt.Sprintf("entry %d", c.next)
		if seq > c.next+1 {
			what = fmt.Sprintf("entries %d..%d", c.next, seq-1)
		}
		if c.keyed {
			c.problem(c.next, ProblemRemoved, "%s removed", what)
		} else {
			c.problem(c.next, ProblemRemoved, "%s removed (or moved: entry %d follows entry %d)", what, seq, c.next-1)
		}
		return afterGap
	}
	c.problem(seq, ProblemOrder, "entry %d: out of order (after entry %d)", seq, c.next-1)
	return behind
}

// add checks one entry: raw, when not nil, is its stored JSON (checked
// for canonical form); keySeq is the sequence number of its key in a
// keyed walk.
func (c *chain) add(raw []byte, e Event, keySeq uint64) {
	pos := e.Seq
	if c.keyed {
		pos = keySeq
	}
	where := c.position(pos)
	checkLink := where == inPlace && !c.skipLink && (c.rep.Checked > 1 || c.prevSet)
	c.skipLink = false
	switch {
	case c.keyed && e.Seq != keySeq:
		c.problem(pos, ProblemOrder, "entry %d: out of order (its key holds entry %d)", pos, e.Seq)
		c.skipLink = true
	case raw != nil && !canonical(raw, e):
		if f := unknownField(raw); f != "" {
			c.problem(pos, ProblemAltered, "entry %d: altered (unknown field %s)", pos, f)
		} else {
			c.problem(pos, ProblemAltered, "entry %d: altered (not the JSON Append wrote)", pos)
		}
	case e.Hash == "" && e.Prev == "" && !c.chained:
		c.rep.Unchained++
	case e.Hash == "":
		c.problem(pos, ProblemEdited, "entry %d: edited (its hash was removed)", pos)
		c.skipLink = true
	case pos == 1 && e.Prev != "":
		c.problem(pos, ProblemOrder, "entry 1: out of order (the first entry links to %s)", e.Prev)
	case checkLink && e.Prev != c.prev && c.rep.Checked > 1:
		c.problem(pos, ProblemOrder, "entry %d: out of order (its prev is not the hash of entry %d: that entry was rewritten, or this one moved)", pos, c.rep.Last)
	case checkLink && e.Prev != c.prev:
		c.problem(pos, ProblemOrder, "entry %d: out of order (its prev %s is not the expected %s)", pos, orNone(e.Prev), orNone(c.prev))
	case ChainHash(e) != e.Hash:
		c.problem(pos, ProblemEdited, "entry %d: edited (hash mismatch)", pos)
	}
	if e.Hash != "" {
		c.chained = true
	}
	if c.rep.Checked == 1 {
		c.rep.Prev = e.Prev
	}
	if where == behind {
		// Keep following the chain from the entry before it.
		c.skipLink = false
		return
	}
	c.prev = e.Hash
	c.rep.Last, c.rep.Head = pos, e.Hash
	c.next = pos + 1
}

// corrupt records a value that is not an event: in a keyed walk the
// entry at pos, in a file a line (where) that takes the expected place.
func (c *chain) corrupt(pos uint64, where string, err error) {
	if c.keyed {
		c.position(pos)
		where = fmt.Sprintf("entry %d", pos)
	} else {
		c.rep.Checked++
		pos = c.next
	}
	c.problem(pos, ProblemCorrupt, "%s: corrupt (not an event: %v)", where, err)
	c.prev, c.skipLink = "", true
	c.rep.Head = ""
	if c.keyed || c.next != 0 {
		c.rep.Last, c.next = pos, pos+1
	}
}

func (c *chain) report() VerifyReport {
	r := c.rep
	r.Intact = r.ProblemCount == 0
	return r
}

// canonical reports whether raw is exactly the JSON Append writes for e.
func canonical(raw []byte, e Event) bool {
	b, err := json.Marshal(e)
	return err == nil && bytes.Equal(b, raw)
}

// unknownField names the first field of raw that Event does not have.
func unknownField(raw []byte) string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var e Event
	err := dec.Decode(&e)
	if err == nil {
		return ""
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return f
	}
	return ""
}

// VerifyEntries checks decoded entries, a contiguous piece of a chain in
// sequence order: every entry's hash, its link to the one before, and the
// sequence numbers. startPrev is the hash the first entry must link to
// ("" when the first is the genesis entry 1). Without the stored bytes
// the canonical form is not checked (see VerifyExport).
func VerifyEntries(entries []Event, startPrev string) VerifyReport {
	c := chain{prev: startPrev, prevSet: true}
	for _, e := range entries {
		c.add(nil, e, 0)
	}
	return c.report()
}

// VerifyExport checks an exported archive (JSONL, one stored event per
// line, as Export writes it) on its own: canonical form, hashes, links and
// sequence numbers. prev, when not "", is the hash the first entry must
// link to (the previous archive's head, or ExportSummary.Prev kept apart);
// head, when not "", is the hash the last entry must have (the head
// recorded at export), which detects a cut tail. An error is returned only
// when r cannot be read.
func VerifyExport(r io.Reader, prev, head string) (VerifyReport, error) {
	c := chain{prev: prev, prevSet: prev != ""}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxEventLine)
	sc.Split(splitLF)
	line := 0
	for sc.Scan() {
		line++
		raw := sc.Bytes()
		var e Event
		if err := json.Unmarshal(raw, &e); err != nil {
			c.corrupt(0, fmt.Sprintf("line %d", line), err)
			continue
		}
		c.add(raw, e, 0)
	}
	if err := sc.Err(); err != nil {
		return c.report(), fmt.Errorf("control: verify export: line %d: %w", line+1, err)
	}
	if head != "" && c.rep.Head != head {
		if c.rep.Checked == 0 {
			c.problem(0, ProblemTruncated, "the archive is empty; the recorded head is %s", head)
		} else {
			c.problem(c.rep.Last, ProblemHead, "head mismatch: the archive ends at entry %d with hash %s, the recorded head is %s (entries cut or the last one rewritten)", c.rep.Last, orNone(c.rep.Head), head)
		}
	}
	return c.report(), nil
}

// splitLF splits lines at "\n" only: unlike bufio.ScanLines it keeps a
// "\r", which is not part of any stored entry, so it shows as altered.
func splitLF(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// maxEventLine bounds one line of an archive (etcd bounds a value to
// 1.5 MiB by default).
const maxEventLine = 4 << 20

// walk reads the events under the store's events/ prefix in key order, at
// revision rev, a page at a time, calling fn with each key's sequence
// number (ok false when the key is not events/<20 digits>) and value.
func (s *Store) walk(ctx context.Context, rev int64, fn func(seq uint64, ok bool, key string, value []byte) error) error {
	prefix := s.key("events/")
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	for {
		resp, err := s.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(verifyPage), clientv3.WithRev(rev))
		if err != nil {
			return fmt.Errorf("control: read events from %s at revision %d: %w", from, rev, err)
		}
		for _, kv := range resp.Kvs {
			k := string(kv.Key)
			digits := strings.TrimPrefix(k, prefix)
			seq, err := strconv.ParseUint(digits, 10, 64)
			ok := err == nil && len(digits) == 20
			if err := fn(seq, ok, k, kv.Value); err != nil {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// snapshot reads the head (events-seq; nil when there is none) and the
// revision every read of one walk uses, so that appends during the walk
// are not seen.
func (s *Store) snapshot(ctx context.Context) ([]byte, int64, error) {
	seqKey := s.key("events-seq")
	resp, err := s.cli.Get(ctx, seqKey)
	if err != nil {
		return nil, 0, fmt.Errorf("control: read %s: %w", seqKey, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, resp.Header.Revision, nil
	}
	return resp.Kvs[0].Value, resp.Header.Revision, nil
}

// Verify walks the whole event stream (a page of 500 at a time, at one
// revision) and checks the chain: each entry under the key of its
// sequence number, sequence numbers contiguous from 1, each Prev the hash
// of the entry before, each Hash recomputed, each value the canonical JSON
// of its entry, and the head in events-seq matching the last entry. The
// report names the first broken entry and counts the rest; the error is
// only for a store that cannot be read.
func (s *Store) Verify(ctx context.Context) (VerifyReport, error) {
	rawHead, rev, err := s.snapshot(ctx)
	if err != nil {
		return VerifyReport{}, err
	}
	c := chain{next: 1, keyed: true, prevSet: true}
	err = s.walk(ctx, rev, func(seq uint64, ok bool, key string, value []byte) error {
		if !ok {
			c.problem(0, ProblemCorrupt, "key %s is not an event key (events/<20-digit seq>)", key)
			return nil
		}
		var e Event
		if err := json.Unmarshal(value, &e); err != nil {
			c.corrupt(seq, "", err)
			return nil
		}
		c.add(value, e, seq)
		return ctx.Err()
	})
	if err != nil {
		return c.report(), err
	}
	last := c.rep.Last
	head, err := parseHead(rawHead)
	switch {
	case rawHead == nil && c.rep.Checked > 0:
		c.problem(last, ProblemHead, "the head (events-seq) is missing; the stream goes on to %d", last)
	case rawHead == nil:
	case err != nil:
		c.problem(last, ProblemHead, "the head (events-seq) is corrupt: %v", err)
	case head.Seq > last:
		c.problem(last+1, ProblemTruncated, "head says %d entries, the stream ends at %d", head.Seq, last)
	case head.Seq < last:
		c.problem(head.Seq+1, ProblemHead, "head says %d entries, the stream goes on to %d (entries added behind the head)", head.Seq, last)
	case head.Hash != c.rep.Head:
		c.problem(last, ProblemHead, "head mismatch: entry %d hashes to %s, the head records %s (the last entry was rewritten)", last, orNone(c.rep.Head), orNone(head.Hash))
	}
	c.rep.HeadSeq, c.rep.HeadHash = head.Seq, head.Hash
	return c.report(), nil
}

// ExportSummary describes an exported piece of the chain: enough to
// verify it on its own (VerifyExport with Prev and Head).
type ExportSummary struct {
	// Count is the number of entries (lines) written.
	Count uint64 `json:"count"`
	// First and Last are their sequence numbers.
	First uint64 `json:"first,omitempty"`
	Last  uint64 `json:"last,omitempty"`
	// Prev is the first entry's Prev: the hash the archive links to.
	Prev string `json:"prev,omitempty"`
	// Head is the last entry's Hash.
	Head string `json:"head,omitempty"`
}

// Export writes the stream from the first entry with Time at or after
// since to the end, as JSONL: each line exactly the stored JSON of one
// entry, in sequence order, read at one revision a page at a time. Once
// the first entry is found every following entry is written, whatever its
// time (a node with a slower clock may have stamped it earlier), so the
// archive is one unbroken piece of the chain. An entry that cannot be
// decoded before the start is skipped; after it, it is written as stored
// (verification names it).
func (s *Store) Export(ctx context.Context, since time.Time, w io.Writer) (ExportSummary, error) {
	var sum ExportSummary
	_, rev, err := s.snapshot(ctx)
	if err != nil {
		return sum, err
	}
	bw := bufio.NewWriter(w)
	started := false
	err = s.walk(ctx, rev, func(seq uint64, _ bool, key string, value []byte) error {
		var e Event
		decoded := json.Unmarshal(value, &e) == nil
		if !started {
			if !decoded || e.Time.Before(since) {
				return nil
			}
			started = true
			sum.First, sum.Prev = e.Seq, e.Prev
		}
		if _, err := bw.Write(value); err != nil {
			return fmt.Errorf("control: export %s: %w", key, err)
		}
		if err := bw.WriteByte('\n'); err != nil {
			return fmt.Errorf("control: export %s: %w", key, err)
		}
		sum.Count++
		sum.Last, sum.Head = seq, ""
		if decoded {
			sum.Last, sum.Head = e.Seq, e.Hash
		}
		return ctx.Err()
	})
	if ferr := bw.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("control: export: %w", ferr)
	}
	return sum, err
}
