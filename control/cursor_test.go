package control

import (
	"context"
	"testing"
)

func TestCursorLoadSaveNeverBackwards(t *testing.T) {
	m := startMember(t, "east-1", t.TempDir(), nil)
	defer m.stop()
	ctx := context.Background()
	c := m.store.Cursor("notify")
	if seq, ok, err := c.Load(ctx); err != nil || ok || seq != 0 {
		t.Fatalf("load before any save: %d %v %v, want 0 false nil", seq, ok, err)
	}
	if err := c.Save(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if seq, ok, err := c.Load(ctx); err != nil || !ok || seq != 0 {
		t.Fatalf("load after saving 0: %d %v %v, want 0 true nil", seq, ok, err)
	}
	for _, seq := range []uint64{9, 10, 123} {
		if err := c.Save(ctx, seq); err != nil {
			t.Fatal(err)
		}
		if got, ok, err := c.Load(ctx); err != nil || !ok || got != seq {
			t.Fatalf("load after saving %d: %d %v %v", seq, got, ok, err)
		}
	}
	// A late save of an old leader does not move it back (9 < 123 also
	// as text would not: the values are zero-padded).
	if err := c.Save(ctx, 9); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := c.Load(ctx); got != 123 {
		t.Errorf("cursor after an older save: %d, want 123", got)
	}
	// Cursors are independent, and stored where documented.
	if _, ok, _ := m.store.Cursor("report").Load(ctx); ok {
		t.Error("cursor report exists after saving cursor notify")
	}
	resp, err := m.cli.Get(ctx, "/lifeboat/shop/cursors/notify")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "00000000000000000123" {
		t.Errorf("stored cursor: %v %v", resp, err)
	}
	if _, err := m.cli.Put(ctx, "/lifeboat/shop/cursors/notify", "x"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Load(ctx); err == nil {
		t.Error("a corrupt cursor loaded without an error")
	}
}
