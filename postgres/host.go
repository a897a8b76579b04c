package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultBinDir is where Debian and Ubuntu install the PostgreSQL 15
// programs; Host.BinDir defaults to it.
const DefaultBinDir = "/usr/lib/postgresql/15/bin"

// Host says how Lifeboat reaches the machine of a PostgreSQL server to stop
// and start it, rewind it and copy it again from another server.
//
// In the local form (Command empty) the programs run on this machine, as
// OSUser. In the remote form, Command is a template run with sh -c in which
// every {cmd} is replaced by the whole command line as one shell-quoted
// word, for example
//
//	ssh -o BatchMode=yes pg-east {cmd}
//	kubectl exec -i -n db pg-east-0 -- sh -c {cmd}
//
// The command line is for a POSIX shell on the far side. When a program
// needs a password (pg_rewind, pg_basebackup) the command line reads it
// from its standard input first, so the template must forward standard
// input (ssh does; kubectl exec needs -i); the password is never part of a
// command line. The template itself (its host, account, context) is shown
// in errors: keep secrets out of it (use ssh's or kubectl's configuration).
//
// Errors and output never contain the passwords Lifeboat passes; they name
// the host by its DataDir (and Command).
type Host struct {
	// DataDir is the server's data directory, initdb's layout
	// (postgresql.conf inside). Required; absolute in the local form.
	DataDir string
	// OSUser is the account the programs run as in the local form, the
	// owner of DataDir. When Lifeboat runs as root, programs run with that
	// account's uid and gid; otherwise it must be empty or the current
	// user. Ignored in the remote form: the template chooses the account.
	OSUser string
	// BinDir holds pg_ctl, pg_controldata, pg_rewind, pg_basebackup and
	// postgres, on the server's machine. Default DefaultBinDir.
	BinDir string
	// Command is the remote form's template; see Host.
	Command string
}

// Running reports whether a server runs on DataDir (pg_ctl status). A
// missing or unreadable DataDir is an error.
func (h Host) Running(ctx context.Context) (bool, error) {
	if err := h.check(); err != nil {
		return false, err
	}
	_, err := h.run(ctx, hostCmd{argv: []string{h.bin("pg_ctl"), "status", "-D", h.DataDir}})
	switch code, exited := exitCode(err); {
	case err == nil:
		return true, nil
	case exited && code == 3: // "no server running"
		return false, nil
	default:
		return false, err
	}
}

// Stop stops the server with pg_ctl stop -m mode -w: mode is smart, fast
// (the default when empty) or immediate. A server that is not running is
// not an error. The wait is bounded by ctx (60s without a deadline).
func (h Host) Stop(ctx context.Context, mode string) error {
	if mode == "" {
		mode = "fast"
	}
	if mode != "smart" && mode != "fast" && mode != "immediate" {
		return fmt.Errorf("%s: stop: mode %q is not smart, fast or immediate", h.where(), mode)
	}
	running, err := h.Running(ctx)
	if err != nil || !running {
		return err
	}
	_, err = h.run(ctx, hostCmd{argv: []string{h.bin("pg_ctl"), "stop", "-D", h.DataDir, "-m", mode, "-w", "-t", strconv.Itoa(waitSeconds(ctx))}})
	if err != nil {
		if running, rerr := h.Running(ctx); rerr == nil && !running {
			return nil // it stopped anyway (another stop, a crash)
		}
		return err
	}
	return nil
}

// Start starts the server with pg_ctl start -w, its log appended to
// DataDir+".log", and waits until it accepts connections (a standby: until
// it reaches a consistent state), bounded by ctx (60s without a deadline).
// A server already running is not an error. When it fails, the error ends
// with the last lines of the log.
func (h Host) Start(ctx context.Context) error {
	running, err := h.Running(ctx)
	if err != nil || running {
		return err
	}
	logFile := h.LogFile()
	_, err = h.run(ctx, hostCmd{argv: []string{h.bin("pg_ctl"), "start", "-D", h.DataDir, "-l", logFile, "-w", "-t", strconv.Itoa(waitSeconds(ctx))}})
	if err == nil {
		return nil
	}
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if tail, terr := h.run(tctx, hostCmd{argv: []string{"tail", "-n", "15", logFile}}); terr == nil && strings.TrimSpace(tail) != "" {
		return fmt.Errorf("%w\nlast lines of %s:\n%s", err, logFile, strings.TrimRight(tail, "\n"))
	}
	return err
}

