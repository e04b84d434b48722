// Package storetest is a contract test suite for storage.Store
// implementations. A backend's test calls Run with a function that opens an
// empty store:
//
//	func TestContract(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) storage.Store {
//			s := open()
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// The suite only uses the storage.Store interface, so it checks what every
// backend must do. Layout checks that depend on one backend belong in that
// backend's own tests.
package storetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/livebolt/livebolt/storage"
)

// base is the reference instant of the suite. It has nanoseconds, so a store
// that drops precision fails the time comparisons.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

// manyExpired is the number of expired sessions of the large sweep tests:
// more than twice the 1000 deletions that boltdb commits at a time.
const manyExpired = 2001

// Run runs the contract suite as subtests of t. open must return a new,
// empty store for each subtest and close it in t.Cleanup. Some subtests
// close the store themselves, so Close must be safe to call twice.
func Run(t *testing.T, open func(t *testing.T) storage.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s storage.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"GetReturnsCopy", testGetReturnsCopy},
		{"StoreKeepsNoCallerSlice", testStoreKeepsNoCallerSlice},
		{"CreateExistingID", testCreateExistingID},
		{"UpdateMutableFields", testUpdateMutableFields},
		{"UpdateMissingID", testUpdateMissingID},
		{"UpdateDeletedSession", testUpdateDeletedSession},
		{"UpdateOwnerChangeRejected", testUpdateOwnerChangeRejected},
		{"GetMissingID", testGetMissingID},
		{"DeleteMissingID", testDeleteMissingID},
		{"ClientSessionsPrefixOwners", testClientSessionsPrefixOwners},
		{"ClientRecordLifecycle", testClientRecordLifecycle},
		{"SweepExpiredCutoff", testSweepExpiredCutoff},
		{"SweepExpiredKeep", testSweepExpiredKeep},
		{"SweepExpiredEmptyStore", testSweepExpiredEmptyStore},
		{"SweepExpiredAfterUpdate", testSweepExpiredAfterUpdate},
		{"SweepExpiredMany", testSweepExpiredMany},
		{"SweepExpiredManyKeep", testSweepExpiredManyKeep},
		{"SweepFailed", testSweepFailed},
		{"DeleteAllSessions", testDeleteAllSessions},
		{"LoadOrCreateSecretGeneratesOnce", testLoadOrCreateSecretGeneratesOnce},
		{"LoadOrCreateSecretGenerateError", testLoadOrCreateSecretGenerateError},
		{"StatsEmptyStore", testStatsEmptyStore},
		{"StatsCounts", testStatsCounts},
		{"CloseTwice", testCloseTwice},
		{"ErrClosedAfterClose", testErrClosedAfterClose},
		{"ConcurrentCreateUpdateSweep", testConcurrentCreateUpdateSweep},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
}

