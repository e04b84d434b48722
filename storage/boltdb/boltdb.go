// Package boltdb implements storage.Store on an embedded bbolt database file.
//
// Layout, one bucket each:
//
//	meta          schema version and the generated signing key
//	sessions      session id -> CRC-32C || record (see record.go)
//	session_keys  session id -> activity nanoseconds (8 bytes) || owner id
//	by_activity   activity nanoseconds (8 bytes) || session id -> empty
//	by_owner      owner id || 0x00 || session id -> JSON storage.SessionRef
//	failed        session id -> failed attempts (uvarint), only when above 0
//	clients       client id -> JSON record, only while it owns a session
//
// by_activity lets the age sweep read only expired sessions, failed lets the
// failed sweep read only failing ones, and session_keys lets a corrupt record
// be deleted together with its index entries.
package boltdb

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/livebolt/livebolt/storage"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout version this package writes. A database with a
// higher version is rejected at open; one with a lower version is upgraded.
// Version 2 writes session records in a binary encoding; version 1 wrote
// JSON, which this package still reads.
const SchemaVersion = 2

// DefaultLockTimeout is how long Open waits for another process to release
// the file lock when Options.LockTimeout is zero.
const DefaultLockTimeout = 3 * time.Second

// sweepBatch is the number of deletions per write transaction in a sweep, so
// a large sweep does not hold the write lock for long.
const sweepBatch = 1000

var (
	bucketMeta        = []byte("meta")
	bucketSessions    = []byte("sessions")
	bucketSessionKeys = []byte("session_keys")
	bucketActivity    = []byte("by_activity")
	bucketOwner       = []byte("by_owner")
	bucketFailed      = []byte("failed")
	bucketClients     = []byte("clients")

	allBuckets = [][]byte{bucketMeta, bucketSessions, bucketSessionKeys,
		bucketActivity, bucketOwner, bucketFailed, bucketClients}

	keySchema = []byte("schema_version")
	keySecret = []byte("secret")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrSchemaTooNew is returned by Open for a database written by a newer
// livebolt.
var ErrSchemaTooNew = errors.New("database schema is newer than this build supports")

// Options configures Open. The zero value is valid.
type Options struct {
	// LockTimeout is how long to wait for another process holding the file.
	// Zero means DefaultLockTimeout.
	LockTimeout time.Duration

	// NoSync skips fsync on commit. Only for tests and benchmarks: a crash
	// can then lose acknowledged writes.
	NoSync bool

	// OnCommit, when set, is called after each committed transaction of
	// session writes (create, update, delete) with the number of writes it
	// grouped and its duration: the writes, the commit and its fsync. It
	// runs on the committer goroutine before the writers are released, so
	// it must return quickly. The transactions of sweeps, DeleteAllSessions
	// and LoadOrCreateSecret are not reported.
	OnCommit func(writes int, elapsed time.Duration)
}

// Store is a storage.Store backed by one bbolt file.
type Store struct {
	db      *bolt.DB
	path    string
	commits *committer // group commit for session writes

	closeOnce sync.Once
	closeErr  error
}

var _ storage.Store = (*Store)(nil)

// Open opens or creates the database at path and its parent folder. It never
// truncates or replaces an existing file: a file that is not a livebolt
// database, is locked by another process or has a newer schema returns an
// error naming the file.
func Open(path string, opts *Options) (*Store, error) {
	if opts == nil {
		opts = &Options{}
	}
	timeout := opts.LockTimeout
	if timeout == 0 {
		timeout = DefaultLockTimeout
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create database folder %s: %w", filepath.Dir(path), err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, NoSync: opts.NoSync})
	if err != nil {
		return nil, describeOpenError(path, timeout, err)
	}
	s := &Store{db: db, path: path}
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, err
	}
	s.commits = newCommitter(db, opts.OnCommit)
	return s, nil
}

func describeOpenError(path string, timeout time.Duration, err error) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("open database %s: file is locked by another process (waited %s); stop the other livebolt or use another --data folder: %w", path, timeout, err)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrChecksum):
		return fmt.Errorf("open database %s: not a valid bbolt database (the file was left untouched); move it away or use another --data folder: %w", path, err)
	default:
		return fmt.Errorf("open database %s: %w", path, err)
	}
}

