package boltdb

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// legacyRecord writes s in the binary layout of the builds that had no
// StateVersion, spelled out here so that a change to encodeRecord cannot
// change the expected bytes with it.
func legacyRecord(s *Session) []byte {
	out := []byte{0x01}
	for _, field := range [][]byte{[]byte(s.ID), []byte(s.Component), []byte(s.Owner), []byte(s.Fingerprint), s.Props, s.State, s.MAC} {
		out = binary.AppendUvarint(out, uint64(len(field)))
		out = append(out, field...)
	}
	out = binary.AppendUvarint(out, s.Version)
	out = binary.AppendVarint(out, s.CreatedAt.UnixNano())
	out = binary.AppendVarint(out, s.LastActivity.UnixNano())
	return binary.AppendUvarint(out, uint64(s.FailedAttempts))
}

func TestRecordDefaultStateVersionKeepsLegacyBytes(t *testing.T) {
	sess := newSession("s", "o", time.Unix(100, 7))
	sess.FailedAttempts = 2
	if got, want := encodeRecord(nil, sess), legacyRecord(sess); !bytes.Equal(got, want) {
		t.Errorf("record of StateVersion 0 is %x, want the legacy bytes %x", got, want)
	}
}

func TestRecordLegacyDecodesAsDefaultStateVersion(t *testing.T) {
	sess := newSession("s", "o", time.Unix(100, 7))
	sess.FailedAttempts = 2
	got, err := decodeRecord(legacyRecord(sess))
	if err != nil {
		t.Fatalf("decode a legacy record: %v", err)
	}
	if got.StateVersion != 0 {
		t.Errorf("StateVersion = %d, want 0", got.StateVersion)
	}
	if got.ID != "s" || got.Owner != "o" || got.FailedAttempts != 2 || got.Version != sess.Version || !got.LastActivity.Equal(sess.LastActivity) {
		t.Errorf("legacy record decoded as %+v", got)
	}
}

func TestRecordStateVersionRoundTrip(t *testing.T) {
	for _, v := range []uint32{0, 1, 2, 300, math.MaxUint32} {
		sess := newSession("s", "o", time.Unix(100, 7))
		sess.StateVersion = v
		got, err := decodeRecord(encodeRecord(nil, sess))
		if err != nil {
			t.Fatalf("decode StateVersion %d: %v", v, err)
		}
		if got.StateVersion != v {
			t.Errorf("StateVersion = %d after a round trip, want %d", got.StateVersion, v)
		}
		if got.FailedAttempts != sess.FailedAttempts || got.Version != sess.Version {
			t.Errorf("StateVersion %d: record decoded as %+v", v, got)
		}
		if activity, err := recordActivity(encodeRecord(nil, sess)); err != nil || activity != sess.LastActivity.UnixNano() {
			t.Errorf("StateVersion %d: recordActivity = %d, %v, want %d", v, activity, err, sess.LastActivity.UnixNano())
		}
	}
}

func TestRecordStateVersionOutOfRange(t *testing.T) {
	sess := newSession("s", "o", time.Unix(1, 0))
	body := legacyRecord(sess)
	body[0] = recordBinaryStateVersion
	body = binary.AppendUvarint(body, math.MaxUint32+1)
	if _, err := decodeRecord(body); err == nil {
		t.Error("a record with a state version above the uint32 range decoded")
	}
}

func TestGetSessionReadsLegacyRecord(t *testing.T) {
	s := openTest(t)
	sess := newSession("old", "alice", time.Unix(100, 5).UTC())
	sess.StateVersion = 4
	mustCreate(t, s, sess)
	// Replace the record with the bytes a build without StateVersion wrote.
	err := s.DB().Update(func(tx *bolt.Tx) error {
		body := legacyRecord(sess)
		value := binary.BigEndian.AppendUint32(nil, crc32.Checksum(body, castagnoli))
		return tx.Bucket(bucketSessions).Put([]byte("old"), append(value, body...))
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSession("old")
	if err != nil {
		t.Fatal(err)
	}
	if got.StateVersion != 0 {
		t.Errorf("StateVersion of a legacy record = %d, want 0", got.StateVersion)
	}
	if got.Owner != "alice" || !bytes.Equal(got.State, sess.State) {
		t.Errorf("legacy record read as %+v", got)
	}
}

func TestRecordFailedAttemptsOutOfRange(t *testing.T) {
	sess := newSession("s", "o", time.Unix(1, 0))
	sess.FailedAttempts = math.MaxInt32
	if got, err := decodeRecord(encodeRecord(nil, sess)); err != nil || got.FailedAttempts != math.MaxInt32 {
		t.Fatalf("failed attempts at the int32 limit: %v, %+v", err, got)
	}
	// Encode 2^63, which an int would read as a negative count.
	body := encodeRecord(nil, sess)
	huge := binary.AppendUvarint(nil, 1<<63)
	limit := binary.AppendUvarint(nil, math.MaxInt32)
	body = append(body[:len(body)-len(limit)], huge...)
	if _, err := decodeRecord(body); err == nil {
		t.Error("a record with 2^63 failed attempts decoded")
	}
}
