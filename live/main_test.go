package live

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's test run when goroutines are still running
// after every test has ended. Nothing is ignored: the live package starts
// no goroutines, and each store that a test opens ends its committer
// goroutine on Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
