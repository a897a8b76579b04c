package files

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestProber(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	for _, ep := range []string{dir, "file://" + dir} {
		if r := NewProber(ep).Probe(ctx); r.Err != nil {
			t.Errorf("%s (empty): %v", ep, r.Err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "notebook.ipynb"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := NewProber(dir).Probe(ctx); r.Err != nil {
		t.Errorf("with a file: %v", r.Err)
	}
	missing := filepath.Join(dir, "gone")
	r := NewProber(missing).Probe(ctx)
	if r.Err == nil || !strings.Contains(r.Err.Error(), missing) {
		t.Errorf("missing share: %v", r.Err)
	}
	r = NewProber("s3://bucket-without-driver").Probe(ctx)
	if r.Err == nil {
		t.Error("a scheme without a driver probed healthy")
	}
}
