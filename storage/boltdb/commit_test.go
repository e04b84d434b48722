package boltdb

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/livebolt/livebolt/storage"
	bolt "go.etcd.io/bbolt"
)

func TestGroupCommitSharesTransactions(t *testing.T) {
	// With fsync on, so that concurrent writers really queue behind a commit.
	s, err := Open(filepath.Join(t.TempDir(), "group.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const writers, rounds = 32, 20
	for i := 0; i < writers; i++ {
		mustCreate(t, s, newSession(fmt.Sprintf("s%02d", i), "owner", time.Unix(1000, 0)))
	}
	before := s.commits.groups.Load()

	var wg sync.WaitGroup
	errs := make(chan error, writers*rounds)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sess, err := s.GetSession(fmt.Sprintf("s%02d", i))
			if err != nil {
				errs <- err
				return
			}
			for r := 0; r < rounds; r++ {
				sess.Version++
				sess.LastActivity = sess.LastActivity.Add(time.Second)
				errs <- s.UpdateSession(sess)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	groups := s.commits.groups.Load() - before
	t.Logf("%d updates in %d commits", writers*rounds, groups)
	if groups >= writers*rounds {
		t.Errorf("%d updates took %d commits; concurrent writes should share them", writers*rounds, groups)
	}
	for i := 0; i < writers; i++ {
		sess, err := s.GetSession(fmt.Sprintf("s%02d", i))
		if err != nil {
			t.Fatal(err)
		}
		if sess.Version != 7+rounds {
			t.Errorf("session %d version %d, want %d", i, sess.Version, 7+rounds)
		}
	}
}

func TestGroupCommitIsolatesFailures(t *testing.T) {
	s := openTest(t)
	mustCreate(t, s, newSession("taken", "owner", time.Unix(1000, 0)))
	var wg sync.WaitGroup
	results := make([]error, 40)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := fmt.Sprintf("new%02d", i)
			if i%4 == 0 {
				id = "taken" // fails with ErrExists
			}
			results[i] = s.CreateSession(newSession(id, "owner", time.Unix(1000, 0)))
		}(i)
	}
	wg.Wait()
	for i, err := range results {
		if i%4 == 0 {
			if !errors.Is(err, storage.ErrExists) {
				t.Errorf("create %d of a taken id: %v, want ErrExists", i, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("create %d failed alongside a failing write: %v", i, err)
		}
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Sessions != 31 {
		t.Errorf("sessions = %d, want 31", st.Sessions)
	}
}

func TestWriteAfterCloseReturnsErrClosed(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "closed.db"), &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSession(newSession("x", "o", time.Unix(1, 0))); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("create after close: %v, want ErrClosed", err)
	}
}

// commitLog records what OnCommit reports.
type commitLog struct {
	mu      sync.Mutex
	writes  []int
	elapsed []time.Duration
}

func (l *commitLog) onCommit(writes int, elapsed time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes = append(l.writes, writes)
	l.elapsed = append(l.elapsed, elapsed)
}

func (l *commitLog) totalWrites() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	total := 0
	for _, n := range l.writes {
		total += n
	}
	return total
}

// openObserved opens a store in t.TempDir, with fsync on, that reports its
// commits to log.
func openObserved(t *testing.T, log *commitLog) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "observed.db"), &Options{OnCommit: log.onCommit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestOnCommitReportsEachCommit(t *testing.T) {
	log := &commitLog{}
	s := openObserved(t, log)

	sess := newSession("a", "owner", time.Unix(1000, 0))
	mustCreate(t, s, sess)
	sess.Version++
	if err := s.UpdateSession(sess); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSession("a"); err != nil {
		t.Fatal(err)
	}
	// A rolled-back write commits nothing, and sweeps are not reported.
	mustCreate(t, s, newSession("b", "owner", time.Unix(1000, 0)))
	if err := s.CreateSession(newSession("b", "owner", time.Unix(1000, 0))); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("create of a taken id: %v, want ErrExists", err)
	}
	if _, err := s.SweepExpired(time.Unix(2000, 0), func(string) bool { return false }); err != nil {
		t.Fatal(err)
	}

	if want := []int{1, 1, 1, 1}; !slices.Equal(log.writes, want) {
		t.Errorf("writes per commit %v, want %v", log.writes, want)
	}
	for i, d := range log.elapsed {
		if d <= 0 {
			t.Errorf("commit %d: elapsed %v, want above 0", i, d)
		}
	}
}

