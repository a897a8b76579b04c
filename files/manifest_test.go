package files

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestManifestFormat checks that a manifest decodes to what was encoded
// (nanoseconds, zero times, MD5s and odd keys included), and that a
// damaged one is refused rather than misread.
func TestManifestFormat(t *testing.T) {
	at := time.Date(2026, 11, 22, 8, 30, 0, 123456789, time.UTC)
	items := []manifestItem{
		{key: "", manifestEntry: manifestEntry{Size: 0}},
		{key: "a", manifestEntry: manifestEntry{Size: 1, ModTime: at, DstModTime: at.Add(time.Second)}},
		{key: "a/b\x01\n\"c", manifestEntry: manifestEntry{Size: 1 << 40, ModTime: at.Add(-100 * 365 * 24 * time.Hour), MD5: "d41d8cd98f00b204e9800998ecf8427e"}},
		{key: "old", manifestEntry: manifestEntry{Size: 5, ModTime: time.Unix(-5, 1)}},
		{key: "ünïcødé/日本語", manifestEntry: manifestEntry{Size: 7, DstModTime: at}},
	}
	data := encodeManifest("file:///src", at, items)
	got, err := decodeManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(items) {
		t.Fatalf("decoded %d entries, want %d", len(got), len(items))
	}
	for i, g := range got {
		w := items[i]
		if g.key != w.key || !g.sameAs(w.manifestEntry) || g.ModTime.IsZero() != w.ModTime.IsZero() || g.DstModTime.IsZero() != w.DstModTime.IsZero() {
			t.Errorf("entry %d: %+v, want %+v", i, g, w)
		}
	}
	if got, err := decodeManifest(encodeManifest("s", at, nil)); err != nil || len(got) != 0 {
		t.Errorf("empty manifest: %v, %v", got, err)
	}

	for n := range len(data) {
		if _, err := decodeManifest(data[:n]); err == nil {
			t.Fatalf("truncated to %d of %d bytes: no error", n, len(data))
		}
	}
	for i := range data {
		bad := slices.Clone(data)
		bad[i] ^= 0x10
		if _, err := decodeManifest(bad); err == nil {
			t.Fatalf("byte %d changed: no error", i)
		}
	}
	unsorted := encodeManifest("s", at, []manifestItem{items[2], items[1]})
	if _, err := decodeManifest(unsorted); err == nil || !strings.Contains(err.Error(), "order") {
		t.Errorf("keys out of order: %v", err)
	}
}

// TestManifestChanges checks the manifest of a pass: entries set and
// removed over those loaded, looked up, and folded into a sorted list.
func TestManifestChanges(t *testing.T) {
	e := func(size int64) manifestEntry { return manifestEntry{Size: size} }
	m := newManifest([]manifestItem{{"b", e(2)}, {"d", e(4)}, {"f", e(6)}})
	m.set("d", e(4))
	m.remove("x")
	if m.dirty {
		t.Fatal("dirty after changing nothing")
	}
	m.set("a", e(1))
	m.set("d", e(40))
	m.remove("f")
	m.set("g", e(7))
	m.remove("g")
	if !m.dirty {
		t.Fatal("not dirty after changes")
	}
	for k, want := range map[string]int64{"a": 1, "b": 2, "d": 40, "f": -1, "g": -1, "c": -1} {
		got, ok := m.get(k)
		if (want < 0) == ok || (ok && got.Size != want) {
			t.Errorf("get(%q) = %v, %v; want %d", k, got, ok, want)
		}
	}
	snap := m.fold()
	want := []manifestItem{{"a", e(1)}, {"b", e(2)}, {"d", e(40)}}
	if !slices.Equal(snap, want) || len(m.changes) != 0 {
		t.Errorf("fold: %v (changes left %v), want %v", snap, m.changes, want)
	}
	m.set("c", e(3))
	if again := m.fold(); !slices.Equal(snap, want) || len(again) != 4 || again[2].key != "c" {
		t.Errorf("a second fold changed the first's snapshot (%v) or missed c (%v)", snap, again)
	}
}

