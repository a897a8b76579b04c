package files

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
)

// walkTree writes a tree that exercises the walk of a file:// store:
// nested directories whose names sort around '/' ("a-b", "a", "a.txt",
// "a0"), escaped names, sizes and modification times (nanoseconds
// included) that differ per file, fileblob's ".attrs" sidecars (written
// by fileblob itself), Lifeboat's own ".lifeboat/", symbolic links (to a
// file, to a directory, dangling) and a named pipe. It returns the keys
// of the regular files, as fileblob lists them.
func walkTree(t *testing.T, dir string) []string {
	t.Helper()
	ctx := context.Background()
	// Default options: fileblob writes a ".attrs" file next to each.
	b, err := fileblob.OpenBucket(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	keys := []string{
		"a-b/x", "a.txt", "a/b/c/deep.bin", "a/b/c.txt", "a/b0", "a0",
		"z/1", "z/10", "z/2", "Z", "_", "~tilde", "dir with space/f g",
		"ünïcødé/日本語.txt", "ctl\x01char", "a/../b", "double//slash", "__0x41__",
	}
	for i := range 300 {
		keys = append(keys, fmt.Sprintf("many/f%03d", i))
	}
	for i, k := range keys {
		if err := b.WriteAll(ctx, k, []byte(strings.Repeat("x", i*7)), nil); err != nil {
			t.Fatalf("write %q: %v", k, err)
		}
		p := filepath.Join(dir, escapeKey(k))
		at := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i)*time.Hour + time.Duration(i*123457)*time.Nanosecond)
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*.attrs")); len(m) == 0 {
		t.Fatal("fileblob wrote no .attrs sidecar: the test does not test their exclusion")
	}
	writeFile(t, dir, ".lifeboat/manifest-0123456789abcdef.bin", "not an object")
	for _, l := range []struct{ target, name string }{
		{"a.txt", "link-to-file"},
		{"z", "link-to-dir"},
		{"nowhere", "link-dangling"},
	} {
		if err := os.Symlink(filepath.Join(dir, l.target), filepath.Join(dir, l.name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "a", "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	return keys
}

// TestWalkAsFileblobList checks that the walk of a file:// store lists
// exactly what fileblob's own listing does (same keys, sizes and
// modification times), but for the entries it treats otherwise on
// purpose: Lifeboat's own ".lifeboat/" is left out, a symbolic link to a
// file is its target, one to a directory and a named pipe are skipped, a
// dangling link is reported (and kept from deletion). Neither lists the
// ".attrs" sidecars; the walk does not read them.
func TestWalkAsFileblobList(t *testing.T) {
	dir := t.TempDir()
	keys := walkTree(t, dir)
	ctx := context.Background()
	b, err := fileblob.OpenBucket(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	want := map[string]*blob.ListObject{}
	it := b.List(nil)
	for {
		o, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(o.Key, metaPrefix) || strings.HasPrefix(o.Key, "link-") || o.Key == "a/pipe" {
			continue // treated otherwise, checked below
		}
		want[o.Key] = o
	}
	if len(want) != len(keys) {
		t.Fatalf("fileblob lists %d objects, the test wrote %d", len(want), len(keys))
	}

	st, err := openStore(ctx, fileURL(dir), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	l := &listing{}
	if err := st.walk(ctx, l); err != nil {
		t.Fatal(err)
	}
	l.joinChunks()
	var got []string
	for _, o := range l.objects {
		if o.Key == "link-to-file" {
			target, _ := os.Stat(filepath.Join(dir, "a.txt"))
			if o.Size != target.Size() || !o.ModTime.Equal(target.ModTime()) {
				t.Errorf("link-to-file: size %d, mtime %v; want its target's, %d and %v", o.Size, o.ModTime, target.Size(), target.ModTime())
			}
			continue
		}
		got = append(got, o.Key)
		w, ok := want[o.Key]
		if !ok {
			t.Errorf("walk lists %q, fileblob does not", o.Key)
			continue
		}
		if o.Size != w.Size || !o.ModTime.Equal(w.ModTime) {
			t.Errorf("%q: walk says %d bytes at %v, fileblob %d bytes at %v", o.Key, o.Size, o.ModTime, w.Size, w.ModTime)
		}
	}
	if !slices.Equal(got, keys) {
		t.Errorf("walk lists\n%q\nwant\n%q", got, keys)
	}
	// In key order as walked (the escaped names here sort as their keys
	// do): the listing needs no sort.
	l2 := &listing{}
	if err := st.walk(ctx, l2); err != nil {
		t.Fatal(err)
	}
	l2.joinChunks()
	if !slices.IsSortedFunc(l2.objects, func(a, b object) int { return strings.Compare(a.Key, b.Key) }) {
		t.Errorf("walk did not list in key order")
	}
	if l.skipped != 2 { // link-to-dir, a/pipe
		t.Errorf("skipped %d, want 2", l.skipped)
	}
	if len(l.problems) != 1 || l.problems[0].Key != "link-dangling" || l.problems[0].Op != "stat" ||
		l.problems[0].Err != "symbolic link: stat: no such file or directory" || !l.present["link-dangling"] || l.incomplete {
		t.Errorf("problems %v, present %v, incomplete %v; want the dangling link only", l.problems, l.present, l.incomplete)
	}
}

// TestReadDirAsPortable checks dirReader.readDir (getdents64 and fstatat
// on Linux) against readDirPortable (the os package) on every directory
// of a tree: the same entries, in the same order, with the same types,
// sizes, times and errors.
func TestReadDirAsPortable(t *testing.T) {
	dir := t.TempDir()
	walkTree(t, dir)
	r := &dirReader{}
	var check func(path, rel string, depth int)
	check = func(path, rel string, depth int) {
		got, err := r.readDir(path, rel, depth)
		if err != nil {
			t.Fatalf("readDir %s: %v", path, err)
		}
		want, err := readDirPortable(path, rel)
		if err != nil {
			t.Fatalf("readDirPortable %s: %v", path, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d entries, want %d", path, len(got), len(want))
		}
		for i, g := range got {
			w := want[i]
			if strings.HasSuffix(w.path, "/") {
				// A directory's size and time are not read (nor used).
				w.size, w.mtime = 0, time.Time{}
			}
			if g.path != w.path || g.link != w.link || g.mode != w.mode || g.size != w.size || !g.mtime.Equal(w.mtime) || (g.err == nil) != (w.err == nil) {
				t.Errorf("%s: entry %d is %+v, want %+v", path, i, g, w)
			}
			if g.err != nil && pathErr(g.err) != pathErr(w.err) {
				t.Errorf("%s: error %q, want %q", g.path, pathErr(g.err), pathErr(w.err))
			}
		}
		for _, e := range slices.Clone(got) {
			if strings.HasSuffix(e.path, "/") {
				rel := strings.TrimSuffix(e.path, "/")
				check(filepath.Join(path, filepath.Base(rel)), rel, depth+1)
			}
		}
	}
	check(dir, "", 0)
}

// TestListingChunks checks that a listing put together from chunks keeps
// every object in order.
func TestListingChunks(t *testing.T) {
	for _, n := range []int{0, 1, 255, 256, 257, 70000} {
		l := &listing{objects: make([]object, 0, 256)}
		for i := range n {
			l.add(object{Key: fmt.Sprintf("%08d", i), Size: int64(i)})
		}
		l.joinChunks()
		if len(l.objects) != n || l.full != nil {
			t.Fatalf("%d objects: got %d", n, len(l.objects))
		}
		for i, o := range l.objects {
			if o.Size != int64(i) {
				t.Fatalf("%d objects: object %d is %+v", n, i, o)
			}
		}
	}
}
