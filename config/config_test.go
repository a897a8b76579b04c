package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// env returns a lookup that knows only the given variables.
func env(kv ...string) Option {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return WithLookupEnv(func(k string) (string, bool) { v, ok := m[k]; return v, ok })
}

func load(t *testing.T, doc string, opts ...Option) (*Config, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "lifeboat.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(path, append([]Option{env("DB_PASSWORD", "pw")}, opts...)...)
}

// exampleEnv is the environment every example must validate with.
var exampleEnv = env("DB_PASSWORD", "hunter2-db", "OPENAI_API_KEY", "sk-example-key-123")

func TestExamplesValidate(t *testing.T) {
	files, err := filepath.Glob("../examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"minimal.yaml", "azure-ai-platform.yaml", "financial-active-passive.yaml", "aks-jupyterhub.yaml"}
	have := map[string]bool{}
	for _, f := range files {
		have[filepath.Base(f)] = true
	}
	for _, w := range want {
		if !have[w] {
			t.Errorf("examples/%s is missing", w)
		}
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := Load(f, exampleEnv)
			if err != nil {
				t.Fatalf("does not validate:\n%v", err)
			}
			var b strings.Builder
			if err := cfg.Print(&b); err != nil {
				t.Fatal(err)
			}
			for _, secret := range []string{"hunter2-db", "sk-example-key-123"} {
				if strings.Contains(b.String(), secret) {
					t.Errorf("config print shows the secret %q", secret)
				}
			}
			// What print writes is itself a valid configuration.
			again, err := Parse(strings.NewReader(b.String()), env())
			if err != nil {
				t.Fatalf("printed config does not parse again: %v", err)
			}
			if err := again.Validate(); err != nil {
				t.Fatalf("printed config does not validate again: %v", err)
			}
		})
	}
}

func TestMinimalExampleShape(t *testing.T) {
	cfg, err := Load("../examples/minimal.yaml", env("DB_PASSWORD", "pw"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.Name != "shop" || cfg.ActiveRegion() != "east" {
		t.Errorf("cluster %q active %q", cfg.Cluster.Name, cfg.ActiveRegion())
	}
	west, _ := cfg.Region("west")
	if west.Role != RoleStandby || west.Priority != 2 {
		t.Errorf("west = %+v", west)
	}
	web, _ := cfg.Service("web")
	if web.Health.Interval.D() != 500*time.Millisecond || web.Health.Timeout.D() != 300*time.Millisecond ||
		web.Health.Fall != 3 || web.Health.Rise != 2 || web.Health.Path != "/healthz" {
		t.Errorf("web health = %+v", web.Health)
	}
	db, _ := cfg.Service("db")
	if db.Endpoints["east"] != "postgres://lifeboat:pw@127.0.0.1:55432/postgres" {
		t.Errorf("db east = %q", db.Endpoints["east"])
	}
	if db.Replication.MaxLagOnFailover != 16<<20 || db.Replication.Mode != ModeAsync {
		t.Errorf("db replication = %+v", db.Replication)
	}
	// Defaults from the issue: 1s / 500ms / 3 / 2.
	if db.Health.Interval.D() != time.Second || db.Health.Timeout.D() != 500*time.Millisecond || db.Health.Fall != 3 || db.Health.Rise != 2 {
		t.Errorf("db health defaults = %+v", db.Health)
	}
	if cfg.Traffic.DNS.TTL.D() != 5*time.Second || cfg.Traffic.DNS.Zone != "shop.example." {
		t.Errorf("dns = %+v", cfg.Traffic.DNS)
	}
	if cfg.Traffic.Postgres[0].Role != PGWriter || cfg.Policy.Failover != FailoverAuto || cfg.Policy.Cooldown.D() != time.Hour {
		t.Errorf("traffic/policy = %+v %+v", cfg.Traffic.Postgres, cfg.Policy)
	}
}

const base = `cluster: shop
regions:
  - name: east
    priority: 1
  - name: west
    priority: 2
services:
  - name: web
    kind: http
    endpoints:
      east: http://127.0.0.1:1
      west: http://127.0.0.1:2
`

// TestThreeMistakes: three different mistakes are all reported, each with
// its line and key.
func TestThreeMistakes(t *testing.T) {
	doc := `cluster: shop
regions:
  - name: east
    priority: 1
  - name: west
    priority: 2
services:
  - name: web
    kind: http
    endpoints:
      east: http://127.0.0.1:1
      west: http://127.0.0.1:2
      westus3: http://127.0.0.1:3
    health:
      intervall: 1s
policy:
  failover: sometimes
`
	_, err := load(t, doc)
	es, ok := AsErrors(err)
	if !ok {
		t.Fatalf("err = %v", err)
	}
	want := []string{
		`lifeboat.yaml:13: services[0].endpoints.westus3: region "westus3" is not declared`,
		`lifeboat.yaml:15: services[0].health.intervall: unknown key "intervall" (did you mean "interval"?)`,
		`lifeboat.yaml:17: policy.failover: "sometimes" is not one of auto, manual`,
	}
	if len(es) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(es), len(want), err)
	}
	for i, w := range want {
		if got := es[i].Error(); !strings.HasSuffix(got, w) {
			t.Errorf("error %d = %q, want suffix %q", i, got, w)
		}
	}
	if !errors.Is(err, ErrUnknownKey) || !errors.Is(err, ErrInvalid) {
		t.Errorf("errors.Is does not find the sentinels in %v", err)
	}
}