// LogFile is where Start sends the server's log: DataDir+".log".
func (h Host) LogFile() string { return h.DataDir + ".log" }

// check reports what makes the Host unusable.
func (h Host) check() error {
	switch {
	case h.DataDir == "":
		return errors.New("postgres host: DataDir is empty")
	case h.Command == "" && !filepath.IsAbs(h.DataDir):
		return fmt.Errorf("postgres host %s: DataDir is not an absolute path", h.DataDir)
	case h.Command != "" && !strings.Contains(h.Command, "{cmd}"):
		return fmt.Errorf("postgres host %s: Command %q has no {cmd} to replace with the command line", h.DataDir, h.Command)
	}
	return nil
}

// where names the host in messages.
func (h Host) where() string {
	if h.Command != "" {
		return fmt.Sprintf("postgres host %s (via %q)", h.DataDir, h.Command)
	}
	return "postgres host " + h.DataDir
}

// bin is the path of a PostgreSQL program on the host.
func (h Host) bin(name string) string {
	dir := h.BinDir
	if dir == "" {
		dir = DefaultBinDir
	}
	return path.Join(dir, name)
}

// waitSeconds is the time left in ctx in whole seconds, less one so that a
// program's own timeout fires before ctx; at least 1, 60 without a deadline.
func waitSeconds(ctx context.Context) int {
	deadline, ok := ctx.Deadline()
	if !ok {
		return 60
	}
	return max(1, int(time.Until(deadline).Seconds())-1)
}

// hostCmd is one program run on a host.
type hostCmd struct {
	argv []string
	// env are extra NAME=value settings; not secret, they may appear in
	// the command line.
	env []string
	// password is given to the program as PGPASSWORD: in the environment
	// in the local form, on standard input in the remote form.
	password string
	// secrets are scrubbed from the output and errors, as is password.
	secrets []string
}

// line is the command line, quoted for a POSIX shell; it holds no password.
func (c hostCmd) line() string {
	words := make([]string, 0, len(c.env)+len(c.argv))
	for _, e := range c.env {
		name, value, _ := strings.Cut(e, "=")
		words = append(words, name+"="+shellQuote(value))
	}
	for _, a := range c.argv {
		words = append(words, shellQuote(a))
	}
	return strings.Join(words, " ")
}

// scrub removes the password and secrets from s.
func (c hostCmd) scrub(s string) string {
	return scrub(s, append([]string{c.password}, c.secrets...)...)
}

// noPasswordOnStdin is the exit status of a remote command line that
// found no password on its standard input.
const noPasswordOnStdin = 97

