package boltdb

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livebolt/livebolt/storage"
)

func TestBackupIsSnapshot(t *testing.T) {
	s := openTest(t)
	mustCreate(t, s, newSession("before", "client-1", base))
	b, err := s.BeginBackup()
	if err != nil {
		t.Fatal(err)
	}
	// A write after the snapshot must not be in it. It runs aside because a
	// commit that grows the file waits until the snapshot is closed.
	written := make(chan error, 1)
	go func() { written <- s.CreateSession(newSession("after", "client-1", base)) }()

	dst := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	n, err := b.WriteTo(f)
	if err != nil {
		t.Fatal(err)
	}
	if n != b.Size() {
		t.Errorf("wrote %d bytes, Size is %d", n, b.Size())
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := <-written; err != nil {
		t.Fatalf("write after the snapshot: %v", err)
	}

	restored := openTestAt(t, dst)
	if _, err := restored.GetSession("before"); err != nil {
		t.Errorf("session written before the backup: %v", err)
	}
	if _, err := restored.GetSession("after"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("session written after the backup: %v, want ErrNotFound", err)
	}
}

func TestBackupAfterClose(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "live.db"), &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.BeginBackup(); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("BeginBackup after Close: %v, want ErrClosed", err)
	}
}

func TestBackupWriteError(t *testing.T) {
	s := openTest(t)
	b, err := s.BeginBackup()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r, w := io.Pipe()
	r.CloseWithError(errors.New("reader gone"))
	if _, err := b.WriteTo(w); err == nil || !strings.Contains(err.Error(), s.Path()) {
		t.Errorf("WriteTo a closed pipe: %v, want an error naming %s", err, s.Path())
	}
}
