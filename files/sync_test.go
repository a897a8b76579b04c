package files

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gocloud.dev/blob/fileblob"
)

func TestSyncFileToFile(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	files := map[string]string{
		"a.txt":           "alpha",
		"docs/b.txt":      "bravo",
		"docs/deep/c.bin": strings.Repeat("c", 3<<20),
		"empty":           "",
	}
	var total int64
	for k, v := range files {
		writeFile(t, src, k, v)
		total += int64(len(v))
	}
	s := openSync(t, fileURL(src), fileURL(dst), Options{})

	rep := syncOnce(t, s)
	if got := countsOf(rep); got != (counts{Copied: 4}) || rep.BytesCopied != total {
		t.Fatalf("initial copy: %+v, %d bytes; want 4 copied, %d bytes (%+v)", got, rep.BytesCopied, total, rep)
	}
	sameTree(t, dst, files)
	noSidecars(t, src)
	noSidecars(t, dst)
	if m, _ := filepath.Glob(filepath.Join(dst, ".lifeboat", "manifest-*.bin")); len(m) != 1 {
		t.Errorf("manifests at the destination: %v", m)
	}

	if got := countsOf(syncOnce(t, s)); got != (counts{Unchanged: 4}) {
		t.Errorf("nothing changed: %+v", got)
	}

	// A new size: copied without reading the destination.
	files["a.txt"] = "alpha, longer"
	writeFile(t, src, "a.txt", files["a.txt"])
	if got := countsOf(syncOnce(t, s)); got != (counts{Copied: 1, Unchanged: 3}) {
		t.Errorf("a.txt grew: %+v", got)
	}

	// Same size, new content and modification time: the hashes decide.
	files["docs/b.txt"] = "BRAVO"
	writeFile(t, src, "docs/b.txt", files["docs/b.txt"])
	later(t, filepath.Join(src, "docs/b.txt"), 2*time.Second)
	if got := countsOf(syncOnce(t, s)); got != (counts{Copied: 1, Hashed: 1, Unchanged: 3}) {
		t.Errorf("b.txt rewritten, same size: %+v", got)
	}
	sameTree(t, dst, files)

	// Touched only: compared, not copied.
	later(t, filepath.Join(src, "a.txt"), 3*time.Second)
	if got := countsOf(syncOnce(t, s)); got != (counts{Hashed: 1, Unchanged: 4}) {
		t.Errorf("a.txt touched: %+v", got)
	}

	// The copy was changed at the destination (same size): found and
	// overwritten.
	writeFile(t, dst, "docs/b.txt", "bravo")
	later(t, filepath.Join(dst, "docs/b.txt"), 5*time.Second)
	if got := countsOf(syncOnce(t, s)); got != (counts{Copied: 1, Hashed: 1, Unchanged: 3}) {
		t.Errorf("b.txt changed at the destination: %+v", got)
	}
	sameTree(t, dst, files)

	// A deletion is not propagated without Delete...
	if err := os.Remove(filepath.Join(src, "docs/deep/c.bin")); err != nil {
		t.Fatal(err)
	}
	rep = syncOnce(t, s)
	if rep.Deleted != 0 || rep.PendingDeletes != 1 || !slices.Equal(rep.ToDelete, []string{"docs/deep/c.bin"}) {
		t.Errorf("without Delete: %+v", rep)
	}
	if _, err := os.Stat(filepath.Join(dst, "docs/deep/c.bin")); err != nil {
		t.Errorf("deleted without Delete: %v", err)
	}
	// ... and is with it; the directory it leaves empty goes too.
	rep = syncOnce(t, openSync(t, fileURL(src), fileURL(dst), Options{Delete: true}))
	if got := countsOf(rep); got != (counts{Deleted: 1, Unchanged: 3}) || rep.PendingDeletes != 0 {
		t.Errorf("with Delete: %+v", rep)
	}
	delete(files, "docs/deep/c.bin")
	sameTree(t, dst, files)
	if _, err := os.Stat(filepath.Join(dst, "docs/deep")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty directory left: %v", err)
	}
	noSidecars(t, dst)
}

// later moves a file's modification time d into the future.
func later(t testing.TB, path string, d time.Duration) {
	t.Helper()
	at := time.Now().Add(d)
	if err := os.Chtimes(path, at, at); err != nil {
		t.Fatal(err)
	}
}