// init creates missing buckets and checks or stores the schema version.
func (s *Store) init() error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if err := initCounts(tx); err != nil {
			return fmt.Errorf("count keys: %w", err)
		}
		raw := meta.Get(keySchema)
		if raw == nil {
			return meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
		}
		version, err := parseSchema(raw)
		if err != nil {
			return err
		}
		if version < SchemaVersion {
			// Old records stay readable; new ones use the current encoding,
			// so older builds must no longer open the file.
			return meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("initialize database %s: %w", s.path, err)
	}
	return nil
}

// parseSchema reads a stored schema version and rejects one newer than
// SchemaVersion.
func parseSchema(raw []byte) (int, error) {
	version, err := strconv.Atoi(string(raw))
	if err != nil {
		return 0, fmt.Errorf("read schema version %q: %w", raw, storage.ErrCorrupt)
	}
	if version > SchemaVersion {
		return 0, fmt.Errorf("%w: file has version %d, this build reads up to %d; run a newer livebolt", ErrSchemaTooNew, version, SchemaVersion)
	}
	return version, nil
}

// Path returns the database file path.
func (s *Store) Path() string { return s.path }

// DB returns the underlying bbolt handle, for tests and tools that inspect
// the file.
func (s *Store) DB() *bolt.DB { return s.db }

// Close closes the database file once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.commits.close()
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// update runs fn in a write transaction, mapping a closed database to
// storage.ErrClosed.
func (s *Store) update(fn func(tx *bolt.Tx) error) error {
	err := s.db.Update(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return storage.ErrClosed
	}
	return err
}

func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	err := s.db.View(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return storage.ErrClosed
	}
	return err
}

// LoadOrCreateSecret implements storage.Store.
func (s *Store) LoadOrCreateSecret(generate func() ([]byte, error)) ([]byte, error) {
	var secret []byte
	err := s.update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySecret); v != nil {
			secret = bytes.Clone(v)
			return nil
		}
		generated, err := generate()
		if err != nil {
			return fmt.Errorf("generate secret: %w", err)
		}
		secret = bytes.Clone(generated)
		return meta.Put(keySecret, secret)
	})
	if err != nil {
		return nil, fmt.Errorf("load secret from %s: %w", s.path, err)
	}
	return secret, nil
}

type clientRecord struct {
	CreatedAt time.Time `json:"createdAt"`
}

// CreateSession implements storage.Store. Concurrent session writes share
// one transaction and one fsync (group commit).
func (s *Store) CreateSession(sess *Session) error {
	// Encoding happens before the write joins a group, in the caller's
	// goroutine: the committer runs the groups one at a time.
	record := sealRecord(sess)
	ref, err := json.Marshal(storage.SessionRef{ID: sess.ID, Component: sess.Component, Fingerprint: sess.Fingerprint})
	if err != nil {
		return fmt.Errorf("encode ownership of session %s: %w", sess.ID, err)
	}
	return s.commits.write(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketSessions).Get([]byte(sess.ID)) != nil {
			return fmt.Errorf("create session %s: %w", sess.ID, storage.ErrExists)
		}
		if err := putSession(tx, sess, record, true, nil); err != nil {
			return err
		}
		if err := put(tx, bucketOwner, ownerKey(sess.Owner, sess.ID), ref); err != nil {
			return err
		}
		if tx.Bucket(bucketClients).Get([]byte(sess.Owner)) == nil {
			rec, _ := json.Marshal(clientRecord{CreatedAt: sess.CreatedAt.UTC()})
			return put(tx, bucketClients, []byte(sess.Owner), rec)
		}
		return nil
	})
}

// Session is an alias so the methods read naturally in this file.
type Session = storage.Session

// UpdateSession implements storage.Store, with group commit.
func (s *Store) UpdateSession(sess *Session) error {
	record := sealRecord(sess) // outside the group, as in CreateSession
	return s.commits.write(func(tx *bolt.Tx) error {
		old := tx.Bucket(bucketSessionKeys).Get([]byte(sess.ID))
		if old == nil {
			return fmt.Errorf("update session %s: %w", sess.ID, storage.ErrNotFound)
		}
		// by_owner and clients are keyed by owner and written only on create.
		if len(old) < 8 || string(old[8:]) != sess.Owner {
			return fmt.Errorf("update session %s: owner cannot change to %q", sess.ID, sess.Owner)
		}
		var oldActivity []byte
		if nanos, ok := indexedActivity(tx, []byte(sess.ID), old); ok {
			oldActivity = activityKey(nanos, sess.ID)
		}
		return putSession(tx, sess, record, false, oldActivity)
	})
}

