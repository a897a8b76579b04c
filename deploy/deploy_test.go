package deploy_test

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The files under test, relative to this package's directory (go test runs
// in it).
const (
	alertsFile     = "prometheus/lifeboat-alerts.yml"
	alertTestsFile = "prometheus/lifeboat-alerts_test.yml"
	configFile     = "prometheus/prometheus.yml"
	dashboardFile  = "grafana/lifeboat-dashboard.json"
	dsVariable     = "DS_PROMETHEUS"
)

// The alerts the rules must define.
var wantAlerts = []string{"RegionDown", "ExposureBreached", "ReadinessLost", "LeaderMissing", "QuorumLost", "ReplicationBroken", "NodeDown"}

// The packages whose sources define Lifeboat's metrics (observe/metrics.go,
// control/metrics.go), and those whose string constants give the values of
// enumerated labels (state, status, result).
var (
	metricPackages = []string{"../observe", "../control"}
	valuePackages  = []string{"../health", "../replication", "../observe", "../control"}
	enumLabels     = []string{"state", "status", "result"}
)

// promtool finds promtool; a missing promtool fails the test rather than
// skipping it, so the checks cannot silently stop running.
func promtool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/promtool"); err == nil {
		return "/usr/bin/promtool"
	}
	t.Fatal("promtool is not installed (not in PATH nor /usr/bin): scripts/deps.sh installs it (Debian package prometheus)")
	return ""
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	out, err := cmd.CombinedOutput()
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestPromtoolCheckRules(t *testing.T) { runPromtool(t, "check", "rules", alertsFile) }

func TestPromtoolTestRules(t *testing.T) { runPromtool(t, "test", "rules", alertTestsFile) }

func TestPromtoolCheckConfig(t *testing.T) { runPromtool(t, "check", "config", configFile) }

// TestDashboardQueriesParse has promtool parse every dashboard query, as
// recording rules, with Grafana's variables replaced by plausible values.
func TestDashboardQueriesParse(t *testing.T) {
	d := readDashboard(t)
	vars := regexp.MustCompile(`\$\{?(__rate_interval|__interval|__range)\}?`)
	other := regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*\}?`)
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			expr := vars.ReplaceAllString(tg.Expr, "5m")
			expr = other.ReplaceAllString(expr, ".*") // variables appear only in regex matchers
			rules = append(rules, rule{Record: fmt.Sprintf("dashboard:panel%d_%s", p.ID, tg.RefID), Expr: expr})
		}
	}
	if len(rules) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	out, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard-queries.yml")
	if err := os.WriteFile(file, out, 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, "check", "rules", file)
}

// ruleFile is the part of a Prometheus rule file the tests read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// alertTests is the part of a promtool test file the tests read.
type alertTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		AlertRuleTest []struct {
			EvalTime  string `yaml:"eval_time"`
			AlertName string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func readYAML(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// TestAlertRules checks what promtool does not: every wanted alert exists,
// has a for duration, a severity and its annotations, and the unit tests
// show each one both firing and not firing.
func TestAlertRules(t *testing.T) {
	var rf ruleFile
	readYAML(t, alertsFile, &rf)
	defined := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			defined[r.Alert] = true
			if r.For == "" {
				t.Errorf("alert %s (group %s) has no for: duration", r.Alert, g.Name)
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("alert %s: severity label %q, want critical or warning", r.Alert, s)
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("alert %s has no %s annotation", r.Alert, a)
				}
			}
		}
	}
	for _, a := range wantAlerts {
		if !defined[a] {
			t.Errorf("alert %s is not defined in %s", a, alertsFile)
		}
	}

	var at alertTests
	readYAML(t, alertTestsFile, &at)
	if !slices.Contains(at.RuleFiles, filepath.Base(alertsFile)) {
		t.Errorf("%s does not test %s (rule_files: %v)", alertTestsFile, filepath.Base(alertsFile), at.RuleFiles)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tg := range at.Tests {
		for _, c := range tg.AlertRuleTest {
			if len(c.ExpAlerts) > 0 {
				fires[c.AlertName] = true
			} else {
				quiet[c.AlertName] = true
			}
		}
	}
	for a := range defined {
		if !fires[a] {
			t.Errorf("%s has no case where %s fires", alertTestsFile, a)
		}
		if !quiet[a] {
			t.Errorf("%s has no case where %s does not fire", alertTestsFile, a)
		}
	}
}

// TestPrometheusConfig checks the example scrape configuration loads the
// alert rules and scrapes three nodes under the job the rules select.
func TestPrometheusConfig(t *testing.T) {
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, configFile, &cfg)
	if !slices.Contains(cfg.RuleFiles, filepath.Base(alertsFile)) {
		t.Errorf("rule_files %v does not load %s", cfg.RuleFiles, filepath.Base(alertsFile))
	}
	for _, sc := range cfg.ScrapeConfigs {
		if sc.JobName != "lifeboat" {
			continue
		}
		if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
			t.Errorf("job lifeboat scrapes %s; Lifeboat serves /metrics", sc.MetricsPath)
		}
		n := 0
		for _, s := range sc.StaticConfigs {
			n += len(s.Targets)
		}
		if n != 3 {
			t.Errorf("job lifeboat has %d targets, want the three nodes", n)
		}
		return
	}
	t.Errorf("%s has no scrape job named lifeboat (NodeDown selects up{job=\"lifeboat\"})", configFile)
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasource     `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a row's collapsed panels
}

