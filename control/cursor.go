package control

import (
	"context"
	"fmt"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Cursor is a reader's position in the event stream, kept in etcd under
// /lifeboat/<cluster>/cursors/<name> so that whichever node leads next
// continues from it. The value is the sequence number in 20 digits, so
// that etcd compares values in numeric order.
type Cursor struct {
	s   *Store
	key string
}

// Cursor is the position named name (one per reader: "notify", ...).
func (s *Store) Cursor(name string) *Cursor {
	return &Cursor{s: s, key: s.key("cursors/" + name)}
}

// Load returns the saved sequence number, and false when none was ever
// saved.
func (c *Cursor) Load(ctx context.Context) (uint64, bool, error) {
	resp, err := c.s.cli.Get(ctx, c.key)
	if err != nil {
		return 0, false, fmt.Errorf("control: read cursor %s: %w", c.key, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, false, nil
	}
	seq, err := strconv.ParseUint(string(resp.Kvs[0].Value), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("control: cursor %s is corrupt: %q is not a sequence number", c.key, resp.Kvs[0].Value)
	}
	return seq, true, nil
}

// Save moves the cursor to seq, in one transaction that never moves it
// backwards: a save older than the one in place (an old leader's, late)
// changes nothing. Idempotent.
func (c *Cursor) Save(ctx context.Context, seq uint64) error {
	v := fmt.Sprintf("%020d", seq)
	put := clientv3.OpPut(c.key, v)
	_, err := c.s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(c.key), "<", v)).
		Then(put).
		// A value comparison fails on a missing key: create it then.
		Else(clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(c.key), "=", 0)}, []clientv3.Op{put}, nil)).
		Commit()
	if err != nil {
		return fmt.Errorf("control: save cursor %s at %d: %w", c.key, seq, err)
	}
	return nil
}