// indexedActivity returns the activity under which id is indexed in
// by_activity: the LastActivity of its record, or, when the record cannot
// be read, the activity at creation kept in session_keys (keys).
func indexedActivity(tx *bolt.Tx, id, keys []byte) ([]byte, bool) {
	if v := tx.Bucket(bucketSessions).Get(id); len(v) > 4 && binary.BigEndian.Uint32(v) == crc32.Checksum(v[4:], castagnoli) {
		if nanos, err := recordActivity(v[4:]); err == nil {
			return binary.BigEndian.AppendUint64(nil, uint64(nanos)), true
		}
	}
	if len(keys) >= 8 {
		return bytes.Clone(keys[:8]), true
	}
	return nil, false
}

// putSession writes the record and its activity and failed entries, and on
// create its session_keys entry. That entry holds the owner and the
// activity at creation, and is not rewritten by updates, so an update
// dirties one B-tree page fewer. An update passes the by_activity key it
// replaces as oldActivity, nil when there is none. record is sess as
// sealRecord encodes it.
func putSession(tx *bolt.Tx, sess *Session, record []byte, create bool, oldActivity []byte) error {
	id := []byte(sess.ID)
	if err := put(tx, bucketSessions, id, record); err != nil {
		return fmt.Errorf("write session %s: %w", sess.ID, err)
	}
	nanos := make([]byte, 8)
	binary.BigEndian.PutUint64(nanos, uint64(sess.LastActivity.UnixNano()))
	if create {
		keys := append(bytes.Clone(nanos), sess.Owner...)
		if err := put(tx, bucketSessionKeys, id, keys); err != nil {
			return err
		}
	}
	if err := rekey(tx, bucketActivity, oldActivity, activityKey(nanos, sess.ID)); err != nil {
		return err
	}
	if sess.FailedAttempts > 0 {
		return put(tx, bucketFailed, id, binary.AppendUvarint(nil, uint64(sess.FailedAttempts)))
	}
	return del(tx, bucketFailed, id)
}

// sealRecord returns the stored value of sess: its CRC-32C, then the
// record.
func sealRecord(sess *Session) []byte {
	value := encodeRecord(make([]byte, 4, 64+len(sess.Props)+len(sess.State)+len(sess.ID)*3), sess)
	binary.BigEndian.PutUint32(value, crc32.Checksum(value[4:], castagnoli))
	return value
}

// GetSession implements storage.Store.
func (s *Store) GetSession(id string) (*Session, error) {
	var sess *Session
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		sess, err = getSession(tx, id)
		return err
	})
	return sess, err
}

// getSession reads and decodes the record of id in tx.
func getSession(tx *bolt.Tx, id string) (*Session, error) {
	v := tx.Bucket(bucketSessions).Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("get session %s: %w", id, storage.ErrNotFound)
	}
	return decodeSession(id, v)
}

func decodeSession(id string, v []byte) (*Session, error) {
	if len(v) < 4 || binary.BigEndian.Uint32(v) != crc32.Checksum(v[4:], castagnoli) {
		return nil, fmt.Errorf("read session %s: checksum mismatch: %w", id, storage.ErrCorrupt)
	}
	sess, err := decodeRecord(v[4:])
	if err != nil {
		return nil, fmt.Errorf("decode session %s: %v: %w", id, err, storage.ErrCorrupt)
	}
	if sess.ID != id {
		return nil, fmt.Errorf("read session %s: record names id %q: %w", id, sess.ID, storage.ErrCorrupt)
	}
	return sess, nil
}

// DeleteSession implements storage.Store, with group commit.
func (s *Store) DeleteSession(id string) error {
	return s.commits.write(func(tx *bolt.Tx) error {
		_, err := deleteSession(tx, id)
		return err
	})
}