func TestBadInput(t *testing.T) {
	cases := []struct {
		name, doc string
		want      string // line:key: message fragment
	}{
		{"syntax", "cluster: [shop\n", "lifeboat.yaml:1: did not find expected"},
		{"not a mapping", "- a\n- b\n", "lifeboat.yaml:1: expected a mapping of keys, got a list"},
		{"empty", "", "lifeboat.yaml: the document is empty"},
		{"two documents", base + "---\ncluster: x\n", "lifeboat.yaml:13: only one YAML document"},
		{"unknown top key", base + "polcy:\n  rpo: 1m\n", `lifeboat.yaml:13: polcy: unknown key "polcy" (did you mean "policy"?)`},
		{"bad duration", base + "policy:\n  rpo: soon\n", `lifeboat.yaml:14: policy.rpo: "soon" is not a duration`},
		{"negative duration", base + "policy:\n  rto: -5m\n", `lifeboat.yaml:14: policy.rto: duration "-5m" is negative`},
		{"bad int", strings.Replace(base, "priority: 2", "priority: two", 1), `lifeboat.yaml:6: regions[1].priority: "two" is not a whole number`},
		{"bad bool", strings.Replace(base, "kind: http", "kind: http\n    critical: yes please", 1), `lifeboat.yaml:10: services[0].critical: "yes please" is not true or false`},
		{"list for scalar", base + "policy:\n  rpo: [1m]\n", `lifeboat.yaml:14: policy.rpo: expected a single value, got a list`},
		{"duplicate key", base + "policy:\n  rpo: 1m\n  rpo: 2m\n", `lifeboat.yaml:15: policy.rpo: key "rpo" is given twice`},
		{"unset env", strings.Replace(base, "http://127.0.0.1:1", "http://${WEB_HOST}:1", 1), `lifeboat.yaml:11: services[0].endpoints.east: environment variable WEB_HOST is not set`},
		{"missing cluster", strings.Replace(base, "cluster: shop\n", "", 1), "cluster: is required"},
		{"bad cluster name", strings.Replace(base, "cluster: shop", "cluster: Shop_1", 1), `lifeboat.yaml:1: cluster: "Shop_1" is not a valid name`},
		{"one region", strings.Replace(base, "  - name: west\n    priority: 2\n", "", 1), "regions: at least two regions that are not witnesses"},
		{"duplicate region", strings.Replace(base, "name: west", "name: east", 1), `lifeboat.yaml:5: regions[1].name: region "east" is declared twice`},
		{"duplicate priority", strings.Replace(base, "priority: 2", "priority: 1", 1), `lifeboat.yaml:6: regions[1].priority: priority 1 is also region "east"'s`},
		{"bad role", strings.Replace(base, "priority: 2", "priority: 2\n    role: primary", 1), `lifeboat.yaml:7: regions[1].role: "primary" is not one of active, standby, witness`},
		{"two active", strings.Replace(strings.Replace(base, "priority: 2", "priority: 2\n    role: active", 1), "priority: 1", "priority: 1\n    role: active", 1), `regions[1].role: only one region can be active`},
		{"missing endpoint", strings.Replace(base, "      west: http://127.0.0.1:2\n", "", 1), `lifeboat.yaml:10: services[0].endpoints: no endpoint for region "west"`},
		{"witness endpoint", strings.Replace(base, "  - name: west\n    priority: 2\n", "  - name: west\n    priority: 2\n  - name: tie\n    priority: 3\n    role: witness\n", 1) + "      tie: http://127.0.0.1:3\n", `services[0].endpoints.tie: region "tie" is a witness and has no endpoints`},
		{"bad kind", strings.Replace(base, "kind: http", "kind: mysql", 1), `lifeboat.yaml:9: services[0].kind: "mysql" is not one of http, tcp, postgres, redis, files`},
		{"bad url", strings.Replace(base, "http://127.0.0.1:1", "127.0.0.1:1", 1), `lifeboat.yaml:11: services[0].endpoints.east: "127.0.0.1:1" is not an http:// or https:// URL`},
		{"timeout over interval", base + "    health:\n      interval: 1s\n      timeout: 2s\n", `lifeboat.yaml:15: services[0].health.timeout: 2s must be above 0 and at most the interval (1s)`},
		{"fall zero", base + "    health:\n      fall: -1\n", `services[0].health.fall: -1 is not from 1 to 100`},
		{"bad status", base + "    health:\n      expect_status: 2xx\n", `lifeboat.yaml:14: services[0].health.expect_status: "2xx" is not a status code or range`},
		{"http-only field", base + "  - name: db\n    kind: postgres\n    endpoints:\n      east: postgres://u:${DB_PASSWORD}@127.0.0.1:5432/db\n      west: postgres://u:${DB_PASSWORD}@127.0.0.1:5433/db\n    health:\n      path: /x\n", `services[1].health.path: is for http services only, not postgres`},
		{"bad dsn", base + "  - name: db\n    kind: postgres\n    endpoints:\n      east: mysql://127.0.0.1\n      west: postgres://u:${DB_PASSWORD}@127.0.0.1:5433/db\n", `lifeboat.yaml:16: services[1].endpoints.east: not a PostgreSQL DSN`},
		{"bad sync mode", base + "  - name: db\n    kind: postgres\n    endpoints:\n      east: postgres://u:${DB_PASSWORD}@127.0.0.1:5432/db\n      west: postgres://u:${DB_PASSWORD}@127.0.0.1:5433/db\n    replication:\n      mode: semi\n", `lifeboat.yaml:19: services[1].replication.mode: "semi" is not one of async, sync`},
		{"bad size", base + "  - name: db\n    kind: postgres\n    endpoints:\n      east: postgres://u:${DB_PASSWORD}@127.0.0.1:5432/db\n      west: postgres://u:${DB_PASSWORD}@127.0.0.1:5433/db\n    replication:\n      max_lag_on_failover: lots\n", `services[1].replication.max_lag_on_failover: "lots" is not a size`},
		{"replication on http", base + "    replication:\n      mode: sync\n", `lifeboat.yaml:13: services[0].replication: replication is for postgres and redis services, not http`},
		{"version both", base + "    version:\n      url: /version\n      json_field: model\n      header: X-Model\n", `lifeboat.yaml:13: services[0].version: set exactly one of json_field and header`},
		{"bad files scheme", base + "  - name: files\n    kind: files\n    endpoints:\n      east: ftp://x/y\n      west: file:///srv/w\n", `services[1].endpoints.east: scheme "ftp" is not one of file, s3, azblob, gs`},
		{"dns undeclared service", base + "traffic:\n  dns:\n    listen: 127.0.0.1:53\n    zone: shop.example.\n    records:\n      - name: www\n        service: api\n", `lifeboat.yaml:19: traffic.dns.records[0].service: service "api" is not declared`},
		{"dns ttl fraction", base + "traffic:\n  dns:\n    listen: 127.0.0.1:53\n    zone: shop.example.\n    ttl: 1500ms\n", `traffic.dns.ttl: 1.5s must be whole seconds`},
		{"dns bad zone", base + "traffic:\n  dns:\n    listen: 127.0.0.1:53\n    zone: shop..example\n", `traffic.dns.zone: "shop..example" is not a domain name`},
		{"weighted without weights", base + "traffic:\n  dns:\n    listen: 127.0.0.1:53\n    zone: shop.example.\n    records:\n      - name: www\n        service: web\n        policy: weighted\n", `traffic.dns.records[0].weights: a weighted record needs weights`},
		{"listen twice", base + "api:\n  listen: 127.0.0.1:9000\ntraffic:\n  http:\n    listen: 127.0.0.1:9000\n", `lifeboat.yaml:17: traffic.http.listen: 127.0.0.1:9000 is also api.listen's listen address`},
		{"bad listen", base + "api:\n  listen: 9000\n", `lifeboat.yaml:14: api.listen: "9000" is not host:port`},
		{"writer on http", base + "traffic:\n  postgres:\n    - listen: 127.0.0.1:6432\n      service: web\n", `traffic.postgres[0].service: service "web" is http; expected postgres`},
		{"bad relay", base + "traffic:\n  postgres:\n    - listen: 127.0.0.1:6432\n      service: web\n      relay: ebpf\n", `traffic.postgres[0].relay: "ebpf" is not one of auto, user`},
		{"token not hashed", base + "api:\n  tokens:\n    - name: ops\n      role: operator\n      sha256: my-token\n", `lifeboat.yaml:17: api.tokens[0].sha256: must be the 64 lower-case hex digits`},
		{"tls half", base + "api:\n  tls:\n    cert: /c.pem\n", `api.tls: cert and key go together`},
		{"auto never", base + "policy:\n  failover: auto\n  max_auto_failovers: 0\n", `policy.max_auto_failovers: is 0, so failover: auto could never act`},
		{"llm no model", base + "report:\n  llm:\n    url: http://127.0.0.1:11434/v1\n", `report.llm.model: is required`},
		{"azure needs version", base + "report:\n  llm:\n    provider: azure\n    url: https://x.openai.azure.com\n    deployment: gpt\n", `report.llm.api_version: is required`},
		{"notify bad url", base + "notify:\n  channels:\n    - name: ops\n      type: webhook\n      url: not-a-url\n", `notify.channels[0].url: is not an http:// or https:// URL`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, tc.doc)
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.doc)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error:\n%v\nwant it to contain:\n%s", err, tc.want)
			}
		})
	}
}

