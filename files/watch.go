package files

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// localDir returns the directory of a file:// store URL (or absolute
// path).
func localDir(raw string) (string, bool) {
	u, err := url.Parse(StoreURL(raw))
	if err != nil || u.Scheme != "file" || u.Path == "" {
		return "", false
	}
	dir := u.Path
	if u.Host == "." {
		dir = strings.TrimPrefix(dir, "/")
	}
	abs, err := filepath.Abs(filepath.FromSlash(dir))
	if err != nil {
		return "", false
	}
	return abs, true
}

// watcher watches a directory tree (inotify through fsnotify) and calls
// notify at most delay after the first change of a burst.
type watcher struct {
	root   string
	delay  time.Duration
	retry  time.Duration // before watching again after the watch broke
	log    *slog.Logger
	notify func()
}

// run watches until ctx is done, starting again (after retry) when the
// root cannot be watched or goes away.
func (w *watcher) run(ctx context.Context) {
	for {
		err := w.watch(ctx)
		if ctx.Err() != nil {
			return
		}
		w.log.Warn("files replicator: watch of the primary stopped; passes run every Interval until it is back", "dir", w.root, "error", err.Error())
		select {
		case <-ctx.Done():
			return
		case <-time.After(w.retry):
		}
	}
}

func (w *watcher) watch(ctx context.Context) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer fw.Close()
	root, err := filepath.EvalSymlinks(w.root)
	if err != nil {
		return err
	}
	if err := fw.Add(root); err != nil {
		return fmt.Errorf("watch %s: %w", root, err)
	}
	meta := filepath.Join(root, strings.TrimSuffix(metaPrefix, "/"))
	w.addTree(fw, root, meta)
	timer := time.NewTimer(w.delay)
	timer.Stop()
	armed := false
	arm := func() {
		if !armed {
			timer.Reset(w.delay)
			armed = true
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return errors.New("watch closed")
			}
			if ev.Name == meta || strings.HasPrefix(ev.Name, meta+string(filepath.Separator)) {
				continue
			}
			if ev.Name == root && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				return fmt.Errorf("%s was removed", root)
			}
			if ev.Has(fsnotify.Create) {
				if st, err := os.Lstat(ev.Name); err == nil && st.IsDir() {
					// Files may have landed in it before it was watched;
					// the pass that follows lists them anyway.
					w.addTree(fw, ev.Name, meta)
				}
			}
			arm()
		case err, ok := <-fw.Errors:
			if !ok {
				return errors.New("watch closed")
			}
			// An overflow loses events: a pass finds what they were.
			w.log.Debug("files replicator: watch error", "dir", root, "error", err.Error())
			arm()
		case <-timer.C:
			armed = false
			w.notify()
		}
	}
}

// addTree watches the directories below dir (dir itself included),
// skipping meta, Lifeboat's own; a directory that cannot be watched (the
// inotify limit) is logged and left to the periodic passes.
func (w *watcher) addTree(fw *fsnotify.Watcher, dir, meta string) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if p == meta {
			return filepath.SkipDir
		}
		if err := fw.Add(p); err != nil {
			w.log.Warn("files replicator: cannot watch a directory; its changes wait for the next periodic pass", "dir", p, "error", err.Error())
			return filepath.SkipDir
		}
		return nil
	})
}
