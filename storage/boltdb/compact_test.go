package boltdb

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/livebolt/livebolt/storage"
)

// sparseFile writes a closed database whose sessions were mostly deleted,
// so it has free pages to reclaim, and returns its path and the ids kept.
func sparseFile(t *testing.T) (path string, keptIDs []string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "live.db")
	s, err := Open(path, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		sess := newSession(fmt.Sprintf("s%04d", i), fmt.Sprintf("client-%d", i%50), base.Add(time.Duration(i)*time.Second))
		sess.State = bytes.Repeat([]byte("x"), 500)
		sess.State = append(append([]byte(`"`), sess.State...), '"')
		mustCreate(t, s, sess)
	}
	for i := range 2000 {
		id := fmt.Sprintf("s%04d", i)
		if i%10 == 0 {
			keptIDs = append(keptIDs, id)
			continue
		}
		if err := s.DeleteSession(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path, keptIDs
}

func TestCompactKeepsSessions(t *testing.T) {
	src, keptIDs := sparseFile(t)
	before := openTestAt(t, src)
	wantStats, err := before.Stats()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*storage.Session{}
	for _, id := range keptIDs {
		if want[id], err = before.GetSession(id); err != nil {
			t.Fatal(err)
		}
	}
	before.Close()
	// Read the file after the store closed, because Open commits a
	// transaction.
	original, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}

	dst := filepath.Join(t.TempDir(), "compact.db")
	res, err := Compact(src, dst, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("compacted %d bytes to %d", res.SourceBytes, res.CompactedBytes)
	if res.SourceBytes != int64(len(original)) {
		t.Errorf("source size %d, file has %d bytes", res.SourceBytes, len(original))
	}
	if res.CompactedBytes <= 0 || res.CompactedBytes >= res.SourceBytes {
		t.Errorf("compacted size %d, want between 0 and the source's %d", res.CompactedBytes, res.SourceBytes)
	}
	if after, err := os.ReadFile(src); err != nil || !bytes.Equal(after, original) {
		t.Errorf("Compact changed the source file (read error %v)", err)
	}

	out := openTestAt(t, dst)
	gotStats, err := out.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotStats.Buckets, wantStats.Buckets) {
		t.Errorf("buckets after compaction %v, want %v", gotStats.Buckets, wantStats.Buckets)
	}
	for id, sess := range want {
		got, err := out.GetSession(id)
		if err != nil {
			t.Errorf("session %s after compaction: %v", id, err)
			continue
		}
		if !reflect.DeepEqual(got, sess) {
			t.Errorf("session %s after compaction\n got %+v\nwant %+v", id, got, sess)
		}
	}
}

func TestCompactRejectsExistingOutput(t *testing.T) {
	src, _ := sparseFile(t)
	dst := filepath.Join(t.TempDir(), "taken.db")
	if err := os.WriteFile(dst, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Compact(src, dst, 0)
	if !errors.Is(err, os.ErrExist) {
		t.Fatalf("Compact onto an existing file: %v, want ErrExist", err)
	}
	if !strings.Contains(err.Error(), dst) {
		t.Errorf("error %q does not name %s", err, dst)
	}
	if got, _ := os.ReadFile(dst); string(got) != "keep me" {
		t.Errorf("existing output changed to %q", got)
	}
	if _, err := Compact(src, src, 0); !errors.Is(err, os.ErrExist) {
		t.Errorf("Compact onto its source: %v, want ErrExist", err)
	}
}

func TestCompactLockedSource(t *testing.T) {
	src := filepath.Join(t.TempDir(), "live.db")
	openTestAt(t, src)
	dst := filepath.Join(t.TempDir(), "compact.db")
	if _, err := Compact(src, dst, 200*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Errorf("Compact of a held file: %v, want ErrLocked", err)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("output exists after a failed Compact: %v", err)
	}
}