// deleteSession removes a session and everything that points at it, using
// session_keys so that a corrupt record can be removed too. It reports
// whether the owner's client record was removed.
func deleteSession(tx *bolt.Tx, id string) (clientRemoved bool, err error) {
	key := []byte(id)
	keys := tx.Bucket(bucketSessionKeys).Get(key)
	if keys == nil {
		// Not indexed: at most a stray record or failed entry is left.
		if err := del(tx, bucketFailed, key); err != nil {
			return false, err
		}
		return false, del(tx, bucketSessions, key)
	}

	keys = bytes.Clone(keys)
	// Read the indexed activity before the record is deleted.
	// NOTE: for a corrupt record of a session updated since its creation
	// this finds only the creation activity, so its by_activity entry stays
	// until the age sweep reaches it and removes it as an orphan.
	nanos, indexed := indexedActivity(tx, key, keys)
	for _, d := range []struct {
		bucket []byte
		key    []byte
	}{
		{bucketSessions, key},
		{bucketSessionKeys, key},
		{bucketFailed, key},
	} {
		if err := del(tx, d.bucket, d.key); err != nil {
			return false, err
		}
	}

	if len(keys) < 8 {
		return false, nil
	}
	if indexed {
		if err := del(tx, bucketActivity, activityKey(nanos, id)); err != nil {
			return false, err
		}
	}

	// Remove the ownership entry, and the client record with the last one.
	owner := string(keys[8:])
	if err := del(tx, bucketOwner, ownerKey(owner, id)); err != nil {
		return false, err
	}
	if ownsAny(tx, owner) {
		return false, nil
	}
	return true, del(tx, bucketClients, []byte(owner))
}

func ownsAny(tx *bolt.Tx, owner string) bool {
	prefix := ownerKey(owner, "")
	k, _ := tx.Bucket(bucketOwner).Cursor().Seek(prefix)
	return k != nil && bytes.HasPrefix(k, prefix)
}

