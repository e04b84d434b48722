package boltdb

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Key counts of the data buckets live in meta under "count:<bucket>", kept
// in the same transactions as the writes, so Stats reads a few keys instead
// of walking every page of the file. keyCountsReady marks a file whose
// counts are complete.
var keyCountsReady = []byte("counts_ready")

func countKey(bucket []byte) []byte { return append([]byte("count:"), bucket...) }

// isCountKey reports whether a meta key is bookkeeping of the counts, which
// Stats leaves out of meta's key count.
func isCountKey(k []byte) bool {
	return bytes.HasPrefix(k, []byte("count:")) || bytes.Equal(k, keyCountsReady)
}

// metaKeys counts meta's keys other than the counts' bookkeeping.
func metaKeys(tx *bolt.Tx) int {
	n := 0
	_ = tx.Bucket(bucketMeta).ForEach(func(k, _ []byte) error {
		if !isCountKey(k) {
			n++
		}
		return nil
	})
	return n
}

// put writes k in a data bucket and counts it when it is new. A nil v is
// stored as emptyValue.
func put(tx *bolt.Tx, bucket, k, v []byte) error {
	if v == nil {
		v = emptyValue
	}
	b := tx.Bucket(bucket)
	existed := b.Get(k) != nil
	if err := b.Put(k, v); err != nil {
		return fmt.Errorf("write %s key: %w", bucket, err)
	}
	if existed {
		return nil
	}
	return adjustCount(tx, bucket, 1)
}

// del removes k from a data bucket and counts it when it was there.
func del(tx *bolt.Tx, bucket, k []byte) error {
	b := tx.Bucket(bucket)
	if b.Get(k) == nil {
		return nil
	}
	if err := b.Delete(k); err != nil {
		return fmt.Errorf("delete %s key: %w", bucket, err)
	}
	return adjustCount(tx, bucket, -1)
}

// emptyValue is the value of index keys that carry none. It must not be
// nil, because bbolt's Get returns nil for a key Put with a nil value
// earlier in the same transaction. put, del and rekey would then take the
// key for missing when two writes of one session share a commit group.
var emptyValue = []byte{}

// rekey replaces the key old with next, with an empty value, in a data
// bucket. When old is there, the bucket's count does not change, so the
// count key in meta is neither read nor written.
func rekey(tx *bolt.Tx, bucket, old, next []byte) error {
	b := tx.Bucket(bucket)
	if old == nil || b.Get(old) == nil {
		return put(tx, bucket, next, nil)
	}
	if bytes.Equal(old, next) {
		return nil
	}
	if err := b.Delete(old); err != nil {
		return fmt.Errorf("delete %s key: %w", bucket, err)
	}
	if b.Get(next) != nil {
		// Both were there: one key fewer.
		return adjustCount(tx, bucket, -1)
	}
	if err := b.Put(next, emptyValue); err != nil {
		return fmt.Errorf("write %s key: %w", bucket, err)
	}
	return nil
}

func adjustCount(tx *bolt.Tx, bucket []byte, delta int64) error {
	meta := tx.Bucket(bucketMeta)
	key := countKey(bucket)
	n := int64(0)
	if v := meta.Get(key); len(v) == 8 {
		n = int64(binary.BigEndian.Uint64(v))
	}
	// Never below zero, even after keys were removed behind the counts' back.
	return meta.Put(key, binary.BigEndian.AppendUint64(nil, uint64(max(0, n+delta))))
}

// readCount returns the stored key count of a data bucket.
func readCount(tx *bolt.Tx, bucket []byte) int {
	if v := tx.Bucket(bucketMeta).Get(countKey(bucket)); len(v) == 8 {
		return int(binary.BigEndian.Uint64(v))
	}
	return 0
}

// initCounts counts every data bucket once, for a new file or one written
// before counts were kept. The caller runs it in the write transaction of
// init.
func initCounts(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta.Get(keyCountsReady) != nil {
		return nil
	}
	for _, name := range dataBuckets() {
		n := tx.Bucket(name).Stats().KeyN
		if err := meta.Put(countKey(name), binary.BigEndian.AppendUint64(nil, uint64(n))); err != nil {
			return err
		}
	}
	return meta.Put(keyCountsReady, []byte{1})
}

// resetCounts sets every data bucket's count to zero, after they were
// emptied.
func resetCounts(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	for _, name := range dataBuckets() {
		if err := meta.Put(countKey(name), make([]byte, 8)); err != nil {
			return err
		}
	}
	return nil
}

// dataBuckets returns every bucket except meta.
func dataBuckets() [][]byte {
	names := make([][]byte, 0, len(allBuckets)-1)
	for _, name := range allBuckets {
		if string(name) != string(bucketMeta) {
			names = append(names, name)
		}
	}
	return names
}
