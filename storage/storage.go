// Package storage defines the persistence interface behind livebolt's
// hydration sessions and client ownership records. The bbolt implementation
// lives in the boltdb subpackage; another backend only needs to satisfy Store.
package storage

import (
	"encoding/json"
	"errors"
	"io"
	"time"
)

// Errors returned by every Store implementation. Compare with errors.Is.
var (
	// ErrNotFound is returned when a session does not exist.
	ErrNotFound = errors.New("session not found")

	// ErrExists is returned by CreateSession when the id is already taken.
	ErrExists = errors.New("session already exists")

	// ErrCorrupt is returned when a stored record fails its integrity check
	// or cannot be decoded.
	ErrCorrupt = errors.New("stored record is corrupt")

	// ErrClosed is returned by operations on a closed store.
	ErrClosed = errors.New("store is closed")
)

// Session is one hydration session: the snapshot of a mounted component and
// the bookkeeping needed to restore, expire and verify it. MAC is computed by
// the caller over every other field; the store keeps it opaque.
type Session struct {
	ID             string          `json:"id"`
	Component      string          `json:"component"`
	Owner          string          `json:"owner"`
	Props          json.RawMessage `json:"props"`
	State          json.RawMessage `json:"state"`
	Fingerprint    string          `json:"fingerprint"`
	Version        uint64          `json:"version"`
	CreatedAt      time.Time       `json:"createdAt"`
	LastActivity   time.Time       `json:"lastActivity"`
	FailedAttempts int             `json:"failedAttempts"`
	MAC            []byte          `json:"mac"`
	// StateVersion is the version of the component's state shape that State
	// was encoded with. Zero is the default: records written before this
	// field existed read as zero.
	StateVersion uint32 `json:"stateVersion,omitempty"`
}

// SessionRef is the ownership record of one session: enough for a client to
// know what it can hydrate without reading the snapshot.
type SessionRef struct {
	ID          string `json:"id"`
	Component   string `json:"component"`
	Fingerprint string `json:"fingerprint"`
}

// SweepResult counts what one sweep removed.
type SweepResult struct {
	Sessions int // sessions deleted
	Clients  int // client records deleted because they owned no session any more
	Orphans  int // index entries deleted because their session was already gone
}

// BucketStats describes one bucket or table of the store.
type BucketStats struct {
	Keys int `json:"keys"`
}

// Stats is a point-in-time description of the store.
type Stats struct {
	Path           string
	FileSizeBytes  int64
	Buckets        map[string]BucketStats
	Sessions       int
	FailedSessions int        // sessions with at least one failed hydration attempt
	Clients        int        // clients owning at least one session
	OldestActivity *time.Time // least recent LastActivity, nil without sessions
	NewestActivity *time.Time // most recent LastActivity, nil without sessions
}

// Store persists sessions and their ownership. Implementations are safe for
// concurrent use. Every write is durable when the method returns.
type Store interface {
	// LoadOrCreateSecret returns the stored signing key, storing the result of
	// generate first when there is none.
	LoadOrCreateSecret(generate func() ([]byte, error)) ([]byte, error)

	// CreateSession stores a new session and its ownership record, and the
	// owner's client record if it has none. It returns ErrExists when the id
	// is taken.
	CreateSession(s *Session) error

	// UpdateSession replaces the record of an existing session. Owner,
	// Component and Fingerprint must stay as created, because only
	// CreateSession writes the ownership record; a changed Owner is an error.
	// It returns ErrNotFound when the session was deleted meanwhile, for
	// example by a sweep.
	UpdateSession(s *Session) error

	// GetSession returns a copy of a session, ErrNotFound or ErrCorrupt.
	GetSession(id string) (*Session, error)

	// DeleteSession removes a session with its indexes, and its owner's client
	// record when that was the owner's last session. Deleting a missing
	// session is not an error; a corrupt one is deleted too.
	DeleteSession(id string) error

	// ClientSessions lists the sessions a client owns, ordered by id. Entries
	// that cannot be decoded are left out.
	ClientSessions(clientID string) ([]SessionRef, error)

	// SweepExpired deletes sessions whose LastActivity is before cutoff,
	// reading only those. Sessions for which keep returns true are skipped.
	SweepExpired(cutoff time.Time, keep func(id string) bool) (SweepResult, error)

	// SweepFailed deletes sessions with at least maxAttempts failed
	// hydration attempts, reading only sessions that have failed attempts.
	SweepFailed(maxAttempts int) (SweepResult, error)

	// DeleteAllSessions deletes every session, ownership and client record.
	DeleteAllSessions() (SweepResult, error)

	// Stats describes the store.
	Stats() (Stats, error)

	// Close flushes and closes the store. It is safe to call more than once.
	Close() error
}

// Backuper is implemented by stores that can copy their whole database while
// they keep serving. Find it with a type assertion on a Store. The memstore
// package does not implement it.
type Backuper interface {
	// BeginBackup takes a consistent point-in-time snapshot of the database.
	// The caller must Close the snapshot, and should do so soon: the store
	// cannot close while a snapshot is open.
	BeginBackup() (Backup, error)
}

// Backup is a consistent snapshot of a store's database, taken by
// Backuper.BeginBackup. Writes made after it was taken are not in it.
type Backup interface {
	// Size returns the number of bytes WriteTo writes.
	Size() int64

	// WriteTo writes the snapshot to w as a complete database file.
	WriteTo(w io.Writer) (int64, error)

	// Close releases the snapshot. It must not run concurrently with
	// WriteTo. Calling it more than once is not an error.
	Close() error
}