func TestSyncDryRun(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	writeFile(t, src, "new/a.txt", "alpha")
	writeFile(t, src, "b.txt", "bravo!")
	writeFile(t, src, "same.txt", "same")
	writeFile(t, dst, "same.txt", "same")
	writeFile(t, dst, "old.txt", "gone from the source")
	before := tree(t, dst)

	rep := syncOnce(t, openSync(t, fileURL(src), fileURL(dst), Options{DryRun: true, Delete: true}))
	if !rep.DryRun || rep.Copied != 0 || rep.Deleted != 0 || rep.Unchanged != 1 {
		t.Errorf("dry run counts: %+v", rep)
	}
	if !slices.Equal(rep.ToCopy, []string{"b.txt", "new/a.txt"}) || !slices.Equal(rep.ToDelete, []string{"old.txt"}) {
		t.Errorf("dry run lists: to copy %q, to delete %q", rep.ToCopy, rep.ToDelete)
	}
	if rep.PendingObjects != 2 || rep.PendingBytes != 11 || rep.PendingDeletes != 1 || rep.OldestPending.IsZero() {
		t.Errorf("dry run pending: %+v", rep)
	}
	sameTree(t, dst, before)
	if _, err := os.Stat(filepath.Join(dst, ".lifeboat")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a dry run wrote its manifest: %v", err)
	}
}

// TestSyncResume kills a pass after 10 of 40 copies (its context is
// cancelled, as a shutdown would) and checks that the next pass copies
// only the rest: with the manifest the cancelled pass saved, and without
// any (a crash before it could save), where copies that are at the
// destination with the source's size and a later modification time count
// as done.
func TestSyncResume(t *testing.T) {
	for _, lost := range []bool{false, true} {
		name := "manifest saved"
		if lost {
			name = "manifest lost"
		}
		t.Run(name, func(t *testing.T) {
			src, dst := t.TempDir(), t.TempDir()
			files := map[string]string{}
			for i := range 40 {
				k := fmt.Sprintf("batch/f%02d.dat", i)
				files[k] = strings.Repeat(fmt.Sprintf("%02d", i), 5000)
				writeFile(t, src, k, files[k])
			}
			s := openSync(t, fileURL(src), fileURL(dst), Options{Concurrency: 4})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var n atomic.Int32
			s.afterCopy = func(string) {
				if n.Add(1) == 10 {
					cancel()
				}
			}
			rep, err := s.Sync(ctx)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled pass: %v (%+v)", err, rep)
			}
			s.afterCopy = nil
			done := tree(t, dst)
			if len(done) < 10 || len(done) >= 40 {
				t.Fatalf("%d objects at the destination after the cancelled pass", len(done))
			}
			stamps := map[string]time.Time{}
			for k := range done {
				st, err := os.Stat(filepath.Join(dst, k))
				if err != nil {
					t.Fatal(err)
				}
				stamps[k] = st.ModTime()
			}
			manifests, _ := filepath.Glob(filepath.Join(dst, ".lifeboat", "manifest-*.bin"))
			if len(manifests) != 1 {
				t.Fatalf("the cancelled pass saved no manifest: %v", manifests)
			}
			if lost {
				os.RemoveAll(filepath.Join(dst, ".lifeboat"))
			}

			rep = syncOnce(t, s)
			if got := countsOf(rep); got != (counts{Copied: 40 - len(done), Unchanged: len(done)}) {
				t.Errorf("resumed pass: %+v; want %d copied, %d unchanged", got, 40-len(done), len(done))
			}
			for k, ts := range stamps {
				if slices.Contains(rep.ToCopy, k) {
					t.Errorf("%s copied again", k)
				}
				if st, err := os.Stat(filepath.Join(dst, k)); err != nil || !st.ModTime().Equal(ts) {
					t.Errorf("%s rewritten by the resumed pass", k)
				}
			}
			sameTree(t, dst, files)
			noSidecars(t, dst)
		})
	}
}

