package postgres

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: a
// monitor's loop, a connection's watcher, a test's listener.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
