package files

import (
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"
)

// dirEntry is an entry of a directory, as dirReader.readDir gives it.
type dirEntry struct {
	// path is the entry's path below the root, '/'-separated; a
	// directory's (not a link to one) ends with '/', as every key below
	// it starts, so that entries sort in the order of their keys.
	path string
	// link is set for a symbolic link: mode, size and mtime are then its
	// target's, err why that could not be read (a dangling link).
	link  bool
	mode  fs.FileMode // type bits only
	size  int64
	mtime time.Time
	err   error // the lstat (or the stat of the link's target) failed
}

// sortEntries sorts the entries of one directory by path: a directory's
// ends with '/' ("a-b" < "a/" < "a0"), so a walk that visits each
// subdirectory where it sorts lists the keys of a plain tree in order.
func sortEntries(entries []dirEntry) {
	slices.SortFunc(entries, func(a, b dirEntry) int { return strings.Compare(a.path, b.path) })
}

// readDirPortable is dirReader.readDir with the os package, for systems
// other than Linux (and to check the Linux one against):
// (*os.File).Readdir takes the lstat calls relative to the directory, far
// cheaper than a whole path each; when one of them fails it gives up,
// and the directory is read again entry by entry, so that the others are
// still listed and the failure is the entry's.
func readDirPortable(dir, rel string) ([]dirEntry, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	infos, err := f.Readdir(-1)
	f.Close()
	var entries []dirEntry
	if err == nil {
		entries = make([]dirEntry, 0, len(infos))
		for _, fi := range infos {
			entries = append(entries, entryOf(dir, rel, fi.Name(), fi, nil))
		}
	} else {
		var des []os.DirEntry
		des, err = os.ReadDir(dir)
		entries = make([]dirEntry, 0, len(des))
		for _, d := range des {
			fi, ierr := d.Info()
			entries = append(entries, entryOf(dir, rel, d.Name(), fi, ierr))
		}
	}
	sortEntries(entries)
	return entries, err
}

// entryOf is the entry name of dir, from its lstat (fi, or why that
// failed): for a symbolic link, the stat of its target.
func entryOf(dir, rel, name string, fi fs.FileInfo, err error) dirEntry {
	e := dirEntry{path: name}
	if rel != "" {
		e.path = rel + "/" + name
	}
	if err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		e.link = true
		fi, err = os.Stat(joinPath(dir, name))
	}
	if err != nil {
		e.err = err
		return e
	}
	e.mode, e.size, e.mtime = fi.Mode().Type(), fi.Size(), fi.ModTime()
	if e.mode.IsDir() && !e.link {
		e.path += "/"
	}
	return e
}
