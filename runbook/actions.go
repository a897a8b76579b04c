package runbook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/files"
	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/observe"
	"github.com/lifeboat-dr/lifeboat/postgres"
	"github.com/lifeboat-dr/lifeboat/redis"
)

// action is what a step does, and how to undo it when a later step asks
// for a rollback (nil: nothing to undo).
type action struct {
	run  func(ctx context.Context, x *execution, s *StepRun) (string, error)
	undo func(ctx context.Context, x *execution, s *StepRun) (string, error)
}

// actionFor returns the implementation of a step action.
func actionFor(name string) (action, bool) {
	switch name {
	case "check.target":
		return action{run: checkTarget}, true
	case "wait":
		return action{run: waitAction}, true
	case "exec":
		return action{run: execAction}, true
	case "http.request":
		return action{run: httpRequest}, true
	case "verify":
		return action{run: verify}, true
	case "notify":
		return action{run: notify}, true
	case "traffic.hold":
		return action{run: hold, undo: release}, true
	case "traffic.switch":
		return action{run: switchTraffic}, true
	case "traffic.release":
		return action{run: release}, true
	case "postgres.fence":
		return action{run: pgFence, undo: pgUnfence}, true
	case "postgres.unfence":
		return action{run: pgUnfence}, true
	case "postgres.wait_caught_up":
		return action{run: pgWaitCaughtUp}, true
	case "postgres.promote":
		return action{run: pgPromote}, true
	case "postgres.reprotect":
		return action{run: pgReprotect}, true
	case "redis.fence":
		return action{run: redisFence, undo: redisUnfence}, true
	case "redis.promote":
		return action{run: redisPromote}, true
	case "redis.replicate":
		return action{run: redisReplicate}, true
	case "kubernetes.scale":
		return action{run: kubeScale}, true
	case "files.sync":
		return action{run: filesSync}, true
	}
	return action{}, false
}

// endpoint resolves a step's service and region to the endpoint.
func (x *execution) endpoint(s *StepRun, region string) (*config.Service, string, error) {
	name := s.Args["service"]
	svc, ok := x.e.opts.Config.Service(name)
	if !ok {
		return nil, "", fmt.Errorf("service %q is not declared", name)
	}
	ep, ok := svc.Endpoints[region]
	if !ok {
		return nil, "", fmt.Errorf("service %s has no endpoint in region %q", name, region)
	}
	return svc, ep, nil
}

// primaryRegion is the step's "primary" argument, else the run's From.
func (x *execution) primaryRegion(s *StepRun) string {
	if p := s.Args["primary"]; p != "" {
		return p
	}
	return x.run.From
}

