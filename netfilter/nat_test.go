package netfilter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
)

// server answers each line with its name and the line, until closed.
func server(t *testing.T, name string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "%s:%s\n", name, sc.Text())
				}
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// ask sends a line on c and returns the answer's name ("" and the error
// when the connection fails).
func ask(c net.Conn) (string, error) {
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintln(c, "x"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	name, _, _ := strings.Cut(line, ":")
	return name, nil
}

func dial(t *testing.T, a netip.AddrPort) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", a.String(), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func open(t *testing.T) *NAT {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("nftables needs root (CI runs as root)")
	}
	n, err := Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(context.Background()) })
	return n
}

func want(t *testing.T, what string, c net.Conn, name string) {
	t.Helper()
	got, err := ask(c)
	if name == "" {
		if err == nil {
			t.Errorf("%s: answered by %s, want the connection reset", what, got)
		} else if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s: %v, want a reset", what, err)
		}
		return
	}
	if err != nil || got != name {
		t.Errorf("%s: answered by %q (%v), want %s", what, got, err, name)
	}
}

// The kernel sends new connections to the route's target and resets those
// the route no longer keeps: a new epoch, a hold (new connections reach
// the listener, the current epoch's are kept), a loss of quorum (all
// reset), a target it cannot reach (the listener).
func TestRoutes(t *testing.T) {
	a, b, listener := server(t, "A"), server(t, "B"), server(t, "L")
	n := open(t)
	if err := n.Set(listener, Route{Target: a, Admit: true, Epoch: 1, Keep: true}); err != nil {
		t.Fatal(err)
	}
	toA := dial(t, listener)
	want(t, "epoch 1", toA, "A")

	if err := n.Set(listener, Route{Target: b, Admit: true, Epoch: 2, Keep: true}); err != nil {
		t.Fatal(err)
	}
	want(t, "epoch 1's connection after epoch 2", toA, "")
	toB := dial(t, listener)
	want(t, "epoch 2", toB, "B")

	if err := n.Set(listener, Route{Target: b, Epoch: 2, Keep: true}); err != nil {
		t.Fatal(err)
	}
	want(t, "held: a new connection", dial(t, listener), "L")
	want(t, "held: epoch 2's connection", toB, "B")

	if err := n.Set(listener, Route{Target: b, Epoch: 2}); err != nil {
		t.Fatal(err)
	}
	want(t, "no quorum: epoch 2's connection", toB, "")
	want(t, "no quorum: a new connection", dial(t, listener), "L")

	err := n.Set(listener, Route{Target: netip.MustParseAddrPort("192.0.2.1:5432"), Admit: true, Epoch: 3, Keep: true})
	if !errors.Is(err, ErrUnsupported) {
		t.Errorf("a loopback endpoint to a remote target: %v, want ErrUnsupported", err)
	}
	want(t, "unsupported target: a new connection", dial(t, listener), "L")
	if err := n.Set(netip.MustParseAddrPort("0.0.0.0:5432"), Route{Target: a, Admit: true}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("a wildcard endpoint: %v, want ErrUnsupported", err)
	}

	// Back to a route, then deleted: its connections are reset.
	n.Set(listener, Route{Target: a, Admit: true, Epoch: 4, Keep: true})
	again := dial(t, listener)
	want(t, "epoch 4", again, "A")
	if err := n.Delete(listener); err != nil {
		t.Fatal(err)
	}
	want(t, "deleted: epoch 4's connection", again, "")
	want(t, "deleted: a new connection", dial(t, listener), "L")

	name := n.Table()
	if err := n.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if tableExists(t, name) {
		t.Errorf("table %s left after Close", name)
	}
}

func tableExists(t *testing.T, name string) bool {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == name {
			return true
		}
	}
	return false
}

// A process that dies stops renewing its lease: within Lease its endpoint
// stops translating new connections and resets those it translated; the
// next process removes the table.
func TestLeaseOfADeadProcess(t *testing.T) {
	if os.Getenv("LIFEBOAT_NAT_CHILD") != "" {
		return // the child's part runs in TestMain
	}
	a, listener := server(t, "A"), server(t, "L")
	if os.Geteuid() != 0 {
		t.Fatal("nftables needs root (CI runs as root)")
	}
	table, kill := child(t, listener, a)
	old := dial(t, listener)
	want(t, "the child's route", old, "A")
	kill()
	killed := time.Now()
	want(t, "just after the child died", dial(t, listener), "A")
	time.Sleep(Lease + 500*time.Millisecond - time.Since(killed))
	want(t, "after the lease: a new connection", dial(t, listener), "L")
	want(t, "after the lease: the child's connection", old, "")
	if !tableExists(t, table) {
		t.Fatalf("the dead child's table %s is gone before another process routes its endpoint", table)
	}
	// The next process to route the endpoint adopts it: the table goes
	// (this process's rules now reset connections of another epoch).
	next := open(t)
	if err := next.Set(listener, Route{Target: a, Admit: true, Epoch: 2, Keep: true}); err != nil {
		t.Fatal(err)
	}
	if tableExists(t, table) {
		t.Errorf("the dead child's table %s was not removed by the process that routes its endpoint", table)
	}
	want(t, "adopted: a new connection", dial(t, listener), "A")
}

