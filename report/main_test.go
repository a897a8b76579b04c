package report

import (
	"testing"

	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

func TestMain(m *testing.M) { testenv.MainWithLeakCheck(m) }
