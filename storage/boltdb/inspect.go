package boltdb

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"time"

	"github.com/livebolt/livebolt/storage"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// DefaultReaderLockTimeout is how long OpenReader waits for the file lock
// when its lockTimeout is zero. It is short because the usual holder is a
// running server, which keeps the lock until it stops.
const DefaultReaderLockTimeout = time.Second

// ErrLocked is returned by OpenReader and Compact when another process, such
// as a running server, holds the database file.
var ErrLocked = errors.New("database file is locked by another process")

// ErrDamaged reports a file whose bbolt pages are damaged, as a truncated
// download leaves it. bbolt panics on such pages; the offline tools turn
// that into this error.
var ErrDamaged = errors.New("database file is damaged; restore it from a backup")

// safely runs fn and returns a panic inside it as an error wrapping
// ErrDamaged. A page id past the end of a truncated file makes bbolt read
// past the end of its memory map, which faults; SetPanicOnFault turns that
// fault into a panic on this goroutine. Only the offline tools use it: the
// file is opened read-only, so a panic halfway leaves nothing behind.
func safely(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w (bbolt failed reading it: %v)", ErrDamaged, r)
		}
	}()
	return fn()
}

// view is db.View that returns a panic on a damaged page as ErrDamaged.
func view(db *bolt.DB, fn func(*bolt.Tx) error) error {
	return safely(func() error { return db.View(fn) })
}

// elidedChars is how much of a fingerprint or MAC a SessionInfo keeps.
const elidedChars = 6

// Reader reads a database file without changing it, for offline tools such
// as livebolt inspect. It holds a shared lock on the file while open, so a
// server cannot open the file until the Reader is closed.
type Reader struct {
	db            *bolt.DB
	path          string
	schemaVersion int
}

// OpenReader opens the existing database at path read-only. It waits up to
// lockTimeout (zero means DefaultReaderLockTimeout) for a process holding the
// file, then returns an error wrapping ErrLocked. A missing or empty file,
// a file without livebolt's buckets and a file of a newer schema are errors.
func OpenReader(path string, lockTimeout time.Duration) (*Reader, error) {
	if lockTimeout == 0 {
		lockTimeout = DefaultReaderLockTimeout
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open database %s read-only: %w", path, err)
	}
	if info.Size() == 0 {
		return nil, fmt.Errorf("open database %s read-only: the file is empty; a server initializes it on its first start", path)
	}

	var db *bolt.DB
	err = safely(func() error {
		var err error
		db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
		return err
	})
	switch {
	case errors.Is(err, ErrDamaged):
		return nil, fmt.Errorf("open database %s read-only: %w", path, err)
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("open database %s read-only (waited %s): %w: %w", path, lockTimeout, ErrLocked, err)
	case err != nil:
		// describeOpenError advises a server's start-up, but the tools read
		// a file they were given.
		return nil, fmt.Errorf("open database %s read-only: not a valid bbolt database file (%v); check the path: %w", path, err, ErrDamaged)
	}

	// The meta page records how far the file extends, so a shorter file was
	// cut, as by an interrupted download.
	r := &Reader{db: db, path: path}
	var want int64
	err = view(db, func(tx *bolt.Tx) error {
		want = tx.Size()
		return r.readSchema(tx)
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open database %s read-only: %w", path, err)
	}
	if info.Size() < want {
		_ = db.Close()
		return nil, fmt.Errorf("open database %s read-only: %w (the file has %d bytes, its pages need %d; it was cut short)", path, ErrDamaged, info.Size(), want)
	}
	return r, nil
}

// readSchema checks that every bucket exists and reads the schema version.
func (r *Reader) readSchema(tx *bolt.Tx) error {
	for _, name := range allBuckets {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("bucket %s is missing, so this is not a livebolt database: %w", name, storage.ErrCorrupt)
		}
	}
	version, err := parseSchema(tx.Bucket(bucketMeta).Get(keySchema))
	r.schemaVersion = version
	return err
}

// Path returns the database file path.
func (r *Reader) Path() string { return r.path }

// Close releases the file and its lock.
func (r *Reader) Close() error { return r.db.Close() }

// Report describes a database file, as printed by livebolt inspect.
type Report struct {
	Path          string         `json:"path"`
	FileSizeBytes int64          `json:"fileSizeBytes"`
	SchemaVersion int            `json:"schemaVersion"`
	Buckets       []BucketReport `json:"buckets"`
	// Sessions counts the records that decode. CorruptSessions lists the ids
	// of those that fail their checksum or do not decode.
	Sessions        int      `json:"sessions"`
	CorruptSessions []string `json:"corruptSessions"`
	// Oldest and Newest are the sessions of least and most recent
	// LastActivity, the oldest or newest first.
	Oldest []SessionSummary `json:"oldest"`
	Newest []SessionSummary `json:"newest"`
	// Components maps each component type to its number of sessions.
	Components map[string]int `json:"components"`
	// FailedAttempts maps a number of failed hydration attempts, from 1, to
	// the number of sessions that have exactly that many.
	FailedAttempts map[int]int `json:"failedAttempts"`
}

// BucketReport is the key count of one bucket. Keys is counted by walking
// the bucket. CountedKeys is the count kept in meta, which Stats reports, and
// is nil for meta itself. The two differ only if the kept count is wrong.
type BucketReport struct {
	Name        string `json:"name"`
	Keys        int    `json:"keys"`
	CountedKeys *int   `json:"countedKeys,omitempty"`
}