// TestSyncChangeDuringPass changes the source while a pass copies: a file
// created after the listing and a file rewritten before its copy are
// right after the next pass.
func TestSyncChangeDuringPass(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	files := map[string]string{}
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		files[k] = "first " + k
		writeFile(t, src, k, files[k])
	}
	s := openSync(t, fileURL(src), fileURL(dst), Options{Concurrency: 1})
	var once sync.Once
	s.beforeCopy = func(string) {
		once.Do(func() {
			files["late"] = "created during the pass"
			writeFile(t, src, "late", files["late"])
			files["e"] = "second e, longer"
			writeFile(t, src, "e", files["e"])
			later(t, filepath.Join(src, "e"), time.Second)
		})
	}
	rep := syncOnce(t, s)
	s.beforeCopy = nil
	if rep.Copied != 5 || slices.Contains(rep.ToCopy, "late") {
		t.Errorf("first pass: %+v", rep)
	}
	rep = syncOnce(t, s)
	if !slices.Contains(rep.ToCopy, "late") || rep.Copied < 1 || len(rep.Failed) > 0 || rep.PendingObjects != 0 {
		t.Errorf("second pass: %+v", rep)
	}
	sameTree(t, dst, files)
	if got := countsOf(syncOnce(t, s)); got != (counts{Unchanged: 6}) {
		t.Errorf("third pass: %+v", got)
	}
}

// oddNames are keys that must round-trip through every store.
var oddNames = []string{
	"with space.txt",
	"dir with space/inner file.md",
	"ünïcødé/日本語の名前.txt",
	"emoji 🚀.bin",
	"hash#tag.txt",
	"100% done.txt",
	"question?.txt",
	"plus+and&amp=.txt",
	"semi;colon,comma'quote\"double.txt",
	"-leading-dash",
	"tilde~back`tick.txt",
}

func TestSyncOddNames(t *testing.T) {
	src, dst, back := t.TempDir(), t.TempDir(), t.TempDir()
	files := map[string]string{}
	for i, k := range oddNames {
		files[k] = fmt.Sprintf("content %d of %s", i, k)
		writeFile(t, src, k, files[k])
	}
	// fileblob maps keys to names escaping "__0x<hex>__" sequences: a file
	// named so by someone else has no key. It is reported, not dropped
	// without a word.
	writeFile(t, src, "raw__0x41__name", "no key maps to this name")
	rep := syncOnce(t, openSync(t, fileURL(src), fileURL(dst), Options{}))
	if rep.Copied != len(oddNames) || len(rep.Failed) != 1 || rep.Failed[0].Key != "raw__0x41__name" || rep.Failed[0].Op != "list" {
		t.Fatalf("odd names: %+v", rep)
	}
	os.Remove(filepath.Join(src, "raw__0x41__name"))
	sameTree(t, dst, files)
	if got := countsOf(syncOnce(t, openSync(t, fileURL(src), fileURL(dst), Options{}))); got != (counts{Unchanged: len(oddNames)}) {
		t.Errorf("second pass: %+v", got)
	}
	syncOnce(t, openSync(t, fileURL(dst), fileURL(back), Options{}))
	sameTree(t, back, files)
}

