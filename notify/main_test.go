package notify

import (
	"testing"

	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

// TestMain fails the package when the tests leave a goroutine behind: a
// channel's worker, an HTTP connection, the follower's loop.
func TestMain(m *testing.M) { testenv.MainWithLeakCheck(m) }