// child starts a process (this test binary) that routes listen (and
// more) to target and waits; kill kills it and waits for its end.
func child(t *testing.T, listen, target netip.AddrPort, more ...netip.AddrPort) (table string, kill func()) {
	t.Helper()
	spec := listen.String()
	for _, m := range more {
		spec += "," + m.String()
	}
	c := exec.Command(os.Args[0], "-test.run=^$")
	c.Env = append(os.Environ(), "LIFEBOAT_NAT_CHILD="+spec+">"+target.String())
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlives the test
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.Stderr = os.Stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	kill = func() {
		c.Process.Kill()
		c.Wait()
	}
	t.Cleanup(func() {
		kill()
		RemoveOrphans(func(l netip.AddrPort) bool { return l == listen || slices.Contains(more, l) })
	})
	table, err = bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("the child did not install its route: %v", err)
	}
	return strings.TrimSpace(table), kill
}

// A dead process's table that nobody adopts (the next process routes
// only some of its endpoints) resets only the connections it translated,
// never those of the process that routes the endpoint after it, in the
// same epoch or not.
func TestDeadTableLeavesOthersAlone(t *testing.T) {
	a, b, l1, l2 := server(t, "A"), server(t, "B"), server(t, "L1"), server(t, "L2")
	if os.Geteuid() != 0 {
		t.Fatal("nftables needs root (CI runs as root)")
	}
	table, kill := child(t, l1, a, l2)
	old := dial(t, l1)
	want(t, "the child's route", old, "A")
	kill()
	time.Sleep(Lease + 500*time.Millisecond)
	n := open(t)
	if err := n.Set(l1, Route{Target: b, Admit: true, Epoch: 1, Keep: true}); err != nil {
		t.Fatal(err)
	}
	if !tableExists(t, table) {
		t.Fatalf("the child's table %s was adopted though its endpoint %s is not routed", table, l2)
	}
	c := dial(t, l1)
	want(t, "the next process's connection", c, "B")
	want(t, "the next process's connection, again", c, "B")
	want(t, "the child's connection", old, "")
}

// RemoveOrphans deletes the tables of exited processes (zombies
// included) whose endpoints are all gone, and only those; it counts those
// whose process still lives.
func TestRemoveOrphans(t *testing.T) {
	a, l1, l2 := server(t, "A"), server(t, "L1"), server(t, "L2")
	if os.Geteuid() != 0 {
		t.Fatal("nftables needs root (CI runs as root)")
	}
	t1, _ := child(t, l1, a)
	t2, kill2 := child(t, l2, a)
	t3, _ := child(t, l1, a) // alive
	// t1's process killed and not reaped yet: a zombie.
	var pid int
	var rest string
	if _, err := fmt.Sscanf(strings.ReplaceAll(t1, "_", " "), "lifeboat %d %s", &pid, &rest); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	for deadline := time.Now().Add(5 * time.Second); !exited(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the killed child %d does not show as exited", pid)
		}
	}
	kill2()
	living, err := RemoveOrphans(func(l netip.AddrPort) bool { return l == l1 })
	if err != nil {
		t.Fatal(err)
	}
	if living != 1 {
		t.Errorf("RemoveOrphans counted %d living processes with endpoints gone, want 1 (%s)", living, t3)
	}
	if tableExists(t, t1) {
		t.Errorf("%s (a zombie, its endpoint gone) was not removed", t1)
	}
	if !tableExists(t, t2) {
		t.Errorf("%s (exited, its endpoint not gone) was removed", t2)
	}
	if !tableExists(t, t3) {
		t.Errorf("%s (alive) was removed", t3)
	}
	RemoveOrphans(func(l netip.AddrPort) bool { return l == l2 })
	if tableExists(t, t2) {
		t.Errorf("%s was not removed once its endpoint was gone", t2)
	}
}

func TestMain(m *testing.M) {
	if spec := os.Getenv("LIFEBOAT_NAT_CHILD"); spec != "" {
		listens, target, _ := strings.Cut(spec, ">")
		n, err := Open(nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for _, l := range strings.Split(listens, ",") {
			if err := n.Set(netip.MustParseAddrPort(l), Route{Target: netip.MustParseAddrPort(target), Admit: true, Epoch: 1, Keep: true}); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
		fmt.Println(n.Table())
		select {}
	}
	os.Exit(m.Run())
}
