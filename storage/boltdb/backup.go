package boltdb

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/livebolt/livebolt/storage"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

var _ storage.Backuper = (*Store)(nil)

// BeginBackup implements storage.Backuper with a bbolt read transaction,
// which reads the file as it was when the transaction began while writes go
// on.
//
// In bbolt v1.4.3 a commit that must grow the memory map waits until every
// read transaction has ended, so while a snapshot is open, writes that need
// a larger file stop. Write the snapshot to fast local storage, not to a
// network client, and close it at once.
func (s *Store) BeginBackup() (storage.Backup, error) {
	tx, err := s.db.Begin(false)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return nil, fmt.Errorf("begin backup of %s: %w", s.path, storage.ErrClosed)
	}
	if err != nil {
		return nil, fmt.Errorf("begin backup of %s: %w", s.path, err)
	}
	return &backup{tx: tx, path: s.path}, nil
}

// backup is a storage.Backup over one read transaction.
type backup struct {
	tx   *bolt.Tx
	path string

	closeOnce sync.Once
	closeErr  error
}

func (b *backup) Size() int64 { return b.tx.Size() }

func (b *backup) WriteTo(w io.Writer) (int64, error) {
	n, err := b.tx.WriteTo(w)
	if err != nil {
		return n, fmt.Errorf("write backup of %s after %d of %d bytes: %w", b.path, n, b.tx.Size(), err)
	}
	return n, nil
}

func (b *backup) Close() error {
	b.closeOnce.Do(func() { b.closeErr = b.tx.Rollback() })
	return b.closeErr
}