// A key that failed to decode is reported once, not again by Validate.
func TestNoDerivedErrors(t *testing.T) {
	_, err := load(t, strings.Replace(base, "http://127.0.0.1:1", "${NOPE}", 1))
	es, _ := AsErrors(err)
	if len(es) != 1 {
		t.Fatalf("want exactly one error, got:\n%v", err)
	}
}

func TestRegionRoles(t *testing.T) {
	doc := strings.Replace(base, "priority: 2", "priority: 2\n    role: active", 1) +
		"  - name: cache\n    kind: redis\n    endpoints:\n      east: redis://127.0.0.1:6379\n      west: redis://127.0.0.1:6380\n"
	doc = strings.Replace(doc, "services:", "  - name: tie\n    priority: 0\n    role: witness\nservices:", 1)
	cfg, err := load(t, doc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ActiveRegion() != "west" {
		t.Errorf("role: active must win over priority, active = %q", cfg.ActiveRegion())
	}
	east, _ := cfg.Region("east")
	if east.Role != RoleStandby {
		t.Errorf("east role = %q", east.Role)
	}
	cache, _ := cfg.Service("cache")
	if cache.Replication == nil || cache.Replication.Mode != ModeAsync || cache.Replication.Heartbeat.D() != time.Second {
		t.Errorf("redis replication defaults = %+v", cache.Replication)
	}
}

func TestEnvExpansion(t *testing.T) {
	lookup := func(k string) (string, bool) {
		m := map[string]string{"A": "alpha", "EMPTY": ""}
		v, ok := m[k]
		return v, ok
	}
	cases := []struct{ in, out, err string }{
		{"plain", "plain", ""},
		{"${A}", "alpha", ""},
		{"x${A}y${A}z", "xalphayalphaz", ""},
		{"${B:-beta}", "beta", ""},
		{"${EMPTY:-d}", "d", ""},
		{"${EMPTY}", "", ""},
		{"${B:-}", "", ""},
		{"pa$$word", "pa$$word", ""},
		{"$${A}", "${A}", ""},
		{"$A", "$A", ""},
		{"${B}", "", "environment variable B is not set"},
		{"${B}${C}", "", "environment variable B, C is not set"},
		{"${A", "", "unclosed ${"},
		{"${1X}", "", `"1X" is not a variable name`},
	}
	for _, c := range cases {
		got, err := expandEnv(c.in, lookup, nil)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("expandEnv(%q) err = %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.out {
			t.Errorf("expandEnv(%q) = %q, %v; want %q", c.in, got, err, c.out)
		}
	}
}

func TestRedaction(t *testing.T) {
	doc := base + `    health:
      headers:
        Authorization: Bearer abc-123-token
        X-Trace: visible
  - name: db
    kind: postgres
    endpoints:
      east: postgres://lifeboat:${DB_PASSWORD}@127.0.0.1:5432/db
      west: host=127.0.0.1 port=5433 user=lifeboat password=kw-secret-9 dbname=db
  - name: cache
    kind: redis
    endpoints:
      east: redis://:${REDIS_PASSWORD}@127.0.0.1:6379/0
      west: redis://:${REDIS_PASSWORD}@127.0.0.1:6380/0
notify:
  channels:
    - name: team
      type: teams
      url: https://hooks.example/T0/${TEAMS_TOKEN}
report:
  llm:
    url: http://127.0.0.1:11434/v1
    model: llama3
    api_key: ${OPENAI_API_KEY}
`
	cfg, err := load(t, doc, env("DB_PASSWORD", "db-pass-77", "REDIS_PASSWORD", "redis-pass-88", "TEAMS_TOKEN", "teams-tok-99", "OPENAI_API_KEY", "sk-live-55"))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := cfg.Print(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, s := range []string{"db-pass-77", "redis-pass-88", "teams-tok-99", "sk-live-55", "kw-secret-9", "abc-123-token"} {
		if strings.Contains(out, s) {
			t.Errorf("printed config contains secret %q:\n%s", s, out)
		}
	}
	for _, s := range []string{"X-Trace: visible", "postgres://lifeboat:xxxxx@127.0.0.1:5432/db", "password=<redacted>"} {
		if !strings.Contains(out, s) {
			t.Errorf("printed config lacks %q:\n%s", s, out)
		}
	}
	// The real values stay available to the code that needs them.
	db, _ := cfg.Service("db")
	if !strings.Contains(db.Endpoints["east"], "db-pass-77") || cfg.Report.LLM.APIKey.Value() != "sk-live-55" {
		t.Error("redaction changed the configuration itself")
	}
	if got := cfg.Redact("connect failed: password db-pass-77 rejected"); strings.Contains(got, "db-pass-77") {
		t.Errorf("Redact = %q", got)
	}
	if s := cfg.Report.LLM.APIKey.String(); s != Redacted {
		t.Errorf("Secret.String() = %q", s)
	}
}

func TestRedactURL(t *testing.T) {
	cases := map[string]string{
		"postgres://u:p@h:5432/db":          "postgres://u:xxxxx@h:5432/db",
		"redis://:@h:6379/0":                "redis://:@h:6379/0",
		"postgres://u@h/db":                 "postgres://u@h/db",
		"redis://:p@h:6379/0":               "redis://:xxxxx@h:6379/0",
		"http://h/x?token=abc&x=1":          "http://h/x?token=xxxxx&x=1",
		"host=h password='a b' user=u":      "host=h password=<redacted> user=u",
		"postgres://u:p@ss@h/db?sslmode=no": "postgres://u:xxxxx@h/db?sslmode=no",
	}
	for in, want := range cases {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUnits(t *testing.T) {
	sizes := map[string]ByteSize{"0": 0, "1048576": 1 << 20, "16MB": 16 << 20, "512kB": 512 << 10, "1GiB": 1 << 30, "2 GB": 2 << 30, "7B": 7}
	for in, want := range sizes {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MB", "-1MB", "1.5MB", "1PB", "99999999999TB"} {
		if _, err := ParseByteSize(bad); err == nil {
			t.Errorf("ParseByteSize(%q) accepted", bad)
		}
	}
	if s := ByteSize(16 << 20).String(); s != "16MiB" {
		t.Errorf("16MiB prints as %q", s)
	}
	if s := ByteSize(1000).String(); s != "1000B" {
		t.Errorf("1000 prints as %q", s)
	}
	for d, want := range map[time.Duration]string{time.Minute: "1m", time.Hour: "1h", 90 * time.Minute: "1h30m", 500 * time.Millisecond: "500ms", 61 * time.Second: "1m1s"} {
		if got := Duration(d).String(); got != want {
			t.Errorf("Duration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestParseStatusRange(t *testing.T) {
	if lo, hi, err := ParseStatusRange("200-399"); err != nil || lo != 200 || hi != 399 {
		t.Errorf("200-399 = %d %d %v", lo, hi, err)
	}
	if lo, hi, err := ParseStatusRange("204"); err != nil || lo != 204 || hi != 204 {
		t.Errorf("204 = %d %d %v", lo, hi, err)
	}
	for _, bad := range []string{"", "2xx", "399-200", "99", "600", "200-"} {
		if _, _, err := ParseStatusRange(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// A value the user writes is kept even when it is the zero value.
func TestExplicitZeroKept(t *testing.T) {
	doc := base + `    health:
      jitter: 0s
  - name: db
    kind: postgres
    endpoints:
      east: postgres://u:${DB_PASSWORD}@127.0.0.1:5432/db
      west: postgres://u:${DB_PASSWORD}@127.0.0.1:5433/db
    replication:
      mode: sync
      max_lag_on_failover: 0
  - name: share
    kind: files
    endpoints:
      east: file:///srv/east
      west: file:///srv/west
    sync:
      delete: false
`
	cfg, err := load(t, doc)
	if err != nil {
		t.Fatal(err)
	}
	web, _ := cfg.Service("web")
	db, _ := cfg.Service("db")
	share, _ := cfg.Service("share")
	if web.Health.Jitter != 0 {
		t.Errorf("jitter = %s, want 0", web.Health.Jitter)
	}
	if db.Replication.MaxLagOnFailover != 0 || db.Replication.Heartbeat.D() != time.Second {
		t.Errorf("replication = %+v", db.Replication)
	}
	if db.Health.Jitter.D() != 100*time.Millisecond {
		t.Errorf("default jitter = %s, want a tenth of 1s", db.Health.Jitter)
	}
	if share.Sync.Delete || share.Sync.Interval.D() != time.Minute || share.Sync.Concurrency != 8 {
		t.Errorf("sync = %+v", share.Sync)
	}
}

func TestAliases(t *testing.T) {
	doc := strings.Replace(base, "    endpoints:", "    health: &h\n      interval: 2s\n    endpoints:", 1) +
		"  - name: api\n    kind: http\n    health: *h\n    endpoints:\n      east: http://127.0.0.1:3\n      west: http://127.0.0.1:4\n"
	cfg, err := load(t, doc)
	if err != nil {
		t.Fatal(err)
	}
	api, _ := cfg.Service("api")
	if api.Health.Interval.D() != 2*time.Second {
		t.Errorf("alias not followed: %+v", api.Health)
	}
	wide := "regions:\n" + strings.Repeat("  - {}\n", maxNodes)
	_, err = load(t, wide)
	if err == nil || !strings.Contains(err.Error(), "expands to more than") {
		t.Errorf("wide document: %.300v", err)
	}
}

func TestClusterForms(t *testing.T) {
	peers := `cluster:
  name: shop
  lease_ttl: 4s
  peers:
    - {name: east-1, region: east, peer_url: "http://127.0.0.1:2380", client_url: "http://127.0.0.1:2379"}
    - {name: west-1, region: west, peer_url: "http://127.0.0.2:2380", client_url: "http://127.0.0.2:2379"}
    - {name: tie-1, region: tie, peer_url: "http://127.0.0.3:2380", client_url: "http://127.0.0.3:2379"}
`
	doc := strings.Replace(base, "cluster: shop\n", peers, 1)
	doc = strings.Replace(doc, "services:", "  - {name: tie, priority: 3, role: witness}\nservices:", 1)
	cfg, err := load(t, doc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.Name != "shop" || len(cfg.Cluster.Peers) != 3 || cfg.Cluster.LeaseTTL.D() != 4*time.Second || cfg.Cluster.Peers[2].Region != "tie" {
		t.Errorf("cluster = %+v", cfg.Cluster)
	}
	var b strings.Builder
	cfg.Print(&b)
	if !strings.Contains(b.String(), "peers:") {
		t.Errorf("print lost the peers:\n%s", b.String())
	}
	// The name alone prints as the name alone.
	cfg2, _ := load(t, base)
	b.Reset()
	cfg2.Print(&b)
	if !strings.HasPrefix(b.String(), "cluster: shop\n") {
		t.Errorf("print of a named cluster:\n%s", b.String())
	}
	two := strings.Replace(doc, "    - {name: tie-1, region: tie, peer_url: \"http://127.0.0.3:2380\", client_url: \"http://127.0.0.3:2379\"}\n", "", 1)
	if _, err := load(t, two); err == nil || !strings.Contains(err.Error(), "cluster.peers: 2 peers cannot outvote a partition") {
		t.Errorf("two peers: %v", err)
	}
	bad := strings.Replace(doc, "region: tie,", "region: moon,", 1)
	if _, err := load(t, bad); err == nil || !strings.Contains(err.Error(), `cluster.peers[2].region: region "moon" is not declared`) {
		t.Errorf("undeclared peer region: %v", err)
	}
}

func TestClusterTiming(t *testing.T) {
	fast := strings.Replace(base, "cluster: shop\n", "cluster: {name: shop, lease_ttl: 1s, heartbeat: 50ms, election_timeout: 500ms}\n", 1)
	cfg, err := load(t, fast)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.Heartbeat.D() != 50*time.Millisecond || cfg.Cluster.ElectionTimeout.D() != 500*time.Millisecond {
		t.Errorf("timing = %+v", cfg.Cluster)
	}
	for doc, want := range map[string]string{
		"cluster: {name: shop, heartbeat: 100ms, election_timeout: 300ms}\n": "cluster.election_timeout: 300ms must be whole milliseconds and at least 5 × heartbeat (100ms)",
		"cluster: {name: shop, election_timeout: 1s}\n":                      "cluster.lease_ttl: 1s must be at least 1.5 × election_timeout (1s)",
		"cluster: {name: shop, heartbeat: 5ms}\n":                            "cluster.heartbeat: 5ms must be whole milliseconds from 10ms to 10s",
	} {
		if _, err := load(t, strings.Replace(base, "cluster: shop\n", doc, 1)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", doc, err, want)
		}
	}
	// The defaults: etcd's heartbeat, a shorter election, the shortest lease.
	def, _ := load(t, base)
	if def.Cluster.Heartbeat.D() != 100*time.Millisecond || def.Cluster.ElectionTimeout.D() != 600*time.Millisecond || def.Cluster.LeaseTTL.D() != time.Second {
		t.Errorf("defaults = %+v", def.Cluster)
	}
}
