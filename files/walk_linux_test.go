package files

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestParseDirentsUnknownType checks that entries whose type the
// directory does not give (DT_UNKNOWN, as on some filesystems) get it
// from their lstat: a directory must be known as one to sort where its
// keys do.
func TestParseDirentsUnknownType(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "file", "f")
	writeFile(t, dir, "sub/inner", "i")
	if err := os.Symlink(filepath.Join(dir, "file"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	// linux_dirent64 records, every type unknown; "." and ".." skipped.
	var buf []byte
	for i, name := range []string{".", "..", "file", "sub", "link", "gone"} {
		reclen := (19 + len(name) + 1 + 7) &^ 7
		rec := make([]byte, reclen)
		binary.NativeEndian.PutUint64(rec[0:], uint64(i+1))
		binary.NativeEndian.PutUint64(rec[8:], uint64(i+1))
		binary.NativeEndian.PutUint16(rec[16:], uint16(reclen))
		rec[18] = unix.DT_UNKNOWN
		copy(rec[19:], name)
		buf = append(buf, rec...)
	}
	fd, err := openDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	r := &dirReader{}
	r.parseDirents(fd, buf, "top")
	want := []direntName{
		{"top/file", unix.DT_UNKNOWN}, // a regular file: stat'ed later
		{"top/sub/", unix.DT_DIR},
		{"top/link", unix.DT_LNK},
		{"top/gone", unix.DT_UNKNOWN}, // vanished: its stat says so later
	}
	if !slices.Equal(r.names, want) {
		t.Errorf("parsed %+v, want %+v", r.names, want)
	}
}
