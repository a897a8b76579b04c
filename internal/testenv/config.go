package testenv

import (
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/config"
)

// Config parses and validates a topology written by a test, failing the
// test with every problem if it is not valid.
func Config(t testing.TB, doc string) *config.Config {
	t.Helper()
	cfg, err := config.Parse(strings.NewReader(doc))
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		t.Fatalf("test topology is not valid:\n%v\n---\n%s", err, doc)
	}
	return cfg
}
