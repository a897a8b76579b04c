package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary documents to Parse and Validate. Neither may
// panic; every error must be a located FieldError wrapping a sentinel; and a
// configuration that validates must print as YAML that parses and validates
// again.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../examples/*.yaml")
	for _, p := range files {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(string(data))
		}
	}
	f.Add(base)
	f.Add(base + "policy:\n  rpo: 1m\n  rpo: [x]\n")
	f.Add("a: &x {b: *x}\n")
	f.Add("cluster: ${A:-b}\n")
	lookup := WithLookupEnv(func(k string) (string, bool) {
		if k == "DB_PASSWORD" || k == "OPENAI_API_KEY" {
			return "fuzz-secret", true
		}
		return "", false
	})
	sentinels := []error{ErrSyntax, ErrUnknownKey, ErrInvalid, ErrMissing, ErrEnv}
	f.Fuzz(func(t *testing.T, doc string) {
		cfg, err := Parse(strings.NewReader(doc), WithFilename("f.yaml"), lookup)
		if err == nil {
			err = cfg.Validate()
		}
		if err != nil {
			es, ok := AsErrors(err)
			if !ok || len(es) == 0 {
				t.Fatalf("error is not a list of FieldErrors: %T %v", err, err)
			}
			for _, e := range es {
				found := false
				for _, s := range sentinels {
					found = found || errors.Is(e, s)
				}
				if !found || e.Msg == "" {
					t.Fatalf("error without a sentinel or message: %#v", e)
				}
			}
			return
		}
		var b strings.Builder
		if err := cfg.Print(&b); err != nil {
			t.Fatalf("print: %v", err)
		}
		if strings.Contains(b.String(), "fuzz-secret") {
			t.Fatalf("print shows a secret:\n%s", b.String())
		}
		again, err := Parse(strings.NewReader(b.String()), lookup)
		if err == nil {
			err = again.Validate()
		}
		if err != nil {
			t.Fatalf("printed config is not valid again: %v\n--- input\n%s\n--- printed\n%s", err, doc, b.String())
		}
	})
}
