package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob" // azblob:// stores
	"gocloud.dev/blob/fileblob"
	_ "gocloud.dev/blob/gcsblob" // gs:// stores
	"gocloud.dev/gcerrors"

	"github.com/lifeboat-dr/lifeboat/config"
)

// metaPrefix holds Lifeboat's own objects in a store (the sync manifests):
// never listed, copied or deleted as user data.
const metaPrefix = ".lifeboat/"

// listPageSize is the page size of blob listings.
const listPageSize = 1000

// store is one side of a sync: a bucket, and how to list it.
type store struct {
	url      string // as configured
	redacted string // url without its secrets, for messages
	bucket   *blob.Bucket
	// dir is the directory of a file:// store, which is listed by walking
	// it (fileblob's own listing skips what it cannot read without a
	// word, and a listing must know when it is incomplete); "" otherwise.
	dir string
	// release frees what the bucket does not on Close (idle connections).
	release func()
	// listed is the number of objects of the last listing: the next one
	// starts with room for them.
	listed int
}

var errInvalidValue = errors.New("invalid value")

// awsNoise is the request and host IDs of AWS SDK errors: no help to a
// reader of the message.
var awsNoise = regexp.MustCompile(`, RequestID: [^,]*, HostID: [^,]*`)

// StoreError is a failure of a whole store: it cannot be opened, listed
// or written. It names the operation and the store's URL (secrets
// redacted).
type StoreError struct {
	Op  string // "open", "list", "read manifest"...
	URL string // redacted
	Err error
}

// Error is "<op> <url>: <why>".
func (e *StoreError) Error() string {
	return fmt.Sprintf("%s %s: %s", e.Op, e.URL, describeErr(e.Err))
}

// Unwrap returns the underlying error.
func (e *StoreError) Unwrap() error { return e.Err }

// describeErr is an error's text without gocloud's "blob (code=...): "
// noise, and with a plain word for the codes that matter.
func describeErr(err error) string {
	msg := awsNoise.ReplaceAllString(cleanBlobErr(err), "")
	switch gcerrors.Code(err) {
	case gcerrors.NotFound:
		if !strings.Contains(strings.ToLower(msg), "not found") && !strings.Contains(msg, "no such") {
			msg = "not found: " + msg
		}
	case gcerrors.PermissionDenied:
		if !strings.Contains(strings.ToLower(msg), "denied") {
			msg = "permission denied: " + msg
		}
	}
	return msg
}

// openStore opens the store at rawURL (a gocloud.dev/blob URL or an
// absolute path) and checks that it can be listed.
func openStore(ctx context.Context, rawURL string, timeout time.Duration) (*store, error) {
	rawURL = StoreURL(rawURL)
	s := &store{url: rawURL, redacted: config.RedactURL(rawURL)}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, &StoreError{Op: "open", URL: s.redacted, Err: err}
	}
	switch u.Scheme {
	case "file":
		if err := s.openDir(u); err != nil {
			return nil, &StoreError{Op: "open", URL: s.redacted, Err: err}
		}
	case "":
		return nil, &StoreError{Op: "open", URL: s.redacted, Err: errors.New("not a URL (file:///dir, s3://bucket, azblob://container or gs://bucket) nor an absolute path")}
	default:
		var b *blob.Bucket
		var err error
		if u.Scheme == "s3" {
			b, s.release, err = openS3(ctx, u)
		} else {
			b, err = blob.OpenBucket(ctx, rawURL)
		}
		if err != nil {
			return nil, &StoreError{Op: "open", URL: s.redacted, Err: err}
		}
		s.bucket = b
		if err := s.check(ctx, timeout); err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

// openDir opens a file:// store: fileblob without ".attrs" sidecar files
// (so none shows up as an object on either side) and with its temporary
// files next to their target, so that the rename that publishes a file is
// atomic even when the directory is another mount than the temporary
// directory.
func (s *store) openDir(u *url.URL) error {
	dir := u.Path
	if u.Host == "." {
		dir = strings.TrimPrefix(dir, "/")
	} else if u.Host != "" && u.Host != "localhost" {
		return fmt.Errorf("file URL with a host (%q): use file:///path", u.Host)
	}
	if dir == "" {
		return errors.New("no directory in the URL")
	}
	opts := &fileblob.Options{Metadata: fileblob.MetadataDontWrite, NoTempDir: true}
	for k, v := range u.Query() {
		switch k {
		case "dir_file_mode":
			m, err := strconv.ParseUint(v[0], 0, 32)
			if err != nil {
				return fmt.Errorf("dir_file_mode %q: %v", v[0], err)
			}
			opts.DirFileMode = os.FileMode(m)
		case "metadata", "no_tmp_dir":
			// Always skip and true: see above.
		default:
			return fmt.Errorf("query parameter %q is not supported on file:// stores", k)
		}
	}
	abs, err := filepath.Abs(filepath.FromSlash(dir))
	if err != nil {
		return err
	}
	st, err := os.Stat(abs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("directory %s does not exist", abs)
		}
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory", abs)
	}
	b, err := fileblob.OpenBucket(abs, opts)
	if err != nil {
		return err
	}
	s.bucket, s.dir = b, abs
	return nil
}

