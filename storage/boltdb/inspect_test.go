package boltdb

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livebolt/livebolt/storage"
	bolt "go.etcd.io/bbolt"
)

// inspectFixture writes a closed database file with sessions of two
// component types, some failed attempts and one corrupt record, and returns
// its path.
func inspectFixture(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "live.db")
	s, err := Open(path, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		sess := newSession(fmt.Sprintf("s%d", i), "client-"+strconv.Itoa(i%2), base.Add(time.Duration(i)*time.Minute))
		if i >= 4 {
			sess.Component = "todo"
		}
		sess.FailedAttempts = map[int]int{1: 1, 2: 2, 3: 2}[i]
		mustCreate(t, s, sess)
	}
	flipRecordByte(t, s, "s5")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func openReader(t *testing.T, path string) *Reader {
	t.Helper()
	r, err := OpenReader(path, 0)
	if err != nil {
		t.Fatalf("OpenReader(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close reader: %v", err)
		}
	})
	return r
}

func summaryIDs(list []SessionSummary) []string {
	ids := []string{}
	for _, s := range list {
		ids = append(ids, s.ID)
	}
	return ids
}

func TestReportDescribesFile(t *testing.T) {
	path := inspectFixture(t)
	rep, err := openReader(t, path).Report(2)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Path != path || rep.FileSizeBytes != info.Size() || rep.SchemaVersion != SchemaVersion {
		t.Errorf("path %q, size %d, schema %d; want %q, %d, %d", rep.Path, rep.FileSizeBytes, rep.SchemaVersion, path, info.Size(), SchemaVersion)
	}

	if rep.Sessions != 5 {
		t.Errorf("sessions = %d, want 5 decoded", rep.Sessions)
	}
	if !reflect.DeepEqual(rep.CorruptSessions, []string{"s5"}) {
		t.Errorf("corrupt sessions = %v, want [s5]", rep.CorruptSessions)
	}

	if got := summaryIDs(rep.Oldest); !reflect.DeepEqual(got, []string{"s0", "s1"}) {
		t.Errorf("oldest = %v, want [s0 s1]", got)
	}
	if got := summaryIDs(rep.Newest); !reflect.DeepEqual(got, []string{"s4", "s3"}) {
		t.Errorf("newest = %v, want [s4 s3]", got)
	}
	if got := rep.Oldest[0]; got.Component != "counter" || !got.LastActivity.Equal(base) || !got.CreatedAt.Equal(base.Add(-time.Hour)) {
		t.Errorf("oldest session summary %+v", got)
	}
	if want := map[string]int{"counter": 4, "todo": 1}; !reflect.DeepEqual(rep.Components, want) {
		t.Errorf("components = %v, want %v", rep.Components, want)
	}
	if want := map[int]int{1: 1, 2: 2}; !reflect.DeepEqual(rep.FailedAttempts, want) {
		t.Errorf("failed attempts = %v, want %v", rep.FailedAttempts, want)
	}

	keys := map[string]int{}
	for _, b := range rep.Buckets {
		keys[b.Name] = b.Keys
		if b.CountedKeys != nil && *b.CountedKeys != b.Keys {
			t.Errorf("bucket %s: %d keys, counted %d", b.Name, b.Keys, *b.CountedKeys)
		}
	}
	want := map[string]int{"meta": 1, "sessions": 6, "session_keys": 6, "by_activity": 6, "by_owner": 6, "failed": 3, "clients": 2}
	if !reflect.DeepEqual(keys, want) {
		t.Errorf("bucket keys = %v, want %v", keys, want)
	}
}

func TestReportLimitZeroListsNone(t *testing.T) {
	rep, err := openReader(t, inspectFixture(t)).Report(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Oldest) != 0 || len(rep.Newest) != 0 {
		t.Errorf("limit 0 listed oldest %v and newest %v", rep.Oldest, rep.Newest)
	}
}

func TestInsertBoundedKeepsOrder(t *testing.T) {
	before := func(a, b SessionSummary) bool { return a.LastActivity.Before(b.LastActivity) }
	var list []SessionSummary
	for _, minute := range []int{5, 1, 9, 3, 7, 0} {
		s := SessionSummary{ID: strconv.Itoa(minute), LastActivity: base.Add(time.Duration(minute) * time.Minute)}
		list = insertBounded(list, s, 3, before)
	}
	if got := summaryIDs(list); !reflect.DeepEqual(got, []string{"0", "1", "3"}) {
		t.Errorf("kept %v, want [0 1 3]", got)
	}
}

