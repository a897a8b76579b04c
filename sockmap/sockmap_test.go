package sockmap

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// A relay joins each accepted connection to an echo server in the
// kernel: every message of every size comes back intact, none of it
// passes through the relay's own reads, and when the client leaves the
// relay sees both ends close.
func TestJoinCarriesBytesInTheKernel(t *testing.T) {
	s := open(t)
	defer s.Close(context.Background())

	echo := listen(t)
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	front := listen(t)
	var inUserSpace atomic.Int64
	ended := make(chan struct{})
	go func() {
		a, err := front.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", echo.Addr().String())
		if err != nil {
			a.Close()
			return
		}
		leave, err := s.Join(a, b)
		if err != nil {
			t.Errorf("join: %v", err)
			a.Close()
			b.Close()
			return
		}
		defer leave()
		done := make(chan struct{}, 2)
		copyPlain := func(dst, src net.Conn) {
			n, _ := io.Copy(struct{ io.Writer }{dst}, struct{ io.Reader }{src})
			inUserSpace.Add(n)
			dst.Close()
			src.Close()
			done <- struct{}{}
		}
		go copyPlain(b, a)
		go copyPlain(a, b)
		<-done
		<-done
		close(ended)
	}()

	c, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // joined before the first byte
	got := make([]byte, 1<<20)
	for i, size := range []int{1, 7, 100, 1500, 4096, 65536, 1 << 20, 3} {
		msg := bytes.Repeat([]byte{byte('a' + i)}, size)
		go c.Write(msg)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, got[:size]); err != nil {
			t.Fatalf("message %d (%d bytes): %v", i, size, err)
		}
		if !bytes.Equal(got[:size], msg) {
			t.Fatalf("message %d (%d bytes) came back altered", i, size)
		}
	}
	if n := inUserSpace.Load(); n != 0 {
		t.Errorf("%d bytes passed through the relay's reads; the kernel should carry them all", n)
	}
	c.Close()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not see the client leave")
	}
	// The pair left the map with its sockets: a new pair joins.
	a, b := pair(t, front, echo)
	if _, err := s.Join(a, b); err != nil {
		t.Errorf("join after the first pair left: %v", err)
	}
}

// Join refuses what is not a socket, and a closed splicer.
func TestJoinRefuses(t *testing.T) {
	s := open(t)
	x, y := net.Pipe()
	defer x.Close()
	defer y.Close()
	if _, err := s.Join(x, y); err == nil {
		t.Error("joined a pipe")
	}
	l := listen(t)
	a, b := pair(t, l, l)
	s.Close(context.Background())
	if _, err := s.Join(a, b); err == nil {
		t.Error("joined after Close")
	}
}

// open loads the splicer; the test fails without root.
func open(t *testing.T) *Splicer {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("loading a BPF program needs root (CI runs as root)")
	}
	s, err := Open()
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// pair dials two TCP connections (to l1 and l2) for Join.
func pair(t *testing.T, l1, l2 net.Listener) (net.Conn, net.Conn) {
	t.Helper()
	a, err := net.Dial("tcp", l1.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := net.Dial("tcp", l2.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}