// check lists one object to learn early whether the store is reachable,
// exists and takes the credentials.
func (s *store) check(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, _, err := s.bucket.ListPage(ctx, blob.FirstPageToken, 1, nil)
	if err == nil {
		return nil
	}
	if gcerrors.Code(err) == gcerrors.NotFound {
		return &StoreError{Op: "open", URL: s.redacted, Err: fmt.Errorf("bucket does not exist (%s)", cleanBlobErr(err))}
	}
	return &StoreError{Op: "open", URL: s.redacted, Err: err}
}

func (s *store) close() error {
	if s == nil || s.bucket == nil {
		return nil
	}
	err := s.bucket.Close()
	if s.release != nil {
		s.release()
	}
	return err
}

// object is one entry of a listing.
type object struct {
	Key     string
	Size    int64
	ModTime time.Time
	MD5     string // hex; "" when the store does not say
}

// listing is what a store holds.
type listing struct {
	objects []object // sorted by key
	// full holds the chunks of objects listed so far, while objects is
	// the last one (see add).
	full [][]object
	// problems are entries that could not be listed: an unreadable
	// directory, a dangling symbolic link, a name that is no key.
	problems []ObjectError
	// present are keys that exist but could not be listed as objects
	// (a dangling symbolic link): their copies are never deleted.
	present map[string]bool
	// incomplete is set when part of the store could not be listed: a
	// key missing from the listing may still exist, so nothing is
	// deleted on its account.
	incomplete bool
	// skipped counts entries that are not objects: named pipes, sockets,
	// devices, symbolic links to directories, S3 "folder" markers.
	skipped int
}

// add appends o to the listing's objects. When they are full (unless
// the listing started with room for them all), they are put aside and
// the next ones go into a new chunk, put together with the others at
// the end (joinChunks): append would grow one slice by a quarter at a
// time, which for 100,000 objects allocates (and copies) ~5 times their
// size, where the chunks and the final slice take twice.
func (l *listing) add(o object) {
	if len(l.objects) == cap(l.objects) && len(l.objects) > 0 {
		l.full = append(l.full, l.objects)
		l.objects = make([]object, 0, min(len(l.objects)*2, 16<<10))
	}
	l.objects = append(l.objects, o)
}

// joinChunks puts the listing's objects together in one slice.
func (l *listing) joinChunks() {
	if len(l.full) == 0 {
		return
	}
	n := len(l.objects)
	for _, c := range l.full {
		n += len(c)
	}
	all := make([]object, 0, n)
	for _, c := range l.full {
		all = append(all, c...)
	}
	l.objects = append(all, l.objects...)
	l.full = nil
}

// list lists every object of the store except Lifeboat's own.
func (s *store) list(ctx context.Context, timeout time.Duration) (*listing, error) {
	l := &listing{objects: make([]object, 0, max(s.listed+s.listed/16, 256))}
	var err error
	if s.dir != "" {
		err = s.walk(ctx, l)
	} else {
		err = s.listBucket(ctx, l, timeout)
	}
	if err != nil {
		return nil, &StoreError{Op: "list", URL: s.redacted, Err: err}
	}
	l.joinChunks()
	s.listed = len(l.objects)
	// Walks and S3 listings come sorted (but for escaped names): checking
	// is cheaper than sorting.
	byKey := func(a, b object) int { return strings.Compare(a.Key, b.Key) }
	if !slices.IsSortedFunc(l.objects, byKey) {
		slices.SortFunc(l.objects, byKey)
	}
	return l, nil
}

func (s *store) listBucket(ctx context.Context, l *listing, timeout time.Duration) error {
	token := blob.FirstPageToken
	for len(token) > 0 {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		page, next, err := s.bucket.ListPage(pctx, token, listPageSize, nil)
		cancel()
		if err == io.EOF {
			break
		}
		if err != nil {
			if gcerrors.Code(err) == gcerrors.NotFound {
				return fmt.Errorf("bucket does not exist (%s)", cleanBlobErr(err))
			}
			return err
		}
		for _, o := range page {
			switch {
			case o.IsDir, strings.HasPrefix(o.Key, metaPrefix):
			case strings.HasSuffix(o.Key, "/") && o.Size == 0:
				l.skipped++ // a "folder" marker
			default:
				l.add(object{Key: o.Key, Size: o.Size, ModTime: o.ModTime, MD5: hexOrEmpty(o.MD5)})
			}
		}
		token = next
	}
	return nil
}