func (d *dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type != "row" {
				out = append(out, p)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

func readDashboard(t *testing.T) *dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardFile, err)
	}
	return &d
}

// TestDashboard checks the dashboard's structure: a datasource variable of
// type prometheus that every panel and query uses, titled panels with
// queries, and a layout within Grafana's 24 columns.
func TestDashboard(t *testing.T) {
	d := readDashboard(t)
	if d.Title == "" || d.UID == "" {
		t.Errorf("dashboard title %q, uid %q: both are needed", d.Title, d.UID)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d, want at least 36", d.SchemaVersion)
	}
	wantDS := "${" + dsVariable + "}"
	hasVar := false
	for _, v := range d.Templating.List {
		switch v.Type {
		case "datasource":
			var q string
			if v.Name == dsVariable && json.Unmarshal(v.Query, &q) == nil && q == "prometheus" {
				hasVar = true
			}
		case "query":
			if v.Datasource == nil || v.Datasource.UID != wantDS {
				t.Errorf("variable %s does not query the %s datasource", v.Name, wantDS)
			}
		}
	}
	if !hasVar {
		t.Errorf("templating has no datasource variable %s of type prometheus", dsVariable)
	}
	panels := d.allPanels()
	if len(panels) == 0 {
		t.Fatal("the dashboard has no panels")
	}
	known := []string{"stat", "state-timeline", "timeseries", "table", "gauge", "bargauge", "status-history", "text"}
	ids := map[int]string{}
	for _, p := range panels {
		name := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.Title == "" {
			t.Errorf("%s has no title", name)
		}
		if prev, ok := ids[p.ID]; ok || p.ID == 0 {
			t.Errorf("%s: id %d is missing or already used by %q", name, p.ID, prev)
		}
		ids[p.ID] = p.Title
		if !slices.Contains(known, p.Type) {
			t.Errorf("%s has type %q, want one of %v", name, p.Type, known)
		}
		if g := p.GridPos; g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v is outside Grafana's 24 columns", name, g)
		}
		if p.Datasource == nil || p.Datasource.UID != wantDS || p.Datasource.Type != "prometheus" {
			t.Errorf("%s: datasource %+v, want {prometheus %s}", name, p.Datasource, wantDS)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s has no targets", name)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("%s: refId %q is empty or repeated", name, tg.RefID)
			}
			refs[tg.RefID] = true
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s target %s has no expr", name, tg.RefID)
			}
			if tg.Datasource != nil && tg.Datasource.UID != wantDS {
				t.Errorf("%s target %s: datasource %+v, want %s", name, tg.RefID, tg.Datasource, wantDS)
			}
		}
	}
}