// run runs c on the host and returns its combined output, scrubbed of the
// password and secrets. A failure is a *hostError.
func (h Host) run(ctx context.Context, c hostCmd) (string, error) {
	if err := h.check(); err != nil {
		return "", err
	}
	var cmd *exec.Cmd
	if h.Command == "" {
		var err error
		if cmd, err = h.localCommand(ctx, c); err != nil {
			return "", err
		}
	} else {
		line := c.line()
		if c.password != "" {
			line = "IFS= read -r PGPASSWORD || { echo 'lifeboat: no password on standard input (the Command template must forward it: kubectl exec needs -i)' >&2; exit " +
				strconv.Itoa(noPasswordOnStdin) + "; }; export PGPASSWORD; " + line
			cmd = exec.CommandContext(ctx, "sh", "-c", strings.ReplaceAll(h.Command, "{cmd}", shellQuote(line)))
			cmd.Stdin = strings.NewReader(c.password + "\n")
		} else {
			cmd = exec.CommandContext(ctx, "sh", "-c", strings.ReplaceAll(h.Command, "{cmd}", shellQuote(line)))
		}
		cmd.Env = filterEnv(os.Environ())
		// The template's processes (ssh, kubectl) are ours to end.
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// Its own process group: a ^C meant for Lifeboat must not reach the
	// programs, nor the server pg_ctl starts.
	cmd.SysProcAttr.Setpgid = true
	cmd.WaitDelay = 5 * time.Second // a child holding the output open
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	started := time.Now()
	err := cmd.Run()
	text := c.scrub(out.String())
	if err != nil {
		return text, &hostError{where: h.where(), line: c.scrub(c.line()), out: text, err: err, ctxErr: ctx.Err(), took: time.Since(started)}
	}
	return text, nil
}

// localCommand builds c to run on this machine as h.OSUser.
func (h Host) localCommand(ctx context.Context, c hostCmd) (*exec.Cmd, error) {
	cmd := exec.CommandContext(ctx, c.argv[0], c.argv[1:]...)
	env := append(filterEnv(os.Environ()), c.env...)
	if h.OSUser != "" {
		me, err := user.Current()
		if err != nil {
			return nil, fmt.Errorf("%s: who am I: %w", h.where(), err)
		}
		if me.Username != h.OSUser {
			if os.Geteuid() != 0 {
				return nil, fmt.Errorf("%s: cannot run programs as %s: Lifeboat runs as %s, not root", h.where(), h.OSUser, me.Username)
			}
			u, err := user.Lookup(h.OSUser)
			if err != nil {
				return nil, fmt.Errorf("%s: OSUser: %w", h.where(), err)
			}
			uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
			gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("%s: OSUser %s: uid %q gid %q are not numbers", h.where(), h.OSUser, u.Uid, u.Gid)
			}
			var groups []uint32
			if ids, err := u.GroupIds(); err == nil {
				for _, id := range ids {
					if g, err := strconv.ParseUint(id, 10, 32); err == nil {
						groups = append(groups, uint32(g))
					}
				}
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}}
			home := u.HomeDir
			if home == "" {
				home = "/"
			}
			env = append(filterEnv(env, "HOME", "USER", "LOGNAME"), "HOME="+home, "USER="+h.OSUser, "LOGNAME="+h.OSUser)
			cmd.Dir = "/" // our working directory may be closed to that account
		}
	}
	if c.password != "" {
		env = append(env, "PGPASSWORD="+c.password)
	}
	cmd.Env = env
	return cmd, nil
}

// filterEnv drops from env the variables Lifeboat sets itself or that
// would change what the programs write: a password of our own
// environment, an application_name that would end up in primary_conninfo,
// and the names in also.
func filterEnv(env []string, also ...string) []string {
	var out []string
	for _, e := range env {
		name, _, _ := strings.Cut(e, "=")
		if name == "PGPASSWORD" || name == "PGAPPNAME" || slices.Contains(also, name) {
			continue
		}
		out = append(out, e)
	}
	return out
}

// hostError is a program that failed on a host. Its text names the host,
// the command line and the end of the output; it holds no password.
type hostError struct {
	where  string
	line   string
	out    string
	err    error // from exec: *exec.ExitError, or why it did not run
	ctxErr error // the context's error when it ended
	took   time.Duration
}

func (e *hostError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s: ", e.where, e.line)
	switch {
	case errors.Is(e.ctxErr, context.DeadlineExceeded):
		fmt.Fprintf(&b, "timed out after %s", e.took.Round(time.Millisecond))
	case e.ctxErr != nil:
		b.WriteString("canceled")
	default:
		b.WriteString(e.err.Error())
	}
	if out := strings.TrimSpace(e.out); out != "" {
		b.WriteString(": ")
		b.WriteString(lastLines(out, 20))
	}
	return b.String()
}

func (e *hostError) Unwrap() error { return e.err }

// exitCode returns the exit status of a program that ran and exited.
func exitCode(err error) (int, bool) {
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		return ee.ExitCode(), true
	}
	return 0, false
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// shellQuote quotes s as one word for a POSIX shell.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// scrub replaces every secret in s, as written and URL-escaped, with xxxxx.
// Secrets shorter than 4 characters are left alone: replacing them would
// mangle the text more than it protects.
func scrub(s string, secrets ...string) string {
	for _, sec := range secrets {
		if len(sec) < 4 {
			continue
		}
		s = strings.ReplaceAll(s, sec, "xxxxx")
		for _, esc := range []string{url.QueryEscape(sec), url.PathEscape(sec), shellQuote(sec)} {
			if esc != sec {
				s = strings.ReplaceAll(s, esc, "xxxxx")
			}
		}
	}
	return s
}
