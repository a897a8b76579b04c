// Package lifecycle holds what every Open/Close component shares: waiting
// for its goroutines within the caller's deadline.
package lifecycle

import (
	"context"
	"sync"
)

// Wait waits for wg, or until ctx is done, whichever comes first; it
// returns ctx's error in the second case. The goroutines it waited for are
// not stopped by a timeout: Close cancels them before it waits.
func Wait(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