func TestOnCommitCountsGroupedWrites(t *testing.T) {
	log := &commitLog{}
	s := openObserved(t, log)

	const writers = 40
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// Ten writers share one id, so nine fail with ErrExists and
			// make their groups retry write by write.
			id := fmt.Sprintf("s%02d", i)
			if i%4 == 0 {
				id = "s00"
			}
			errs <- s.CreateSession(newSession(id, "owner", time.Unix(1000, 0)))
		}(i)
	}
	wg.Wait()
	close(errs)
	created := 0
	for err := range errs {
		if err == nil {
			created++
		}
	}
	t.Logf("%d writes in %d commits", created, len(log.writes))
	if got := log.totalWrites(); got != created {
		t.Errorf("OnCommit reported %d writes, %d sessions were created", got, created)
	}
}

// TestGroupWithTwoWritesOfOneSession queues several writes of one session
// behind a held write lock, so that they share one commit group, and
// checks that every bucket's stored key count still equals its keys.
func TestGroupWithTwoWritesOfOneSession(t *testing.T) {
	s := openTest(t)
	at := time.Unix(1000, 0).UTC()
	mustCreate(t, s, newSession("warm", "w", at))

	// runGroup holds the write lock while the writes queue up: the first
	// becomes a group of its own, the rest share the next one.
	runGroup := func(writes ...func() error) {
		t.Helper()
		release := make(chan struct{})
		held := make(chan struct{})
		go func() {
			_ = s.DB().Update(func(*bolt.Tx) error {
				close(held)
				<-release
				return nil
			})
		}()
		<-held
		errs := make(chan error, len(writes)+1)
		go func() { errs <- s.UpdateSession(newSession("warm", "w", at)) }()
		time.Sleep(50 * time.Millisecond) // the committer now waits for the lock with that group
		for _, w := range writes {
			go func() { errs <- w() }()
			time.Sleep(20 * time.Millisecond) // queued in this order, behind it
		}
		close(release)
		for range len(writes) + 1 {
			if err := <-errs; err != nil {
				t.Fatalf("write in the group: %v", err)
			}
		}
	}
	checkCounts := func(step string) {
		t.Helper()
		err := s.DB().View(func(tx *bolt.Tx) error {
			for _, name := range dataBuckets() {
				if got, want := readCount(tx, name), tx.Bucket(name).Stats().KeyN; got != want {
					t.Errorf("%s: %s count %d, keys %d", step, name, got, want)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	runGroup(
		func() error { return s.CreateSession(newSession("a", "o", at)) },
		func() error { return s.UpdateSession(newSession("a", "o", at)) },
	)
	checkCounts("create and update at the same activity")
	runGroup(
		func() error { return s.UpdateSession(newSession("a", "o", at.Add(time.Second))) },
		func() error { return s.UpdateSession(newSession("a", "o", at.Add(2*time.Second))) },
	)
	checkCounts("two updates")
	runGroup(
		func() error { return s.CreateSession(newSession("b", "o", at)) },
		func() error { return s.DeleteSession("b") },
	)
	checkCounts("create and delete")
	var activity int
	_ = s.DB().View(func(tx *bolt.Tx) error {
		activity = tx.Bucket(bucketActivity).Stats().KeyN
		return nil
	})
	if activity != 2 {
		t.Errorf("by_activity has %d keys for the 2 sessions left", activity)
	}
}
