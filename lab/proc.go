package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// command builds argv to run in region r's namespace, as user when set.
func (l *Lab) command(r Region, asUser string, argv ...string) *exec.Cmd {
	var args []string
	if r.NS != "" {
		args = append(args, "ip", "netns", "exec", r.NS)
	}
	if asUser != "" && os.Geteuid() == 0 {
		// As root, servers run as their account; otherwise everything
		// runs as the lab's own user.
		args = append(args, "runuser", "-u", asUser, "--")
	}
	args = append(args, argv...)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "LAB_PASSWORD="+l.Password, "PGPASSWORD="+l.Password)
	return cmd
}

// runIn runs argv in region r to its end.
func (l *Lab) runIn(ctx context.Context, r Region, asUser string, argv ...string) error {
	cmd := l.command(r, asUser, argv...)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("%s in %s: %v: %s", filepath.Base(argv[0]), r.Name, err, strings.TrimSpace(out.String()))
		}
		return nil
	case <-ctx.Done():
		cmd.Process.Kill()
		return fmt.Errorf("%s in %s: %w", filepath.Base(argv[0]), r.Name, ctx.Err())
	}
}

// daemon starts argv in region r in a session of its own, logging to
// Dir/logs/<region>-<name>.log, and records its pid.
func (l *Lab) daemon(r Region, name, asUser string, argv ...string) error {
	logs := filepath.Join(l.Dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(logs, r.Name+"-"+name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := l.command(r, asUser, argv...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("lab: start %s in %s: %w", name, r.Name, err)
	}
	l.Pids[r.Name+"/"+name] = cmd.Process.Pid
	go cmd.Wait() // reaped while this process lives; adopted by init after
	return l.save()
}

// restart starts a killed daemon (recorded under key) with start and waits
// with wait, which gives up with errServerExited once alive says the
// process has exited; such a start is tried again, up to three times in
// all: under load, what the killed process held may take a moment to go.
func (l *Lab) restart(key string, start func() error, wait func(alive func() bool) error) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = start(); err != nil {
			return err
		}
		pid := l.Pids[key]
		if err = wait(func() bool { return syscall.Kill(pid, 0) == nil }); !errors.Is(err, errServerExited) {
			return err
		}
		time.Sleep(time.Second)
	}
	return err
}

// killRegion kills every process in the region's namespace (what the lab
// started and what runbooks started there since), at once: a region
// outage.
func (l *Lab) killRegion(ctx context.Context, r Region) {
	for key, pid := range l.Pids {
		if strings.HasPrefix(key, r.Name+"/") {
			syscall.Kill(-pid, syscall.SIGKILL)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if r.NS == "" {
		// No namespace to empty: what runbooks started in the region
		// (a PostgreSQL server restarted by a reprotect, say) is found by
		// its command line, which names the region's directory.
		for _, pid := range pidsMentioning(l.regionDir(r) + "/") {
			syscall.Kill(-pid, syscall.SIGKILL)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		return
	}
	// A process forked between the listing and its parent's death (a
	// backend for a connection arriving then) is not in the listing: list
	// again until the namespace is empty (bounded).
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		out, _ := exec.CommandContext(ctx, "ip", "netns", "pids", r.NS).Output()
		pids := strings.Fields(string(out))
		if len(pids) == 0 || time.Now().After(deadline) {
			return
		}
		for _, f := range pids {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// pidsMentioning lists the processes (of any session) whose command line
// contains s.
func pidsMentioning(s string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(strings.ReplaceAll(string(cmdline), "\x00", " ")+" ", s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killProcess kills one recorded process and its group.
func (l *Lab) killProcess(r Region, name string) {
	if pid, ok := l.Pids[r.Name+"/"+name]; ok {
		syscall.Kill(-pid, syscall.SIGKILL)
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// chown gives path to the servers' account.
func (l *Lab) chown(paths ...string) error {
	for _, p := range paths {
		if err := os.Chown(p, l.pgUID, l.pgGID); err != nil {
			return err
		}
	}
	return nil
}
