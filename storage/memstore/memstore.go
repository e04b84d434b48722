// Package memstore implements storage.Store in memory, for tests and
// benchmarks. It keeps nothing across restarts: every session, client record
// and the signing key are lost when the process exits or Close is called.
//
// It follows the observable behavior of the boltdb package: the same errors,
// the same ordering of ClientSessions and the same sweep results. Writes copy
// the caller's byte slices and reads return copies, so no caller shares
// memory with the store. Unlike boltdb, which stores sessions as JSON, it
// keeps Props and State byte for byte as given, without compacting or
// validating them.
//
// The logical tables reported by Stats are:
//
//	sessions     session id -> record
//	by_activity  min-heap of sessions ordered by LastActivity, then id
//	by_owner     owner id -> that owner's sessions
//	failed       sessions with more than 0 failed attempts
//	clients      client ids that own at least one session
//	meta         the signing key, once it is created
//
// by_activity lets the age sweep read only expired sessions and failed lets
// the failed sweep read only failing ones, as in boltdb.
package memstore

import (
	"bytes"
	"cmp"
	"container/heap"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/livebolt/livebolt/storage"
)

// Path is the value of storage.Stats.Path for a memory store.
const Path = "memory"

// entry is one stored session with its position in the activity heap.
type entry struct {
	sess  storage.Session    // owns its Props, State and MAC
	ref   storage.SessionRef // ownership record, written only on create
	nanos int64              // sess.LastActivity.UnixNano(), the heap key
	index int                // position in Store.activity
}

// Store is a storage.Store kept in memory. It is safe for concurrent use.
// One mutex guards all of its maps, so writes are serialized and reads run
// in parallel with each other.
type Store struct {
	mu       sync.RWMutex
	closed   bool
	sessions map[string]*entry
	activity activityHeap
	owners   map[string]map[string]*entry // the client records
	failed   map[string]*entry
	secret   []byte
}

var _ storage.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{
		sessions: map[string]*entry{},
		owners:   map[string]map[string]*entry{},
		failed:   map[string]*entry{},
	}
}

// Close releases the store's memory. Later calls return storage.ErrClosed.
// It is safe to call more than once and always returns nil.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.sessions, s.activity, s.owners, s.failed, s.secret = nil, nil, nil, nil, nil
	return nil
}

// LoadOrCreateSecret implements storage.Store. generate runs while the store
// is locked, so concurrent callers get the same key and generate runs once.
func (s *Store) LoadOrCreateSecret(generate func() ([]byte, error)) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("load secret from %s: %w", Path, storage.ErrClosed)
	}
	if s.secret == nil {
		generated, err := generate()
		if err != nil {
			return nil, fmt.Errorf("load secret from %s: generate secret: %w", Path, err)
		}
		// The copy is never nil, because a nil secret means none is stored.
		s.secret = append([]byte{}, generated...)
	}
	return bytes.Clone(s.secret), nil
}

// CreateSession implements storage.Store.
func (s *Store) CreateSession(sess *storage.Session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("create session %s: %w", sess.ID, storage.ErrClosed)
	}
	if _, ok := s.sessions[sess.ID]; ok {
		return fmt.Errorf("create session %s: %w", sess.ID, storage.ErrExists)
	}
	e := &entry{ref: storage.SessionRef{ID: sess.ID, Component: sess.Component, Fingerprint: sess.Fingerprint}}
	e.set(sess)
	s.sessions[sess.ID] = e
	heap.Push(&s.activity, e)
	owned := s.owners[sess.Owner]
	if owned == nil {
		owned = map[string]*entry{}
		s.owners[sess.Owner] = owned
	}
	owned[sess.ID] = e
	s.indexFailed(e)
	return nil
}

// UpdateSession implements storage.Store. It reuses the stored byte slices
// when they are large enough, so a steady stream of updates does not
// allocate.
func (s *Store) UpdateSession(sess *storage.Session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("update session %s: %w", sess.ID, storage.ErrClosed)
	}
	e := s.sessions[sess.ID]
	if e == nil {
		return fmt.Errorf("update session %s: %w", sess.ID, storage.ErrNotFound)
	}
	// by_owner and clients are keyed by owner and written only on create.
	if e.sess.Owner != sess.Owner {
		return fmt.Errorf("update session %s: owner cannot change to %q", sess.ID, sess.Owner)
	}
	oldNanos := e.nanos
	e.set(sess)
	if e.nanos != oldNanos {
		heap.Fix(&s.activity, e.index)
	}
	s.indexFailed(e)
	return nil
}