// TestKeysAsFileblob checks that walking a directory gives the keys
// fileblob wrote, escapes included.
func TestKeysAsFileblob(t *testing.T) {
	dir := t.TempDir()
	b, err := fileblob.OpenBucket(dir, &fileblob.Options{Metadata: fileblob.MetadataDontWrite, NoTempDir: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	keys := append(slices.Clone(oddNames), "ctl\x01char", "a/../b", "double//slash", "__0x41__", "x__0x__y")
	ctx := context.Background()
	for _, k := range keys {
		if err := b.WriteAll(ctx, k, []byte(k), nil); err != nil {
			t.Fatalf("write %q: %v", k, err)
		}
	}
	st := &store{bucket: b, dir: dir, redacted: fileURL(dir)}
	l, err := st.list(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range l.objects {
		got = append(got, o.Key)
		if data, err := b.ReadAll(ctx, o.Key); err != nil || string(data) != o.Key {
			t.Errorf("read %q: %q, %v", o.Key, data, err)
		}
	}
	slices.Sort(keys)
	if !slices.Equal(got, keys) || len(l.problems) > 0 {
		t.Errorf("walk listed %q (problems %v), want %q", got, l.problems, keys)
	}
}

// TestSyncObjectFailures checks that objects that cannot be copied are
// reported with their key and operation while the rest is synced. The
// failures are real ones: a source file removed between the listing and
// its copy, a dangling symbolic link, a directory at the destination
// where a file goes, and (when the tests do not run as root, who reads
// anything) a file without read permission. A named pipe is skipped, not
// read (it would block).
func TestSyncObjectFailures(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	files := map[string]string{"ok/1.txt": "one", "ok/2.txt": "two", "vanish.txt": "here at listing time", "conflict": "a file"}
	for k, v := range files {
		writeFile(t, src, k, v)
	}
	if err := os.Symlink(filepath.Join(src, "nowhere"), filepath.Join(src, "dangling")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(src, "ok/1.txt"), filepath.Join(src, "link.txt")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(src, "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dst, "conflict/old.txt", "a directory at the destination where the source has a file")
	asRoot := os.Geteuid() == 0
	writeFile(t, src, "secret.txt", "mode 000")
	if err := os.Chmod(filepath.Join(src, "secret.txt"), 0); err != nil {
		t.Fatal(err)
	}

	s := openSync(t, fileURL(src), fileURL(dst), Options{})
	s.beforeCopy = func(key string) {
		if key == "vanish.txt" {
			os.Remove(filepath.Join(src, key))
		}
	}
	rep := syncOnce(t, s)
	failed := map[string]ObjectError{}
	for _, e := range rep.Failed {
		failed[e.Key] = e
	}
	want := map[string]string{"vanish.txt": "read", "dangling": "stat", "conflict": "write"}
	if !asRoot {
		want["secret.txt"] = "read"
	}
	for k, op := range want {
		if e, ok := failed[k]; !ok || e.Op != op || e.Err == "" {
			t.Errorf("%s: failure %+v, want op %s", k, e, op)
		}
	}
	if len(failed) != len(want) {
		t.Errorf("failures: %v; want %v", rep.Failed, want)
	}
	if e := failed["secret.txt"]; !asRoot && !strings.Contains(e.Err, "permission denied") {
		t.Errorf("secret.txt: %q", e.Err)
	}
	if e := failed["vanish.txt"]; !strings.Contains(e.Err, "no such file") && !strings.Contains(e.Err, "not found") {
		t.Errorf("vanish.txt: %q", e.Err)
	}
	if rep.Skipped != 1 {
		t.Errorf("skipped %d, want 1 (the pipe)", rep.Skipped)
	}
	got := tree(t, dst)
	for _, k := range []string{"ok/1.txt", "ok/2.txt", "link.txt"} {
		if got[k] != map[string]string{"ok/1.txt": "one", "ok/2.txt": "two", "link.txt": "one"}[k] {
			t.Errorf("%s at the destination: %q", k, got[k])
		}
	}
	if asRoot && got["secret.txt"] != "mode 000" {
		t.Errorf("secret.txt (read as root): %q", got["secret.txt"])
	}
	wantPending := 2 // vanish.txt, conflict
	if !asRoot {
		wantPending++
	}
	if rep.PendingObjects != wantPending || rep.OldestPending.IsZero() {
		t.Errorf("pending %d (oldest %v), want %d", rep.PendingObjects, rep.OldestPending, wantPending)
	}

	// With Delete, the directory in the way goes and the file is copied
	// in the same pass; the dangling link's copy (none) and the vanished
	// file are left alone.
	s2 := openSync(t, fileURL(src), fileURL(dst), Options{Delete: true})
	rep = syncOnce(t, s2)
	if _, ok := slices.BinarySearchFunc(rep.Failed, "conflict", func(e ObjectError, k string) int { return strings.Compare(e.Key, k) }); ok {
		t.Errorf("conflict still failed after deleting the directory: %v", rep.Failed)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "conflict")); err != nil || string(b) != "a file" {
		t.Errorf("conflict: %q, %v", b, err)
	}
}

// TestSyncSourceGone checks that a source that cannot be listed fails the
// pass, naming it, and deletes nothing; and that an empty source does not
// empty its destination.
func TestSyncSourceGone(t *testing.T) {
	parent, dst := t.TempDir(), t.TempDir()
	src := filepath.Join(parent, "share")
	files := map[string]string{"a": "alpha", "b/c": "charlie"}
	for k, v := range files {
		writeFile(t, src, k, v)
	}
	s := openSync(t, fileURL(src), fileURL(dst), Options{Delete: true})
	syncOnce(t, s)
	if err := os.RemoveAll(src); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Sync(context.Background())
	if err == nil || !strings.Contains(err.Error(), "list "+fileURL(src)) {
		t.Errorf("vanished source: %v", err)
	}
	if rep.Deleted != 0 {
		t.Errorf("deleted %d", rep.Deleted)
	}
	sameTree(t, dst, files)

	// An empty directory where the share was (not mounted).
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	rep = syncOnce(t, s)
	if rep.Deleted != 0 || rep.DeletesWithheld == "" || rep.PendingDeletes != 2 {
		t.Errorf("empty source: %+v", rep)
	}
	sameTree(t, dst, files)

	// A source directory that cannot be read makes the listing incomplete:
	// nothing is deleted on its account. Root reads it anyway.
	if os.Geteuid() != 0 {
		writeFile(t, src, "x", "x")
		writeFile(t, src, "locked/y", "y")
		os.Chmod(filepath.Join(src, "locked"), 0)
		defer os.Chmod(filepath.Join(src, "locked"), 0o755)
		rep = syncOnce(t, s)
		if rep.Deleted != 0 || !strings.Contains(rep.DeletesWithheld, "listed whole") {
			t.Errorf("unreadable directory: %+v", rep)
		}
	}
}

func TestOpenSyncerErrors(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	missing := filepath.Join(dir, "missing")
	cases := []struct{ src, dst, want string }{
		{dir, missing, "destination: open " + fileURL(missing) + ": directory " + missing + " does not exist"},
		{missing, dir, "source: open " + fileURL(missing)},
		{dir, filepath.Join(dir, "inside"), "overlap"},
		{"relative/dir", dir, "not a URL"},
		{"nope://bucket", dir, "nope://bucket"},
		{"file://" + dir + "?prefix=x", t.TempDir(), `query parameter "prefix"`},
	}
	os.Mkdir(filepath.Join(dir, "inside"), 0o755)
	for _, c := range cases {
		s, err := OpenSyncer(ctx, c.src, c.dst, Options{})
		if err == nil {
			s.Close()
			t.Errorf("%s → %s: no error", c.src, c.dst)
		} else if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s → %s: %v; want it to contain %q", c.src, c.dst, err, c.want)
		}
	}
}

// TestSyncSavesProgress checks that a long pass saves its manifest as it
// goes, not only at its end.
func TestSyncSavesProgress(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	for i := range 10 {
		writeFile(t, src, fmt.Sprintf("f%d", i), fmt.Sprintf("file %d", i))
	}
	s := openSync(t, fileURL(src), fileURL(dst), Options{Concurrency: 1})
	s.manifestEvery = time.Nanosecond
	var copies int
	var seen []int
	s.afterCopy = func(string) {
		copies++
		// The manifest as saved after the previous copy.
		st, err := openStore(context.Background(), fileURL(dst), time.Minute)
		if err != nil {
			t.Error(err)
			return
		}
		defer st.close()
		reader := &Syncer{dst: st, opts: Options{}.withDefaults(), manifestKey: s.manifestKey, manifestKeyV1: s.manifestKeyV1, log: s.log}
		entries, _, err := reader.loadManifest(context.Background())
		if err != nil {
			t.Error(err)
		}
		seen = append(seen, len(entries))
	}
	syncOnce(t, s)
	if want := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}; !slices.Equal(seen, want) {
		t.Errorf("manifest entries seen after each copy: %v, want %v", seen, want)
	}
}

// TestSyncStreams copies a file far larger than what the copy allocates,
// then another while a goroutine watches the destination path: it must
// never see a partial file.
func TestSyncStreams(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	const size = 64 << 20
	sparse := func(name string) {
		f, err := os.Create(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil { // sparse: quick to make
			t.Fatal(err)
		}
		f.Close()
	}
	sparse("big.img")
	s := openSync(t, fileURL(src), fileURL(dst), Options{})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	rep := syncOnce(t, s)
	runtime.ReadMemStats(&after)
	if rep.Copied != 1 || rep.BytesCopied != size {
		t.Fatalf("copy: %+v", rep)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size/16 {
		t.Errorf("copying %d MiB allocated %d MiB: not streamed", size>>20, alloc>>20)
	} else {
		t.Logf("copying %d MiB allocated %.1f MiB", size>>20, float64(alloc)/(1<<20))
	}

	sparse("big2.img")
	stop := make(chan struct{})
	partial := make(chan int64, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if st, err := os.Stat(filepath.Join(dst, "big2.img")); err == nil && st.Size() != size {
				select {
				case partial <- st.Size():
				default:
				}
			}
		}
	})
	rep = syncOnce(t, s)
	close(stop)
	wg.Wait()
	if rep.Copied != 1 {
		t.Fatalf("second copy: %+v", rep)
	}
	select {
	case n := <-partial:
		t.Errorf("a reader saw the destination file with %d of %d bytes", n, size)
	default:
	}
}