// metric is one metric Lifeboat exports, as its source defines it.
type metric struct {
	kind   string // desc, counter, gauge, histogram, summary
	labels []string
	where  string
}

// exportedMetrics reads the metric definitions from the Go sources of the
// packages that export them: prometheus.NewDesc("name", help, labels, ...)
// and prometheus.New*(prometheus.*Opts{Name: "name"}, labels). Renaming a
// metric there changes what this returns.
func exportedMetrics(t *testing.T) map[string]metric {
	t.Helper()
	out := map[string]metric{}
	for _, dir := range metricPackages {
		n := len(out)
		for _, f := range parseDir(t, dir) {
			ast.Inspect(f.file, func(node ast.Node) bool {
				call, ok := node.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				pos := f.fset.Position(call.Pos()).String()
				switch fn := sel.Sel.Name; {
				case fn == "NewDesc" && len(call.Args) >= 3:
					if name, ok := stringLit(call.Args[0]); ok && strings.HasPrefix(name, "lifeboat_") {
						out[name] = metric{kind: "desc", labels: stringList(call.Args[2]), where: pos}
					}
				case strings.HasPrefix(fn, "New") && len(call.Args) >= 1:
					opts, ok := call.Args[0].(*ast.CompositeLit)
					if !ok {
						return true
					}
					typ, ok := opts.Type.(*ast.SelectorExpr)
					if !ok || !strings.HasSuffix(typ.Sel.Name, "Opts") {
						return true
					}
					for _, e := range opts.Elts {
						kv, ok := e.(*ast.KeyValueExpr)
						if !ok {
							continue
						}
						if k, ok := kv.Key.(*ast.Ident); !ok || k.Name != "Name" {
							continue
						}
						name, ok := stringLit(kv.Value)
						if !ok || !strings.HasPrefix(name, "lifeboat_") {
							continue
						}
						var labels []string
						if len(call.Args) >= 2 {
							labels = stringList(call.Args[1])
						}
						kind := strings.ToLower(strings.TrimSuffix(typ.Sel.Name, "Opts"))
						out[name] = metric{kind: kind, labels: labels, where: pos}
					}
				}
				return true
			})
		}
		if len(out) == n {
			t.Fatalf("found no lifeboat_ metric definitions in %s: has the code moved?", dir)
		}
	}
	return out
}

type goFile struct {
	fset *token.FileSet
	file *ast.File
}

// parseDir parses a package's non-test Go files.
func parseDir(t *testing.T, dir string) []goFile {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var out []goFile
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, goFile{fset, f})
	}
	if len(out) == 0 {
		t.Fatalf("no Go sources in %s", dir)
	}
	return out
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

func stringList(e ast.Expr) []string {
	cl, ok := e.(*ast.CompositeLit)
	if !ok {
		return nil
	}
	var out []string
	for _, el := range cl.Elts {
		if s, ok := stringLit(el); ok {
			out = append(out, s)
		}
	}
	return out
}

// series is a series name as queries may spell it, with its labels.
type series struct {
	base   string
	labels []string
}

// seriesNames expands the exported metrics into the series names Prometheus
// stores: a histogram's _bucket (with le), _sum and _count, a summary's
// _sum and _count. Every series also has the job and instance labels the
// scrape adds.
func seriesNames(ms map[string]metric) map[string]series {
	out := map[string]series{}
	scrape := []string{"job", "instance"}
	for name, m := range ms {
		labels := append(slices.Clone(m.labels), scrape...)
		switch m.kind {
		case "histogram":
			out[name+"_bucket"] = series{name, append(slices.Clone(labels), "le")}
			out[name+"_sum"] = series{name, labels}
			out[name+"_count"] = series{name, labels}
			out[name] = series{name, labels} // in comments and help
		case "summary":
			out[name] = series{name, append(slices.Clone(labels), "quantile")}
			out[name+"_sum"] = series{name, labels}
			out[name+"_count"] = series{name, labels}
		default:
			out[name] = series{name, labels}
		}
	}
	return out
}

