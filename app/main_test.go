package app

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's test run when goroutines are still running
// after every test has ended and its server has been shut down.
//
// The two ignored goroutines belong to fasthttp and sleep in time.Sleep, so
// they are matched anywhere in the stack rather than by the top function.
// A server left running would still be reported: its accept loop and cron
// goroutine are not ignored.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The idle-worker cleaner of a stopped worker pool checks for the
		// stop only after its current sleep of up to 10 s, then returns.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		// The Date header updater is started once per process by the
		// first response and is never stopped, so it does not accumulate.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
	)
}
