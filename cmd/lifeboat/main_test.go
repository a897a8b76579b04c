package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// run runs the CLI in-process with only the given environment variables.
func run(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	a := newApp(&out, &errb)
	a.lookupEnv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	err := a.run(context.Background(), args)
	code = exitCode(err, &errb)
	return out.String(), errb.String(), code
}

var exampleEnv = map[string]string{"DB_PASSWORD": "db-secret-pw", "OPENAI_API_KEY": "sk-secret-key"}

func TestValidateExamples(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	if len(files) < 4 {
		t.Fatalf("found %d examples, want at least 4", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, errs, code := run(t, exampleEnv, "validate", "-c", f)
			if code != 0 {
				t.Fatalf("exit %d\n%s", code, errs)
			}
			if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || !strings.Contains(out, ": ok: ") {
				t.Errorf("want a one-line summary, got %q", out)
			}
			out, errs, code = run(t, exampleEnv, "config", "print", "-c", f)
			if code != 0 {
				t.Fatalf("config print: exit %d\n%s", code, errs)
			}
			for _, s := range exampleEnv {
				if strings.Contains(out, s) {
					t.Errorf("config print shows secret %q", s)
				}
			}
		})
	}
}

func TestValidateReportsEveryMistake(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
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
      westus3: http://127.0.0.1:3
    health:
      timeout: 5s
policy:
  rpo: often
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errs, code := run(t, nil, "validate", "-c", path)
	if code != 2 {
		t.Fatalf("exit %d, want 2\nstdout %s\nstderr %s", code, out, errs)
	}
	for _, want := range []string{
		path + `:10: services[0].endpoints: no endpoint for region "west"`,
		path + `:12: services[0].endpoints.westus3: region "westus3" is not declared`,
		path + `:14: services[0].health.timeout: 5s must be above 0 and at most the interval (1s)`,
		path + `:16: policy.rpo: "often" is not a duration`,
		"4 problem(s) found",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"validate", "-c", "/nonexistent/lifeboat.yaml"}, "config file /nonexistent/lifeboat.yaml does not exist"},
		{[]string{"validate", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"validate", "extra"}, `unexpected argument "extra"`},
		{[]string{"nosuchcommand"}, `unknown command "nosuchcommand"`},
	}
	for _, c := range cases {
		_, errs, code := run(t, nil, c.args...)
		if code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, errs, c.want)
		}
	}
}

func TestVersion(t *testing.T) {
	out, _, code := run(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "lifeboat ") {
		t.Errorf("version: %d %q", code, out)
	}
}

// Every command explains itself with an example.
func TestHelpHasExamples(t *testing.T) {
	a := newApp(&bytes.Buffer{}, &bytes.Buffer{})
	root := a.rootCommand()
	for _, c := range append(root.Commands(), root) {
		cmds := append(c.Commands(), c)
		for _, cmd := range cmds {
			if cmd.Name() == "help" || cmd.Name() == "completion" || cmd.HasSubCommands() {
				continue
			}
			if cmd.Example == "" || cmd.Short == "" {
				t.Errorf("%s has no example or short description", cmd.CommandPath())
			}
			args := append(strings.Fields(cmd.CommandPath())[1:], "--help")
			out, _, code := run(t, nil, args...)
			if code != 0 || !strings.Contains(out, "Examples:") {
				t.Errorf("%v: exit %d, help lacks examples:\n%s", args, code, out)
			}
		}
	}
}