var (
	metricName = regexp.MustCompile(`\blifeboat_[a-z0-9_]+`)
	selector   = regexp.MustCompile(`\b(lifeboat_[a-z0-9_]+)\s*\{([^{}]*)\}`)
	matcher    = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
)

// TestMetricsExist checks that every lifeboat_ metric the dashboard, the
// rules and their tests name is one Lifeboat exports, and that label
// matchers on them use the metric's labels and, for state, status and
// result, values the code defines.
func TestMetricsExist(t *testing.T) {
	exported := exportedMetrics(t)
	names := seriesNames(exported)
	var defined []string
	for n, m := range exported {
		defined = append(defined, fmt.Sprintf("%s%v (%s)", n, m.labels, m.where))
	}
	sort.Strings(defined)
	t.Logf("metrics defined in %v:\n  %s", metricPackages, strings.Join(defined, "\n  "))

	values := stringLiterals(t, valuePackages)
	used := map[string]bool{}
	for _, file := range []string{alertsFile, alertTestsFile, configFile, dashboardFile} {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		// Names anywhere, comments included: a stale name misleads there too.
		unknown := map[string]int{}
		for _, n := range metricName.FindAllString(string(raw), -1) {
			s, ok := names[n]
			if !ok {
				if unknown[n]++; unknown[n] == 1 {
					t.Errorf("%s uses %s, which Lifeboat does not export (see %v)", file, n, metricPackages)
				}
				continue
			}
			if file == dashboardFile {
				used[s.base] = true
			}
		}
		// Selectors in the decoded strings (JSON escapes quotes).
		for _, text := range decodedStrings(t, file, raw) {
			for _, sm := range selector.FindAllStringSubmatch(text, -1) {
				s, ok := names[sm[1]]
				if !ok {
					continue // reported above
				}
				for _, mm := range matcher.FindAllStringSubmatch(sm[2], -1) {
					label, op, value := mm[1], mm[2], mm[3]
					if !slices.Contains(s.labels, label) {
						t.Errorf("%s: %s has no label %q (labels: %v)", file, sm[1], label, s.labels)
						continue
					}
					if slices.Contains(enumLabels, label) && (op == "=" || op == "!=") && !values[value] {
						t.Errorf("%s: %s{%s%s%q}: no string %q in %v", file, sm[1], label, op, value, value, valuePackages)
					}
				}
			}
		}
	}
	var unused []string
	for n := range exported {
		if !used[n] {
			unused = append(unused, n)
		}
	}
	sort.Strings(unused)
	if len(unused) > 0 {
		t.Logf("exported metrics the dashboard does not show: %v", unused)
	}
}

// decodedStrings returns a file's string values: every JSON string, or
// every YAML scalar.
func decodedStrings(t *testing.T, file string, raw []byte) []string {
	t.Helper()
	var out []string
	if strings.HasSuffix(file, ".json") {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		var walk func(any)
		walk = func(v any) {
			switch v := v.(type) {
			case string:
				out = append(out, v)
			case []any:
				for _, e := range v {
					walk(e)
				}
			case map[string]any:
				for _, e := range v {
					walk(e)
				}
			}
		}
		walk(v)
		return out
	}
	var n yaml.Node
	if err := yaml.Unmarshal(raw, &n); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var walk func(*yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.ScalarNode {
			out = append(out, n.Value)
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&n)
	return out
}

// stringLiterals returns every string literal in the packages' non-test
// sources.
func stringLiterals(t *testing.T, dirs []string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, dir := range dirs {
		for _, f := range parseDir(t, dir) {
			ast.Inspect(f.file, func(node ast.Node) bool {
				if s, ok := stringLit(exprOf(node)); ok {
					out[s] = true
				}
				return true
			})
		}
	}
	return out
}

func exprOf(n ast.Node) ast.Expr {
	if e, ok := n.(ast.Expr); ok {
		return e
	}
	return nil
}
