package boltdb

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/livebolt/livebolt/storage"
	bolt "go.etcd.io/bbolt"
)

// maxGroup bounds the writes that share one transaction, so one commit
// never holds the write lock for long.
const maxGroup = 512

// writeRequest is one write waiting for the committer.
type writeRequest struct {
	fn   func(*bolt.Tx) error
	done chan error
}

// committer gives concurrent writers group commit: a single goroutine takes
// every write that is waiting, runs them in one transaction and commits it
// with one fsync. Unlike bbolt's DB.Batch it never waits for more writes to
// arrive, so a lone writer commits at once and concurrent writers share the
// fsync of whichever commit they queued behind.
type committer struct {
	db       *bolt.DB
	onCommit func(writes int, elapsed time.Duration) // Options.OnCommit, may be nil
	requests chan *writeRequest
	stopped  chan struct{}

	mu     sync.RWMutex // held for reading while sending to requests
	closed bool

	groups atomic.Int64 // transactions committed, for tests
}

func newCommitter(db *bolt.DB, onCommit func(int, time.Duration)) *committer {
	c := &committer{db: db, onCommit: onCommit, requests: make(chan *writeRequest, maxGroup), stopped: make(chan struct{})}
	go c.run()
	return c
}

// write runs fn in a write transaction shared with other waiting writes and
// returns when that transaction is committed. fn may run twice: when another
// write of the group fails, the group is rolled back and each write is
// retried alone, so fn must not keep state across runs.
func (c *committer) write(fn func(*bolt.Tx) error) error {
	req := &writeRequest{fn: fn, done: make(chan error, 1)}
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return storage.ErrClosed
	}
	c.requests <- req
	c.mu.RUnlock()
	return <-req.done
}

func (c *committer) run() {
	defer close(c.stopped)
	for req := range c.requests {
		group := []*writeRequest{req}
	gather:
		for len(group) < maxGroup {
			select {
			case next, ok := <-c.requests:
				if !ok {
					break gather
				}
				group = append(group, next)
			default:
				break gather
			}
		}
		c.commit(group)
	}
}

func (c *committer) commit(group []*writeRequest) {
	c.groups.Add(1)
	err := c.update(len(group), func(tx *bolt.Tx) error {
		for _, req := range group {
			if err := req.fn(tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		for _, req := range group {
			req.done <- nil
		}
		return
	}
	if len(group) == 1 {
		group[0].done <- err
		return
	}
	// One write failed and rolled back the others: retry each alone, so
	// each gets its own result.
	for _, req := range group {
		req.done <- c.update(1, req.fn)
	}
}

// update runs fn in one write transaction and, when it commits, reports the
// time it took and the number of writes it carried to onCommit.
func (c *committer) update(writes int, fn func(*bolt.Tx) error) error {
	if c.onCommit == nil {
		return c.db.Update(fn)
	}
	start := time.Now()
	err := c.db.Update(fn)
	if err == nil {
		c.onCommit(writes, time.Since(start))
	}
	return err
}

// close stops taking writes and waits until every queued one is committed.
func (c *committer) close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.requests)
	}
	c.mu.Unlock()
	<-c.stopped
}
