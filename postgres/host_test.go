package postgres

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

// viaShell is a Command template that runs the command line on this
// machine, as the servers' account when the tests run as root.
func viaShell(n *testenv.PGNode) string {
	if os.Geteuid() == 0 {
		return "runuser -u " + n.OSUser() + " -- sh -c {cmd}"
	}
	return "sh -c {cmd}"
}

func TestHostStopStart(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	ctx := within(t, 2*time.Minute)
	local := hostOf(pg.Standby)
	remote := Host{DataDir: pg.Standby.DataDir, BinDir: pg.Standby.Bin(), Command: viaShell(pg.Standby)}
	for _, h := range []Host{local, remote} {
		if running, err := h.Running(ctx); err != nil || !running {
			t.Fatalf("%s: running %v, %v; want true", h.where(), running, err)
		}
		for i := range 2 {
			if err := h.Stop(ctx, "fast"); err != nil {
				t.Fatalf("%s: stop %d: %v", h.where(), i, err)
			}
		}
		if running, err := h.Running(ctx); err != nil || running {
			t.Fatalf("%s: after stop: running %v, %v; want false", h.where(), running, err)
		}
		for i := range 2 {
			if err := h.Start(ctx); err != nil {
				t.Fatalf("%s: start %d: %v", h.where(), i, err)
			}
		}
		if running, err := h.Running(ctx); err != nil || !running {
			t.Fatalf("%s: after start: running %v, %v; want true", h.where(), running, err)
		}
		pg.WaitStreaming(t)
	}

	bad := []struct {
		h    Host
		want string
	}{
		{Host{}, "DataDir is empty"},
		{Host{DataDir: "relative/dir"}, "not an absolute path"},
		{Host{DataDir: "/x", Command: "ssh somewhere"}, "has no {cmd}"},
		{Host{DataDir: "/nonexistent/lifeboat", OSUser: pg.Standby.OSUser(), BinDir: pg.Standby.Bin()}, "does not exist"},
	}
	for _, c := range bad {
		if _, err := c.h.Running(ctx); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("running %+v: %v; want an error saying %q", c.h, err, c.want)
		}
	}
	if err := local.Stop(ctx, "gently"); err == nil || !strings.Contains(err.Error(), "not smart, fast or immediate") {
		t.Errorf("stop -m gently: %v", err)
	}
}

func TestHostStartFailureShowsTheLog(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PGOptions{})
	ctx := within(t, time.Minute)
	h := hostOf(pg.Standby)
	if err := h.Stop(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	// The primary holds the standby's port now: the start must fail.
	f, err := os.OpenFile(pg.Standby.DataDir+"/postgresql.conf", os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("port = " + strconv.Itoa(pg.Primary.Port) + "\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	err = h.Start(ctx)
	t.Logf("start: %v", err)
	if err == nil || !strings.Contains(err.Error(), "last lines of "+h.LogFile()) || !strings.Contains(err.Error(), "could not") {
		t.Fatalf("start on a taken port: %v; want the failure with the log's last lines", err)
	}
}

func TestHostPasswordNeverShows(t *testing.T) {
	t.Parallel()
	const secret = "pw-that-must-not-show"
	ctx := within(t, 30*time.Second)
	script := `echo "got: $PGPASSWORD; args: $*"; exit 3`
	for _, h := range []Host{
		{DataDir: "/tmp/lifeboat-none"},
		{DataDir: "/tmp/lifeboat-none", Command: "sh -c {cmd}"},
	} {
		out, err := h.run(ctx, hostCmd{argv: []string{"sh", "-c", script, "sh", "an-arg"}, password: secret})
		t.Logf("%s: %v", h.where(), err)
		if err == nil || !strings.Contains(err.Error(), "exit status 3") {
			t.Fatalf("%s: %v; want exit status 3", h.where(), err)
		}
		if code, ok := exitCode(err); !ok || code != 3 {
			t.Fatalf("%s: exit code %d %v, want 3", h.where(), code, ok)
		}
		// The program had the password, and what it printed is scrubbed.
		if !strings.Contains(out, "got: xxxxx; args: an-arg") || strings.Contains(out+err.Error(), secret) {
			t.Fatalf("%s: output %q, error %v: want the password received and scrubbed", h.where(), out, err)
		}
	}
	// A template that does not forward standard input says so.
	h := Host{DataDir: "/tmp/lifeboat-none", Command: "sh -c {cmd} </dev/null"}
	_, err := h.run(ctx, hostCmd{argv: []string{"true"}, password: secret})
	if err == nil || !strings.Contains(err.Error(), "no password on standard input") {
		t.Fatalf("stdin not forwarded: %v", err)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"":                       "''",
		"/usr/lib/pg/bin/pg_ctl": "/usr/lib/pg/bin/pg_ctl",
		"it's":                   `'it'\''s'`,
		"a b":                    "'a b'",
		"$HOME":                  "'$HOME'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