// walk lists a file:// store by walking its directory, as fileblob maps
// keys to paths. Unlike fileblob's listing it follows symbolic links to
// files (their size is the target's), skips what is not a regular file,
// and reports what it could not read.
func (s *store) walk(ctx context.Context, l *listing) error {
	// A share's root is often a symbolic link to the mount.
	root, err := filepath.EvalSymlinks(s.dir)
	if err != nil {
		return err
	}
	st, err := os.Stat(root)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory", root)
	}
	l.present = map[string]bool{}
	return s.walkDir(ctx, &dirReader{}, l, root, "", 0)
}

// walkDir lists the directory dir, rel below the root ("" for the root,
// which fails the listing when it cannot be read) at depth depth. Entries
// come in key order (see sortEntries), so the listing of a tree without
// escaped names comes sorted.
func (s *store) walkDir(ctx context.Context, r *dirReader, l *listing, dir, rel string, depth int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	entries, err := r.readDir(dir, rel, depth)
	if err != nil {
		if rel == "" {
			return err // the root itself unreadable: no listing at all
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed while walking: gone
		}
		// What could be read is listed all the same.
		l.incomplete = true
		l.problems = append(l.problems, ObjectError{Key: rel, Op: "list", Err: pathErr(err)})
	}
	nameAt := 0
	if rel != "" {
		nameAt = len(rel) + 1
	}
	for _, e := range entries {
		erel := strings.TrimSuffix(e.path, "/")
		if e.err != nil && !e.link {
			if errors.Is(e.err, fs.ErrNotExist) {
				continue
			}
			l.incomplete = true
			l.problems = append(l.problems, ObjectError{Key: erel, Op: "list", Err: pathErr(e.err)})
			continue
		}
		if len(erel) < len(e.path) { // a directory
			if e.path == metaPrefix {
				continue
			}
			if err := s.walkDir(ctx, r, l, joinPath(dir, erel[nameAt:]), erel, depth+1); err != nil {
				return err
			}
			continue
		}
		if strings.HasSuffix(erel, attrsSuffix) {
			continue // a fileblob sidecar, not an object
		}
		key := erel
		if !plainPath(erel) {
			key = unescapeKey(erel)
			if escapeKey(key) != erel {
				l.problems = append(l.problems, ObjectError{Key: erel, Op: "list", Err: "this file name does not map to a key"})
				continue
			}
		}
		if e.link && e.err != nil {
			l.present[key] = true
			l.problems = append(l.problems, ObjectError{Key: key, Op: "stat", Err: "symbolic link: " + pathErr(e.err)})
			continue
		}
		if !e.mode.IsRegular() {
			l.skipped++
			continue
		}
		l.add(object{Key: key, Size: e.size, ModTime: e.mtime})
	}
	return nil
}

// joinPath is the path of name in the directory dir.
func joinPath(dir, name string) string {
	if strings.HasSuffix(dir, string(filepath.Separator)) {
		return dir + name
	}
	return dir + string(filepath.Separator) + name
}

// plainPath reports whether escapeKey and unescapeKey leave the relative
// path p as it is: valid UTF-8 without control characters, escapes
// ("__0x"), "../", "//" or a trailing '/'. Most paths are plain, and
// checking so is far cheaper than the round trip.
func plainPath(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] < 32 {
			return false
		}
	}
	return utf8.ValidString(p) && !strings.Contains(p, "__0x") && !strings.Contains(p, "../") &&
		!strings.Contains(p, "//") && !strings.HasSuffix(p, "/") && os.PathSeparator == '/'
}

// pathErr is an *fs.PathError's text without the path (the key says it).
func pathErr(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Op + ": " + pe.Err.Error()
	}
	return err.Error()
}

// removeEmptyParents removes the directories of a deleted file:// key
// that are now empty, up to the store's root: a directory left behind
// would stand in the way of a file of the same name later.
func (s *store) removeEmptyParents(key string) {
	if s.dir == "" {
		return
	}
	dir := filepath.Dir(filepath.Join(s.dir, escapeKey(key)))
	for dir != s.dir && strings.HasPrefix(dir, s.dir+string(filepath.Separator)) {
		if os.Remove(dir) != nil {
			return
		}
		dir = filepath.Dir(dir)
	}
}

// contains reports whether the file:// store o lies inside s (or is s).
func (s *store) contains(o *store) bool {
	if s.dir == "" || o.dir == "" {
		return false
	}
	a, err1 := filepath.EvalSymlinks(s.dir)
	b, err2 := filepath.EvalSymlinks(o.dir)
	if err1 != nil || err2 != nil {
		a, b = s.dir, o.dir
	}
	return a == b || strings.HasPrefix(b, a+string(filepath.Separator))
}
