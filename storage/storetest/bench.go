package storetest

import (
	"encoding/json"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livebolt/livebolt/storage"
)

// benchStart is the activity of the first benchmark write.
var benchStart = time.Unix(1_700_000_000, 0)

// BenchSession returns a session of typical size for benchmarks.
func BenchSession(id string, activity time.Time) *storage.Session {
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

// BenchUpdateSerial measures UpdateSession of one session, with a new
// version and activity each time, from one goroutine, and checks the last
// write afterwards.
func BenchUpdateSerial(b *testing.B, s storage.Store) {
	sess := BenchSession("s1", benchStart)
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

// BenchUpdateParallel measures UpdateSession from GOMAXPROCS goroutines with
// a session each, and checks that every update was stored.
func BenchUpdateParallel(b *testing.B, s storage.Store) {
	var next, updates atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		id := "p-" + strconv.Itoa(int(next.Add(1)))
		sess := BenchSession(id, benchStart)
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