// SessionSummary identifies one session in a Report.
type SessionSummary struct {
	ID           string    `json:"id"`
	Component    string    `json:"component"`
	CreatedAt    time.Time `json:"createdAt"`
	LastActivity time.Time `json:"lastActivity"`
}

// Report reads the whole file in one read transaction and describes it,
// listing up to limit sessions as the oldest and as the newest. It decodes
// every session record, so it takes time in proportion to the file.
func (r *Reader) Report(limit int) (*Report, error) {
	rep := &Report{
		Path: r.path, SchemaVersion: r.schemaVersion,
		CorruptSessions: []string{}, Oldest: []SessionSummary{}, Newest: []SessionSummary{},
		Components: map[string]int{}, FailedAttempts: map[int]int{},
	}
	info, err := os.Stat(r.path)
	if err != nil {
		return nil, fmt.Errorf("read report of %s: %w", r.path, err)
	}
	rep.FileSizeBytes = info.Size()
	err = view(r.db, func(tx *bolt.Tx) error {
		rep.Buckets = bucketReports(tx)
		return tx.Bucket(bucketSessions).ForEach(func(k, v []byte) error {
			sess, err := decodeSession(string(k), v)
			if err != nil {
				rep.CorruptSessions = append(rep.CorruptSessions, string(k))
				return nil
			}
			rep.add(sess, limit)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read report of %s: %w", r.path, err)
	}
	return rep, nil
}

func bucketReports(tx *bolt.Tx) []BucketReport {
	reports := []BucketReport{{Name: string(bucketMeta), Keys: metaKeys(tx)}}
	for _, name := range dataBuckets() {
		counted := readCount(tx, name)
		reports = append(reports, BucketReport{
			Name:        string(name),
			Keys:        tx.Bucket(name).Stats().KeyN,
			CountedKeys: &counted,
		})
	}
	return reports
}

// add counts one decoded session into the report.
func (rep *Report) add(sess *Session, limit int) {
	rep.Sessions++
	rep.Components[sess.Component]++
	if sess.FailedAttempts > 0 {
		rep.FailedAttempts[sess.FailedAttempts]++
	}
	summary := SessionSummary{ID: sess.ID, Component: sess.Component, CreatedAt: sess.CreatedAt, LastActivity: sess.LastActivity}
	rep.Oldest = insertBounded(rep.Oldest, summary, limit, func(a, b SessionSummary) bool { return a.LastActivity.Before(b.LastActivity) })
	rep.Newest = insertBounded(rep.Newest, summary, limit, func(a, b SessionSummary) bool { return a.LastActivity.After(b.LastActivity) })
}

// insertBounded inserts s into list, which is sorted by before, and keeps
// the first limit entries.
func insertBounded(list []SessionSummary, s SessionSummary, limit int, before func(a, b SessionSummary) bool) []SessionSummary {
	if limit <= 0 {
		return list
	}
	i := sort.Search(len(list), func(i int) bool { return before(s, list[i]) })
	if i >= limit {
		return list
	}
	list = append(list, SessionSummary{})
	copy(list[i+1:], list[i:])
	list[i] = s
	if len(list) > limit {
		list = list[:limit]
	}
	return list
}

// SessionInfo is one session as livebolt inspect prints it. Fingerprint and
// MAC keep only their first few characters followed by "…", so the printed
// record cannot be used to hydrate the session or to sign another one.
type SessionInfo struct {
	ID             string          `json:"id"`
	Component      string          `json:"component"`
	Owner          string          `json:"owner"`
	Version        uint64          `json:"version"`
	StateVersion   uint32          `json:"stateVersion"`
	CreatedAt      time.Time       `json:"createdAt"`
	LastActivity   time.Time       `json:"lastActivity"`
	FailedAttempts int             `json:"failedAttempts"`
	Props          json.RawMessage `json:"props"`
	State          json.RawMessage `json:"state"`
	Fingerprint    string          `json:"fingerprint"`
	MAC            string          `json:"mac"`
}

// Session reads the session id with the decoder the store uses. It returns
// an error wrapping storage.ErrNotFound for an unknown id and
// storage.ErrCorrupt for a record that fails its checks.
func (r *Reader) Session(id string) (*SessionInfo, error) {
	var sess *Session
	err := view(r.db, func(tx *bolt.Tx) error {
		var err error
		sess, err = getSession(tx, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", r.path, err)
	}
	return &SessionInfo{
		ID: sess.ID, Component: sess.Component, Owner: sess.Owner, Version: sess.Version, StateVersion: sess.StateVersion,
		CreatedAt: sess.CreatedAt, LastActivity: sess.LastActivity, FailedAttempts: sess.FailedAttempts,
		Props: rawOrNull(sess.Props), State: rawOrNull(sess.State),
		Fingerprint: elide(sess.Fingerprint), MAC: elide(hex.EncodeToString(sess.MAC)),
	}, nil
}

// rawOrNull returns JSON null for an empty value, so the result always
// encodes.
func rawOrNull(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage("null")
	}
	return raw
}

// elide keeps the first elidedChars characters of a secret value.
func elide(secret string) string {
	if secret == "" {
		return ""
	}
	if len(secret) <= elidedChars {
		return "…"
	}
	return secret[:elidedChars] + "…"
}