func TestReaderSessionElidesSecrets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.db")
	s := openTestAt(t, path)
	sess := newSession("s1", "client-1", base)
	sess.Fingerprint = "abcdefghijklmnopqrstuvwxyz"
	sess.FailedAttempts = 2
	mustCreate(t, s, sess)
	s.Close()

	info, err := openReader(t, path).Session("s1")
	if err != nil {
		t.Fatal(err)
	}
	want := SessionInfo{
		ID: "s1", Component: "counter", Owner: "client-1", Version: 7,
		CreatedAt: base.Add(-time.Hour), LastActivity: base, FailedAttempts: 2,
		Props: sess.Props, State: sess.State,
		Fingerprint: "abcdef…", MAC: "deadbe…",
	}
	if !reflect.DeepEqual(*info, want) {
		t.Errorf("session info\n got %+v\nwant %+v", *info, want)
	}
}

func TestReaderSessionErrors(t *testing.T) {
	r := openReader(t, inspectFixture(t))
	if _, err := r.Session("nope"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("unknown id: %v, want ErrNotFound", err)
	} else if !strings.Contains(err.Error(), "nope") {
		t.Errorf("error %q does not name the id", err)
	}
	if _, err := r.Session("s5"); !errors.Is(err, storage.ErrCorrupt) {
		t.Errorf("corrupt record: %v, want ErrCorrupt", err)
	}
}

func TestReaderLeavesFileUnchanged(t *testing.T) {
	path := inspectFixture(t)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := openReader(t, path)
	if _, err := r.Report(5); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Session("s1"); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("reading the file changed it")
	}
}

func TestOpenReaderLockedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.db")
	openTestAt(t, path)
	start := time.Now()
	r, err := OpenReader(path, 200*time.Millisecond)
	if err == nil {
		r.Close()
		t.Fatal("OpenReader succeeded on a file held by a store")
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("OpenReader took %v with a 200ms lock timeout", elapsed)
	}
	if !errors.Is(err, ErrLocked) {
		t.Errorf("error %v does not wrap ErrLocked", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name %s", err, path)
	}
}

func TestOpenReaderRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte("not bbolt\n"), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "foreign.db")
	db, err := bolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("other"))
		return err
	})
	db.Close()

	for _, tc := range []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "missing.db"), "no such file"},
		{"empty", empty, "empty"},
		{"garbage", garbage, "not a valid bbolt database"},
		{"foreign", foreign, "not a livebolt database"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := OpenReader(tc.path, 0)
			if err == nil {
				r.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
				t.Errorf("error %q does not name %s and say %q", err, tc.path, tc.want)
			}
		})
	}
	if info, err := os.Stat(empty); err != nil || info.Size() != 0 {
		t.Errorf("empty file changed: %v, %v", info, err)
	}
}

func TestOpenReaderNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.db")
	s := openTestAt(t, path)
	err := s.DB().Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(SchemaVersion+1)))
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	r, err := OpenReader(path, 0)
	if err == nil {
		r.Close()
		t.Fatal("opened a newer schema")
	}
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Errorf("error %v, want ErrSchemaTooNew", err)
	}
}

// TestDamagedFileIsAnError truncates a database in the middle of its pages,
// as an interrupted download leaves it, and checks that the offline tools
// report ErrDamaged instead of panicking, and that compact leaves no output.
func TestDamagedFileIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.db")
	s, err := Open(path, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3000 {
		sess := newSession(fmt.Sprintf("s%05d", i), "client-"+strconv.Itoa(i%7), base.Add(time.Duration(i)*time.Second))
		sess.State = []byte(`{"text":"` + strings.Repeat("x", 300) + `"}`)
		mustCreate(t, s, sess)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	whole, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	damaged := 0
	for _, cut := range []int{len(whole) / 3, len(whole) / 2, len(whole) * 3 / 4} {
		truncated := filepath.Join(t.TempDir(), "truncated.db")
		if err := os.WriteFile(truncated, whole[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		// Each step may fail with an error; none may panic.
		r, err := OpenReader(truncated, 0)
		if err == nil {
			_, err = r.Report(5)
			if err == nil {
				_, err = r.Session("s02999")
			}
			r.Close()
		}
		if errors.Is(err, ErrDamaged) {
			damaged++
		}
		out := truncated + ".compact"
		if _, err := Compact(truncated, out, 0); err != nil {
			if _, statErr := os.Stat(out); statErr == nil {
				t.Errorf("compact of a file cut at %d failed (%v) and left %s", cut, err, out)
			}
		}
	}
	if damaged == 0 {
		t.Error("no cut of the file was reported as damaged")
	}
}
