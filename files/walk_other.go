//go:build !linux

package files

// dirReader reads directories for a walk: with readDirPortable here, with
// getdents64 and fstatat on Linux (walk_linux.go).
type dirReader struct{}

// readDir reads the entries of the directory dir, rel below the root
// ("" for the root), with the lstat of each (the stat of the target of a
// symbolic link), in key order (see sortEntries). An entry whose stat
// fails has err set; what could be read before a failure to read the
// directory is returned with it.
func (r *dirReader) readDir(dir, rel string, depth int) ([]dirEntry, error) {
	return readDirPortable(dir, rel)
}
