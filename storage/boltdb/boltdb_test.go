package boltdb

// Tests of the bbolt store on real database files in t.TempDir(). They are in
// package boltdb so that the helpers can read and damage raw bucket contents.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livebolt/livebolt/storage"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// base is the reference instant of the tests. It has nanoseconds, so a round
// trip that drops precision fails the time comparisons.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

// openTest opens a store on a new file in t.TempDir().
func openTest(t *testing.T) *Store {
	t.Helper()
	return openTestAt(t, filepath.Join(t.TempDir(), "live.db"))
}

// openTestAt opens a store on path. On cleanup it runs bbolt's consistency
// check and the index checks below, then closes the store. When the test
// closed the store itself, the file it left is opened read-only and checked.
func openTestAt(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path, &Options{NoSync: true})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		err := s.DB().View(func(tx *bolt.Tx) error {
			if err := checkTx(tx); err != nil {
				return err
			}
			return checkIndexes(tx)
		})
		if errors.Is(err, berrors.ErrDatabaseNotOpen) {
			err = checkFile(path)
		}
		if err != nil {
			t.Errorf("consistency of %s: %v", path, err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close(%s): %v", path, err)
		}
	})
	return s
}

// checkTx runs bbolt's consistency check (Tx.Check) and joins the errors it reports.
func checkTx(tx *bolt.Tx) error {
	var errs []error
	for err := range tx.Check() {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// checkFile opens a closed database read-only and checks it.
func checkFile(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(checkTx)
}

// checkIndexes verifies the relations between the buckets of the package doc.
// Every session needs a session_keys, a by_activity and a by_owner entry, every
// client record a session, every owner a client record, every failed entry a session.
func checkIndexes(tx *bolt.Tx) error {
	var errs []error
	for _, name := range dataBuckets() {
		if got, want := readCount(tx, name), tx.Bucket(name).Stats().KeyN; got != want {
			errs = append(errs, fmt.Errorf("bucket %s: stored key count %d, %d keys", name, got, want))
		}
	}
	keys := map[string][]byte{}
	_ = tx.Bucket(bucketSessionKeys).ForEach(func(k, v []byte) error {
		keys[string(k)] = bytes.Clone(v)
		return nil
	})

	_ = tx.Bucket(bucketSessions).ForEach(func(k, _ []byte) error {
		if _, ok := keys[string(k)]; !ok {
			errs = append(errs, fmt.Errorf("session %q has no session_keys entry", k))
		}
		return nil
	})

	owners := map[string]bool{}
	for id, v := range keys {
		if tx.Bucket(bucketSessions).Get([]byte(id)) == nil {
			errs = append(errs, fmt.Errorf("session_keys entry %q has no session", id))
		}
		if len(v) < 8 {
			errs = append(errs, fmt.Errorf("session_keys entry %q is %d bytes", id, len(v)))
			continue
		}
		if nanos, ok := indexedActivity(tx, []byte(id), v); !ok || tx.Bucket(bucketActivity).Get(activityKey(nanos, id)) == nil {
			errs = append(errs, fmt.Errorf("session %q has no by_activity entry at its last activity", id))
		}
		owner := string(v[8:])
		owners[owner] = true
		if tx.Bucket(bucketOwner).Get(ownerKey(owner, id)) == nil {
			errs = append(errs, fmt.Errorf("session %q has no by_owner entry for %q", id, owner))
		}
	}

	if n := tx.Bucket(bucketActivity).Stats().KeyN; n != len(keys) {
		errs = append(errs, fmt.Errorf("by_activity has %d entries for %d sessions", n, len(keys)))
	}
	if n := tx.Bucket(bucketOwner).Stats().KeyN; n != len(keys) {
		errs = append(errs, fmt.Errorf("by_owner has %d entries for %d sessions", n, len(keys)))
	}

	_ = tx.Bucket(bucketFailed).ForEach(func(k, _ []byte) error {
		if _, ok := keys[string(k)]; !ok {
			errs = append(errs, fmt.Errorf("failed entry %q has no session", k))
		}
		return nil
	})

	_ = tx.Bucket(bucketClients).ForEach(func(k, _ []byte) error {
		if !owners[string(k)] {
			errs = append(errs, fmt.Errorf("client %q owns no session", k))
		}
		return nil
	})

	for owner := range owners {
		if tx.Bucket(bucketClients).Get([]byte(owner)) == nil {
			errs = append(errs, fmt.Errorf("owner %q has no client record", owner))
		}
	}

	return errors.Join(errs...)
}

// newSession returns a session with every field set.
func newSession(id, owner string, activity time.Time) *Session {
	return &Session{
		ID:             id,
		Component:      "counter",
		Owner:          owner,
		Props:          json.RawMessage(`{"title":"hello","start":3}`),
		State:          json.RawMessage(`{"count":3}`),
		Fingerprint:    "fp-" + id,
		Version:        7,
		CreatedAt:      activity.Add(-time.Hour),
		LastActivity:   activity,
		FailedAttempts: 0,
		MAC:            []byte{0xde, 0xad, 0xbe, 0xef, 0x00, 0x01},
	}
}

func mustCreate(t *testing.T, s *Store, sess *Session) {
	t.Helper()
	if err := s.CreateSession(sess); err != nil {
		t.Fatalf("CreateSession(%s): %v", sess.ID, err)
	}
}

// bucketKeys counts the keys of every bucket by walking it.
func bucketKeys(t *testing.T, s *Store) map[string]int {
	t.Helper()
	counts := map[string]int{}
	err := s.DB().View(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			n := 0
			count := func(k, _ []byte) error {
				if !isCountKey(k) {
					n++
				}
				return nil
			}
			if err := tx.Bucket(name).ForEach(count); err != nil {
				return err
			}
			counts[string(name)] = n
		}
		return nil
	})
	if err != nil {
		t.Fatalf("count bucket keys: %v", err)
	}
	return counts
}

