// Package testenv starts real servers for integration tests: a PostgreSQL 15
// primary with a streaming standby, a Redis primary with a replica. Each runs
// on free loopback ports in its own temporary directory and is stopped and
// removed when the test ends, whether it passed or not.
//
// A missing server binary fails the test with the command that installs it;
// these tests never skip.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// runAs is the OS account servers run under: the current one, or an
// unprivileged one when the tests run as root (PostgreSQL refuses root).
type runAs struct {
	uid, gid uint32
	name     string
	home     string
	root     bool
}

func serverAccount(t testing.TB) runAs {
	t.Helper()
	if os.Geteuid() != 0 {
		u, _ := user.Current()
		name := ""
		if u != nil {
			name = u.Username
		}
		return runAs{name: name}
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		return runAs{uid: uint32(uid), gid: uint32(gid), name: name, home: u.HomeDir, root: true}
	}
	t.Fatal("testenv: running as root and no unprivileged account (postgres or nobody) to run servers as")
	return runAs{}
}

// command builds a command that runs as the account.
func (a runAs) command(ctx context.Context, env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if a.root {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: a.uid, Gid: a.gid}
		cmd.Env = append(cmd.Env, "HOME=/tmp")
	}
	return cmd
}

// tempDir makes a directory the account owns; t.TempDir is root-only when
// the tests run as root. It is removed when the test ends.
func (a runAs) tempDir(t testing.TB, pattern string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if a.root {
		if err := os.Chown(dir, int(a.uid), int(a.gid)); err != nil {
			t.Fatalf("testenv: chown %s: %v", dir, err)
		}
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// run runs a command to completion and fails the test with its output if it
// fails.
func (a runAs) run(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := a.command(ctx, env, name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("testenv: %s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// lookBinary finds a server program, or fails the test saying how to install
// it. dirs are searched before PATH.
func lookBinary(t testing.TB, name, install string, dirs ...string) string {
	t.Helper()
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("testenv: %s not found: this test needs a real server (%s)", name, install)
	return ""
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("testenv: %s: not ready after %s: %v", what, timeout, err)
}

// tail returns the last n bytes of a file, for failure logs.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	off := st.Size() - n
	if off < 0 {
		off = 0
	}
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return string(buf)
}
