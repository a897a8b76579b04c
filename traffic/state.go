// Package traffic decides where traffic goes: given the services' health,
// the policy and the control plane's routing state (active region, epoch,
// hold), which endpoints serve a request. The DNS server, the HTTP proxy and
// the Postgres endpoint (subpackages) share one Router.
package traffic

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// State is the control plane's routing state.
type State struct {
	// Active is the region that takes writes.
	Active string `json:"active"`
	// Epoch is the fencing token: it grows with every change of Active.
	Epoch uint64 `json:"epoch"`
	// Held is set while a switchover holds new requests.
	Held bool `json:"held"`
	// NoQuorum is set by a node that cannot confirm the state with a
	// quorum of the control plane: it keeps routing reads from the last
	// known state but refuses writes (it cannot know the current epoch).
	// Never stored.
	NoQuorum bool `json:"no_quorum,omitempty"`
}

// StateSource is where the routing state comes from: in memory today, the
// etcd state store once the control plane runs.
type StateSource interface {
	// Current returns the state now, without I/O.
	Current() State
	// Subscribe returns a channel that receives a value after every change
	// (coalesced: a slow reader sees the latest state on its next Current)
	// and a function that ends the subscription.
	Subscribe() (<-chan struct{}, func())
	// WaitReleased returns at once when no hold is in force, else when the
	// hold is released or ctx ends.
	WaitReleased(ctx context.Context) error
}

// MemState is an in-memory StateSource that the control plane (or a test)
// drives with Set, Hold and Release.
type MemState struct {
	mu       sync.Mutex
	st       State
	cur      atomic.Pointer[State] // st, for lock-free reads
	subs     map[int]chan struct{}
	next     int
	released chan struct{} // closed when not held
}

var _ StateSource = (*MemState)(nil)

// NewMemState starts with the given active region and epoch, not held.
func NewMemState(active string, epoch uint64) *MemState {
	r := make(chan struct{})
	close(r)
	m := &MemState{st: State{Active: active, Epoch: epoch}, subs: map[int]chan struct{}{}, released: r}
	m.publishLocked()
	return m
}

// publishLocked makes st visible to Current.
func (m *MemState) publishLocked() {
	st := m.st
	m.cur.Store(&st)
}

// Current returns the state.
func (m *MemState) Current() State { return *m.cur.Load() }

// Subscribe registers for change notifications.
func (m *MemState) Subscribe() (<-chan struct{}, func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := m.next
	m.next++
	ch := make(chan struct{}, 1)
	m.subs[id] = ch
	return ch, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		delete(m.subs, id)
	}
}

func (m *MemState) notifyLocked() {
	m.publishLocked()
	for _, ch := range m.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Switch makes region active with a new epoch, which must be larger than
// the current one: epochs never go back.
func (m *MemState) Switch(active string, epoch uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if epoch <= m.st.Epoch {
		return fmt.Errorf("traffic: epoch %d is not above the current epoch %d", epoch, m.st.Epoch)
	}
	m.st.Active, m.st.Epoch = active, epoch
	m.notifyLocked()
	return nil
}

// Set replaces the whole state, as a cache of the control plane's store
// does. An epoch below the current one is refused: epochs never go back.
func (m *MemState) Set(st State) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if st.Epoch < m.st.Epoch {
		return fmt.Errorf("traffic: epoch %d is below the current epoch %d", st.Epoch, m.st.Epoch)
	}
	if st == m.st {
		return nil
	}
	if st.Held && !m.st.Held {
		m.released = make(chan struct{})
	}
	if !st.Held && m.st.Held {
		close(m.released)
	}
	m.st = st
	m.notifyLocked()
	return nil
}

// Hold makes new requests wait (see WaitReleased) until Release.
func (m *MemState) Hold() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.st.Held {
		return
	}
	m.st.Held = true
	m.released = make(chan struct{})
	m.notifyLocked()
}

// Release lets held requests go, to the state as it is now.
func (m *MemState) Release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.st.Held {
		return
	}
	m.st.Held = false
	close(m.released)
	m.notifyLocked()
}

// WaitReleased waits while a hold is in force.
func (m *MemState) WaitReleased(ctx context.Context) error {
	m.mu.Lock()
	ch := m.released
	m.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WaitHold waits for a hold's release, at most max; it reports whether the
// request waited and whether the hold was still in force at the deadline
// (then the request goes on with the state as it is).
func WaitHold(ctx context.Context, s StateSource, max time.Duration) (waited bool, timedOut bool, err error) {
	if !s.Current().Held {
		return false, false, nil
	}
	wctx, cancel := context.WithTimeout(ctx, max)
	defer cancel()
	err = s.WaitReleased(wctx)
	if err != nil && ctx.Err() == nil {
		return true, true, nil
	}
	return true, false, err
}