// assertBucketKeys compares the key count of every bucket with want. A bucket
// missing from want must be empty.
func assertBucketKeys(t *testing.T, s *Store, want map[string]int) {
	t.Helper()
	got := bucketKeys(t, s)
	for _, name := range allBuckets {
		if got[string(name)] != want[string(name)] {
			t.Errorf("bucket %s has %d keys, want %d", name, got[string(name)], want[string(name)])
		}
	}
}

// rawGet returns a copy of the value of key in bucket, or nil.
func rawGet(t *testing.T, s *Store, bucket []byte, key []byte) []byte {
	t.Helper()
	var v []byte
	err := s.DB().View(func(tx *bolt.Tx) error {
		v = bytes.Clone(tx.Bucket(bucket).Get(key))
		return nil
	})
	if err != nil {
		t.Fatalf("read %s/%q: %v", bucket, key, err)
	}
	return v
}

// flipRecordByte changes one byte inside a stored session record and writes
// it back. The byte is the first letter of the component name, flipped to
// another letter, so the record still decodes and only the checksum detects
// the change.
func flipRecordByte(t *testing.T, s *Store, id string) {
	t.Helper()
	err := s.DB().Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSessions)
		v := bytes.Clone(b.Get([]byte(id)))
		if v == nil {
			return fmt.Errorf("session record %q not found", id)
		}
		sess, err := decodeRecord(v[4:])
		if err != nil {
			return fmt.Errorf("decode session record %q: %v", id, err)
		}
		i := bytes.Index(v[4:], []byte(sess.Component))
		if i < 0 {
			return fmt.Errorf("component name missing in session record %q", id)
		}
		v[4+i] ^= 0x01
		return b.Put([]byte(id), v)
	})
	if err != nil {
		t.Fatalf("flip a byte of session %s: %v", id, err)
	}
}

// activityEntries returns the by_activity keys that name id.
func activityEntries(t *testing.T, s *Store, id string) [][]byte {
	t.Helper()
	var out [][]byte
	err := s.DB().View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketActivity).ForEach(func(k, _ []byte) error {
			if len(k) >= 8 && string(k[8:]) == id {
				out = append(out, bytes.Clone(k))
			}
			return nil
		})
	})
	if err != nil {
		t.Fatalf("read by_activity: %v", err)
	}
	return out
}

func nanosOf(tm time.Time) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(tm.UnixNano()))
}

// clientRecordOf returns the decoded client record of owner, or nil.
func clientRecordOf(t *testing.T, s *Store, owner string) *clientRecord {
	t.Helper()
	v := rawGet(t, s, bucketClients, []byte(owner))
	if v == nil {
		return nil
	}
	var rec clientRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		t.Fatalf("decode client record %s: %v", owner, err)
	}
	return &rec
}

func assertNotFound(t *testing.T, s *Store, id string) {
	t.Helper()
	if _, err := s.GetSession(id); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("GetSession(%s) error = %v, want ErrNotFound", id, err)
	}
}

func assertFound(t *testing.T, s *Store, id string) {
	t.Helper()
	if _, err := s.GetSession(id); err != nil {
		t.Errorf("GetSession(%s): %v", id, err)
	}
}

func TestGetSessionRoundTrip(t *testing.T) {
	s := openTest(t)
	want := newSession("s1", "client-1", base)
	want.FailedAttempts = 2
	// A zone other than UTC: the instant must survive, compared with Equal.
	want.CreatedAt = base.Add(-90 * time.Minute).In(time.FixedZone("UTC+2", 2*3600))
	mustCreate(t, s, want)

	got, err := s.GetSession("s1")
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	if got.ID != want.ID {
		t.Errorf("ID = %q, want %q", got.ID, want.ID)
	}
	if got.Component != want.Component {
		t.Errorf("Component = %q, want %q", got.Component, want.Component)
	}
	if got.Owner != want.Owner {
		t.Errorf("Owner = %q, want %q", got.Owner, want.Owner)
	}
	if !bytes.Equal(got.Props, want.Props) {
		t.Errorf("Props = %s, want %s", got.Props, want.Props)
	}
	if !bytes.Equal(got.State, want.State) {
		t.Errorf("State = %s, want %s", got.State, want.State)
	}
	if got.Fingerprint != want.Fingerprint {
		t.Errorf("Fingerprint = %q, want %q", got.Fingerprint, want.Fingerprint)
	}
	if got.Version != want.Version {
		t.Errorf("Version = %d, want %d", got.Version, want.Version)
	}
	if !got.CreatedAt.Equal(want.CreatedAt) {
		t.Errorf("CreatedAt = %v, want %v", got.CreatedAt, want.CreatedAt)
	}
	if !got.LastActivity.Equal(want.LastActivity) {
		t.Errorf("LastActivity = %v, want %v", got.LastActivity, want.LastActivity)
	}
	if got.FailedAttempts != want.FailedAttempts {
		t.Errorf("FailedAttempts = %d, want %d", got.FailedAttempts, want.FailedAttempts)
	}
	if !bytes.Equal(got.MAC, want.MAC) {
		t.Errorf("MAC = %x, want %x", got.MAC, want.MAC)
	}
}

func TestGetSessionReturnsACopy(t *testing.T) {
	s := openTest(t)
	mustCreate(t, s, newSession("s1", "client-1", base))
	first, err := s.GetSession("s1")
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	first.State[0] = 'X'
	first.MAC[0] = 0
	second, err := s.GetSession("s1")
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	if string(second.State) != `{"count":3}` {
		t.Errorf("State after changing an earlier copy = %s", second.State)
	}
	if second.MAC[0] != 0xde {
		t.Errorf("MAC after changing an earlier copy = %x", second.MAC)
	}
}

func TestCreateSessionExistingID(t *testing.T) {
	s := openTest(t)
	mustCreate(t, s, newSession("s1", "client-1", base))

	again := newSession("s1", "client-2", base.Add(time.Hour))
	again.Component = "other"
	err := s.CreateSession(again)
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second CreateSession error = %v, want ErrExists", err)
	}
	got, err := s.GetSession("s1")
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	if got.Component != "counter" {
		t.Errorf("Component after rejected create = %q, want counter", got.Component)
	}
	if rec := clientRecordOf(t, s, "client-2"); rec != nil {
		t.Errorf("rejected create left a client record for client-2")
	}
}

