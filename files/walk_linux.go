//go:build linux

package files

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// direntBufSize is the size of the getdents64 buffer: ~1,000 entries of
// a directory per call.
const direntBufSize = 32 << 10

// dirReader reads directories for a walk. On Linux it calls getdents64
// into one buffer reused for every directory, takes each entry's type
// from it (no stat for a subdirectory), sorts the names, then takes each
// file's lstat with fstatat relative to the directory into a Stat_t on
// the stack: no fs.FileInfo, two allocations an entry (its path, the C
// string of its name) where (*os.File).Readdir makes three (the name,
// the FileInfo, the C string) and the walk a fourth (the path).
type dirReader struct {
	buf []byte
	// path holds the relative path of an entry as it is put together.
	path []byte
	// names holds the entries of a directory as getdents64 gives them,
	// to be sorted before they are stat'ed.
	names []direntName
	// levels holds the entries of the directories being walked, one
	// slice per depth, reused from one directory to the next.
	levels [][]dirEntry
}

// direntName is an entry's path (a directory's ending with '/') and its
// type (unix.DT_*) as the directory gives it.
type direntName struct {
	path string
	typ  uint8
}

// readDir reads the entries of the directory dir, rel below the root
// ("" for the root) at depth depth (0 for the root), with the lstat of
// each (the stat of the target of a symbolic link), in key order (see
// sortEntries). An entry whose stat fails has err set; what could be read
// before a failure to read the directory is returned with it. The slice
// is valid until the next call at the same depth.
func (r *dirReader) readDir(dir, rel string, depth int) ([]dirEntry, error) {
	fd, err := openDir(dir)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	if r.buf == nil {
		r.buf = make([]byte, direntBufSize)
	}
	nameAt := 0
	if rel != "" {
		nameAt = len(rel) + 1
	}
	// The names first, sorted (small records), then the stat of each in
	// that order.
	r.names = r.names[:0]
	for {
		n, gerr := unix.Getdents(fd, r.buf)
		if gerr == unix.EINTR {
			continue
		}
		if gerr != nil {
			err = &fs.PathError{Op: "readdirent", Path: dir, Err: gerr}
			break
		}
		if n <= 0 {
			break
		}
		r.parseDirents(fd, r.buf[:n], rel)
	}
	slices.SortFunc(r.names, func(a, b direntName) int { return strings.Compare(a.path, b.path) })
	for len(r.levels) <= depth {
		r.levels = append(r.levels, nil)
	}
	entries := r.levels[depth][:0]
	for _, d := range r.names {
		if d.typ == unix.DT_DIR {
			entries = append(entries, dirEntry{path: d.path, mode: fs.ModeDir})
			continue
		}
		e := dirEntry{path: d.path}
		r.stat(fd, dir, nameAt, d.typ == unix.DT_LNK, &e)
		if e.err != nil && !e.link && errors.Is(e.err, fs.ErrNotExist) {
			continue // removed while listing: gone
		}
		if e.mode.IsDir() && !e.link {
			e.path += "/" // replaced by a directory meanwhile
		}
		entries = append(entries, e)
	}
	r.levels[depth] = entries[:0]
	return entries, err
}

// parseDirents adds the entries of buf (struct linux_dirent64 records:
// ino u64, off s64, reclen u16, type u8, name NUL-terminated and
// padded) to r.names, their paths below rel.
func (r *dirReader) parseDirents(fd int, buf []byte, rel string) {
	for b := buf; len(b) >= 19; {
		reclen := int(binary.NativeEndian.Uint16(b[16:18]))
		if reclen < 19 || reclen > len(b) {
			return
		}
		typ := b[18]
		name := b[19:reclen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		b = b[reclen:]
		if len(name) == 0 || string(name) == "." || string(name) == ".." {
			continue
		}
		if typ == unix.DT_UNKNOWN {
			// Not every filesystem says: the lstat does, and directories
			// must be known to sort.
			var st unix.Stat_t
			if fstatat(fd, string(name), &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
				switch st.Mode & unix.S_IFMT {
				case unix.S_IFDIR:
					typ = unix.DT_DIR
				case unix.S_IFLNK:
					typ = unix.DT_LNK
				}
			}
		}
		r.path = r.path[:0]
		if rel != "" {
			r.path = append(r.path, rel...)
			r.path = append(r.path, '/')
		}
		r.path = append(r.path, name...)
		if typ == unix.DT_DIR {
			r.path = append(r.path, '/')
		}
		r.names = append(r.names, direntName{path: string(r.path), typ: typ})
	}
}

// stat fills e with the lstat of the entry, whose name starts at
// e.path[at:], or the stat of its target when link is set (the entry is
// a symbolic link).
func (r *dirReader) stat(fd int, dir string, at int, link bool, e *dirEntry) {
	var st unix.Stat_t
	flags, op := unix.AT_SYMLINK_NOFOLLOW, "lstat"
	if link {
		flags, op = 0, "stat"
	}
	e.link = link
	name := e.path[at:]
	if err := fstatat(fd, name, &st, flags); err != nil {
		if link && fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == unix.ENOENT {
			// The link itself is gone, not only its target.
			e.link, op = false, "lstat"
		}
		e.err = &fs.PathError{Op: op, Path: joinPath(dir, name), Err: err}
		return
	}
	if !link && st.Mode&unix.S_IFMT == unix.S_IFLNK {
		// The directory said otherwise (or did not say): a link.
		r.stat(fd, dir, at, true, e)
		return
	}
	e.mode = fileMode(st.Mode)
	e.size = st.Size
	sec, nsec := st.Mtim.Unix()
	e.mtime = time.Unix(sec, nsec)
}

// fileMode is the type bits of a stat mode as an fs.FileMode.
func fileMode(m uint32) fs.FileMode {
	switch m & unix.S_IFMT {
	case unix.S_IFREG:
		return 0
	case unix.S_IFDIR:
		return fs.ModeDir
	case unix.S_IFLNK:
		return fs.ModeSymlink
	case unix.S_IFIFO:
		return fs.ModeNamedPipe
	case unix.S_IFSOCK:
		return fs.ModeSocket
	case unix.S_IFCHR:
		return fs.ModeDevice | fs.ModeCharDevice
	default:
		return fs.ModeDevice
	}
}

// openDir opens a directory for getdents64.
func openDir(dir string) (int, error) {
	for {
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

func fstatat(fd int, name string, st *unix.Stat_t, flags int) error {
	for {
		if err := unix.Fstatat(fd, name, st, flags); err != unix.EINTR {
			return err
		}
	}
}
