package main

import (
	"os"
	"testing"

	"github.com/lifeboat-dr/lifeboat/internal/testenv"
)

func TestMain(m *testing.M) {
	// Cluster tests start this binary as lifeboat itself.
	if os.Getenv(runMainEnv) == "1" {
		main()
		return
	}
	testenv.MainWithLeakCheck(m)
}