// newSession returns a session with every field set.
func newSession(id, owner string, activity time.Time) *storage.Session {
	return &storage.Session{
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

func mustCreate(t *testing.T, s storage.Store, sess *storage.Session) {
	t.Helper()
	if err := s.CreateSession(sess); err != nil {
		t.Fatalf("CreateSession(%s): %v", sess.ID, err)
	}
}

func mustUpdate(t *testing.T, s storage.Store, sess *storage.Session) {
	t.Helper()
	if err := s.UpdateSession(sess); err != nil {
		t.Fatalf("UpdateSession(%s): %v", sess.ID, err)
	}
}

func mustGet(t *testing.T, s storage.Store, id string) *storage.Session {
	t.Helper()
	got, err := s.GetSession(id)
	if err != nil {
		t.Fatalf("GetSession(%s): %v", id, err)
	}
	return got
}

func mustDelete(t *testing.T, s storage.Store, id string) {
	t.Helper()
	if err := s.DeleteSession(id); err != nil {
		t.Fatalf("DeleteSession(%s): %v", id, err)
	}
}

func mustStats(t *testing.T, s storage.Store) storage.Stats {
	t.Helper()
	st, err := s.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return st
}

func mustClientSessions(t *testing.T, s storage.Store, clientID string) []storage.SessionRef {
	t.Helper()
	refs, err := s.ClientSessions(clientID)
	if err != nil {
		t.Fatalf("ClientSessions(%s): %v", clientID, err)
	}
	return refs
}

func assertNotFound(t *testing.T, s storage.Store, id string) {
	t.Helper()
	if _, err := s.GetSession(id); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("GetSession(%s) error = %v, want ErrNotFound", id, err)
	}
}

func assertFound(t *testing.T, s storage.Store, id string) {
	t.Helper()
	if _, err := s.GetSession(id); err != nil {
		t.Errorf("GetSession(%s): %v", id, err)
	}
}

// assertCounts compares the session, failed session and client counts of
// Stats with the expected ones.
func assertCounts(t *testing.T, s storage.Store, sessions, failed, clients int) {
	t.Helper()
	st := mustStats(t, s)
	if st.Sessions != sessions || st.FailedSessions != failed || st.Clients != clients {
		t.Errorf("Stats counts sessions=%d failed=%d clients=%d, want %d, %d, %d",
			st.Sessions, st.FailedSessions, st.Clients, sessions, failed, clients)
	}
}

// assertSameSession compares every field of got with want. Times are
// compared with Equal, so a store may return them in another location.
func assertSameSession(t *testing.T, got, want *storage.Session) {
	t.Helper()
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
	if got.StateVersion != want.StateVersion {
		t.Errorf("StateVersion = %d, want %d", got.StateVersion, want.StateVersion)
	}
}

func testRoundTrip(t *testing.T, s storage.Store) {
	want := newSession("s1", "client-1", base)
	want.Version = 1<<63 + 5 // above the range of int64
	want.FailedAttempts = 2
	want.StateVersion = math.MaxUint32
	// A zone other than UTC: the instant must survive, compared with Equal.
	want.CreatedAt = base.Add(-90 * time.Minute).In(time.FixedZone("UTC+2", 2*3600))
	// A MAC of every byte value, zero bytes included.
	want.MAC = make([]byte, 256)
	for i := range want.MAC {
		want.MAC[i] = byte(i)
	}
	mustCreate(t, s, want)
	assertSameSession(t, mustGet(t, s, "s1"), want)
}

// testGetReturnsCopy changes the slices of one GetSession result and reads
// the session again.
func testGetReturnsCopy(t *testing.T, s storage.Store) {
	want := newSession("s1", "client-1", base)
	mustCreate(t, s, want)
	first := mustGet(t, s, "s1")
	// Appending to one slice of the result must not change the others, even
	// when the store returns them from one allocation.
	_ = append(first.Props, "tail"...)
	_ = append(first.State, "tail"...)
	assertSameSession(t, first, want)

	first.Props[0] = 'X'
	first.State[0] = 'X'
	first.MAC[0] = 0
	assertSameSession(t, mustGet(t, s, "s1"), want)
}

// testStoreKeepsNoCallerSlice changes the caller's slices after
// CreateSession and after UpdateSession returned.
func testStoreKeepsNoCallerSlice(t *testing.T, s storage.Store) {
	sess := newSession("s1", "client-1", base)
	mustCreate(t, s, sess)
	sess.Props[0], sess.State[0], sess.MAC[0] = 'X', 'X', 0
	assertSameSession(t, mustGet(t, s, "s1"), newSession("s1", "client-1", base))

	next := newSession("s1", "client-1", base)
	next.State = json.RawMessage(`{"count":4}`)
	mustUpdate(t, s, next)
	next.Props[0], next.State[0], next.MAC[0] = 'X', 'X', 0
	want := newSession("s1", "client-1", base)
	want.State = json.RawMessage(`{"count":4}`)
	assertSameSession(t, mustGet(t, s, "s1"), want)
}

func testCreateExistingID(t *testing.T, s storage.Store) {
	orig := newSession("s1", "client-1", base)
	mustCreate(t, s, orig)

	again := newSession("s1", "client-2", base.Add(time.Hour))
	again.Component = "other"
	if err := s.CreateSession(again); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second CreateSession error = %v, want ErrExists", err)
	}
	assertSameSession(t, mustGet(t, s, "s1"), orig)
	if refs := mustClientSessions(t, s, "client-2"); len(refs) != 0 {
		t.Errorf("ClientSessions(client-2) after a rejected create = %+v, want none", refs)
	}
	// The rejected create left no client record for client-2.
	assertCounts(t, s, 1, 0, 1)
}

