// Package sockmap joins pairs of TCP connections inside the Linux kernel.
// A BPF sockhash holds the sockets of every joined pair, keyed by the
// socket cookie of the other one, and a verdict program attached to it
// redirects each segment a socket receives to the send side of its peer
// (bpf_sk_redirect_hash): the bytes of a relayed connection no longer
// cross into the relaying process, which saves two system calls and a
// wake-up per message and direction.
//
// Opening needs CAP_BPF and CAP_NET_ADMIN (root) and a kernel with
// sockhash and socket cookies (Linux 5.13 or later for the verdict
// attach type used here); callers fall back to copying in user space
// when Open fails.
package sockmap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// MaxSockets bounds how many sockets (two per joined pair) the map holds;
// a Join beyond it fails and the caller relays that pair itself.
const MaxSockets = 1 << 16

// Splicer joins connection pairs in the kernel.
type Splicer struct {
	mu     sync.Mutex
	m      *ebpf.Map
	prog   *ebpf.Program
	closed bool
}

// Open loads the map and the verdict program and attaches them.
func Open() (*Splicer, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "lifeboat_pairs", Type: ebpf.SockHash, KeySize: 8, ValueSize: 8, MaxEntries: MaxSockets})
	if err != nil {
		return nil, fmt.Errorf("sockmap: create the sockhash: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "lifeboat_splice", Type: ebpf.SkSKB, AttachType: ebpf.AttachSkSKBVerdict,
		Instructions: verdict(m.FD()), License: "Dual MIT/GPL",
	})
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("sockmap: load the verdict program: %w", err)
	}
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{Target: m.FD(), Program: prog, Attach: ebpf.AttachSkSKBVerdict}); err != nil {
		prog.Close()
		m.Close()
		return nil, fmt.Errorf("sockmap: attach the verdict program: %w", err)
	}
	return &Splicer{m: m, prog: prog}, nil
}

// verdict is the program, for each segment a socket of the map receives:
//
//	key = bpf_get_socket_cookie(skb)
//	if bpf_sk_redirect_hash(skb, map, &key, 0) == SK_PASS: return SK_PASS (redirected)
//	return SK_PASS (not redirected: the socket keeps it for its reader)
//
// A segment whose peer has left the map (it is being closed) stays with
// the socket that received it, where a reader in user space finds it.
func verdict(mapFD int) asm.Instructions {
	const skPass = 1
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1), // skb
		asm.FnGetSocketCookie.Call(),
		asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, mapFD),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 0), // egress of the peer
		asm.FnSkRedirectHash.Call(),
		asm.Mov.Imm(asm.R0, skPass),
		asm.Return(),
	}
}

// Join makes the kernel carry what a receives to b and what b receives
// to a, until either is closed (a closed socket leaves the map by
// itself) or leave is called. Both must be TCP connections. Join them
// while nothing is waiting unread in either: bytes received before
// reach the peer only through the caller's own relay, and could pass
// bytes the kernel carries meanwhile. The caller keeps reading both
// connections (with read, not splice(2)): that is how it sees either
// end close, and how a segment the kernel could not redirect still
// arrives.
func (s *Splicer) Join(a, b net.Conn) (leave func(), err error) {
	ca, fa, err := cookieAndFD(a)
	if err != nil {
		return nil, err
	}
	cb, fb, err := cookieAndFD(b)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("sockmap: closed")
	}
	// The fds are read inside Control so that they are valid here; the
	// map takes its own reference to each socket.
	if err := s.m.Update(ca, uint64(fb), ebpf.UpdateNoExist); err != nil {
		return nil, fmt.Errorf("sockmap: add a socket: %w", err)
	}
	if err := s.m.Update(cb, uint64(fa), ebpf.UpdateNoExist); err != nil {
		s.m.Delete(ca)
		return nil, fmt.Errorf("sockmap: add a socket: %w", err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if !s.closed {
				s.m.Delete(ca)
				s.m.Delete(cb)
			}
		})
	}, nil
}

// cookieAndFD reads c's socket cookie and its descriptor. The descriptor
// stays valid while c is open: Join runs before the caller may close it.
func cookieAndFD(c net.Conn) (uint64, int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, 0, fmt.Errorf("sockmap: %T is not a socket", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var cookie uint64
	var fd int
	var serr error
	if err := rc.Control(func(f uintptr) {
		fd = int(f)
		cookie, serr = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	}); err != nil {
		return 0, 0, err
	}
	if serr != nil {
		return 0, 0, fmt.Errorf("sockmap: SO_COOKIE: %w", serr)
	}
	return cookie, fd, nil
}

// Close detaches the program and frees the map; the pairs still joined
// are left to their callers' relays.
func (s *Splicer) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := link.RawDetachProgram(link.RawDetachProgramOptions{Target: s.m.FD(), Program: s.prog, Attach: ebpf.AttachSkSKBVerdict})
	return errors.Join(err, s.prog.Close(), s.m.Close())
}
