package redis

import (
	"testing"

	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

// TestMain fails the package when the tests leave a goroutine behind
// (go-redis's redial goroutine notices Close with a delay; the check
// waits for it).
func TestMain(m *testing.M) { testenv.MainWithLeakCheck(m) }
