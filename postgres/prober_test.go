package postgres

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

func probe(t *testing.T, p *Prober, timeout time.Duration) health.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return p.Probe(ctx)
}

// withPassword returns dsn with another password.
func withPassword(t *testing.T, dsn, password string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), password)
	return u.String()
}

func TestProberRolesAndFailures(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PGOptions{})

	primary := NewProber(pg.Primary.DSN())
	defer primary.Close()
	standby := NewProber(pg.Standby.DSN())
	defer standby.Close()
	for i := range 2 { // the second probe reuses the cached connection
		if r := probe(t, primary, 5*time.Second); r.Err != nil || r.Role != health.RolePrimary {
			t.Fatalf("primary probe %d: %+v, want role primary and no error", i, r)
		}
		if r := probe(t, standby, 5*time.Second); r.Err != nil || r.Role != health.RoleStandby {
			t.Fatalf("standby probe %d: %+v, want role standby and no error", i, r)
		}
	}

	const wrong = "wrong-secret-4711"
	bad := NewProber(withPassword(t, pg.Primary.DSN(), wrong))
	defer bad.Close()
	r := probe(t, bad, 5*time.Second)
	if r.Err == nil {
		t.Fatal("probe with a wrong password: no error")
	}
	msg := r.Err.Error()
	t.Logf("wrong password: %s", msg)
	want := fmt.Sprintf("connect 127.0.0.1:%d: password authentication failed for user", pg.Primary.Port)
	if !strings.Contains(msg, want) {
		t.Errorf("wrong password: error %q does not contain %q", msg, want)
	}
	if strings.Contains(msg, wrong) || strings.Contains(msg, pg.Primary.Password) {
		t.Errorf("wrong password: error %q contains a password", msg)
	}
	if r.Role != health.RoleUnknown {
		t.Errorf("wrong password: role %q, want unknown", r.Role)
	}

	pg.Primary.Stop(t, "immediate")
	// The cached connection fails first (its error may be the server's
	// goodbye or a closed socket), then connecting is refused.
	refused := fmt.Sprintf("connect 127.0.0.1:%d: connection refused", pg.Primary.Port)
	var last string
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := probe(t, primary, 2*time.Second)
		if r.Err != nil {
			if r.Err.Error() != last {
				t.Logf("stopped primary: %s", r.Err)
			}
			last = r.Err.Error()
			if !strings.Contains(last, fmt.Sprintf("127.0.0.1:%d", pg.Primary.Port)) {
				t.Errorf("stopped primary: error %q does not name the endpoint", last)
			}
			if strings.Contains(last, pg.Primary.Password) {
				t.Fatalf("stopped primary: error %q contains the password", last)
			}
			if last == refused {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("stopped primary: last error %q, want %q", last, refused)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The standby still answers.
	if r := probe(t, standby, 5*time.Second); r.Err != nil || r.Role != health.RoleStandby {
		t.Fatalf("standby probe after the primary stopped: %+v", r)
	}
}

func TestProberUnreachable(t *testing.T) {
	t.Parallel()
	const secret = "unreachable-secret-0815"
	port := testenv.FreePort(t)
	p := NewProber(fmt.Sprintf("postgres://lifeboat:%s@127.0.0.1:%d/postgres?sslmode=disable", secret, port))
	defer p.Close()
	r := probe(t, p, 5*time.Second)
	if r.Err == nil {
		t.Fatal("probe of a closed port: no error")
	}
	want := fmt.Sprintf("connect 127.0.0.1:%d: connection refused", port)
	if got := r.Err.Error(); got != want {
		t.Errorf("closed port: error %q, want %q", got, want)
	}
	if strings.Contains(r.Err.Error(), secret) {
		t.Errorf("closed port: error %q contains the password", r.Err)
	}
}

func TestProberInvalidDSN(t *testing.T) {
	t.Parallel()
	const secret = "invalid-secret-1234"
	p := NewProber("postgres://lifeboat:" + secret + "@127.0.0.1:notaport/postgres")
	defer p.Close()
	r := probe(t, p, time.Second)
	if r.Err == nil || !strings.Contains(r.Err.Error(), "invalid DSN") {
		t.Fatalf("invalid DSN: %v, want an invalid DSN error", r.Err)
	}
	if strings.Contains(r.Err.Error(), secret) {
		t.Errorf("invalid DSN: error %q contains the password", r.Err)
	}
}

// TestProberHonoursDeadline is not parallel: it measures time, so it runs
// before the parallel tests load the machine with servers.
func TestProberHonoursDeadline(t *testing.T) {
	const secret = "blackhole-secret-42"
	addr := testenv.Blackhole(t)
	p := NewProber(fmt.Sprintf("postgres://lifeboat:%s@%s/postgres", secret, addr))
	defer p.Close()
	for _, budget := range []time.Duration{300 * time.Millisecond, 500 * time.Millisecond} {
		start := time.Now()
		r := probe(t, p, budget)
		took := time.Since(start)
		if r.Err == nil {
			t.Fatalf("probe of a server that never answers: no error")
		}
		t.Logf("blackhole, %s: %s after %s", budget, r.Err, took)
		if took < budget-20*time.Millisecond || took > budget+300*time.Millisecond {
			t.Errorf("probe with a %s deadline took %s", budget, took)
		}
		want := "connect " + addr + ": timed out"
		if !strings.HasPrefix(r.Err.Error(), want) {
			t.Errorf("blackhole: error %q, want it to start with %q", r.Err, want)
		}
		if strings.Contains(r.Err.Error(), secret) {
			t.Errorf("blackhole: error %q contains the password", r.Err)
		}
	}
}