func testUpdateMutableFields(t *testing.T, s storage.Store) {
	orig := newSession("s1", "client-1", base)
	mustCreate(t, s, orig)

	next := *orig
	next.State = json.RawMessage(`{"count":4}`)
	next.Version = 8
	next.LastActivity = base.Add(5 * time.Minute)
	next.FailedAttempts = 1
	next.MAC = []byte{1, 2, 3}
	next.StateVersion = 2
	mustUpdate(t, s, &next)
	assertSameSession(t, mustGet(t, s, "s1"), &next)
	assertCounts(t, s, 1, 1, 1)

	// A shorter State and MAC than the previous ones, no failed attempt and
	// the default StateVersion.
	next.State = json.RawMessage(`{}`)
	next.MAC = []byte{9}
	next.FailedAttempts = 0
	next.StateVersion = 0
	mustUpdate(t, s, &next)
	assertSameSession(t, mustGet(t, s, "s1"), &next)
	assertCounts(t, s, 1, 0, 1)
}

func testUpdateMissingID(t *testing.T, s storage.Store) {
	err := s.UpdateSession(newSession("ghost", "client-1", base))
	if !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("UpdateSession error = %v, want ErrNotFound", err)
	}
	// Nothing may be written for the missing session.
	assertNotFound(t, s, "ghost")
	assertCounts(t, s, 0, 0, 0)
}

func testUpdateDeletedSession(t *testing.T, s storage.Store) {
	sess := newSession("s1", "client-1", base)
	mustCreate(t, s, sess)
	mustDelete(t, s, "s1")
	if err := s.UpdateSession(sess); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("UpdateSession error = %v, want ErrNotFound", err)
	}
	assertNotFound(t, s, "s1")
	assertCounts(t, s, 0, 0, 0)
}

func testUpdateOwnerChangeRejected(t *testing.T, s storage.Store) {
	sess := newSession("s1", "alice", base)
	mustCreate(t, s, sess)
	stolen := *sess
	stolen.Owner = "mallory"
	stolen.State = json.RawMessage(`{"count":99}`)
	stolen.FailedAttempts = 5
	if err := s.UpdateSession(&stolen); err == nil {
		t.Fatal("UpdateSession accepted a new owner")
	}
	// The rejected update wrote nothing.
	assertSameSession(t, mustGet(t, s, "s1"), sess)
	if refs := mustClientSessions(t, s, "mallory"); len(refs) != 0 {
		t.Errorf("ClientSessions(mallory) = %+v, want none", refs)
	}
	if refs := mustClientSessions(t, s, "alice"); len(refs) != 1 || refs[0].ID != "s1" {
		t.Errorf("ClientSessions(alice) = %+v, want only s1", refs)
	}
	assertCounts(t, s, 1, 0, 1)
}

func testGetMissingID(t *testing.T, s storage.Store) {
	mustCreate(t, s, newSession("s1", "client-1", base))
	if _, err := s.GetSession("s2"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("GetSession error = %v, want ErrNotFound", err)
	}
}

func testDeleteMissingID(t *testing.T, s storage.Store) {
	mustCreate(t, s, newSession("s1", "client-1", base))
	mustDelete(t, s, "ghost")
	assertFound(t, s, "s1")
	assertCounts(t, s, 1, 0, 1)
}

func testClientSessionsPrefixOwners(t *testing.T, s storage.Store) {
	// "ab" is a prefix of "abc", and the store must keep them apart.
	// Created out of id order, to show the listing is ordered by id.
	for _, c := range []struct{ id, owner, component string }{
		{"s3", "ab", "clock"},
		{"s2", "abc", "counter"},
		{"s1", "ab", "counter"},
		{"s4", "abc", "todo"},
		{"s0", "a", "todo"},
	} {
		sess := newSession(c.id, c.owner, base)
		sess.Component = c.component
		mustCreate(t, s, sess)
	}

	check := func(owner string, want []storage.SessionRef) {
		t.Helper()
		if got := mustClientSessions(t, s, owner); !slices.Equal(got, want) {
			t.Errorf("ClientSessions(%s) = %+v, want %+v", owner, got, want)
		}
	}
	check("ab", []storage.SessionRef{
		{ID: "s1", Component: "counter", Fingerprint: "fp-s1"},
		{ID: "s3", Component: "clock", Fingerprint: "fp-s3"},
	})
	check("abc", []storage.SessionRef{
		{ID: "s2", Component: "counter", Fingerprint: "fp-s2"},
		{ID: "s4", Component: "todo", Fingerprint: "fp-s4"},
	})
	check("a", []storage.SessionRef{{ID: "s0", Component: "todo", Fingerprint: "fp-s0"}})
	if got := mustClientSessions(t, s, "abcd"); len(got) != 0 {
		t.Errorf("ClientSessions(abcd) = %+v, want none", got)
	}
	if got := mustClientSessions(t, s, ""); len(got) != 0 {
		t.Errorf("ClientSessions(\"\") = %+v, want none", got)
	}

	mustDelete(t, s, "s1")
	check("ab", []storage.SessionRef{{ID: "s3", Component: "clock", Fingerprint: "fp-s3"}})
}

