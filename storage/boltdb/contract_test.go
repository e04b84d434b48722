package boltdb_test

// The storage.Store contract suite and the UpdateSession benchmark, on real
// database files in t.TempDir(). They use only the exported API, so they are
// in package boltdb_test.

import (
	"path/filepath"
	"testing"

	"github.com/livebolt/livebolt/storage"
	"github.com/livebolt/livebolt/storage/boltdb"
	"github.com/livebolt/livebolt/storage/storetest"
)

// openTemp opens a store on a new file in tb.TempDir() and closes it on
// cleanup.
func openTemp(tb testing.TB, opts *boltdb.Options) *boltdb.Store {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "live.db")
	s, err := boltdb.Open(path, opts)
	if err != nil {
		tb.Fatalf("Open(%s): %v", path, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close(%s): %v", path, err)
		}
	})
	return s
}

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storage.Store {
		// Without fsync: the suite checks behavior, not durability.
		return openTemp(t, &boltdb.Options{NoSync: true})
	})
}

// BenchmarkUpdateSession measures UpdateSession of one session with a new
// version and activity each time. It runs from one goroutine (serial) and
// from GOMAXPROCS goroutines with a session each (parallel). The durable
// store fsyncs every commit and the nosync one is opened with NoSync.
// Compare with the memstore benchmark of the same name.
func BenchmarkUpdateSession(b *testing.B) {
	for _, c := range []struct {
		name string
		opts *boltdb.Options
	}{
		{"durable", nil},
		{"nosync", &boltdb.Options{NoSync: true}},
	} {
		b.Run(c.name+"/serial", func(b *testing.B) { storetest.BenchUpdateSerial(b, openTemp(b, c.opts)) })
		b.Run(c.name+"/parallel", func(b *testing.B) { storetest.BenchUpdateParallel(b, openTemp(b, c.opts)) })
	}
}
