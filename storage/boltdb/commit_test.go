package boltdb

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/livebolt/livebolt/storage"
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
