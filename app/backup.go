package app

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/livebolt/livebolt/storage"
)

// maxBackups bounds the backup downloads at once. Each holds a deleted but
// open copy of the database in the data folder until it ends.
const maxBackups = 2

// A client that stops reading a backup is cut off: after backupWriteGrace
// the download must keep up backupMinRate bytes per second. They are
// variables so that a test can shorten the deadline.
var (
	backupWriteGrace = time.Minute
	backupMinRate    = int64(1 << 20)
)

// backupWriteTimeout is the time allowed to send a backup of size bytes.
func backupWriteTimeout(size int64) time.Duration {
	return backupWriteGrace + time.Duration(size/backupMinRate)*time.Second
}

// backup sends a consistent copy of the database file. The snapshot is
// written to a temporary file first and closed before the download starts.
// An open bbolt read transaction stops commits that must grow the file, so
// it must not last as long as a slow client takes to download.
func (s *Server) backup(c *fiber.Ctx) error {
	if err := s.authorizeAdmin(c); err != nil {
		return err
	}
	backuper, ok := s.store.(storage.Backuper)
	if !ok {
		return fiber.NewError(fiber.StatusNotImplemented, "backup is not implemented by this server's store; only the bbolt store can be backed up")
	}

	select {
	case s.backupSlots <- struct{}{}:
	default:
		return fiber.NewError(fiber.StatusTooManyRequests, fmt.Sprintf("%d backups are already being sent; retry when one has finished", maxBackups))
	}
	if !s.beginBackup() {
		<-s.backupSlots
		return fiber.NewError(fiber.StatusServiceUnavailable, "the server is shutting down; retry the backup after it restarts")
	}

	begin := time.Now()
	file, size, err := s.spoolBackup(backuper)
	s.backups.Done()
	if err != nil {
		<-s.backupSlots
		return err
	}
	file.release = func() { <-s.backupSlots }

	name := "livebolt-" + begin.UTC().Format("20060102T150405Z") + ".db"
	s.log.Info("backup taken", "bytes", size, "spool_duration", time.Since(begin))
	c.Set(fiber.HeaderContentType, fiber.MIMEOctetStream)
	c.Set(fiber.HeaderContentDisposition, `attachment; filename="`+name+`"`)
	c.Set(fiber.HeaderCacheControl, "no-store")

	if err := s.trackDownload(c.Context().Conn(), file, size); err != nil {
		_ = file.Close()
		return err
	}
	c.Context().SetConnectionClose()
	// fasthttp closes the stream, which removes the file and frees the
	// slot, once the response is written or dropped.
	return c.SendStream(file, int(size))
}

// trackDownload sets the write deadline of a backup download on conn and
// registers conn, so that Shutdown can cut it. Closing file releases both.
// The deadline stays on the connection after the response, so the handler
// closes the connection with it. A fiber.Config.WriteTimeout of the
// embedding program replaces it once the handler returns.
func (s *Server) trackDownload(conn net.Conn, file *spoolFile, size int64) error {
	if err := conn.SetWriteDeadline(time.Now().Add(backupWriteTimeout(size))); err != nil {
		return fmt.Errorf("set the write deadline of the backup download: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return fiber.NewError(fiber.StatusServiceUnavailable, "the server is shutting down; retry the backup after it restarts")
	}
	if s.backupConns == nil {
		s.backupConns = map[net.Conn]struct{}{}
	}
	s.backupConns[conn] = struct{}{}
	file.release = func() {
		s.mu.Lock()
		delete(s.backupConns, conn)
		s.mu.Unlock()
		<-s.backupSlots
	}
	return nil
}

// beginBackup counts a backup in s.backups unless the server is shutting
// down, so that Shutdown does not close the store under its snapshot.
func (s *Server) beginBackup() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.backups.Add(1)
	return true
}

// spoolBackup writes a snapshot of the store to a new temporary file in the
// backup folder and returns it open at its start, with its size. The
// snapshot is closed when it returns.
func (s *Server) spoolBackup(backuper storage.Backuper) (*spoolFile, int64, error) {
	snap, err := backuper.BeginBackup()
	if err != nil {
		return nil, 0, err
	}
	defer snap.Close()

	f, err := os.CreateTemp(s.backupDir(), "livebolt-backup-*.tmp")
	if err != nil {
		return nil, 0, fmt.Errorf("create temporary backup file in %s: %w; check the folder's free space and permissions", s.backupDir(), err)
	}
	spool := &spoolFile{File: f}
	n, err := snap.WriteTo(f)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		_ = spool.Close()
		return nil, 0, fmt.Errorf("write temporary backup file %s: %w; check the free space in %s", f.Name(), err, s.backupDir())
	}
	// On Unix the open file stays readable after its name is removed, so a
	// crash during the download leaves nothing behind.
	spool.removed = os.Remove(f.Name()) == nil
	return spool, n, nil
}

// backupDir is the folder of temporary backup files: the data folder, so
// the copy goes to the disk chosen for the database, or the system's
// temporary folder for a store given in Options.Store.
func (s *Server) backupDir() string {
	if s.opts.DataDir != "" {
		return s.opts.DataDir
	}
	return os.TempDir()
}

// spoolFile is a temporary backup file that is removed when closed.
type spoolFile struct {
	*os.File
	removed bool   // the name was removed while the file was open
	release func() // frees the download's slot; nil before the download
	closed  bool
}

// Close closes and removes the file and frees the download's slot. Later
// calls do nothing.
func (f *spoolFile) Close() error {
	if f.closed {
		return nil
	}
	f.closed = true
	if f.release != nil {
		defer f.release()
	}
	err := f.File.Close()
	if !f.removed {
		if rmErr := os.Remove(f.Name()); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			err = errors.Join(err, rmErr)
		}
	}
	return err
}