// testClientRecordLifecycle follows the client count of Stats as sessions of
// prefix-sharing owners are created and deleted.
func testClientRecordLifecycle(t *testing.T, s storage.Store) {
	assertCounts(t, s, 0, 0, 0)
	mustCreate(t, s, newSession("s1", "ab", base))
	assertCounts(t, s, 1, 0, 1)
	mustCreate(t, s, newSession("s2", "ab", base))
	assertCounts(t, s, 2, 0, 1)
	mustCreate(t, s, newSession("s3", "abc", base))
	assertCounts(t, s, 3, 0, 2)

	mustDelete(t, s, "s1")
	assertCounts(t, s, 2, 0, 2)
	// The owner whose id extends "ab" must not keep ab's record alive.
	mustDelete(t, s, "s2")
	assertCounts(t, s, 1, 0, 1)
	if refs := mustClientSessions(t, s, "abc"); len(refs) != 1 || refs[0].ID != "s3" {
		t.Errorf("ClientSessions(abc) = %+v, want only s3", refs)
	}
	mustDelete(t, s, "s3")
	assertCounts(t, s, 0, 0, 0)

	// A new session brings the record back.
	mustCreate(t, s, newSession("s4", "ab", base))
	assertCounts(t, s, 1, 0, 1)
}

// sweepFixture creates sessions around cutoff = base:
//
//	old1     client-a  base-3h
//	old2     client-b  base-2h
//	old3     client-c  base-1ns
//	atCutoff client-c  base      (not before the cutoff: kept)
//	new      client-a  base+1h
func sweepFixture(t *testing.T, s storage.Store) {
	t.Helper()
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
}

func testSweepExpiredCutoff(t *testing.T, s storage.Store) {
	sweepFixture(t, s)
	r, err := s.SweepExpired(base, nil)
	if err != nil {
		t.Fatalf("SweepExpired: %v", err)
	}
	if want := (storage.SweepResult{Sessions: 3, Clients: 1}); r != want {
		t.Errorf("SweepExpired = %+v, want %+v (client-b removed)", r, want)
	}
	for _, id := range []string{"old1", "old2", "old3"} {
		assertNotFound(t, s, id)
	}
	for _, id := range []string{"atCutoff", "new"} {
		assertFound(t, s, id)
	}
	if refs := mustClientSessions(t, s, "client-a"); len(refs) != 1 || refs[0].ID != "new" {
		t.Errorf("ClientSessions(client-a) = %+v, want only new", refs)
	}
	if refs := mustClientSessions(t, s, "client-c"); len(refs) != 1 || refs[0].ID != "atCutoff" {
		t.Errorf("ClientSessions(client-c) = %+v, want only atCutoff", refs)
	}
	if refs := mustClientSessions(t, s, "client-b"); len(refs) != 0 {
		t.Errorf("ClientSessions(client-b) = %+v, want none", refs)
	}
	assertCounts(t, s, 2, 0, 2)

	// A second sweep with the same cutoff finds nothing more.
	r, err = s.SweepExpired(base, nil)
	if err != nil {
		t.Fatalf("second SweepExpired: %v", err)
	}
	if r != (storage.SweepResult{}) {
		t.Errorf("second SweepExpired = %+v, want zero", r)
	}
	// One nanosecond later the session exactly at the old cutoff expires.
	r, err = s.SweepExpired(base.Add(time.Nanosecond), nil)
	if err != nil {
		t.Fatalf("SweepExpired(base+1ns): %v", err)
	}
	if want := (storage.SweepResult{Sessions: 1, Clients: 1}); r != want {
		t.Errorf("SweepExpired(base+1ns) = %+v, want %+v", r, want)
	}
	assertNotFound(t, s, "atCutoff")
	assertCounts(t, s, 1, 0, 1)
}

