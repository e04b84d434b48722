package boltdb

import (
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// compactTxMaxSize bounds the bytes of keys and values copied per write
// transaction of Compact, so a large file is not copied in one transaction
// held in memory.
const compactTxMaxSize = 64 << 20

// CompactResult reports the sizes of a compaction, in bytes.
type CompactResult struct {
	SourceBytes    int64 `json:"sourceBytes"`
	CompactedBytes int64 `json:"compactedBytes"`
}

// Compact writes a compacted copy of the database at src to the new file
// dst with bbolt.Compact, which rewrites every key into fresh pages and so
// leaves out the free pages of src. It opens src with OpenReader, so src is
// never changed and a held src fails with ErrLocked after lockTimeout. It
// fails without writing when dst exists, and removes a partial dst on
// failure.
func Compact(src, dst string, lockTimeout time.Duration) (CompactResult, error) {
	var res CompactResult
	r, err := OpenReader(src, lockTimeout)
	if err != nil {
		return res, err
	}
	defer r.Close()

	// O_EXCL makes the existence check and the creation one step.
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return res, fmt.Errorf("compact %s: output %s already exists; remove it or choose another output file: %w", src, dst, err)
	}
	if err != nil {
		return res, fmt.Errorf("compact %s: create output %s: %w", src, dst, err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(dst)
		return res, fmt.Errorf("compact %s: create output %s: %w", src, dst, err)
	}

	if err := compactInto(r.db, dst); err != nil {
		_ = os.Remove(dst)
		return res, fmt.Errorf("compact %s into %s: %w", src, dst, err)
	}
	for _, size := range []struct {
		path string
		dst  *int64
	}{{src, &res.SourceBytes}, {dst, &res.CompactedBytes}} {
		info, err := os.Stat(size.path)
		if err != nil {
			return res, fmt.Errorf("compact %s: read size of %s: %w", src, size.path, err)
		}
		*size.dst = info.Size()
	}
	return res, nil
}

// compactInto copies src into the empty file at dst, which bbolt
// initializes, and closes it.
func compactInto(src *bolt.DB, dst string) error {
	out, err := bolt.Open(dst, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("open output: %w", err)
	}
	if err := safely(func() error { return bolt.Compact(out, src, compactTxMaxSize) }); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}