// set copies sess into e, reusing e's byte slices.
func (e *entry) set(sess *storage.Session) {
	props, state, mac := e.sess.Props, e.sess.State, e.sess.MAC
	e.sess = *sess
	e.sess.Props = copyInto(props, sess.Props)
	e.sess.State = copyInto(state, sess.State)
	e.sess.MAC = copyInto(mac, sess.MAC)
	// Drop the monotonic clock reading, as a JSON round trip does.
	e.sess.CreatedAt = sess.CreatedAt.Round(0)
	e.sess.LastActivity = sess.LastActivity.Round(0)
	e.nanos = sess.LastActivity.UnixNano()
}

// copyInto copies src into dst's backing array when it fits. A nil src stays
// nil, so that nil and empty slices survive a round trip as they are.
func copyInto[S ~[]byte](dst, src S) S {
	if src == nil {
		return nil
	}
	out := append(dst[:0], src...)
	if out == nil {
		out = S{} // appending nothing to a nil dst returns nil
	}
	return out
}

// indexFailed adds e to the failed index or removes it, by its attempts.
func (s *Store) indexFailed(e *entry) {
	if e.sess.FailedAttempts > 0 {
		s.failed[e.sess.ID] = e
	} else {
		delete(s.failed, e.sess.ID)
	}
}

// GetSession implements storage.Store. The returned session shares no
// memory with the store.
func (s *Store) GetSession(id string) (*storage.Session, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, fmt.Errorf("get session %s: %w", id, storage.ErrClosed)
	}
	e := s.sessions[id]
	if e == nil {
		return nil, fmt.Errorf("get session %s: %w", id, storage.ErrNotFound)
	}
	out := e.sess
	// One allocation holds the three byte slices. Each one's capacity ends
	// at its length, so an append by the caller cannot overwrite the next.
	buf := make([]byte, 0, len(out.Props)+len(out.State)+len(out.MAC))
	out.Props, buf = carve(buf, out.Props)
	out.State, buf = carve(buf, out.State)
	out.MAC, _ = carve(buf, out.MAC)
	return &out, nil
}

// carve copies src to the end of buf and returns the copy, with its capacity
// limited to its length, and the extended buf. A nil src returns nil.
func carve[S ~[]byte](buf []byte, src S) (S, []byte) {
	if src == nil {
		return nil, buf
	}
	start := len(buf)
	buf = append(buf, src...)
	return S(buf[start:len(buf):len(buf)]), buf
}

// DeleteSession implements storage.Store.
func (s *Store) DeleteSession(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("delete session %s: %w", id, storage.ErrClosed)
	}
	if e := s.sessions[id]; e != nil {
		heap.Remove(&s.activity, e.index)
		s.unlink(e)
	}
	return nil
}

// unlink removes e from every index except by_activity, which the caller
// has already removed it from. It reports whether the owner's client record
// was removed because e was the owner's last session.
func (s *Store) unlink(e *entry) (clientRemoved bool) {
	id, owner := e.sess.ID, e.sess.Owner
	delete(s.sessions, id)
	delete(s.failed, id)
	owned := s.owners[owner]
	delete(owned, id)
	if len(owned) == 0 {
		delete(s.owners, owner)
		return true
	}
	return false
}

// ClientSessions implements storage.Store. It returns nil when the client
// owns no session.
func (s *Store) ClientSessions(clientID string) ([]storage.SessionRef, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, fmt.Errorf("list sessions of client %s: %w", clientID, storage.ErrClosed)
	}
	owned := s.owners[clientID]
	if len(owned) == 0 {
		return nil, nil
	}
	refs := make([]storage.SessionRef, 0, len(owned))
	for _, e := range owned {
		refs = append(refs, e.ref)
	}
	slices.SortFunc(refs, func(a, b storage.SessionRef) int { return cmp.Compare(a.ID, b.ID) })
	return refs, nil
}