// ClientSessions implements storage.Store.
func (s *Store) ClientSessions(clientID string) ([]storage.SessionRef, error) {
	var refs []storage.SessionRef
	err := s.view(func(tx *bolt.Tx) error {
		prefix := ownerKey(clientID, "")
		c := tx.Bucket(bucketOwner).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var ref storage.SessionRef
			if err := json.Unmarshal(v, &ref); err != nil {
				// One damaged entry must not hide the client's other
				// sessions; the session itself stays reachable by id.
				continue
			}
			refs = append(refs, ref)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list sessions of client %s: %w", clientID, err)
	}
	return refs, nil
}

// SweepExpired implements storage.Store. It walks by_activity from the oldest
// entry and stops at the first one at or after cutoff.
func (s *Store) SweepExpired(cutoff time.Time, keep func(id string) bool) (storage.SweepResult, error) {
	var total storage.SweepResult
	end := make([]byte, 8)
	binary.BigEndian.PutUint64(end, uint64(cutoff.UnixNano()))
	var resume []byte // first activity key not yet examined
	for {
		var batch storage.SweepResult
		done := true
		err := s.update(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketActivity).Cursor()
			var k []byte
			if resume == nil {
				k, _ = c.First()
			} else {
				k, _ = c.Seek(resume)
			}
			examined := 0
			var expired [][]byte
			for ; k != nil && bytes.Compare(k[:8], end) < 0; k, _ = c.Next() {
				if examined == sweepBatch {
					resume = bytes.Clone(k)
					done = false
					break
				}
				examined++
				expired = append(expired, bytes.Clone(k))
			}
			for _, k := range expired {
				id := string(k[8:])
				if keep != nil && keep(id) {
					continue
				}
				if err := s.sweepOne(tx, k, id, &batch); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("sweep sessions inactive since %s: %w", cutoff.UTC().Format(time.RFC3339), err)
		}
		total.Sessions += batch.Sessions
		total.Clients += batch.Clients
		total.Orphans += batch.Orphans
		if done {
			return total, nil
		}
	}
}

// sweepOne deletes the session behind one by_activity key, or the key alone
// when it is stale.
func (s *Store) sweepOne(tx *bolt.Tx, actKey []byte, id string, r *storage.SweepResult) error {
	key := []byte(id)
	keys := tx.Bucket(bucketSessionKeys).Get(key)
	v := tx.Bucket(bucketSessions).Get(key)
	if keys == nil || v == nil {
		r.Orphans++
		return del(tx, bucketActivity, actKey)
	}
	if len(v) < 4 || binary.BigEndian.Uint32(v) != crc32.Checksum(v[4:], castagnoli) {
		// A corrupt record under an expired entry: delete it all, and this
		// entry too, which its creation activity may not name.
		if err := del(tx, bucketActivity, actKey); err != nil {
			return err
		}
		return sweepSession(tx, id, r)
	}
	nanos, err := recordActivity(v[4:])
	if err != nil || int64(binary.BigEndian.Uint64(actKey[:8])) != nanos {
		r.Orphans++ // an entry left behind by an update
		return del(tx, bucketActivity, actKey)
	}
	return sweepSession(tx, id, r)
}

// sweepSession deletes one session and counts it, and its client when that
// was the client's last session.
func sweepSession(tx *bolt.Tx, id string, r *storage.SweepResult) error {
	clientRemoved, err := deleteSession(tx, id)
	if err != nil {
		return err
	}
	r.Sessions++
	if clientRemoved {
		r.Clients++
	}
	return nil
}

// SweepFailed implements storage.Store.
func (s *Store) SweepFailed(maxAttempts int) (storage.SweepResult, error) {
	var r storage.SweepResult
	err := s.update(func(tx *bolt.Tx) error {
		var ids []string
		var stale [][]byte
		c := tx.Bucket(bucketFailed).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			n, size := binary.Uvarint(v)
			if size <= 0 {
				stale = append(stale, bytes.Clone(k))
				continue
			}
			if n >= uint64(maxAttempts) {
				ids = append(ids, string(k))
			}
		}
		for _, k := range stale {
			r.Orphans++
			if err := del(tx, bucketFailed, k); err != nil {
				return err
			}
		}
		for _, id := range ids {
			if tx.Bucket(bucketSessionKeys).Get([]byte(id)) == nil {
				r.Orphans++
				if err := del(tx, bucketFailed, []byte(id)); err != nil {
					return err
				}
				continue
			}
			if err := sweepSession(tx, id, &r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("sweep sessions with %d or more failed attempts: %w", maxAttempts, err)
	}
	return r, nil
}

// DeleteAllSessions implements storage.Store.
func (s *Store) DeleteAllSessions() (storage.SweepResult, error) {
	var r storage.SweepResult
	err := s.update(func(tx *bolt.Tx) error {
		r.Sessions = readCount(tx, bucketSessions)
		r.Clients = readCount(tx, bucketClients)
		for _, name := range dataBuckets() {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		return resetCounts(tx)
	})
	if err != nil {
		return r, fmt.Errorf("delete all sessions in %s: %w", s.path, err)
	}
	return r, nil
}

// Stats implements storage.Store. Key counts are kept in meta by every
// write, so Stats costs the same whatever the number of sessions.
func (s *Store) Stats() (storage.Stats, error) {
	st := storage.Stats{Path: s.path, Buckets: map[string]storage.BucketStats{}}
	err := s.view(func(tx *bolt.Tx) error {
		st.FileSizeBytes = tx.Size()
		for _, name := range dataBuckets() {
			st.Buckets[string(name)] = storage.BucketStats{Keys: readCount(tx, name)}
		}
		// meta holds a few keys; walking it is cheap.
		st.Buckets[string(bucketMeta)] = storage.BucketStats{Keys: metaKeys(tx)}
		c := tx.Bucket(bucketActivity).Cursor()
		if k, _ := c.First(); len(k) >= 8 {
			st.OldestActivity = nanosTime(k[:8])
		}
		if k, _ := c.Last(); len(k) >= 8 {
			st.NewestActivity = nanosTime(k[:8])
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("read stats of %s: %w", s.path, err)
	}
	st.Sessions = st.Buckets[string(bucketSessions)].Keys
	st.FailedSessions = st.Buckets[string(bucketFailed)].Keys
	st.Clients = st.Buckets[string(bucketClients)].Keys
	return st, nil
}

func nanosTime(b []byte) *time.Time {
	t := time.Unix(0, int64(binary.BigEndian.Uint64(b))).UTC()
	return &t
}

func activityKey(nanos []byte, id string) []byte {
	k := make([]byte, 0, 8+len(id))
	k = append(k, nanos...)
	return append(k, id...)
}

// ownerKey joins owner and session id with a zero byte, which neither
// contains, so a prefix scan on owner+0x00 finds exactly that owner's keys.
func ownerKey(owner, id string) []byte {
	k := make([]byte, 0, len(owner)+1+len(id))
	k = append(k, owner...)
	k = append(k, 0)
	return append(k, id...)
}
