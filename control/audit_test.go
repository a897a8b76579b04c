package control

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// auditStream is one cluster's event stream in a shared member, for
// tampering with directly in etcd.
type auditStream struct {
	t     *testing.T
	cli   *clientv3.Client
	store *Store
	name  string
}

func newAuditStream(t *testing.T, m *member, cluster string, n int) *auditStream {
	t.Helper()
	a := &auditStream{t: t, cli: m.cli, store: NewStore(m.cli, cluster), name: cluster}
	for i := 1; i <= n; i++ {
		if _, err := a.store.Append(t.Context(), Event{Type: EventAudit, Actor: "ops", Source: "127.0.0.1", Action: "POST /api/v1/runs", Status: "201", Message: fmt.Sprintf("call %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

func (a *auditStream) key(seq uint64) string {
	return fmt.Sprintf("/lifeboat/%s/events/%020d", a.name, seq)
}

func (a *auditStream) raw(seq uint64) []byte {
	a.t.Helper()
	resp, err := a.cli.Get(a.t.Context(), a.key(seq))
	if err != nil || len(resp.Kvs) != 1 {
		a.t.Fatalf("entry %d: %v %v", seq, resp, err)
	}
	return resp.Kvs[0].Value
}

func (a *auditStream) entry(seq uint64) Event {
	a.t.Helper()
	var e Event
	if err := json.Unmarshal(a.raw(seq), &e); err != nil {
		a.t.Fatal(err)
	}
	return e
}

// put writes an entry as Append would (canonical JSON), hash as given.
func (a *auditStream) put(seq uint64, e Event) {
	a.t.Helper()
	b, _ := json.Marshal(e)
	a.putRaw(seq, b)
}

func (a *auditStream) putRaw(seq uint64, b []byte) {
	a.t.Helper()
	if _, err := a.cli.Put(a.t.Context(), a.key(seq), string(b)); err != nil {
		a.t.Fatal(err)
	}
}

func (a *auditStream) verify() VerifyReport {
	a.t.Helper()
	rep, err := a.store.Verify(a.t.Context())
	if err != nil {
		a.t.Fatal(err)
	}
	return rep
}

// wantBroken checks the report names the first broken entry as expected.
func wantBroken(t *testing.T, rep VerifyReport, seq uint64, kind, message string, problems int) {
	t.Helper()
	if rep.Intact || rep.Broken == nil {
		t.Fatalf("tampering not detected: %s", rep)
	}
	if rep.Broken.Seq != seq || rep.Broken.Kind != kind || rep.Broken.Message != message || rep.ProblemCount != problems {
		t.Errorf("first problem %+v (%d problems: %+v); want seq %d, %s, %q, %d problems", *rep.Broken, rep.ProblemCount, rep.Problems, seq, kind, message, problems)
	}
	if !strings.HasPrefix(rep.String(), "broken: "+message) {
		t.Errorf("summary %q does not start with the first problem", rep.String())
	}
}

// Appenders in several goroutines at once build one chain: every entry
// links to the one before, the head is the last entry, and Verify walks
// it intact. The events-seq value of an older version (a plain "<seq>",
// entries without hashes) is read as a chain head with hash "".
func TestAppendConcurrentChainVerifies(t *testing.T) {
	m := startMember(t, "east-1", t.TempDir(), nil)
	defer m.stop()
	ctx := t.Context()
	const writers, each = 8, 40
	var mu sync.Mutex
	got := map[uint64]Event{}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				e, err := m.store.Append(ctx, Event{Type: EventAudit, Node: fmt.Sprintf("w%d", w), Message: fmt.Sprintf("writer %d call %d", w, i)})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				got[e.Seq] = e
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(got) != writers*each {
		t.Fatalf("%d distinct sequence numbers for %d appends", len(got), writers*each)
	}
	for seq := uint64(1); seq <= writers*each; seq++ {
		e, ok := got[seq]
		if !ok {
			t.Fatalf("no append returned seq %d", seq)
		}
		prev := ""
		if seq > 1 {
			prev = got[seq-1].Hash
		}
		if e.Prev != prev || e.Hash != ChainHash(e) || len(e.Hash) != 64 {
			t.Fatalf("entry %d returned by Append: prev %q hash %q; want prev %q and its own hash", seq, e.Prev, e.Hash, prev)
		}
		// What Append returned is what it stored.
		b, _ := json.Marshal(e)
		resp, err := m.cli.Get(ctx, fmt.Sprintf("/lifeboat/shop/events/%020d", seq))
		if err != nil || len(resp.Kvs) != 1 || !bytes.Equal(resp.Kvs[0].Value, b) {
			t.Fatalf("entry %d stored %s, Append returned %s (%v)", seq, resp.Kvs, b, err)
		}
	}
	rep, err := m.store.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := got[writers*each]
	if !rep.Intact || rep.Checked != writers*each || rep.First != 1 || rep.Last != writers*each || rep.Head != last.Hash ||
		rep.HeadSeq != writers*each || rep.HeadHash != last.Hash || rep.Prev != "" || rep.Unchained != 0 {
		t.Errorf("verify: %+v", rep)
	}
	if head, _ := m.cli.Get(ctx, "/lifeboat/shop/events-seq"); string(head.Kvs[0].Value) != fmt.Sprintf("%d %s", writers*each, last.Hash) {
		t.Errorf("events-seq = %q", head.Kvs[0].Value)
	}
	if want := fmt.Sprintf("intact: %d entries (seq 1..%d), head %s", writers*each, writers*each, last.Hash); rep.String() != want {
		t.Errorf("summary %q, want %q", rep.String(), want)
	}

	// A stream written before the chain: plain "<seq>", no hashes.
	old := NewStore(m.cli, "old")
	for seq := uint64(1); seq <= 3; seq++ {
		b, _ := json.Marshal(Event{Seq: seq, Time: time.Now().UTC(), Type: EventEpoch, Message: "before the chain"})
		m.cli.Put(ctx, fmt.Sprintf("/lifeboat/old/events/%020d", seq), string(b))
	}
	m.cli.Put(ctx, "/lifeboat/old/events-seq", "3")
	e, err := old.Append(ctx, Event{Type: EventAudit, Message: "first chained"})
	if err != nil || e.Seq != 4 || e.Prev != "" || e.Hash != ChainHash(e) {
		t.Fatalf("append after an old head: %+v %v", e, err)
	}
	e2, err := old.Append(ctx, Event{Type: EventAudit, Message: "second chained"})
	if err != nil || e2.Seq != 5 || e2.Prev != e.Hash {
		t.Fatalf("second append: %+v %v", e2, err)
	}
	rep, err = old.Verify(ctx)
	if err != nil || !rep.Intact || rep.Checked != 5 || rep.Unchained != 3 || rep.Head != e2.Hash ||
		!strings.Contains(rep.String(), "3 written before the chain existed (unprotected)") {
		t.Errorf("verify of an upgraded stream: %s %+v %v", rep, rep, err)
	}
	// A corrupt head is an error of Append, naming the key, not a restart
	// of the stream at 1.
	m.cli.Put(ctx, "/lifeboat/old/events-seq", "five")
	if _, err := old.Append(ctx, Event{Type: EventAudit}); err == nil || !strings.Contains(err.Error(), "/lifeboat/old/events-seq") {
		t.Errorf("append on a corrupt head: %v", err)
	}
}

// Verify reads the stream a page at a time: a chain longer than a page
// verifies, and a problem past the first page is found.
func TestVerifyPages(t *testing.T) {
	m := startMember(t, "east-1", t.TempDir(), nil)
	defer m.stop()
	ctx := t.Context()
	const n = 3*verifyPage + 17
	prev := ""
	var ops []clientv3.Op
	flush := func() {
		if _, err := m.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
		ops = ops[:0]
	}
	var hashes []string
	for seq := uint64(1); seq <= n; seq++ {
		e, b := sealEvent(Event{Seq: seq, Prev: prev, Time: time.Unix(int64(seq), 0).UTC(), Type: EventAudit, Message: "bulk"})
		prev = e.Hash
		hashes = append(hashes, e.Hash)
		ops = append(ops, clientv3.OpPut(fmt.Sprintf("/lifeboat/shop/events/%020d", seq), string(b)))
		if len(ops) == 100 {
			flush()
		}
	}
	ops = append(ops, clientv3.OpPut("/lifeboat/shop/events-seq", fmt.Sprintf("%d %s", n, prev)))
	flush()
	rep, err := m.store.Verify(ctx)
	if err != nil || !rep.Intact || rep.Checked != n || rep.Head != prev {
		t.Fatalf("verify of %d entries: %s %v", n, rep, err)
	}
	// Appending goes on from the bulk chain.
	e, err := m.store.Append(ctx, Event{Type: EventAudit, Message: "after"})
	if err != nil || e.Seq != n+1 || e.Prev != prev {
		t.Fatalf("append: %+v %v", e, err)
	}
	// Export from the middle of page 2.
	var buf bytes.Buffer
	sum, err := m.store.Export(ctx, time.Unix(verifyPage+3, 0), &buf)
	if err != nil || sum.First != verifyPage+3 || sum.Last != n+1 || sum.Count != n+1-(verifyPage+2) || sum.Prev != hashes[verifyPage+1] || sum.Head != e.Hash {
		t.Errorf("export: %+v %v", sum, err)
	}
	if rep, err := VerifyExport(&buf, sum.Prev, sum.Head); err != nil || !rep.Intact || rep.Checked != sum.Count {
		t.Errorf("verify export: %s %v", rep, err)
	}
	s := &auditStream{t: t, cli: m.cli, store: m.store, name: "shop"}
	late := s.entry(2*verifyPage + 5)
	late.Message = "rewritten"
	s.put(2*verifyPage+5, late)
	rep = s.verify()
	wantBroken(t, rep, 2*verifyPage+5, ProblemEdited, fmt.Sprintf("entry %d: edited (hash mismatch)", 2*verifyPage+5), 1)
	if rep.Checked != n+1 || rep.Head != e.Hash {
		t.Errorf("verify stopped counting at the problem: %+v", rep)
	}
}

// Every kind of tampering written directly into etcd is named at the
// entry concerned, and the walk goes on counting.
func TestVerifyTampering(t *testing.T) {
	m := startMember(t, "east-1", t.TempDir(), nil)
	defer m.stop()

	t.Run("intact", func(t *testing.T) {
		s := newAuditStream(t, m, "intact", 10)
		if rep := s.verify(); !rep.Intact || rep.Checked != 10 || rep.Broken != nil || rep.Head != s.entry(10).Hash {
			t.Errorf("untouched stream: %+v", rep)
		}
	})
	t.Run("edited", func(t *testing.T) {
		s := newAuditStream(t, m, "edited", 10)
		e := s.entry(5)
		e.Message = "nothing happened"
		s.put(5, e)
		rep := s.verify()
		wantBroken(t, rep, 5, ProblemEdited, "entry 5: edited (hash mismatch)", 1)
		if rep.Checked != 10 || rep.Head != s.entry(10).Hash {
			t.Errorf("counting after the problem: %+v", rep)
		}
	})
	t.Run("edited and rehashed", func(t *testing.T) {
		s := newAuditStream(t, m, "rehashed", 10)
		e := s.entry(5)
		e.Actor = "nobody"
		e.Hash = ChainHash(e)
		s.put(5, e)
		wantBroken(t, s.verify(), 6, ProblemOrder, "entry 6: out of order (its prev is not the hash of entry 5: that entry was rewritten, or this one moved)", 1)
	})
	t.Run("last edited and rehashed", func(t *testing.T) {
		s := newAuditStream(t, m, "lastrehashed", 10)
		e := s.entry(10)
		e.Status = "200"
		e.Hash = ChainHash(e)
		s.put(10, e)
		rep := s.verify()
		wantBroken(t, rep, 10, ProblemHead, fmt.Sprintf("head mismatch: entry 10 hashes to %s, the head records %s (the last entry was rewritten)", e.Hash, rep.HeadHash), 1)
	})
	t.Run("removed", func(t *testing.T) {
		s := newAuditStream(t, m, "removed", 10)
		if _, err := s.cli.Delete(t.Context(), s.key(5)); err != nil {
			t.Fatal(err)
		}
		rep := s.verify()
		wantBroken(t, rep, 5, ProblemRemoved, "entry 5 removed", 1)
		if rep.Checked != 9 {
			t.Errorf("checked %d, want 9", rep.Checked)
		}
	})
	t.Run("first removed", func(t *testing.T) {
		s := newAuditStream(t, m, "firstremoved", 4)
		s.cli.Delete(t.Context(), s.key(1))
		wantBroken(t, s.verify(), 1, ProblemRemoved, "entry 1 removed", 1)
	})
	t.Run("swapped", func(t *testing.T) {
		s := newAuditStream(t, m, "swapped", 10)
		three, seven := s.raw(3), s.raw(7)
		s.putRaw(3, seven)
		s.putRaw(7, three)
		rep := s.verify()
		wantBroken(t, rep, 3, ProblemOrder, "entry 3: out of order (its key holds entry 7)", 2)
		if rep.Problems[1].Message != "entry 7: out of order (its key holds entry 3)" {
			t.Errorf("second problem: %+v", rep.Problems)
		}
	})
	t.Run("moved with a new seq", func(t *testing.T) {
		// Entry 8 rewritten as entry 4 (seq and hash made consistent):
		// its link to entry 3 gives it away.
		s := newAuditStream(t, m, "moved", 10)
		e := s.entry(8)
		e.Seq = 4
		e.Hash = ChainHash(e)
		s.put(4, e)
		rep := s.verify()
		wantBroken(t, rep, 4, ProblemOrder, "entry 4: out of order (its prev is not the hash of entry 3: that entry was rewritten, or this one moved)", 2)
	})
	t.Run("truncated", func(t *testing.T) {
		s := newAuditStream(t, m, "truncated", 10)
		s.cli.Delete(t.Context(), s.key(10))
		rep := s.verify()
		wantBroken(t, rep, 10, ProblemTruncated, "head says 10 entries, the stream ends at 9", 1)
		if rep.Checked != 9 || rep.HeadSeq != 10 {
			t.Errorf("report: %+v", rep)
		}
	})
	t.Run("added behind the head", func(t *testing.T) {
		s := newAuditStream(t, m, "forged", 3)
		e, b := sealEvent(Event{Seq: 4, Prev: s.entry(3).Hash, Time: time.Now().UTC(), Type: EventAudit, Message: "forged"})
		s.putRaw(e.Seq, b)
		wantBroken(t, s.verify(), 4, ProblemHead, "head says 3 entries, the stream goes on to 4 (entries added behind the head)", 1)
	})
	t.Run("unknown field", func(t *testing.T) {
		s := newAuditStream(t, m, "unknown", 10)
		raw := s.raw(4)
		s.putRaw(4, append([]byte(`{"approved":true,`), raw[1:]...))
		wantBroken(t, s.verify(), 4, ProblemAltered, `entry 4: altered (unknown field "approved")`, 1)
	})
	t.Run("reformatted", func(t *testing.T) {
		s := newAuditStream(t, m, "reformatted", 10)
		var out bytes.Buffer
		json.Indent(&out, s.raw(6), "", "  ")
		s.putRaw(6, out.Bytes())
		wantBroken(t, s.verify(), 6, ProblemAltered, "entry 6: altered (not the JSON Append wrote)", 1)
	})
	t.Run("hash stripped", func(t *testing.T) {
		s := newAuditStream(t, m, "stripped", 10)
		e := s.entry(6)
		e.Prev, e.Hash, e.Message = "", "", "stripped and edited"
		s.put(6, e)
		rep := s.verify()
		wantBroken(t, rep, 6, ProblemEdited, "entry 6: edited (its hash was removed)", 1)
	})
	t.Run("corrupt", func(t *testing.T) {
		s := newAuditStream(t, m, "corrupt", 5)
		s.putRaw(2, []byte("not json"))
		rep := s.verify()
		if rep.Broken == nil || rep.Broken.Seq != 2 || rep.Broken.Kind != ProblemCorrupt || !strings.HasPrefix(rep.Broken.Message, "entry 2: corrupt (not an event: ") || rep.ProblemCount != 1 {
			t.Errorf("report: %+v", rep)
		}
	})
	t.Run("empty", func(t *testing.T) {
		s := &auditStream{t: t, cli: m.cli, store: NewStore(m.cli, "empty"), name: "empty"}
		if rep := s.verify(); !rep.Intact || rep.Checked != 0 || rep.String() != "intact: no entries" {
			t.Errorf("empty stream: %s %+v", rep, rep)
		}
	})
}

// An export is the stored bytes, one entry a line, from the first entry
// at or after since; with its summary it verifies on its own, and an
// edited, removed or reordered line is named.
func TestExportVerifiesOffline(t *testing.T) {
	m := startMember(t, "east-1", t.TempDir(), nil)
	defer m.stop()
	ctx := t.Context()
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var all []Event
	for i := range 10 {
		e, err := m.store.Append(ctx, Event{Time: base.Add(time.Duration(i) * time.Minute), Type: EventAudit, Actor: "ops", Action: "POST /api/v1/runs", Status: "201", Message: fmt.Sprintf("call <%d> & more", i)})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, e)
	}
	var buf bytes.Buffer
	sum, err := m.store.Export(ctx, base.Add(4*time.Minute), &buf)
	if err != nil {
		t.Fatal(err)
	}
	if sum != (ExportSummary{Count: 6, First: 5, Last: 10, Prev: all[3].Hash, Head: all[9].Hash}) {
		t.Errorf("summary %+v", sum)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 6 {
		t.Fatalf("%d lines:\n%s", len(lines), buf.String())
	}
	for i, l := range lines {
		resp, _ := m.cli.Get(ctx, fmt.Sprintf("/lifeboat/shop/events/%020d", i+5))
		if l != string(resp.Kvs[0].Value) {
			t.Errorf("line %d is not the stored JSON:\n%s\n%s", i+1, l, resp.Kvs[0].Value)
		}
	}
	verify := func(text, prev, head string) VerifyReport {
		t.Helper()
		rep, err := VerifyExport(strings.NewReader(text), prev, head)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := verify(buf.String(), sum.Prev, sum.Head); !rep.Intact || rep.Checked != 6 || rep.First != 5 || rep.Last != 10 || rep.Prev != sum.Prev || rep.Head != sum.Head {
		t.Errorf("intact export: %+v", rep)
	}
	if rep := verify(buf.String(), "", ""); !rep.Intact {
		t.Errorf("intact export, unpinned: %+v", rep)
	}
	if rep := VerifyEntries(all[4:], all[3].Hash); !rep.Intact || rep.Checked != 6 {
		t.Errorf("VerifyEntries: %+v", rep)
	}

	edited := strings.Replace(buf.String(), "call \\u003c6\\u003e", "call \\u003c0\\u003e", 1)
	if edited == buf.String() {
		t.Fatal("the test did not edit the export")
	}
	wantBroken(t, verify(edited, sum.Prev, sum.Head), 7, ProblemEdited, "entry 7: edited (hash mismatch)", 1)
	cut := strings.Join(lines[:5], "\n") + "\n"
	wantBroken(t, verify(cut, sum.Prev, sum.Head), 9, ProblemHead, fmt.Sprintf("head mismatch: the archive ends at entry 9 with hash %s, the recorded head is %s (entries cut or the last one rewritten)", all[8].Hash, sum.Head), 1)
	if rep := verify(cut, sum.Prev, ""); !rep.Intact {
		t.Errorf("a cut archive without the head to compare is still a valid piece: %+v", rep)
	}
	noSix := strings.Join(append(append([]string{}, lines[:1]...), lines[2:]...), "\n")
	wantBroken(t, verify(noSix, sum.Prev, sum.Head), 6, ProblemRemoved, "entry 6 removed (or moved: entry 7 follows entry 5)", 1)
	swapped := strings.Join([]string{lines[0], lines[2], lines[1], lines[3], lines[4], lines[5]}, "\n")
	rep := verify(swapped, sum.Prev, sum.Head)
	wantBroken(t, rep, 6, ProblemRemoved, "entry 6 removed (or moved: entry 7 follows entry 5)", 2)
	if rep.Problems[1].Message != "entry 6: out of order (after entry 7)" {
		t.Errorf("second problem: %+v", rep.Problems)
	}
	wantBroken(t, verify(buf.String(), all[2].Hash, sum.Head), 5, ProblemOrder, fmt.Sprintf("entry 5: out of order (its prev %s is not the expected %s)", all[3].Hash, all[2].Hash), 1)
	extra := strings.Replace(buf.String(), `{"seq":8,`, `{"seq":8,"extra":1,`, 1)
	wantBroken(t, verify(extra, sum.Prev, sum.Head), 8, ProblemAltered, `entry 8: altered (unknown field "extra")`, 1)
	if rep := VerifyEntries(append([]Event{all[0], all[2]}, all[3:]...), ""); rep.Broken == nil || rep.Broken.Message != "entry 2 removed (or moved: entry 3 follows entry 1)" {
		t.Errorf("VerifyEntries without entry 2: %+v", rep)
	}
	tampered := append([]Event(nil), all...)
	tampered[4].Message = "quiet"
	if rep := VerifyEntries(tampered, ""); rep.Broken == nil || rep.Broken.Message != "entry 5: edited (hash mismatch)" {
		t.Errorf("VerifyEntries of an edited entry: %+v", rep)
	}

	// Since the beginning: the whole chain, from genesis.
	buf.Reset()
	sum, err = m.store.Export(ctx, time.Time{}, &buf)
	if err != nil || sum.Count != 10 || sum.First != 1 || sum.Prev != "" || sum.Head != all[9].Hash {
		t.Errorf("full export: %+v %v", sum, err)
	}
	// After the last entry: nothing.
	buf.Reset()
	sum, err = m.store.Export(ctx, base.Add(time.Hour), &buf)
	if err != nil || sum != (ExportSummary{}) || buf.Len() != 0 {
		t.Errorf("export after the end: %+v %v %q", sum, err, buf.String())
	}
}