// SweepExpired implements storage.Store. It takes sessions from the top of
// the activity heap until the top one is at or after cutoff, so it reads
// only expired sessions, oldest first. keep runs while the store is locked
// and must not call the store. Unlike boltdb, which commits every 1000
// deletions, it holds the lock for the whole sweep.
func (s *Store) SweepExpired(cutoff time.Time, keep func(id string) bool) (storage.SweepResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var r storage.SweepResult
	if s.closed {
		return r, fmt.Errorf("sweep sessions inactive since %s: %w", cutoff.UTC().Format(time.RFC3339), storage.ErrClosed)
	}
	end := cutoff.UnixNano()
	var spared []*entry // popped because expired, but kept by keep
	for len(s.activity) > 0 && s.activity[0].nanos < end {
		e := heap.Pop(&s.activity).(*entry)
		if keep != nil && keep(e.sess.ID) {
			spared = append(spared, e)
			continue
		}
		r.Sessions++
		if s.unlink(e) {
			r.Clients++
		}
	}
	for _, e := range spared {
		heap.Push(&s.activity, e)
	}
	return r, nil
}

// SweepFailed implements storage.Store. It reads only the failed index.
func (s *Store) SweepFailed(maxAttempts int) (storage.SweepResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var r storage.SweepResult
	if s.closed {
		return r, fmt.Errorf("sweep sessions with %d or more failed attempts: %w", maxAttempts, storage.ErrClosed)
	}
	for _, e := range s.failed {
		if e.sess.FailedAttempts < maxAttempts {
			continue
		}
		// Deleting map entries while ranging over the map is allowed.
		heap.Remove(&s.activity, e.index)
		r.Sessions++
		if s.unlink(e) {
			r.Clients++
		}
	}
	return r, nil
}

// DeleteAllSessions implements storage.Store. It keeps the signing key.
func (s *Store) DeleteAllSessions() (storage.SweepResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return storage.SweepResult{}, fmt.Errorf("delete all sessions in %s: %w", Path, storage.ErrClosed)
	}
	r := storage.SweepResult{Sessions: len(s.sessions), Clients: len(s.owners)}
	s.sessions = map[string]*entry{}
	s.activity = nil
	s.owners = map[string]map[string]*entry{}
	s.failed = map[string]*entry{}
	return r, nil
}

// Stats implements storage.Store. Path is "memory" and FileSizeBytes is 0.
// NewestActivity scans the activity heap, so Stats takes time in proportion
// to the number of sessions.
func (s *Store) Stats() (storage.Stats, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := storage.Stats{Path: Path}
	if s.closed {
		return st, fmt.Errorf("read stats of %s: %w", Path, storage.ErrClosed)
	}

	meta := 0
	if s.secret != nil {
		meta = 1
	}
	owned := 0
	for _, sessions := range s.owners {
		owned += len(sessions)
	}
	st.Buckets = map[string]storage.BucketStats{
		"sessions":    {Keys: len(s.sessions)},
		"by_activity": {Keys: len(s.activity)},
		"by_owner":    {Keys: owned},
		"failed":      {Keys: len(s.failed)},
		"clients":     {Keys: len(s.owners)},
		"meta":        {Keys: meta},
	}

	st.Sessions = len(s.sessions)
	st.FailedSessions = len(s.failed)
	st.Clients = len(s.owners)

	if len(s.activity) > 0 {
		newest := s.activity[0].nanos
		for _, e := range s.activity[1:] {
			newest = max(newest, e.nanos)
		}
		st.OldestActivity = nanosTime(s.activity[0].nanos)
		st.NewestActivity = nanosTime(newest)
	}
	return st, nil
}

// nanosTime returns the UTC time of Unix nanoseconds, as boltdb reports it.
func nanosTime(nanos int64) *time.Time {
	t := time.Unix(0, nanos).UTC()
	return &t
}

// activityHeap is a container/heap of sessions, least recent LastActivity
// first and ties broken by id, the order of boltdb's by_activity bucket.
// Each entry stores its index, so an update or delete fixes or removes it
// in O(log n) and the heap never holds stale entries.
type activityHeap []*entry

func (h activityHeap) Len() int { return len(h) }

func (h activityHeap) Less(i, j int) bool {
	if h[i].nanos != h[j].nanos {
		return h[i].nanos < h[j].nanos
	}
	return h[i].sess.ID < h[j].sess.ID
}

func (h activityHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}

func (h *activityHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}

func (h *activityHeap) Pop() any {
	old := *h
	n := len(old) - 1
	e := old[n]
	old[n] = nil
	e.index = -1
	*h = old[:n]
	return e
}