func testSweepExpiredKeep(t *testing.T, s storage.Store) {
	sweepFixture(t, s)
	var calledFor []string
	keep := func(id string) bool {
		calledFor = append(calledFor, id)
		return id == "old2"
	}
	r, err := s.SweepExpired(base, keep)
	if err != nil {
		t.Fatalf("SweepExpired: %v", err)
	}
	if want := (storage.SweepResult{Sessions: 2}); r != want {
		t.Errorf("SweepExpired = %+v, want %+v", r, want)
	}
	assertFound(t, s, "old2")
	assertNotFound(t, s, "old1")
	assertNotFound(t, s, "old3")
	// client-b keeps its record because old2 was kept.
	assertCounts(t, s, 3, 0, 3)
	// keep is called for expired sessions only, once each.
	slices.Sort(calledFor)
	if want := []string{"old1", "old2", "old3"}; !slices.Equal(calledFor, want) {
		t.Errorf("keep was called for %v, want %v", calledFor, want)
	}

	// The kept session is still expired and goes in a sweep without keep.
	r, err = s.SweepExpired(base, nil)
	if err != nil {
		t.Fatalf("second SweepExpired: %v", err)
	}
	if want := (storage.SweepResult{Sessions: 1, Clients: 1}); r != want {
		t.Errorf("second SweepExpired = %+v, want %+v", r, want)
	}
	assertNotFound(t, s, "old2")
}

func testSweepExpiredEmptyStore(t *testing.T, s storage.Store) {
	r, err := s.SweepExpired(base, func(id string) bool {
		t.Errorf("keep called for %s in an empty store", id)
		return false
	})
	if err != nil {
		t.Fatalf("SweepExpired: %v", err)
	}
	if r != (storage.SweepResult{}) {
		t.Errorf("result = %+v, want zero", r)
	}
}

// testSweepExpiredAfterUpdate moves sessions across the cutoff with
// UpdateSession: the sweep must use the latest LastActivity.
func testSweepExpiredAfterUpdate(t *testing.T, s storage.Store) {
	renewed := newSession("renewed", "client-1", base.Add(-time.Hour))
	aged := newSession("aged", "client-2", base.Add(time.Hour))
	mustCreate(t, s, renewed)
	mustCreate(t, s, aged)
	// Move each one several times, past the other and back.
	for _, step := range []struct{ renewed, aged time.Duration }{
		{2 * time.Hour, -2 * time.Hour},
		{-3 * time.Hour, 3 * time.Hour},
		{time.Minute, -time.Minute},
	} {
		renewed.LastActivity = base.Add(step.renewed)
		aged.LastActivity = base.Add(step.aged)
		mustUpdate(t, s, renewed)
		mustUpdate(t, s, aged)
	}

	var calledFor []string
	r, err := s.SweepExpired(base, func(id string) bool {
		calledFor = append(calledFor, id)
		return false
	})
	if err != nil {
		t.Fatalf("SweepExpired: %v", err)
	}
	if want := (storage.SweepResult{Sessions: 1, Clients: 1}); r != want {
		t.Errorf("SweepExpired = %+v, want %+v", r, want)
	}
	if !slices.Equal(calledFor, []string{"aged"}) {
		t.Errorf("keep was called for %v, want [aged]", calledFor)
	}

	assertFound(t, s, "renewed")
	assertNotFound(t, s, "aged")
	st := mustStats(t, s)
	if st.OldestActivity == nil || !st.OldestActivity.Equal(renewed.LastActivity) {
		t.Errorf("OldestActivity = %v, want %v", st.OldestActivity, renewed.LastActivity)
	}
}

// createMany creates manyExpired expired sessions, one second apart and
// spread over the given number of owners, and then fresh sessions of
// client-fresh. It returns the ids of the expired sessions, oldest first.
func createMany(t *testing.T, s storage.Store, owners, fresh int) []string {
	t.Helper()
	ids := make([]string, 0, manyExpired)
	for i := range manyExpired {
		id := fmt.Sprintf("old-%05d", i)
		owner := fmt.Sprintf("client-%d", i%owners)
		mustCreate(t, s, newSession(id, owner, base.Add(-time.Duration(manyExpired-i)*time.Second)))
		ids = append(ids, id)
	}
	for i := range fresh {
		mustCreate(t, s, newSession(fmt.Sprintf("fresh-%d", i), "client-fresh", base.Add(time.Duration(i)*time.Second)))
	}
	return ids
}

func testSweepExpiredMany(t *testing.T, s storage.Store) {
	const owners, fresh = 7, 3
	createMany(t, s, owners, fresh)
	r, err := s.SweepExpired(base, nil)
	if err != nil {
		t.Fatalf("SweepExpired: %v", err)
	}
	if want := (storage.SweepResult{Sessions: manyExpired, Clients: owners}); r != want {
		t.Errorf("SweepExpired = %+v, want %+v", r, want)
	}
	assertCounts(t, s, fresh, 0, 1)
	st := mustStats(t, s)
	if st.OldestActivity == nil || !st.OldestActivity.Equal(base) {
		t.Errorf("OldestActivity = %v, want %v", st.OldestActivity, base)
	}
}

