package redis

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

func newTestProber(t *testing.T, url string) *Prober {
	t.Helper()
	p, err := NewProber(url)
	if err != nil {
		t.Fatalf("NewProber: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func probe(t *testing.T, p *Prober, timeout time.Duration) health.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	return p.Probe(ctx)
}

func TestProberRoles(t *testing.T) {
	pair := testenv.StartRedis(t)
	for _, tt := range []struct {
		node *testenv.RedisNode
		want health.Role
	}{
		{pair.Primary, health.RolePrimary},
		{pair.Replica, health.RoleStandby},
	} {
		p := newTestProber(t, tt.node.URL())
		for range 3 { // the connection is reused between probes
			r := probe(t, p, 2*time.Second)
			if r.Err != nil || r.Role != tt.want {
				t.Fatalf("probe %s = %v, %q; want no error, %q", tt.node.Name, r.Err, r.Role, tt.want)
			}
		}
	}
}

func TestProberWrongPassword(t *testing.T) {
	pair := testenv.StartRedis(t)
	const wrong = "not-the-password-Zq81"
	p := newTestProber(t, "redis://:"+wrong+"@"+pair.Primary.Addr()+"/0")
	r := probe(t, p, 2*time.Second)
	if r.Err == nil {
		t.Fatal("probe with a wrong password succeeded")
	}
	msg := r.Err.Error()
	if !strings.Contains(msg, "WRONGPASS") || !strings.Contains(msg, pair.Primary.Addr()) {
		t.Errorf("error %q does not say WRONGPASS at %s", msg, pair.Primary.Addr())
	}
	if strings.Contains(msg, wrong) || strings.Contains(msg, pair.Primary.Password) {
		t.Errorf("error %q contains a password", msg)
	}
	if r.Role != health.RoleUnknown {
		t.Errorf("role = %q, want %q", r.Role, health.RoleUnknown)
	}
}

func TestProberPrimaryKilled(t *testing.T) {
	pair := testenv.StartRedis(t)
	p := newTestProber(t, pair.Primary.URL())
	if r := probe(t, p, 2*time.Second); r.Err != nil {
		t.Fatalf("probe before kill: %v", r.Err)
	}
	pair.Primary.Kill(t)

	// The pooled connection may first fail on its own (EOF); from then on
	// every probe must say the server refuses connections.
	var last health.Result
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		last = probe(t, p, time.Second)
		if last.Err == nil {
			t.Fatal("probe of a killed server succeeded")
		}
		if strings.Contains(last.Err.Error(), pair.Primary.Password) {
			t.Fatalf("error %q contains the password", last.Err)
		}
		if errors.Is(last.Err, syscall.ECONNREFUSED) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	want := "dial " + pair.Primary.Addr() + ": connection refused"
	if last.Err.Error() != want {
		t.Errorf("error = %q, want %q", last.Err, want)
	}
	if last.Role != health.RoleUnknown {
		t.Errorf("role = %q, want %q", last.Role, health.RoleUnknown)
	}
}

func TestProberDeadline(t *testing.T) {
	addr := testenv.Blackhole(t)
	p := newTestProber(t, "redis://:secret-pw@"+addr+"/0")
	for range 2 { // a fresh connection, then one left over from the first probe's dial
		start := time.Now()
		r := probe(t, p, 300*time.Millisecond)
		elapsed := time.Since(start)
		if r.Err == nil {
			t.Fatal("probe of a silent server succeeded")
		}
		if elapsed > 700*time.Millisecond {
			t.Errorf("probe took %v with a 300ms deadline", elapsed)
		}
		if want := "PING " + addr + ": timed out"; r.Err.Error() != want {
			t.Errorf("error = %q, want %q", r.Err, want)
		}
	}
}

func TestNewProberBadURL(t *testing.T) {
	const secret = "s3cr3t-Pw"
	for _, url := range []string{
		"redis://:" + secret + "@127.0.0.1:notaport/0",
		"redis://user:" + secret + "@127.0.0.1:6379/notadb",
		"redis://:" + secret + "@127.0.0.1:6379/0/extra",
		"http://:" + secret + "@127.0.0.1:6379/0",
		"redis://:" + secret + "@[::1/0",
		"redis://:" + secret + "\x7f@127.0.0.1/0",
		"redis://:s3cr%zz3t@127.0.0.1/0",           // url.Parse quotes "%zz"
		"redis://:s3cr/3t-Pw@127.0.0.1:6379/0",     // the password ends the authority early
		"redis://:" + secret + "@127.0.0.1:6379/%", // invalid escape outside the password
	} {
		p, err := NewProber(url)
		if err == nil {
			p.Close()
			t.Errorf("NewProber(%q) succeeded", url)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, secret) || strings.Contains(msg, "%zz") || strings.Contains(msg, "s3cr") {
			t.Errorf("NewProber(%q) error %q contains the password", url, err)
		}
		t.Logf("NewProber: %v", err)
		if !strings.Contains(err.Error(), "parse redis URL") {
			t.Errorf("NewProber(%q) error %q does not say the URL is wrong", url, err)
		}
	}
}

func TestProberClose(t *testing.T) {
	p, err := NewProber("redis://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if r := probe(t, p, time.Second); r.Err == nil || r.Err.Error() != "PING 127.0.0.1:1: client closed" {
		t.Errorf("probe after Close: %v", r.Err)
	}
}