func TestUpdateSessionMutableFields(t *testing.T) {
	s := openTest(t)
	orig := newSession("s1", "client-1", base)
	mustCreate(t, s, orig)

	next := *orig
	next.State = json.RawMessage(`{"count":4}`)
	next.Version = 8
	next.LastActivity = base.Add(5 * time.Minute)
	next.FailedAttempts = 1
	next.MAC = []byte{1, 2, 3}
	if err := s.UpdateSession(&next); err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}

	got, err := s.GetSession("s1")
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	if string(got.State) != `{"count":4}` {
		t.Errorf("State = %s, want {\"count\":4}", got.State)
	}
	if got.Version != 8 {
		t.Errorf("Version = %d, want 8", got.Version)
	}
	if !got.LastActivity.Equal(next.LastActivity) {
		t.Errorf("LastActivity = %v, want %v", got.LastActivity, next.LastActivity)
	}
	if got.FailedAttempts != 1 {
		t.Errorf("FailedAttempts = %d, want 1", got.FailedAttempts)
	}
	if !bytes.Equal(got.MAC, []byte{1, 2, 3}) {
		t.Errorf("MAC = %x, want 010203", got.MAC)
	}
	if !got.CreatedAt.Equal(orig.CreatedAt) {
		t.Errorf("CreatedAt = %v, want %v", got.CreatedAt, orig.CreatedAt)
	}
}

func TestUpdateSessionMovesActivityEntry(t *testing.T) {
	s := openTest(t)
	a := newSession("a", "client-1", base)
	b := newSession("b", "client-1", base.Add(time.Minute))
	mustCreate(t, s, a)
	mustCreate(t, s, b)

	// Move a several times, once past b and once back before it.
	for _, d := range []time.Duration{2 * time.Minute, 10 * time.Minute, -time.Hour} {
		next := *a
		next.LastActivity = base.Add(d)
		if err := s.UpdateSession(&next); err != nil {
			t.Fatalf("UpdateSession(%v): %v", d, err)
		}
		*a = next
	}

	entriesA := activityEntries(t, s, "a")
	if len(entriesA) != 1 {
		t.Fatalf("by_activity has %d entries for a, want 1", len(entriesA))
	}
	if want := activityKey(nanosOf(a.LastActivity), "a"); !bytes.Equal(entriesA[0], want) {
		t.Errorf("by_activity entry of a = %x, want %x", entriesA[0], want)
	}
	if n := len(activityEntries(t, s, "b")); n != 1 {
		t.Errorf("by_activity has %d entries for b, want 1", n)
	}
	if n := bucketKeys(t, s)[string(bucketActivity)]; n != 2 {
		t.Errorf("by_activity has %d keys, want 2", n)
	}
	// session_keys keeps the activity at creation: updates do not rewrite it.
	keys := rawGet(t, s, bucketSessionKeys, []byte("a"))
	if bytes.HasPrefix(keys, nanosOf(a.LastActivity)) {
		t.Errorf("session_keys of a = %x was rewritten by the update", keys)
	}
}

func TestUpdateSessionMissingID(t *testing.T) {
	s := openTest(t)
	err := s.UpdateSession(newSession("ghost", "client-1", base))
	if !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("UpdateSession error = %v, want ErrNotFound", err)
	}
	// Nothing may be written for the missing session.
	assertBucketKeys(t, s, map[string]int{"meta": 1})
}

func TestUpdateSessionDeletedSession(t *testing.T) {
	s := openTest(t)
	sess := newSession("s1", "client-1", base)
	mustCreate(t, s, sess)
	if err := s.DeleteSession("s1"); err != nil {
		t.Fatalf("DeleteSession: %v", err)
	}
	if err := s.UpdateSession(sess); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("UpdateSession error = %v, want ErrNotFound", err)
	}
	assertBucketKeys(t, s, map[string]int{"meta": 1})
}

func TestGetSessionMissingID(t *testing.T) {
	s := openTest(t)
	mustCreate(t, s, newSession("s1", "client-1", base))
	_, err := s.GetSession("s2")
	if !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("GetSession error = %v, want ErrNotFound", err)
	}
}

func TestGetSessionFlippedByte(t *testing.T) {
	s := openTest(t)
	mustCreate(t, s, newSession("s1", "client-1", base))
	flipRecordByte(t, s, "s1")

	_, err := s.GetSession("s1")
	if !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("GetSession error = %v, want ErrCorrupt", err)
	}
}

func TestDeleteSessionCorruptRecord(t *testing.T) {
	s := openTest(t)
	bad := newSession("bad", "client-1", base)
	bad.FailedAttempts = 2 // so that it has a failed entry too
	mustCreate(t, s, bad)
	mustCreate(t, s, newSession("good", "client-2", base.Add(time.Minute)))
	flipRecordByte(t, s, "bad")
	if _, err := s.GetSession("bad"); !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("GetSession(bad) error = %v, want ErrCorrupt", err)
	}

	if err := s.DeleteSession("bad"); err != nil {
		t.Fatalf("DeleteSession(bad): %v", err)
	}
	assertNotFound(t, s, "bad")
	assertFound(t, s, "good")
	assertBucketKeys(t, s, map[string]int{
		"meta":         1,
		"sessions":     1,
		"session_keys": 1,
		"by_activity":  1,
		"by_owner":     1,
		"failed":       0,
		"clients":      1,
	})
	if rec := clientRecordOf(t, s, "client-1"); rec != nil {
		t.Errorf("client-1 record kept after its only session was deleted")
	}
}

func TestDeleteSessionMissingID(t *testing.T) {
	s := openTest(t)
	mustCreate(t, s, newSession("s1", "client-1", base))
	if err := s.DeleteSession("ghost"); err != nil {
		t.Fatalf("DeleteSession(ghost): %v", err)
	}
	assertFound(t, s, "s1")
}