func testSweepExpiredManyKeep(t *testing.T, s storage.Store) {
	ids := createMany(t, s, 1, 0)
	// Spare ids on both sides of every multiple of 1000, the batch size of
	// boltdb: 0, 1, 999, 1000, 1001, 1999 and 2000.
	spared := map[string]bool{}
	for i, id := range ids {
		if i%1000 == 0 || i%1000 == 999 || i%1000 == 1 {
			spared[id] = true
		}
	}

	seen := map[string]int{}
	r, err := s.SweepExpired(base, func(id string) bool {
		seen[id]++
		return spared[id]
	})
	if err != nil {
		t.Fatalf("SweepExpired: %v", err)
	}
	if want := (storage.SweepResult{Sessions: manyExpired - len(spared)}); r != want {
		t.Errorf("SweepExpired = %+v, want %+v", r, want)
	}
	if len(seen) != manyExpired {
		t.Errorf("keep was called for %d ids, want %d", len(seen), manyExpired)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("keep was called for %s %d times, want once", id, n)
		}
	}

	for id := range spared {
		assertFound(t, s, id)
	}
	assertCounts(t, s, len(spared), 0, 1)
}

func testSweepFailed(t *testing.T, s storage.Store) {
	for i, attempts := range []int{0, 1, 2, 3, 5} {
		sess := newSession(fmt.Sprintf("s%d", attempts), fmt.Sprintf("client-%d", i), base)
		sess.FailedAttempts = attempts
		mustCreate(t, s, sess)
	}
	// A second session of client-3 below the maximum keeps its record.
	below := newSession("s2b", "client-3", base)
	below.FailedAttempts = 2
	mustCreate(t, s, below)
	assertCounts(t, s, 6, 5, 5)

	r, err := s.SweepFailed(3)
	if err != nil {
		t.Fatalf("SweepFailed(3): %v", err)
	}
	// s3 (at the maximum) and s5 (above it) go, with client-4's record.
	if want := (storage.SweepResult{Sessions: 2, Clients: 1}); r != want {
		t.Errorf("SweepFailed(3) = %+v, want %+v", r, want)
	}
	assertNotFound(t, s, "s3")
	assertNotFound(t, s, "s5")
	for _, id := range []string{"s0", "s1", "s2", "s2b"} {
		assertFound(t, s, id)
	}
	assertCounts(t, s, 4, 3, 4)

	// A session whose attempts went back to 0 is not swept.
	below.FailedAttempts = 0
	mustUpdate(t, s, below)
	assertCounts(t, s, 4, 2, 4)
	r, err = s.SweepFailed(1)
	if err != nil {
		t.Fatalf("SweepFailed(1): %v", err)
	}
	if want := (storage.SweepResult{Sessions: 2, Clients: 2}); r != want {
		t.Errorf("SweepFailed(1) = %+v, want %+v", r, want)
	}
	for _, id := range []string{"s0", "s2b"} {
		assertFound(t, s, id)
	}
	assertCounts(t, s, 2, 0, 2)
}

