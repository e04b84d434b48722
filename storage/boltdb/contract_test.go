package boltdb_test

// The storage.Store contract suite and the UpdateSession benchmark, on real
// database files in t.TempDir(). They use only the exported API, so they are
// in package boltdb_test.

import (
	"encoding/json"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

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

func benchSession(id string, activity time.Time) *storage.Session {
	return &storage.Session{
		ID:           id,
		Component:    "counter",
		Owner:        "client-1",
		Props:        json.RawMessage(`{"title":"hello","start":3}`),
		State:        json.RawMessage(`{"count":3}`),
		Fingerprint:  "fp-" + id,
		Version:      1,
		CreatedAt:    activity.Add(-time.Hour),
		LastActivity: activity,
		MAC:          make([]byte, 32),
	}
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
		b.Run(c.name+"/serial", func(b *testing.B) { benchUpdateSerial(b, c.opts) })
		b.Run(c.name+"/parallel", func(b *testing.B) { benchUpdateParallel(b, c.opts) })
	}
}

var benchStart = time.Unix(1_700_000_000, 0)

func benchUpdateSerial(b *testing.B, opts *boltdb.Options) {
	s := openTemp(b, opts)
	sess := benchSession("s1", benchStart)
	if err := s.CreateSession(sess); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n++
		sess.Version = uint64(n)
		sess.LastActivity = benchStart.Add(time.Duration(n))
		if err := s.UpdateSession(sess); err != nil {
			b.Fatal(err)
		}
	}
	got, err := s.GetSession("s1")
	if err != nil {
		b.Fatal(err)
	}
	if got.Version != uint64(n) || !got.LastActivity.Equal(sess.LastActivity) {
		b.Fatalf("after %d updates Version = %d, LastActivity = %v", n, got.Version, got.LastActivity)
	}
}

func benchUpdateParallel(b *testing.B, opts *boltdb.Options) {
	s := openTemp(b, opts)
	var next, updates atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		id := "p-" + strconv.Itoa(int(next.Add(1)))
		sess := benchSession(id, benchStart)
		if err := s.CreateSession(sess); err != nil {
			b.Error(err)
			return
		}
		for pb.Next() {
			sess.Version++
			sess.LastActivity = sess.LastActivity.Add(time.Second)
			if err := s.UpdateSession(sess); err != nil {
				b.Error(err)
				return
			}
		}
		updates.Add(int64(sess.Version - 1))
		got, err := s.GetSession(id)
		if err != nil {
			b.Error(err)
			return
		}
		if got.Version != sess.Version {
			b.Errorf("%s: Version = %d, want %d", id, got.Version, sess.Version)
		}
	})
	if updates.Load() != int64(b.N) {
		b.Errorf("%d updates stored, want %d", updates.Load(), b.N)
	}
}