func TestClientSessionsPrefixOwners(t *testing.T) {
	s := openTest(t)
	// "ab" is a prefix of "abc": only the 0x00 separator keeps them apart.
	// Created out of id order, to show the listing is ordered by id.
	for _, c := range []struct{ id, owner, component string }{
		{"s3", "ab", "clock"},
		{"s2", "abc", "counter"},
		{"s1", "ab", "counter"},
		{"s4", "abc", "todo"},
	} {
		sess := newSession(c.id, c.owner, base)
		sess.Component = c.component
		mustCreate(t, s, sess)
	}

	got, err := s.ClientSessions("ab")
	if err != nil {
		t.Fatalf("ClientSessions(ab): %v", err)
	}
	want := []storage.SessionRef{
		{ID: "s1", Component: "counter", Fingerprint: "fp-s1"},
		{ID: "s3", Component: "clock", Fingerprint: "fp-s3"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("ClientSessions(ab) = %+v, want %+v", got, want)
	}

	got, err = s.ClientSessions("abc")
	if err != nil {
		t.Fatalf("ClientSessions(abc): %v", err)
	}
	want = []storage.SessionRef{
		{ID: "s2", Component: "counter", Fingerprint: "fp-s2"},
		{ID: "s4", Component: "todo", Fingerprint: "fp-s4"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("ClientSessions(abc) = %+v, want %+v", got, want)
	}

	got, err = s.ClientSessions("a")
	if err != nil {
		t.Fatalf("ClientSessions(a): %v", err)
	}
	if len(got) != 0 {
		t.Errorf("ClientSessions(a) = %+v, want none", got)
	}
}

func TestClientRecordCreatedWithFirstSession(t *testing.T) {
	s := openTest(t)
	first := newSession("s1", "client-1", base)
	mustCreate(t, s, first)
	rec := clientRecordOf(t, s, "client-1")
	if rec == nil {
		t.Fatalf("no client record after the first session")
	}
	if !rec.CreatedAt.Equal(first.CreatedAt) {
		t.Errorf("client CreatedAt = %v, want %v", rec.CreatedAt, first.CreatedAt)
	}

	// A later session leaves the record as it is.
	mustCreate(t, s, newSession("s2", "client-1", base.Add(time.Hour)))
	rec = clientRecordOf(t, s, "client-1")
	if rec == nil {
		t.Fatalf("no client record after the second session")
	}
	if !rec.CreatedAt.Equal(first.CreatedAt) {
		t.Errorf("client CreatedAt after a second session = %v, want %v", rec.CreatedAt, first.CreatedAt)
	}
	if n := bucketKeys(t, s)[string(bucketClients)]; n != 1 {
		t.Errorf("clients has %d keys, want 1", n)
	}
}

func TestClientRecordKeptWithOtherSession(t *testing.T) {
	s := openTest(t)
	mustCreate(t, s, newSession("s1", "client-1", base))
	mustCreate(t, s, newSession("s2", "client-1", base))
	if err := s.DeleteSession("s1"); err != nil {
		t.Fatalf("DeleteSession(s1): %v", err)
	}
	if rec := clientRecordOf(t, s, "client-1"); rec == nil {
		t.Errorf("client record deleted while s2 remains")
	}
}

func TestClientRecordDeletedWithLastSession(t *testing.T) {
	s := openTest(t)
	mustCreate(t, s, newSession("s1", "ab", base))
	mustCreate(t, s, newSession("s2", "ab", base))
	// The owner whose id extends "ab" must not keep ab's record alive.
	mustCreate(t, s, newSession("s3", "abc", base))
	for _, id := range []string{"s1", "s2"} {
		if err := s.DeleteSession(id); err != nil {
			t.Fatalf("DeleteSession(%s): %v", id, err)
		}
	}
	if rec := clientRecordOf(t, s, "ab"); rec != nil {
		t.Errorf("client record of ab kept after its last session was deleted")
	}
	if rec := clientRecordOf(t, s, "abc"); rec == nil {
		t.Errorf("client record of abc deleted")
	}
}

// sweepFixture creates sessions around cutoff = base:
//
//	old1     client-a  base-3h
//	old2     client-b  base-2h
//	old3     client-c  base-1ns
//	atCutoff client-c  base      (not before the cutoff: kept)
//	new      client-a  base+1h
func sweepFixture(t *testing.T) *Store {
	t.Helper()
	s := openTest(t)
	for _, c := range []struct {
		id, owner string
		activity  time.Time
	}{
		{"old1", "client-a", base.Add(-3 * time.Hour)},
		{"old2", "client-b", base.Add(-2 * time.Hour)},
		{"old3", "client-c", base.Add(-time.Nanosecond)},
		{"atCutoff", "client-c", base},
		{"new", "client-a", base.Add(time.Hour)},
	} {
		mustCreate(t, s, newSession(c.id, c.owner, c.activity))
	}
	return s
}

func TestSweepExpiredBeforeCutoff(t *testing.T) {
	s := sweepFixture(t)
	r, err := s.SweepExpired(base, nil)
	if err != nil {
		t.Fatalf("SweepExpired: %v", err)
	}
	if r.Sessions != 3 {
		t.Errorf("Sessions = %d, want 3", r.Sessions)
	}
	if r.Clients != 1 {
		t.Errorf("Clients = %d, want 1 (client-b)", r.Clients)
	}
	if r.Orphans != 0 {
		t.Errorf("Orphans = %d, want 0", r.Orphans)
	}

	for _, id := range []string{"old1", "old2", "old3"} {
		assertNotFound(t, s, id)
	}
	for _, id := range []string{"atCutoff", "new"} {
		assertFound(t, s, id)
	}

	refs, err := s.ClientSessions("client-a")
	if err != nil {
		t.Fatalf("ClientSessions(client-a): %v", err)
	}
	if len(refs) != 1 || refs[0].ID != "new" {
		t.Errorf("ClientSessions(client-a) = %+v, want only new", refs)
	}
	refs, err = s.ClientSessions("client-c")
	if err != nil {
		t.Fatalf("ClientSessions(client-c): %v", err)
	}
	if len(refs) != 1 || refs[0].ID != "atCutoff" {
		t.Errorf("ClientSessions(client-c) = %+v, want only atCutoff", refs)
	}

	if rec := clientRecordOf(t, s, "client-b"); rec != nil {
		t.Errorf("client-b record kept after its only session expired")
	}
	if rec := clientRecordOf(t, s, "client-a"); rec == nil {
		t.Errorf("client-a record deleted although it owns new")
	}
	if rec := clientRecordOf(t, s, "client-c"); rec == nil {
		t.Errorf("client-c record deleted although it owns atCutoff")
	}

	assertBucketKeys(t, s, map[string]int{
		"meta": 1, "sessions": 2, "session_keys": 2, "by_activity": 2, "by_owner": 2, "clients": 2,
	})
}

func TestSweepExpiredKeepSparesIDs(t *testing.T) {
	s := sweepFixture(t)
	var calledFor []string
	keep := func(id string) bool {
		calledFor = append(calledFor, id)
		return id == "old2"
	}
	r, err := s.SweepExpired(base, keep)
	if err != nil {
		t.Fatalf("SweepExpired: %v", err)
	}
	if r.Sessions != 2 {
		t.Errorf("Sessions = %d, want 2", r.Sessions)
	}
	if r.Clients != 0 {
		t.Errorf("Clients = %d, want 0", r.Clients)
	}
	assertFound(t, s, "old2")
	assertNotFound(t, s, "old1")
	assertNotFound(t, s, "old3")
	if rec := clientRecordOf(t, s, "client-b"); rec == nil {
		t.Errorf("client-b record deleted although old2 was kept")
	}
	// keep is called for expired sessions only.
	slices.Sort(calledFor)
	if want := []string{"old1", "old2", "old3"}; !slices.Equal(calledFor, want) {
		t.Errorf("keep was called for %v, want %v", calledFor, want)
	}
}

func TestSweepExpiredEmptyStore(t *testing.T) {
	s := openTest(t)
	r, err := s.SweepExpired(base, nil)
	if err != nil {
		t.Fatalf("SweepExpired: %v", err)
	}
	if r != (storage.SweepResult{}) {
		t.Errorf("result = %+v, want zero", r)
	}
}

func TestSweepExpiredSeveralBatches(t *testing.T) {
	s := openTest(t)
	const expired = 2*sweepBatch + 1
	const owners = 7
	var sessions []*Session
	for i := range expired {
		id := fmt.Sprintf("old-%05d", i)
		owner := fmt.Sprintf("client-%d", i%owners)
		sessions = append(sessions, newSession(id, owner, base.Add(-time.Duration(expired-i)*time.Second)))
	}
	for i := range 3 {
		sessions = append(sessions, newSession(fmt.Sprintf("fresh-%d", i), "client-fresh", base.Add(time.Duration(i)*time.Second)))
	}
	for _, sess := range sessions {
		mustCreate(t, s, sess)
	}

	r, err := s.SweepExpired(base, nil)
	if err != nil {
		t.Fatalf("SweepExpired: %v", err)
	}
	if r.Sessions != expired {
		t.Errorf("Sessions = %d, want %d", r.Sessions, expired)
	}
	if r.Clients != owners {
		t.Errorf("Clients = %d, want %d", r.Clients, owners)
	}
	if r.Orphans != 0 {
		t.Errorf("Orphans = %d, want 0", r.Orphans)
	}
	assertBucketKeys(t, s, map[string]int{
		"meta": 1, "sessions": 3, "session_keys": 3, "by_activity": 3, "by_owner": 3, "clients": 1,
	})
}

func TestSweepExpiredSeveralBatchesKeep(t *testing.T) {
	s := openTest(t)
	const expired = 2*sweepBatch + 5
	var sessions []*Session
	spared := map[string]bool{}
	for i := range expired {
		id := fmt.Sprintf("old-%05d", i)
		// Spare some ids on both sides of each batch boundary.
		if i%sweepBatch == 0 || i%sweepBatch == sweepBatch-1 {
			spared[id] = true
		}
		sessions = append(sessions, newSession(id, "client-1", base.Add(-time.Duration(expired-i)*time.Second)))
	}
	for _, sess := range sessions {
		mustCreate(t, s, sess)
	}

	seen := map[string]int{}
	r, err := s.SweepExpired(base, func(id string) bool {
		seen[id]++
		return spared[id]
	})
	if err != nil {
		t.Fatalf("SweepExpired: %v", err)
	}
	if r.Sessions != expired-len(spared) {
		t.Errorf("Sessions = %d, want %d", r.Sessions, expired-len(spared))
	}
	if len(seen) != expired {
		t.Errorf("keep was called for %d ids, want %d", len(seen), expired)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("keep was called for %s %d times, want once", id, n)
		}
	}
	if n := bucketKeys(t, s)[string(bucketSessions)]; n != len(spared) {
		t.Errorf("sessions has %d keys, want %d", n, len(spared))
	}
	for id := range spared {
		assertFound(t, s, id)
	}
}

func TestSweepFailedAtOrAboveMax(t *testing.T) {
	s := openTest(t)
	for i, attempts := range []int{0, 1, 2, 3, 5} {
		sess := newSession(fmt.Sprintf("s%d", attempts), fmt.Sprintf("client-%d", i), base)
		sess.FailedAttempts = attempts
		mustCreate(t, s, sess)
	}
	r, err := s.SweepFailed(3)
	if err != nil {
		t.Fatalf("SweepFailed: %v", err)
	}
	if r.Sessions != 2 {
		t.Errorf("Sessions = %d, want 2", r.Sessions)
	}
	if r.Clients != 2 {
		t.Errorf("Clients = %d, want 2", r.Clients)
	}
	if r.Orphans != 0 {
		t.Errorf("Orphans = %d, want 0", r.Orphans)
	}
	assertNotFound(t, s, "s3")
	assertNotFound(t, s, "s5")
	for _, id := range []string{"s0", "s1", "s2"} {
		assertFound(t, s, id)
	}
	assertBucketKeys(t, s, map[string]int{
		"meta": 1, "sessions": 3, "session_keys": 3, "by_activity": 3, "by_owner": 3, "failed": 2, "clients": 3,
	})
}

func TestFailedEntryOnlyAboveZero(t *testing.T) {
	s := openTest(t)
	mustCreate(t, s, newSession("zero", "client-1", base))
	failing := newSession("two", "client-1", base)
	failing.FailedAttempts = 2
	mustCreate(t, s, failing)

	if v := rawGet(t, s, bucketFailed, []byte("zero")); v != nil {
		t.Errorf("failed entry for a session with 0 attempts: %x", v)
	}
	v := rawGet(t, s, bucketFailed, []byte("two"))
	if n, size := binary.Uvarint(v); size <= 0 || n != 2 {
		t.Errorf("failed entry of two = %x, want uvarint 2", v)
	}

	// With attempts back at 0, UpdateSession removes the entry.
	next := *failing
	next.FailedAttempts = 0
	if err := s.UpdateSession(&next); err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	if v := rawGet(t, s, bucketFailed, []byte("two")); v != nil {
		t.Errorf("failed entry kept after attempts went back to 0: %x", v)
	}
}

func TestDeleteAllSessionsEmptiesBuckets(t *testing.T) {
	s := openTest(t)
	if _, err := s.LoadOrCreateSecret(func() ([]byte, error) { return []byte("0123456789abcdef"), nil }); err != nil {
		t.Fatalf("LoadOrCreateSecret: %v", err)
	}
	for i := range 5 {
		sess := newSession(fmt.Sprintf("s%d", i), fmt.Sprintf("client-%d", i%2), base.Add(time.Duration(i)*time.Minute))
		sess.FailedAttempts = i % 3
		mustCreate(t, s, sess)
	}

	r, err := s.DeleteAllSessions()
	if err != nil {
		t.Fatalf("DeleteAllSessions: %v", err)
	}
	if r.Sessions != 5 {
		t.Errorf("Sessions = %d, want 5", r.Sessions)
	}
	if r.Clients != 2 {
		t.Errorf("Clients = %d, want 2", r.Clients)
	}
	// meta keeps schema_version and secret.
	assertBucketKeys(t, s, map[string]int{"meta": 2})
}

func TestDeleteAllSessionsKeepsSecret(t *testing.T) {
	s := openTest(t)
	want, err := s.LoadOrCreateSecret(func() ([]byte, error) { return []byte("0123456789abcdef"), nil })
	if err != nil {
		t.Fatalf("LoadOrCreateSecret: %v", err)
	}
	mustCreate(t, s, newSession("s1", "client-1", base))
	if _, err := s.DeleteAllSessions(); err != nil {
		t.Fatalf("DeleteAllSessions: %v", err)
	}
	got, err := s.LoadOrCreateSecret(func() ([]byte, error) {
		t.Errorf("generate called after DeleteAllSessions")
		return []byte("other"), nil
	})
	if err != nil {
		t.Fatalf("LoadOrCreateSecret: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("secret = %q, want %q", got, want)
	}
}

func TestCreateAfterDeleteAllSessions(t *testing.T) {
	s := openTest(t)
	mustCreate(t, s, newSession("s1", "client-1", base))
	if _, err := s.DeleteAllSessions(); err != nil {
		t.Fatalf("DeleteAllSessions: %v", err)
	}
	mustCreate(t, s, newSession("s1", "client-1", base))
	assertFound(t, s, "s1")
}

func TestLoadOrCreateSecretGeneratesOnce(t *testing.T) {
	s := openTest(t)
	calls := 0
	generate := func() ([]byte, error) {
		calls++
		return []byte(fmt.Sprintf("secret-%d", calls)), nil
	}
	first, err := s.LoadOrCreateSecret(generate)
	if err != nil {
		t.Fatalf("first LoadOrCreateSecret: %v", err)
	}
	second, err := s.LoadOrCreateSecret(generate)
	if err != nil {
		t.Fatalf("second LoadOrCreateSecret: %v", err)
	}
	if calls != 1 {
		t.Errorf("generate called %d times, want 1", calls)
	}
	if string(first) != "secret-1" {
		t.Errorf("first secret = %q, want secret-1", first)
	}
	if !bytes.Equal(second, first) {
		t.Errorf("second secret = %q, want %q", second, first)
	}
}

func TestLoadOrCreateSecretAfterReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.db")
	s := openTestAt(t, path)
	want, err := s.LoadOrCreateSecret(func() ([]byte, error) { return []byte{0, 1, 2, 0xff, 0x80, 7}, nil })
	if err != nil {
		t.Fatalf("LoadOrCreateSecret: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = openTestAt(t, path)
	got, err := s.LoadOrCreateSecret(func() ([]byte, error) {
		t.Errorf("generate called after reopening")
		return []byte("other"), nil
	})
	if err != nil {
		t.Fatalf("LoadOrCreateSecret after reopen: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("secret after reopen = %x, want %x", got, want)
	}
}

func TestLoadOrCreateSecretWrapsGenerateError(t *testing.T) {
	s := openTest(t)
	errGenerate := errors.New("no entropy")
	_, err := s.LoadOrCreateSecret(func() ([]byte, error) { return nil, errGenerate })
	if !errors.Is(err, errGenerate) {
		t.Fatalf("error = %v, want it to wrap %v", err, errGenerate)
	}
	if !strings.Contains(err.Error(), s.Path()) {
		t.Errorf("error %q does not name %s", err, s.Path())
	}
	if v := rawGet(t, s, bucketMeta, keySecret); v != nil {
		t.Errorf("a secret was stored after generate failed: %x", v)
	}
}

func TestOpenNonDatabaseFile(t *testing.T) {
	random := make([]byte, 8<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	text := []byte(strings.Repeat("this is a plain text file, not a database\n", 200))[:8<<10]

	for _, c := range []struct {
		name    string
		content []byte
	}{
		{"random", random},
		{"text", text},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "live.db")
			if err := os.WriteFile(path, c.content, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, &Options{LockTimeout: 200 * time.Millisecond})
			if err == nil {
				s.Close()
				t.Fatalf("Open succeeded on a file that is not a database")
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name %s", err, path)
			}
			if !errors.Is(err, berrors.ErrInvalid) {
				t.Errorf("error %v does not wrap bbolt's ErrInvalid", err)
			}
			after, readErr := os.ReadFile(path)
			if readErr != nil {
				t.Fatal(readErr)
			}
			if !bytes.Equal(after, c.content) {
				t.Errorf("file changed: %d bytes now, %d before", len(after), len(c.content))
			}
		})
	}
}

func TestOpenLockedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.db")
	holder := openTestAt(t, path)

	type result struct {
		s   *Store
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		s, err := Open(path, &Options{LockTimeout: 200 * time.Millisecond})
		done <- result{s, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("Open on a locked file did not return within 10s")
	}
	elapsed := time.Since(start)
	if res.err == nil {
		res.s.Close()
		t.Fatalf("Open succeeded on a file held by another store")
	}
	if elapsed > 2*time.Second {
		t.Errorf("Open took %v with a 200ms lock timeout", elapsed)
	}
	if !strings.Contains(res.err.Error(), path) {
		t.Errorf("error %q does not name %s", res.err, path)
	}
	if !errors.Is(res.err, berrors.ErrTimeout) {
		t.Errorf("error %v does not wrap bbolt's ErrTimeout", res.err)
	}
	// The first store still works.
	mustCreate(t, holder, newSession("s1", "client-1", base))
}

func TestOpenNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.db")
	s := openTestAt(t, path)
	newer := strconv.Itoa(SchemaVersion + 1)
	err := s.DB().Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, []byte(newer))
	})
	if err != nil {
		t.Fatalf("set schema_version: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	again, err := Open(path, &Options{LockTimeout: 200 * time.Millisecond})
	if err == nil {
		again.Close()
		t.Fatalf("Open succeeded on schema version %s", newer)
	}
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Errorf("error %v, want ErrSchemaTooNew", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, fmt.Sprintf("version %d", SchemaVersion+1)) {
		t.Errorf("error %q does not name the file's version %d", msg, SchemaVersion+1)
	}
	if !strings.Contains(msg, fmt.Sprintf("up to %d", SchemaVersion)) {
		t.Errorf("error %q does not name this build's version %d", msg, SchemaVersion)
	}
	if !strings.Contains(msg, path) {
		t.Errorf("error %q does not name %s", msg, path)
	}

	// The rejected Open released the file and left schema_version unchanged.
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatalf("reopen read-only: %v", err)
	}
	defer db.Close()
	var stored string
	_ = db.View(func(tx *bolt.Tx) error {
		stored = string(tx.Bucket(bucketMeta).Get(keySchema))
		return nil
	})
	if stored != newer {
		t.Errorf("schema_version after rejected Open = %q, want %q", stored, newer)
	}
}

func TestOpenCreatesMissingFolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "live.db")
	s := openTestAt(t, path)
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database file: %v", err)
	}
}

func TestStatsEmptyStore(t *testing.T) {
	s := openTest(t)
	st, err := s.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.Sessions != 0 {
		t.Errorf("Sessions = %d, want 0", st.Sessions)
	}
	if st.FailedSessions != 0 {
		t.Errorf("FailedSessions = %d, want 0", st.FailedSessions)
	}
	if st.Clients != 0 {
		t.Errorf("Clients = %d, want 0", st.Clients)
	}
	if st.OldestActivity != nil {
		t.Errorf("OldestActivity = %v, want nil", st.OldestActivity)
	}
	if st.NewestActivity != nil {
		t.Errorf("NewestActivity = %v, want nil", st.NewestActivity)
	}
}

func TestStatsCounts(t *testing.T) {
	s := openTest(t)
	oldest := base.Add(-2 * time.Hour)
	newest := base.Add(3 * time.Hour)
	for _, c := range []struct {
		id, owner string
		activity  time.Time
		attempts  int
	}{
		{"s1", "client-1", base, 0},
		{"s2", "client-1", newest, 1},
		{"s3", "client-2", oldest, 0},
		{"s4", "client-3", base.Add(time.Minute), 4},
	} {
		sess := newSession(c.id, c.owner, c.activity)
		sess.FailedAttempts = c.attempts
		mustCreate(t, s, sess)
	}

	st, err := s.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	want := map[string]int{
		"meta": 1, "sessions": 4, "session_keys": 4, "by_activity": 4, "by_owner": 4, "failed": 2, "clients": 3,
	}
	if len(st.Buckets) != len(want) {
		t.Errorf("Stats has %d buckets, want %d", len(st.Buckets), len(want))
	}
	for name, n := range want {
		if st.Buckets[name].Keys != n {
			t.Errorf("Buckets[%s].Keys = %d, want %d", name, st.Buckets[name].Keys, n)
		}
	}
	if st.Sessions != 4 {
		t.Errorf("Sessions = %d, want 4", st.Sessions)
	}
	if st.FailedSessions != 2 {
		t.Errorf("FailedSessions = %d, want 2", st.FailedSessions)
	}
	if st.Clients != 3 {
		t.Errorf("Clients = %d, want 3", st.Clients)
	}
	if st.OldestActivity == nil || !st.OldestActivity.Equal(oldest) {
		t.Errorf("OldestActivity = %v, want %v", st.OldestActivity, oldest)
	}
	if st.NewestActivity == nil || !st.NewestActivity.Equal(newest) {
		t.Errorf("NewestActivity = %v, want %v", st.NewestActivity, newest)
	}
	if st.Path != s.Path() {
		t.Errorf("Path = %q, want %q", st.Path, s.Path())
	}
	if st.FileSizeBytes <= 0 {
		t.Errorf("FileSizeBytes = %d, want > 0", st.FileSizeBytes)
	}
}