// TestManifestV1 checks that a manifest of format 1 (JSON, as Lifeboat
// wrote it before) is used as it was, written again in format 2 and
// removed: what it recorded still counts, a copy changed at the
// destination since included.
func TestManifestV1(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	files := map[string]string{"a.txt": "alpha", "dir/b.txt": "bravo", "c.txt": "charlie"}
	for k, v := range files {
		writeFile(t, src, k, v)
	}
	s := openSync(t, fileURL(src), fileURL(dst), Options{})
	syncOnce(t, s)
	syncOnce(t, s) // records the destination's times
	newPath := filepath.Join(dst, filepath.FromSlash(s.manifestKey))
	data, err := os.ReadFile(newPath)
	if err != nil {
		t.Fatal(err)
	}
	items, err := decodeManifest(data)
	if err != nil || len(items) != 3 {
		t.Fatalf("manifest: %v, %v", items, err)
	}
	// The same entries in format 1, in place of format 2.
	doc := manifestDocV1{Version: 1, Source: s.src.redacted, Written: time.Now().UTC(), Objects: map[string]manifestEntry{}}
	for _, it := range items {
		doc.Objects[it.key] = it.manifestEntry
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	oldPath := filepath.Join(dst, filepath.FromSlash(s.manifestKeyV1))
	if err := os.WriteFile(oldPath, js, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(newPath); err != nil {
		t.Fatal(err)
	}
	// Changed at the destination, same size, an older time: only the
	// recorded destination time tells.
	writeFile(t, dst, "c.txt", "CHARLIE")
	past := time.Now().Add(-time.Hour)
	os.Chtimes(filepath.Join(dst, "c.txt"), past, past)

	rep := syncOnce(t, s)
	if got := countsOf(rep); got != (counts{Copied: 1, Hashed: 1, Unchanged: 2}) || !slices.Equal(rep.ToCopy, []string{"c.txt"}) {
		t.Errorf("pass over a format 1 manifest: %+v (to copy %q)", got, rep.ToCopy)
	}
	sameTree(t, dst, files)
	if _, err := os.Stat(oldPath); !os.IsNotExist(err) {
		t.Errorf("format 1 manifest left: %v", err)
	}
	if data, err := os.ReadFile(newPath); err != nil {
		t.Errorf("no format 2 manifest: %v", err)
	} else if items, err := decodeManifest(data); err != nil || len(items) != 3 {
		t.Errorf("format 2 manifest: %v, %v", items, err)
	}
}

// TestManifestNotRewritten checks that a pass that changes nothing does
// not write the manifest, and that a damaged one is dropped (content is
// compared instead) and written again.
func TestManifestNotRewritten(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	for _, k := range []string{"a", "b/c", "d"} {
		writeFile(t, src, k, "content of "+k)
	}
	s := openSync(t, fileURL(src), fileURL(dst), Options{})
	syncOnce(t, s)
	syncOnce(t, s)
	path := filepath.Join(dst, filepath.FromSlash(s.manifestKey))
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := countsOf(syncOnce(t, s)); got != (counts{Unchanged: 3}) {
		t.Errorf("no change: %+v", got)
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
		t.Error("a pass that changed nothing rewrote the manifest")
	}

	// Damaged: every object is compared by content, found the same, and
	// recorded again.
	if err := os.WriteFile(path, []byte("lifeboat manifest 2\ngarbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Copies older than their source are not taken as done without a
	// manifest.
	future := time.Now().Add(time.Hour)
	for _, k := range []string{"a", "b/c", "d"} {
		os.Chtimes(filepath.Join(src, filepath.FromSlash(k)), future, future)
	}
	if got := countsOf(syncOnce(t, s)); got != (counts{Hashed: 3, Unchanged: 3}) {
		t.Errorf("damaged manifest: %+v", got)
	}
	if data, err := os.ReadFile(path); err != nil {
		t.Error(err)
	} else if items, err := decodeManifest(data); err != nil || len(items) != 3 {
		t.Errorf("manifest after the damaged one: %v, %v", items, err)
	}
}