// checkTarget passes when region could take over; until the step's
// timeout it looks again every 100ms (a region that was just reprotected
// needs its probes to see it up). A forced run passes at once, recording
// the estimated loss.
func checkTarget(ctx context.Context, x *execution, s *StepRun) (string, error) {
	region := s.Args["region"]
	x.mu.Lock()
	forced := x.run.Forced
	x.mu.Unlock()
	for {
		problems, notes, worst := takeover(x.e.opts.Config, x.e.opts.Status.Status(), x.e.opts.Lags, region)
		out := region + ": " + strings.Join(append([]string{"checked"}, notes...), "; ")
		if len(problems) == 0 {
			return out, nil
		}
		if forced {
			x.mu.Lock()
			x.run.EstimatedLossBytes = worst
			x.mu.Unlock()
			return out + "; FORCED despite: " + strings.Join(problems, "; ") + fmt.Sprintf(" (estimated loss up to %d bytes)", worst), nil
		}
		select {
		case <-ctx.Done():
			return out, fmt.Errorf("region %s is not ready: %s (force the run to proceed anyway)", region, strings.Join(problems, "; "))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func waitAction(ctx context.Context, x *execution, s *StepRun) (string, error) {
	d, err := time.ParseDuration(s.Args["duration"])
	if err != nil {
		return "", fmt.Errorf("args.duration %q: %v", s.Args["duration"], err)
	}
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case <-time.After(d):
		return "waited " + d.String(), nil
	}
}

// execAction runs a shell command with the run described in LIFEBOAT_*
// variables.
func execAction(ctx context.Context, x *execution, s *StepRun) (string, error) {
	command := s.Args["command"]
	if command == "" {
		return "", errors.New("args.command is empty")
	}
	x.mu.Lock()
	env := append(os.Environ(),
		"LIFEBOAT_RUN_ID="+x.run.ID, "LIFEBOAT_RUN_KIND="+x.run.Kind,
		"LIFEBOAT_FROM="+x.run.From, "LIFEBOAT_TO="+x.run.To,
		"LIFEBOAT_EPOCH="+strconv.FormatUint(x.run.Epoch, 10), "LIFEBOAT_STEP="+s.Name,
		"LIFEBOAT_TRIGGER="+x.run.Trigger, "LIFEBOAT_SEVERITY="+x.run.Severity)
	x.mu.Unlock()
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &limited{w: &buf, n: 8 << 10}, &limited{w: &buf, n: 8 << 10}
	err := cmd.Run()
	out := strings.TrimSpace(buf.String())
	if err != nil {
		if ctx.Err() != nil {
			return out, fmt.Errorf("command did not finish within the step's timeout")
		}
		return out, fmt.Errorf("command failed: %v", err)
	}
	return out, nil
}

// limited keeps the first n bytes written.
type limited struct {
	w io.Writer
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}

func httpRequest(ctx context.Context, x *execution, s *StepRun) (string, error) {
	method := s.Args["method"]
	if method == "" {
		method = http.MethodPost
	}
	var body io.Reader
	if b := s.Args["body"]; b != "" {
		body = strings.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.Args["url"], body)
	if err != nil {
		return "", fmt.Errorf("args.url: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range s.Args {
		if h, ok := strings.CutPrefix(k, "header."); ok {
			req.Header.Set(h, v)
		}
	}
	req.Header.Set("X-Lifeboat-Run", x.run.ID)
	resp, err := x.e.opts.Client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	out := fmt.Sprintf("%s %s", resp.Status, strings.TrimSpace(string(b)))
	lo, hi := 200, 299
	if e := s.Args["expect_status"]; e != "" {
		if lo, hi, err = config.ParseStatusRange(e); err != nil {
			return out, fmt.Errorf("args.expect_status: %v", err)
		}
	}
	if resp.StatusCode < lo || resp.StatusCode > hi {
		return out, fmt.Errorf("status %d is not in %d-%d", resp.StatusCode, lo, hi)
	}
	return out, nil
}

// verify probes the region's services (or the one named) until each
// succeeds once.
func verify(ctx context.Context, x *execution, s *StepRun) (string, error) {
	region := s.Args["region"]
	cfg := x.e.opts.Config
	var svcs []*config.Service
	for i := range cfg.Services {
		sv := &cfg.Services[i]
		if _, ok := sv.Endpoints[region]; ok && (s.Args["service"] == "" || s.Args["service"] == sv.Name) {
			svcs = append(svcs, sv)
		}
	}
	var ok []string
	for _, sv := range svcs {
		p, closeFn, err := observe.NewProber(x.e.opts.Client, sv, sv.Endpoints[region])
		if err != nil {
			return strings.Join(ok, ", "), fmt.Errorf("%s: %v", sv.Name, err)
		}
		var last health.Result
		for {
			pctx, cancel := context.WithTimeout(ctx, sv.Health.Timeout.D())
			last = p.Probe(pctx)
			cancel()
			if last.Err == nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			if ctx.Err() != nil {
				break
			}
		}
		if closeFn != nil {
			closeFn()
		}
		if last.Err != nil {
			return strings.Join(ok, ", "), fmt.Errorf("%s in %s did not answer: %s", sv.Name, region, last.Err)
		}
		ok = append(ok, sv.Name+" ok")
	}
	sort.Strings(ok)
	return strings.Join(ok, ", "), nil
}

func notify(ctx context.Context, x *execution, s *StepRun) (string, error) {
	msg := s.Args["message"]
	if msg == "" {
		msg = fmt.Sprintf("%s %s → %s: %s", x.run.Kind, x.run.From, x.run.To, s.Name)
	}
	x.event(s, "notify: %s", msg)
	return "notification recorded: " + msg, nil
}

// hold holds new requests and waits (at most the fence delay) until every
// live node's data plane does, so that the fence that follows ends no
// request a node let through meanwhile.
func hold(ctx context.Context, x *execution, s *StepRun) (string, error) {
	st, err := x.e.opts.Traffic.SetHold(ctx, true)
	if err != nil {
		return "", err
	}
	out := fmt.Sprintf("new requests held (active %s, epoch %d)", st.Active, st.Epoch)
	wctx, cancel := context.WithTimeout(ctx, x.e.opts.FenceDelay)
	defer cancel()
	if err := x.e.opts.Traffic.AwaitHeld(wctx); err != nil && ctx.Err() == nil {
		return out + "; " + err.Error(), nil
	}
	return out, ctx.Err()
}

func release(ctx context.Context, x *execution, s *StepRun) (string, error) {
	st, err := x.e.opts.Traffic.SetHold(ctx, false)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("released to %s (epoch %d)", st.Active, st.Epoch), nil
}

// switchTraffic commits the new epoch. Run again after a leader change,
// it recognises its own commit (the region active at an epoch above the
// run's start) and does not bump the epoch twice.
func switchTraffic(ctx context.Context, x *execution, s *StepRun) (string, error) {
	region := s.Args["region"]
	x.mu.Lock()
	start := x.run.StartEpoch
	x.mu.Unlock()
	st, already, err := x.e.opts.Traffic.Switch(ctx, region, start)
	if err != nil {
		return "", err
	}
	x.mu.Lock()
	x.run.Epoch = st.Epoch
	if x.run.SwitchedAt.IsZero() {
		x.run.SwitchedAt = time.Now().UTC()
	}
	x.mu.Unlock()
	if already {
		return fmt.Sprintf("already committed: active %s at epoch %d", st.Active, st.Epoch), nil
	}
	return fmt.Sprintf("epoch %d: active %s", st.Epoch, st.Active), nil
}

// pgFence makes the old primary refuse writes; with args.mode "stop" it
// stops the server through its manage entry instead.
func pgFence(ctx context.Context, x *execution, s *StepRun) (string, error) {
	svc, dsn, err := x.endpoint(s, s.Args["region"])
	if err != nil {
		return "", err
	}
	if s.Args["mode"] == "stop" {
		m, ok := svc.Manage[s.Args["region"]]
		if !ok {
			return "", fmt.Errorf("mode stop: service %s has no manage entry for region %s", svc.Name, s.Args["region"])
		}
		h := hostOf(m)
		if err := h.Stop(ctx, "fast"); err != nil {
			return "", err
		}
		return "stopped (pg_ctl stop -m fast)", nil
	}
	res, err := postgres.Fence(ctx, dsn)
	if err != nil {
		return "", err
	}
	if res.AlreadyFenced {
		return "already read-only", nil
	}
	out := fmt.Sprintf("read-only; %d client sessions terminated", res.Terminated)
	if res.Busy != "" {
		out += "; still in a transaction after the drain: " + res.Busy
	}
	return out, nil
}

func pgUnfence(ctx context.Context, x *execution, s *StepRun) (string, error) {
	_, dsn, err := x.endpoint(s, s.Args["region"])
	if err != nil {
		return "", err
	}
	if err := postgres.Unfence(ctx, dsn); err != nil {
		return "", err
	}
	return "writable again", nil
}

func pgWaitCaughtUp(ctx context.Context, x *execution, s *StepRun) (string, error) {
	_, standby, err := x.endpoint(s, s.Args["region"])
	if err != nil {
		return "", err
	}
	_, primary, err := x.endpoint(s, x.primaryRegion(s))
	if err != nil {
		return "", err
	}
	c, err := postgres.WaitCaughtUp(ctx, primary, standby, 10*time.Millisecond)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("standby replayed %s ≥ primary flushed %s", c.StandbyLSN, c.PrimaryLSN), nil
}

// awaitFence returns once it is safe to promote service: at once when
// its old primary was fenced; when a fence step of it failed (the old
// primary was unreachable), once every live node routes by the new epoch,
// or after the fence delay since the epoch commit, whichever is first.
func (x *execution) awaitFence(ctx context.Context, service, fenceAction string) (string, error) {
	x.mu.Lock()
	unfenced := false
	for _, o := range x.run.Steps {
		if o.Action == fenceAction && o.Args["service"] == service && o.Status == StatusFailed {
			unfenced = true
		}
	}
	epoch, switched := x.run.Epoch, x.run.SwitchedAt
	x.mu.Unlock()
	if !unfenced {
		return "", nil
	}
	start := time.Now()
	wctx, cancel := context.WithDeadline(ctx, switched.Add(x.e.opts.FenceDelay))
	err := x.e.opts.Traffic.AwaitEpoch(wctx, epoch)
	cancel()
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	if err != nil {
		return fmt.Sprintf("; the old primary could not be fenced and %v: waited the fence delay (%s)", err, time.Since(start).Round(time.Millisecond)), nil
	}
	return fmt.Sprintf("; the old primary could not be fenced: every live node routes by epoch %d (waited %s)", epoch, time.Since(start).Round(time.Millisecond)), nil
}

// pgPromote promotes the standby, after awaitFence.
func pgPromote(ctx context.Context, x *execution, s *StepRun) (string, error) {
	svc, dsn, err := x.endpoint(s, s.Args["region"])
	if err != nil {
		return "", err
	}
	note, err := x.awaitFence(ctx, s.Args["service"], "postgres.fence")
	if err != nil {
		return "", err
	}
	res, err := postgres.Promote(ctx, dsn)
	if err != nil {
		return "", err
	}
	// A primary fenced in an earlier failover and reprotected keeps the
	// fence in its configuration: the new primary must take writes.
	if err := postgres.Unfence(ctx, dsn); err != nil {
		return "", fmt.Errorf("promoted, but the read-only fence could not be lifted: %w", err)
	}
	out := fmt.Sprintf("promoted (timeline %d)", res.Timeline)
	if res.Already {
		out = "already a primary: nothing done"
	}
	// Synchronous replication: the new primary commits alone until a
	// standby streams from it again (reprotect restores it).
	if svc.Replication != nil && svc.Replication.Mode == config.ModeSync {
		if err := postgres.SetSynchronous(ctx, dsn, false); err != nil {
			return out, fmt.Errorf("promoted, but synchronous commit could not be suspended: %w", err)
		}
		out += "; synchronous commit suspended until a standby streams"
	}
	return out + note, nil
}

// hostOf is how a manage entry reaches its server's host.
func hostOf(m config.PGManage) postgres.Host {
	return postgres.Host{DataDir: m.DataDir, OSUser: m.OSUser, BinDir: m.BinDir, Command: m.Command}
}

func pgReprotect(ctx context.Context, x *execution, s *StepRun) (string, error) {
	svc, old, err := x.endpoint(s, s.Args["region"])
	if err != nil {
		return "", err
	}
	_, primary, err := x.endpoint(s, x.primaryRegion(s))
	if err != nil {
		return "", err
	}
	m, ok := svc.Manage[s.Args["region"]]
	if !ok {
		return "", fmt.Errorf("service %s has no manage entry for region %s", svc.Name, s.Args["region"])
	}
	h := hostOf(m)
	res, err := postgres.Reprotect(ctx, h, old, primary)
	if err != nil {
		return res.Output, err
	}
	sync := ""
	if svc.Replication != nil && svc.Replication.Mode == config.ModeSync {
		if err := postgres.SetSynchronous(ctx, primary, true); err != nil {
			return res.Output, fmt.Errorf("%s streams, but synchronous commit could not be restored on %s: %w", s.Args["region"], x.primaryRegion(s), err)
		}
		sync = "; synchronous commit restored"
	}
	if res.Method == "none" {
		return "already a streaming standby of " + x.primaryRegion(s) + sync, nil
	}
	out := fmt.Sprintf("standby of %s by %s", x.primaryRegion(s), res.Method)
	// Where the divergent WAL went: the old data directory (base backup) or
	// a copy of its WAL segments (rewind).
	kept := res.KeptAt
	if kept != "" && res.Method == "rewind" {
		kept += "/pg_wal"
	}
	switch {
	case res.DivergedAt != "" && res.DivergedAt == res.OldEnd:
		out += fmt.Sprintf("; nothing diverged (the old primary's WAL ended at %s, timeline %d)", res.OldEnd, res.Timeline)
	case res.DivergedAt != "":
		end := res.OldEnd
		if end == "" {
			end = "its end (unknown)"
		}
		out += fmt.Sprintf("; divergent WAL %s .. %s on timeline %d, not replayed on the new primary", res.DivergedAt, end, res.Timeline)
		if kept != "" {
			out += "; kept in " + kept
		}
	case res.OldEnd != "" && res.Method == "basebackup":
		out += fmt.Sprintf("; the old primary's WAL ended at %s; where it diverged is unknown (rebuilt by base backup)", res.OldEnd)
		if kept != "" {
			out += "; its divergent WAL, if any, is kept in " + kept + ", not replayed on the new primary"
		}
	case res.OldEnd != "":
		out += fmt.Sprintf("; the old primary's WAL ended at %s", res.OldEnd)
		if kept != "" {
			out += "; kept in " + kept
		}
	case kept != "":
		out += "; old data kept in " + kept
	}
	if res.Method == "basebackup" && res.RewindError != "" {
		out += "; pg_rewind failed: " + res.RewindError
	}
	return out + sync, nil
}

func redisFence(ctx context.Context, x *execution, s *StepRun) (string, error) {
	_, url, err := x.endpoint(s, s.Args["region"])
	if err != nil {
		return "", err
	}
	res, err := redis.Fence(ctx, url)
	if err != nil {
		return "", err
	}
	if res.Already {
		return "already refusing writes", nil
	}
	return "refusing writes", nil
}

func redisUnfence(ctx context.Context, x *execution, s *StepRun) (string, error) {
	_, url, err := x.endpoint(s, s.Args["region"])
	if err != nil {
		return "", err
	}
	return "accepting writes again", redis.Unfence(ctx, url)
}

func redisPromote(ctx context.Context, x *execution, s *StepRun) (string, error) {
	_, url, err := x.endpoint(s, s.Args["region"])
	if err != nil {
		return "", err
	}
	note, err := x.awaitFence(ctx, s.Args["service"], "redis.fence")
	if err != nil {
		return "", err
	}
	res, err := redis.Promote(ctx, url)
	if err != nil {
		return "", err
	}
	if res.Already {
		return "already a primary" + note, nil
	}
	return "promoted (REPLICAOF NO ONE)" + note, nil
}

func redisReplicate(ctx context.Context, x *execution, s *StepRun) (string, error) {
	_, url, err := x.endpoint(s, s.Args["region"])
	if err != nil {
		return "", err
	}
	_, primary, err := x.endpoint(s, x.primaryRegion(s))
	if err != nil {
		return "", err
	}
	res, err := redis.Replicate(ctx, url, primary)
	if err != nil {
		return "", err
	}
	if res.Already {
		return "already a replica of " + x.primaryRegion(s), nil
	}
	return "replica of " + x.primaryRegion(s) + ", link up", nil
}

func kubeScale(ctx context.Context, x *execution, s *StepRun) (string, error) {
	if x.e.opts.Kube == nil {
		return "", errors.New("no Kubernetes access configured on this node")
	}
	n, err := strconv.ParseInt(s.Args["replicas"], 10, 32)
	if err != nil || n < 0 {
		return "", fmt.Errorf("args.replicas %q is not a count", s.Args["replicas"])
	}
	sc, err := x.e.opts.Kube(s.Args["context"])
	if err != nil {
		return "", err
	}
	return sc.Scale(ctx, s.Args["kind"], s.Args["namespace"], s.Args["name"], int32(n), s.Args["wait"] == "true")
}

// filesSync copies a files service from the primary region (args.primary,
// else the run's From) to args.region: the final sync before traffic
// moves. Objects that could not be copied are listed in the output; only
// a store that cannot be read or written fails the step.
func filesSync(ctx context.Context, x *execution, s *StepRun) (string, error) {
	svc, dst, err := x.endpoint(s, s.Args["region"])
	if err != nil {
		return "", err
	}
	_, src, err := x.endpoint(s, x.primaryRegion(s))
	if err != nil {
		return "", err
	}
	opts := files.Options{Concurrency: 8}
	if svc.Sync != nil {
		opts.Delete, opts.Concurrency = svc.Sync.Delete, svc.Sync.Concurrency
	}
	syncer, err := files.OpenSyncer(ctx, src, dst, opts)
	if err != nil {
		return "", err
	}
	defer syncer.Close()
	rep, err := syncer.Sync(ctx)
	if err != nil {
		return "", err
	}
	out := fmt.Sprintf("%s → %s: %d copied (%s), %d deleted, %d unchanged in %s", x.primaryRegion(s), s.Args["region"],
		rep.Copied, config.ByteSize(rep.BytesCopied), rep.Deleted, rep.Unchanged, rep.Finished.Sub(rep.Started).Round(time.Millisecond))
	if len(rep.Failed) > 0 {
		var keys []string
		for i, f := range rep.Failed {
			if i == 20 {
				keys = append(keys, fmt.Sprintf("and %d more", len(rep.Failed)-20))
				break
			}
			keys = append(keys, fmt.Sprintf("%s (%s: %s)", f.Key, f.Op, f.Err))
		}
		out += fmt.Sprintf("; NOT COPIED (%d): %s", len(rep.Failed), strings.Join(keys, "; "))
	}
	return out, nil
}