func testDeleteAllSessions(t *testing.T, s storage.Store) {
	want, err := s.LoadOrCreateSecret(func() ([]byte, error) { return []byte("0123456789abcdef"), nil })
	if err != nil {
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
	if want := (storage.SweepResult{Sessions: 5, Clients: 2}); r != want {
		t.Errorf("DeleteAllSessions = %+v, want %+v", r, want)
	}
	assertCounts(t, s, 0, 0, 0)
	st := mustStats(t, s)
	if st.OldestActivity != nil || st.NewestActivity != nil {
		t.Errorf("activity range after DeleteAllSessions = %v..%v, want nil", st.OldestActivity, st.NewestActivity)
	}
	for i := range 5 {
		assertNotFound(t, s, fmt.Sprintf("s%d", i))
	}
	if refs := mustClientSessions(t, s, "client-0"); len(refs) != 0 {
		t.Errorf("ClientSessions(client-0) = %+v, want none", refs)
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

	// The store works as before: the same id can be created again and swept.
	mustCreate(t, s, newSession("s1", "client-1", base))
	assertFound(t, s, "s1")
	r, err = s.SweepExpired(base.Add(time.Nanosecond), nil)
	if err != nil {
		t.Fatalf("SweepExpired: %v", err)
	}
	if want := (storage.SweepResult{Sessions: 1, Clients: 1}); r != want {
		t.Errorf("SweepExpired after DeleteAllSessions = %+v, want %+v", r, want)
	}
}

func testLoadOrCreateSecretGeneratesOnce(t *testing.T, s storage.Store) {
	calls := 0
	generate := func() ([]byte, error) {
		calls++
		return []byte{0, 1, 2, 0xff, 0x80, byte(calls)}, nil
	}
	first, err := s.LoadOrCreateSecret(generate)
	if err != nil {
		t.Fatalf("first LoadOrCreateSecret: %v", err)
	}
	want := []byte{0, 1, 2, 0xff, 0x80, 1}
	if !bytes.Equal(first, want) {
		t.Errorf("first secret = %x, want %x", first, want)
	}
	// The caller's copy is its own.
	first[0] = 0x55
	second, err := s.LoadOrCreateSecret(generate)
	if err != nil {
		t.Fatalf("second LoadOrCreateSecret: %v", err)
	}
	if calls != 1 {
		t.Errorf("generate called %d times, want 1", calls)
	}
	if !bytes.Equal(second, want) {
		t.Errorf("second secret = %x, want %x", second, want)
	}
}

func testLoadOrCreateSecretGenerateError(t *testing.T, s storage.Store) {
	errGenerate := errors.New("no entropy")
	if _, err := s.LoadOrCreateSecret(func() ([]byte, error) { return nil, errGenerate }); !errors.Is(err, errGenerate) {
		t.Fatalf("error = %v, want it to wrap %v", err, errGenerate)
	}
	// Nothing was stored, so the next call generates.
	got, err := s.LoadOrCreateSecret(func() ([]byte, error) { return []byte("second"), nil })
	if err != nil {
		t.Fatalf("LoadOrCreateSecret after a failed generate: %v", err)
	}
	if string(got) != "second" {
		t.Errorf("secret = %q, want second", got)
	}
}

func testStatsEmptyStore(t *testing.T, s storage.Store) {
	st := mustStats(t, s)
	if st.Sessions != 0 || st.FailedSessions != 0 || st.Clients != 0 {
		t.Errorf("counts sessions=%d failed=%d clients=%d, want 0", st.Sessions, st.FailedSessions, st.Clients)
	}
	if st.OldestActivity != nil {
		t.Errorf("OldestActivity = %v, want nil", st.OldestActivity)
	}
	if st.NewestActivity != nil {
		t.Errorf("NewestActivity = %v, want nil", st.NewestActivity)
	}
	if st.Path == "" {
		t.Errorf("Path is empty")
	}
}

func testStatsCounts(t *testing.T, s storage.Store) {
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
	assertCounts(t, s, 4, 2, 3)
	assertActivityRange(t, s, oldest, newest)

	// Moving the oldest session past the newest changes both ends.
	s3 := newSession("s3", "client-2", newest.Add(time.Nanosecond))
	mustUpdate(t, s, s3)
	assertActivityRange(t, s, base, s3.LastActivity)

	// Deleting the newest brings back the previous one.
	mustDelete(t, s, "s3")
	assertCounts(t, s, 3, 2, 2)
	assertActivityRange(t, s, base, newest)
}

func assertActivityRange(t *testing.T, s storage.Store, oldest, newest time.Time) {
	t.Helper()
	st := mustStats(t, s)
	if st.OldestActivity == nil || !st.OldestActivity.Equal(oldest) {
		t.Errorf("OldestActivity = %v, want %v", st.OldestActivity, oldest)
	}
	if st.NewestActivity == nil || !st.NewestActivity.Equal(newest) {
		t.Errorf("NewestActivity = %v, want %v", st.NewestActivity, newest)
	}
}

func testCloseTwice(t *testing.T, s storage.Store) {
	mustCreate(t, s, newSession("s1", "client-1", base))
	if err := s.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func testErrClosedAfterClose(t *testing.T, s storage.Store) {
	mustCreate(t, s, newSession("s1", "client-1", base))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, op := range []struct {
		name string
		call func() error
	}{
		{"LoadOrCreateSecret", func() error {
			_, err := s.LoadOrCreateSecret(func() ([]byte, error) { return []byte("x"), nil })
			return err
		}},
		{"CreateSession", func() error { return s.CreateSession(newSession("s2", "client-1", base)) }},
		{"UpdateSession", func() error { return s.UpdateSession(newSession("s1", "client-1", base)) }},
		{"GetSession", func() error { _, err := s.GetSession("s1"); return err }},
		{"DeleteSession", func() error { return s.DeleteSession("s1") }},
		{"ClientSessions", func() error { _, err := s.ClientSessions("client-1"); return err }},
		{"SweepExpired", func() error { _, err := s.SweepExpired(base, nil); return err }},
		{"SweepFailed", func() error { _, err := s.SweepFailed(1); return err }},
		{"DeleteAllSessions", func() error { _, err := s.DeleteAllSessions(); return err }},
		{"Stats", func() error { _, err := s.Stats(); return err }},
	} {
		if err := op.call(); !errors.Is(err, storage.ErrClosed) {
			t.Errorf("%s after Close error = %v, want ErrClosed", op.name, err)
		}
	}
}

// testConcurrentCreateUpdateSweep runs writers, readers and sweepers at the
// same time, then checks that Stats, GetSession and ClientSessions agree.
// Run it with -race.
func testConcurrentCreateUpdateSweep(t *testing.T, s storage.Store) {
	const writers, perWriter, owners = 4, 60, 5
	var wg sync.WaitGroup
	errs := make(chan error, writers*perWriter*4+100)
	report := func(op string, err error) {
		select {
		case errs <- fmt.Errorf("%s: %w", op, err):
		default: // the buffer is full and the test fails anyway
		}
	}
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				id := fmt.Sprintf("w%d-%03d", w, i)
				sess := newSession(id, fmt.Sprintf("client-%d", i%owners), base.Add(-time.Duration(i)*time.Minute))
				if err := s.CreateSession(sess); err != nil {
					report("CreateSession "+id, err)
					continue
				}
				// A sweep may delete the session at any point from here on.
				next := *sess
				next.LastActivity = base.Add(time.Duration(i%5-2) * time.Hour)
				next.FailedAttempts = i % 4
				next.Version++
				if err := s.UpdateSession(&next); err != nil && !errors.Is(err, storage.ErrNotFound) {
					report("UpdateSession "+id, err)
				}
				if got, err := s.GetSession(id); err == nil && got.Owner != sess.Owner {
					report("GetSession "+id, fmt.Errorf("owner %q, want %q", got.Owner, sess.Owner))
				} else if err != nil && !errors.Is(err, storage.ErrNotFound) {
					report("GetSession "+id, err)
				}
				if _, err := s.ClientSessions(sess.Owner); err != nil {
					report("ClientSessions", err)
				}
				if i%7 == 0 {
					if err := s.DeleteSession(id); err != nil {
						report("DeleteSession "+id, err)
					}
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 30 {
			if _, err := s.SweepExpired(base, func(id string) bool { return i%2 == 0 && id[len(id)-1] == '0' }); err != nil {
				report("SweepExpired", err)
			}
			if _, err := s.SweepFailed(3); err != nil {
				report("SweepFailed", err)
			}
			if _, err := s.Stats(); err != nil {
				report("Stats", err)
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent operation: %v", err)
	}
	if t.Failed() {
		return
	}
	assertConsistent(t, s, writers, perWriter, owners)

	// A sweep with a late cutoff empties the store.
	if _, err := s.SweepExpired(base.Add(24*time.Hour), nil); err != nil {
		t.Fatalf("final SweepExpired: %v", err)
	}
	assertCounts(t, s, 0, 0, 0)
}

// assertConsistent checks, with every id the concurrent test may have
// written, that Stats counts what GetSession and ClientSessions return.
func assertConsistent(t *testing.T, s storage.Store, writers, perWriter, owners int) {
	t.Helper()
	sessions, failed := 0, 0
	perOwner := map[string][]string{}
	for w := range writers {
		for i := range perWriter {
			id := fmt.Sprintf("w%d-%03d", w, i)
			got, err := s.GetSession(id)
			if errors.Is(err, storage.ErrNotFound) {
				continue
			}
			if err != nil {
				t.Fatalf("GetSession(%s): %v", id, err)
			}
			sessions++
			if got.FailedAttempts > 0 {
				failed++
			}
			perOwner[got.Owner] = append(perOwner[got.Owner], id)
		}
	}
	for o := range owners {
		owner := fmt.Sprintf("client-%d", o)
		var listed []string
		for _, ref := range mustClientSessions(t, s, owner) {
			listed = append(listed, ref.ID)
		}
		want := perOwner[owner]
		slices.Sort(want)
		if !slices.Equal(listed, want) {
			t.Errorf("ClientSessions(%s) = %v, want %v", owner, listed, want)
		}
	}
	assertCounts(t, s, sessions, failed, len(perOwner))
}
