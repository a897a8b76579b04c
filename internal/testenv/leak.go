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
			if err = goleak.Find(libraryTimers...); err == nil {
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

// libraryTimers are goroutines a library keeps after Close and ends by
// itself, holding nothing: fasthttp's idle-connection cleaner sleeps out
// its period (the front door's MaxIdleConnDuration) once its connections
// are closed, and its server's worker-pool cleaner sleeps out its own
// (MaxIdleWorkerDuration), then each returns; its Date header clock is
// one goroutine per process, started by the first server.
var libraryTimers = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
}
