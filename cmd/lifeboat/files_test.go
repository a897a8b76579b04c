package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// files sync on two real directories: a dry run lists and changes
// nothing, a sync copies, --reverse copies back, bad names are usage
// errors.
func TestFilesSyncCommand(t *testing.T) {
	east, west := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(east, "notebook.ipynb"), []byte(`{"cells": []}`), 0o644)
	os.MkdirAll(filepath.Join(east, "data"), 0o755)
	os.WriteFile(filepath.Join(east, "data", "a b.csv"), []byte("1,2\n"), 0o644)
	os.WriteFile(filepath.Join(west, "stale.txt"), []byte("old"), 0o644)
	path := filepath.Join(t.TempDir(), "lifeboat.yaml")
	os.WriteFile(path, []byte(fmt.Sprintf(`cluster: f
regions: [{name: east, priority: 1}, {name: west, priority: 2}]
services:
  - name: userfiles
    kind: files
    endpoints: {east: "file://%s", west: "file://%s"}
    sync: {interval: 1m, delete: true}
`, east, west)), 0o600)

	out, errs, code := run(t, nil, "files", "sync", "userfiles", "-c", path, "--dry-run")
	if code != 0 || !strings.Contains(out, "copy   notebook.ipynb") || !strings.Contains(out, "copy   data/a b.csv") || !strings.Contains(out, "delete stale.txt") ||
		!strings.Contains(out, "userfiles east → west: would copy 2, delete 1") {
		t.Errorf("dry run: exit %d %s\n%s", code, errs, out)
	}
	if _, err := os.Stat(filepath.Join(west, "notebook.ipynb")); err == nil {
		t.Error("the dry run copied")
	}
	if _, err := os.Stat(filepath.Join(west, "stale.txt")); err != nil {
		t.Error("the dry run deleted")
	}
	out, errs, code = run(t, nil, "files", "sync", "userfiles", "-c", path)
	if code != 0 || !strings.Contains(out, "userfiles east → west: copied 2, delete 1") {
		t.Errorf("sync: exit %d %s\n%s", code, errs, out)
	}
	if b, err := os.ReadFile(filepath.Join(west, "data", "a b.csv")); err != nil || string(b) != "1,2\n" {
		t.Errorf("copied file: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(west, "stale.txt")); err == nil {
		t.Error("stale.txt was not deleted")
	}
	os.WriteFile(filepath.Join(west, "written-in-dr.txt"), []byte("dr"), 0o644)
	out, errs, code = run(t, nil, "files", "sync", "userfiles", "-c", path, "--reverse")
	if code != 0 || !strings.Contains(out, "userfiles west → east: copied 1") {
		t.Errorf("reverse: exit %d %s\n%s", code, errs, out)
	}
	if _, err := os.Stat(filepath.Join(east, "written-in-dr.txt")); err != nil {
		t.Error("the reverse sync did not copy back")
	}
	_, errs, code = run(t, nil, "files", "sync", "nope", "-c", path)
	if code != 2 || !strings.Contains(errs, `"nope" is not a files service`) {
		t.Errorf("unknown service: exit %d %s", code, errs)
	}
	_, errs, code = run(t, nil, "files", "sync", "userfiles", "-c", path, "--to", "mars")
	if code != 2 || !strings.Contains(errs, `--to "mars"`) {
		t.Errorf("unknown region: exit %d %s", code, errs)
	}
}