func TestCloseTwice(t *testing.T) {
	s := openTest(t)
	if err := s.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func TestOperationsAfterClose(t *testing.T) {
	s := openTest(t)
	mustCreate(t, s, newSession("s1", "client-1", base))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	sess := newSession("s2", "client-1", base)
	for _, op := range []struct {
		name string
		call func() error
	}{
		{"LoadOrCreateSecret", func() error {
			_, err := s.LoadOrCreateSecret(func() ([]byte, error) { return []byte("x"), nil })
			return err
		}},
		{"CreateSession", func() error { return s.CreateSession(sess) }},
		{"UpdateSession", func() error { return s.UpdateSession(newSession("s1", "client-1", base)) }},
		{"GetSession", func() error { _, err := s.GetSession("s1"); return err }},
		{"DeleteSession", func() error { return s.DeleteSession("s1") }},
		{"ClientSessions", func() error { _, err := s.ClientSessions("client-1"); return err }},
		{"SweepExpired", func() error { _, err := s.SweepExpired(base, nil); return err }},
		{"SweepFailed", func() error { _, err := s.SweepFailed(1); return err }},
		{"DeleteAllSessions", func() error { _, err := s.DeleteAllSessions(); return err }},
		{"Stats", func() error { _, err := s.Stats(); return err }},
	} {
		t.Run(op.name, func(t *testing.T) {
			if err := op.call(); !errors.Is(err, storage.ErrClosed) {
				t.Errorf("%s after Close error = %v, want ErrClosed", op.name, err)
			}
		})
	}
}

func TestConcurrentWritesAndSweeps(t *testing.T) {
	s := openTest(t)
	const writers, perWriter = 4, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers*perWriter*3+2)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				sess := newSession(fmt.Sprintf("w%d-%03d", w, i), fmt.Sprintf("client-%d", i%3), base.Add(-time.Duration(i)*time.Minute))
				if err := s.CreateSession(sess); err != nil {
					errs <- err
					continue
				}
				next := *sess
				next.LastActivity = base.Add(time.Duration(i%5-2) * time.Hour)
				next.FailedAttempts = i % 4
				// A sweep may have deleted it meanwhile.
				if err := s.UpdateSession(&next); err != nil && !errors.Is(err, storage.ErrNotFound) {
					errs <- err
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 20 {
			if _, err := s.SweepExpired(base, nil); err != nil {
				errs <- err
			}
			if _, err := s.SweepFailed(3); err != nil {
				errs <- err
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent operation: %v", err)
	}
	// openTest's cleanup checks that the indexes still agree.
}

func TestUpdateSessionOwnerChange(t *testing.T) {
	s := openTest(t)
	sess := newSession("s1", "alice", time.Unix(100, 0))
	mustCreate(t, s, sess)
	stolen := *sess
	stolen.Owner = "mallory"
	if err := s.UpdateSession(&stolen); err == nil {
		t.Fatal("UpdateSession accepted a new owner")
	}
	got, err := s.GetSession("s1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Owner != "alice" {
		t.Errorf("owner after rejected update = %q, want alice", got.Owner)
	}
}

func TestSweepFailedStaleEntry(t *testing.T) {
	s := openTest(t)
	err := s.DB().Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFailed).Put([]byte("ghost"), binary.AppendUvarint(nil, 9))
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.SweepFailed(3)
	if err != nil {
		t.Fatal(err)
	}
	if r.Sessions != 0 || r.Orphans != 1 {
		t.Errorf("sweep result %+v, want 0 sessions and 1 orphan", r)
	}
	if v := rawGet(t, s, bucketFailed, []byte("ghost")); v != nil {
		t.Errorf("failed entry without a session survived the sweep: %v", v)
	}
}

func TestReadsSchemaOneJSONRecords(t *testing.T) {
	s := openTest(t)
	sess := newSession("old", "alice", time.Unix(100, 5).UTC())
	mustCreate(t, s, sess)
	// Rewrite the record as schema version 1 stored it: CRC-32C || JSON.
	err := s.DB().Update(func(tx *bolt.Tx) error {
		body, err := json.Marshal(sess)
		if err != nil {
			return err
		}
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
	if got.Owner != "alice" || string(got.State) != string(sess.State) || got.Version != sess.Version || !got.LastActivity.Equal(sess.LastActivity) {
		t.Errorf("JSON record read as %+v", got)
	}
}

func TestOpenUpgradesSchemaOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DB().Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, []byte("1")) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(path, nil)
	if err != nil {
		t.Fatalf("open a schema 1 file: %v", err)
	}
	defer s.Close()
	if v := rawGet(t, s, bucketMeta, keySchema); string(v) != strconv.Itoa(SchemaVersion) {
		t.Errorf("schema version after open = %q, want %d", v, SchemaVersion)
	}
}

func TestDecodeRecordRejectsTruncation(t *testing.T) {
	// StateVersion 0 writes the tag without the field, 2 the tag with it.
	for _, stateVersion := range []uint32{0, 2} {
		sess := newSession("s", "o", time.Unix(1, 0))
		sess.StateVersion = stateVersion
		full := encodeRecord(nil, sess)
		for n := 0; n < len(full); n++ {
			if _, err := decodeRecord(full[:n]); err == nil {
				t.Fatalf("a record of StateVersion %d cut to %d of %d bytes decoded", stateVersion, n, len(full))
			}
		}
		if _, err := decodeRecord(append(full, 0)); err == nil {
			t.Errorf("a record of StateVersion %d with a trailing byte decoded", stateVersion)
		}
	}
}

func TestOpenCountsKeysOfOlderFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		mustCreate(t, s, newSession(fmt.Sprintf("s%d", i), "alice", time.Unix(int64(100+i), 0)))
	}
	// Remove the counts, as in a file written before they were kept.
	err = s.DB().Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		for _, name := range dataBuckets() {
			if err := meta.Delete(countKey(name)); err != nil {
				return err
			}
		}
		return meta.Delete(keyCountsReady)
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openTestAt(t, path)
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Sessions != 3 || st.Clients != 1 || st.Buckets["by_activity"].Keys != 3 {
		t.Errorf("stats after counting an older file: %+v", st)
	}
}
