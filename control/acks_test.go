package control

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

// AwaitEpoch waits for every node with a live lease: a node behind holds
// it back (and is named), a node whose lease ended no longer does; the
// node's own acknowledgement follows its state.
func TestAwaitEpoch(t *testing.T) {
	cfg := testenv.Config(t, `
cluster: acks
regions: [{name: east, priority: 1}, {name: west, priority: 2}]
services:
  - {name: web, kind: http, endpoints: {east: "http://127.0.0.1:1", west: "http://127.0.0.1:2"}}
`)
	ctx := t.Context()
	p, err := Open(ctx, cfg, Options{Node: "n1", DataDir: t.TempDir(), EtcdLogLevel: "fatal"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p.Close(cctx)
	}()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := p.AwaitEpoch(wctx, 1); err != nil {
		t.Fatalf("own acknowledgement of epoch 1: %v", err)
	}
	// Another node, alive, still at epoch 1.
	lease, err := p.cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.cli.Put(ctx, p.store.key("acks/n2"), "1", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	f := waitLeading(t, p.elector, 10*time.Second)
	st, err := p.store.SwitchActive(ctx, f, "west")
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = p.AwaitEpoch(sctx, st.Epoch)
	scancel()
	if err == nil || !strings.Contains(err.Error(), "epoch 2 not acknowledged by n2 at 1") || strings.Contains(err.Error(), "n1") {
		t.Errorf("with n2 behind: %v", err)
	}
	// n2's lease ends (it died or lost the store): it no longer counts.
	if _, err := p.cli.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	wctx2, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel2()
	if err := p.AwaitEpoch(wctx2, st.Epoch); err != nil {
		t.Errorf("after n2's lease ended: %v", err)
	}
	t.Logf("acknowledged %s after the revoke", time.Since(start).Round(time.Millisecond))
}
