package runbook

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden plan files")

func loadTopology(t *testing.T, name string) *config.Config {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return testenv.Config(t, string(b))
}

// TestGeneratedPlans compares each generated plan, as text, with its
// golden file (go test ./runbook -run TestGeneratedPlans -update rewrites
// them).
func TestGeneratedPlans(t *testing.T) {
	t.Setenv("DB_PASSWORD", "pg-pass-123")
	t.Setenv("PAGER_TOKEN", "pager-token-456")
	cases := []struct {
		golden, topology string
		req              Request
	}{
		{"shop-failover.txt", "shop.yaml", Request{Kind: KindFailover, From: "east", To: "west"}},
		{"shop-switchover.txt", "shop.yaml", Request{Kind: KindSwitchover, From: "east", To: "west"}},
		{"shop-failback.txt", "shop.yaml", Request{Kind: KindFailback, From: "west", To: "east"}},
		{"shop-failover-manual.txt", "shop.yaml", Request{Kind: KindFailover, From: "east", To: "west", Approve: config.TokenOperator, Forced: true}},
		{"hooks-failover.txt", "hooks.yaml", Request{Kind: KindFailover, From: "eastus", To: "westus", Severity: "critical"}},
	}
	for _, c := range cases {
		t.Run(c.golden, func(t *testing.T) {
			cfg := loadTopology(t, c.topology)
			p, err := Generate(cfg, c.req)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			p.WriteText(&buf, cfg)
			got := buf.String()
			for _, secret := range []string{"s3cret-pw", "pg-pass-123", "pager-token-456"} {
				if strings.Contains(got, secret) {
					t.Errorf("plan text shows the secret %q:\n%s", secret, got)
				}
			}
			path := filepath.Join("testdata", c.golden)
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("plan differs from %s (run with -update if intended):\n--- got\n%s\n--- want\n%s", path, got, want)
			}
		})
	}
}

func TestPlanShape(t *testing.T) {
	cfg := loadTopology(t, "shop.yaml")
	p, err := Generate(cfg, Request{Kind: KindSwitchover, From: "east", To: "west"})
	if err != nil {
		t.Fatal(err)
	}
	order := map[string]int{}
	names := map[string]bool{}
	for _, s := range p.Steps {
		if names[s.Name] {
			t.Errorf("step name %s twice", s.Name)
		}
		names[s.Name] = true
		if _, ok := actionFor(s.Action); !ok {
			t.Errorf("step %s: unknown action %s", s.Name, s.Action)
		}
		if _, seen := order[s.Action]; !seen {
			order[s.Action] = s.Group
		}
	}
	// The epoch commits after the fence and the catch-up, before any
	// promotion; release comes after promotion.
	if !(order["postgres.fence"] < order["postgres.wait_caught_up"] && order["postgres.wait_caught_up"] < order["traffic.switch"] &&
		order["traffic.switch"] < order["postgres.promote"] && order["postgres.promote"] < order["traffic.release"] &&
		order["traffic.release"] < order["postgres.reprotect"]) {
		t.Errorf("switchover steps out of order: %v", order)
	}
	if g := p.Steps[0].Group; g != 0 || p.Steps[0].Action != "check.target" {
		t.Errorf("first step %+v, want the target check", p.Steps[0])
	}
}

func TestGenerateRejectsBadRequests(t *testing.T) {
	cfg := loadTopology(t, "shop.yaml")
	for _, c := range []struct {
		req  Request
		want string
	}{
		{Request{Kind: "rollout", From: "east", To: "west"}, `kind "rollout"`},
		{Request{Kind: KindFailover, From: "east", To: "mars"}, `to region "mars" is not declared (regions: east, west)`},
		{Request{Kind: KindFailover, From: "east", To: "witness"}, "witness"},
		{Request{Kind: KindSwitchover, From: "east", To: "east"}, `region "east" is already active`},
	} {
		_, err := Generate(cfg, c.req)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want it to say %q", c.req, err, c.want)
		}
	}
}

// The actions a config may name are exactly those the executor runs.
func TestActionsMatchConfig(t *testing.T) {
	for _, a := range config.Actions() {
		if _, ok := actionFor(a); !ok {
			t.Errorf("config allows action %s, the executor has none", a)
		}
	}
	if !slices.Contains(config.Actions(), "postgres.promote") {
		t.Error("config.Actions lacks postgres.promote")
	}
}
