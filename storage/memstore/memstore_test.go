package memstore_test

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/livebolt/livebolt/storage"
	"github.com/livebolt/livebolt/storage/memstore"
	"github.com/livebolt/livebolt/storage/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storage.Store {
		s := memstore.New()
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestStatsReportsMemory(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	if _, err := s.LoadOrCreateSecret(func() ([]byte, error) { return []byte("key"), nil }); err != nil {
		t.Fatal(err)
	}
	sess := storetest.BenchSession("s1", time.Unix(1000, 0))
	sess.FailedAttempts = 1
	if err := s.CreateSession(sess); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Path != "memory" || st.FileSizeBytes != 0 {
		t.Errorf("Path, FileSizeBytes = %q, %d, want memory, 0", st.Path, st.FileSizeBytes)
	}
	want := map[string]int{"sessions": 1, "by_activity": 1, "by_owner": 1, "failed": 1, "clients": 1, "meta": 1}
	if len(st.Buckets) != len(want) {
		t.Errorf("Stats has %d buckets, want %d: %v", len(st.Buckets), len(want), st.Buckets)
	}
	for name, n := range want {
		if st.Buckets[name].Keys != n {
			t.Errorf("Buckets[%s].Keys = %d, want %d", name, st.Buckets[name].Keys, n)
		}
	}
}

// TestNilAndEmptySlices checks that nil and empty byte slices come back as
// they were stored, through CreateSession and through an UpdateSession that
// reuses the stored slices.
func TestNilAndEmptySlices(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	sess := storetest.BenchSession("s1", time.Unix(1000, 0))
	sess.Props, sess.MAC = nil, []byte{}
	if err := s.CreateSession(sess); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSession("s1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Props != nil || got.MAC == nil || len(got.MAC) != 0 {
		t.Errorf("after create Props = %#v, MAC = %#v, want nil and empty", got.Props, got.MAC)
	}
	sess.Props, sess.State, sess.MAC = json.RawMessage(`{}`), nil, []byte{}
	if err := s.UpdateSession(sess); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetSession("s1")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Props) != `{}` || got.State != nil || got.MAC == nil || len(got.MAC) != 0 {
		t.Errorf("after update Props = %#v, State = %#v, MAC = %#v, want {}, nil and empty", got.Props, got.State, got.MAC)
	}
}

// TestMonotonicClockDropped checks that stored times carry no monotonic
// clock reading, as after boltdb's JSON round trip.
func TestMonotonicClockDropped(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	now := time.Now()
	if err := s.CreateSession(storetest.BenchSession("s1", now)); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSession("s1")
	if err != nil {
		t.Fatal(err)
	}
	if got.LastActivity != now.Round(0) || got.CreatedAt != now.Add(-time.Hour).Round(0) {
		t.Errorf("times = %v, %v, want %v without a monotonic reading", got.CreatedAt, got.LastActivity, now.Round(0))
	}
}

// BenchmarkUpdateSession measures UpdateSession of one session with a new
// version and activity each time, from one goroutine (serial) and from
// GOMAXPROCS goroutines with a session each (parallel). Compare with the
// boltdb benchmark of the same name.
func BenchmarkUpdateSession(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		s := memstore.New()
		defer s.Close()
		storetest.BenchUpdateSerial(b, s)
	})
	b.Run("parallel", func(b *testing.B) {
		s := memstore.New()
		defer s.Close()
		// Other sessions in the heap, so that a changed activity moves an entry.
		start := time.Unix(1_600_000_000, 0)
		for i := range 1000 {
			if err := s.CreateSession(storetest.BenchSession("other-"+strconv.Itoa(i), start.Add(time.Duration(i)*time.Second))); err != nil {
				b.Fatal(err)
			}
		}
		storetest.BenchUpdateParallel(b, s)
	})
}
