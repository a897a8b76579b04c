package testenv

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// MainWithLeakCheck runs a package's tests and then fails the package if
// they left goroutines behind. Leaks are looked for during a few seconds
// before they count: client libraries (go-redis's redial, pgx's watchers)
// notice Close with a delay.
func MainWithLeakCheck(m *testing.M) {
	code := m.Run()
	if code == 0 {
		var err error
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
			if err = goleak.Find(); err == nil {
				break
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines left after the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
