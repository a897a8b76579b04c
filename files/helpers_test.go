package files

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

// TestMain fails the package when the tests leave a goroutine behind
// (copy workers, watches, HTTP connections of closed S3 stores).
func TestMain(m *testing.M) { testenv.MainWithLeakCheck(m) }

// writeFile writes a file below dir, making its directories.
func writeFile(t testing.TB, dir, rel, content string) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// tree reads every file below dir (Lifeboat's own excluded) by path.
func tree(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == ".lifeboat" {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[rel] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sameTree fails the test unless dst holds exactly want.
func sameTree(t testing.TB, dst string, want map[string]string) {
	t.Helper()
	got := tree(t, dst)
	for k, v := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%s missing at the destination", k)
		} else if g != v {
			t.Errorf("%s: destination has %d bytes %.20q, want %d bytes %.20q", k, len(g), g, len(v), v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s at the destination, not wanted", k)
		}
	}
}

// noSidecars fails the test if fileblob left ".attrs" or temporary files.
func noSidecars(t testing.TB, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".attrs") || strings.HasSuffix(p, ".tmp")) {
			t.Errorf("left behind: %s", p)
		}
		return nil
	})
}

// openSync opens a syncer closed at the end of the test.
func openSync(t testing.TB, src, dst string, opts Options) *Syncer {
	t.Helper()
	s, err := OpenSyncer(context.Background(), src, dst, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// syncOnce runs a pass and fails the test on a pass error.
func syncOnce(t testing.TB, s *Syncer) Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := s.Sync(ctx)
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return rep
}

// counts is a Report's main counters, for comparisons.
type counts struct{ Copied, Deleted, Unchanged, Hashed, Failed, Pending int }

func countsOf(r Report) counts {
	return counts{r.Copied, r.Deleted, r.Unchanged, r.Hashed, len(r.Failed), r.PendingObjects}
}

// waitUntil polls cond every 20ms until it is true or timeout passes.
func waitUntil(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func fileURL(dir string) string { return "file://" + dir }
