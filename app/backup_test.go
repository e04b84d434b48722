package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livebolt/livebolt/storage"
	"github.com/livebolt/livebolt/storage/boltdb"
	"github.com/livebolt/livebolt/storage/memstore"
)

func TestBackupRestoresComponents(t *testing.T) {
	s := startServer(t, Options{AdminToken: "admin-secret"})
	c := s.dial(t, nil)
	token := c.do(map[string]any{"type": "hello"})["token"].(string)
	counter := c.do(map[string]any{"type": "mount", "component": "counter", "props": map[string]any{"initial": 5}})
	for range 2 {
		c.do(map[string]any{"type": "call", "id": counter["id"], "action": "increment", "args": []any{}})
	}
	todo := c.do(map[string]any{"type": "mount", "component": "todo"})
	c.do(map[string]any{"type": "call", "id": todo["id"], "action": "add", "args": []any{"buy milk"}})

	resp, body := s.rawRequest(t, http.MethodGet, "/api/admin/backup", "Bearer admin-secret", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("backup: status %d, body %q", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("Content-Type %q, want application/octet-stream", ct)
	}
	if cd := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, `attachment; filename="livebolt-`) || !strings.HasSuffix(cd, `.db"`) {
		t.Errorf("Content-Disposition %q, want an attachment named livebolt-<time>.db", cd)
	}
	if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(body)) {
		t.Errorf("Content-Length %q, body has %d bytes", cl, len(body))
	}
	if leftovers, _ := filepath.Glob(filepath.Join(s.opts.DataDir, "livebolt-backup-*")); len(leftovers) != 0 {
		t.Errorf("temporary backup files left: %v", leftovers)
	}

	restoredDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(restoredDir, DatabaseFile), body, 0o600); err != nil {
		t.Fatal(err)
	}
	restored := startServer(t, Options{DataDir: restoredDir})
	r := restored.dial(t, nil)
	if w := r.do(map[string]any{"type": "hello", "token": token}); w["resumed"] != true {
		t.Fatalf("hello with the old token on the restored server: %v", w)
	}
	h := r.do(map[string]any{"type": "hydrate", "id": counter["id"], "fingerprint": counter["fingerprint"]})
	if state, _ := h["state"].(map[string]any); state["count"] != float64(7) {
		t.Errorf("hydrated counter on the restored server: %v, want count 7", h)
	}
	h = r.do(map[string]any{"type": "hydrate", "id": todo["id"], "fingerprint": todo["fingerprint"]})
	items, _ := json.Marshal(h["state"])
	if !strings.Contains(string(items), "buy milk") {
		t.Errorf("hydrated todo on the restored server: %v, want the item added before the backup", h)
	}
}

func TestBackupAuth(t *testing.T) {
	s := startServer(t, Options{AdminToken: "admin-secret"})
	for _, auth := range []string{"", "Bearer wrong", "admin-secret", "Basic admin-secret", "Bearer admin-secret2"} {
		resp, body := s.rawRequest(t, http.MethodGet, "/api/admin/backup", auth, nil)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("auth %q: status %d, want 401", auth, resp.StatusCode)
		}
		if !json.Valid(body) {
			t.Errorf("auth %q: body is not JSON: %q", auth, body)
		}
	}
	if status, _ := s.request(t, http.MethodPost, "/api/admin/backup", "Bearer admin-secret", nil); status != http.StatusMethodNotAllowed {
		t.Errorf("POST backup: status %d, want 405", status)
	}
	if strings.Contains(s.logs.String(), "admin-secret") {
		t.Error("the admin token appears in the log")
	}
}

func TestBackupWithoutTokenOnlyLoopback(t *testing.T) {
	s := startServer(t, Options{})
	if resp, body := s.rawRequest(t, http.MethodGet, "/api/admin/backup", "", nil); resp.StatusCode != http.StatusOK || len(body) == 0 {
		t.Errorf("loopback backup: status %d, %d bytes", resp.StatusCode, len(body))
	}

	req, err := http.NewRequest(http.MethodGet, "http://"+s.addr+"/api/admin/backup", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", "http://evil.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin backup from a browser page: status %d, want 403", resp.StatusCode)
	}

	// fiber's in-memory test connection reports the peer as 0.0.0.0, which
	// is not a loopback address.
	resp, err = s.fiber.Test(httptest.NewRequest(http.MethodGet, "/api/admin/backup", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("non-loopback backup: status %d, want 403", resp.StatusCode)
	}
}

func TestBackupMemoryStoreNotImplemented(t *testing.T) {
	s := startServer(t, Options{Store: memstore.New()})
	status, body := s.request(t, http.MethodGet, "/api/admin/backup", "", nil)
	if status != http.StatusNotImplemented {
		t.Errorf("backup of a memory store: status %d, want 501", status)
	}
	msg, _ := body["error"].(map[string]any)["message"].(string)
	if !strings.Contains(msg, "not implemented") {
		t.Errorf("error message %q does not say the backup is not implemented", msg)
	}
}

// TestBackupDuringShutdown downloads backups in a loop while the server
// shuts down. Every download that succeeds must be a whole database, and
// Shutdown must return without error.
func TestBackupDuringShutdown(t *testing.T) {
	s := startServer(t, Options{})
	c := s.dial(t, nil)
	c.do(map[string]any{"type": "hello"})
	for range 20 {
		c.do(map[string]any{"type": "mount", "component": "counter"})
	}

	// Without keep-alive, because Go's transport may dial a spare connection
	// that it never sends a request on, and fasthttp's Shutdown waits for
	// such a connection until its read timeout.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	var wg sync.WaitGroup
	bodies := make(chan []byte, 1000)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				resp, err := client.Get("http://" + s.addr + "/api/admin/backup")
				if err != nil {
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					return
				}
				bodies <- body
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("shutdown during backups: %v", err)
	}
	wg.Wait()
	close(bodies)

	n := 0
	for body := range bodies {
		n++
		path := filepath.Join(t.TempDir(), "backup.db")
		if err := os.WriteFile(path, body, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := boltdb.OpenReader(path, 0)
		if err != nil {
			t.Errorf("backup %d does not open: %v", n, err)
			continue
		}
		rep, err := r.Report(0)
		r.Close()
		if err != nil || rep.Sessions != 20 {
			t.Errorf("backup %d: %d sessions, error %v; want 20", n, rep.Sessions, err)
		}
	}
	t.Logf("%d backups downloaded before the shutdown", n)
	if n == 0 {
		t.Error("no backup finished before the shutdown")
	}
}

// TestBackupSlots checks that at most maxBackups downloads run at once,
// that a finished download frees its slot, and that each download closes
// its connection, since its write deadline stays on it.
func TestBackupSlots(t *testing.T) {
	s := startServer(t, Options{})
	for i := range maxBackups + 3 {
		resp, body := s.rawRequest(t, http.MethodGet, "/api/admin/backup", "", nil)
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Fatalf("backup %d in a row: status %d, %d bytes", i+1, resp.StatusCode, len(body))
		}
		if !resp.Close {
			t.Errorf("backup %d: the response keeps the connection open", i+1)
		}
		waitSlots(t, s, 0)
	}
	// Take every slot, as downloads in progress would.
	for range maxBackups {
		s.backupSlots <- struct{}{}
	}
	resp, body := s.rawRequest(t, http.MethodGet, "/api/admin/backup", "", nil)
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "retry when one has finished") {
		t.Errorf("backup with every slot taken: status %d, body %s; want 429", resp.StatusCode, body)
	}
	<-s.backupSlots
	if resp, _ := s.rawRequest(t, http.MethodGet, "/api/admin/backup", "", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("backup after a slot was freed: status %d", resp.StatusCode)
	}
	waitSlots(t, s, maxBackups-1)
}

// waitSlots waits up to 2 s for want backup slots to be taken. The server
// frees a slot once it has closed the stream, which may be just after the
// client read the last byte.
func waitSlots(t *testing.T, s *testServer, want int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for len(s.backupSlots) != want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := len(s.backupSlots); n != want {
		t.Errorf("%d backup slots taken 2 s after the downloads ended, want %d", n, want)
	}
}

func TestBackupWriteTimeout(t *testing.T) {
	if got := backupWriteTimeout(0); got != backupWriteGrace {
		t.Errorf("timeout for an empty file %s, want %s", got, backupWriteGrace)
	}
	if got, want := backupWriteTimeout(300<<20), backupWriteGrace+300*time.Second; got != want {
		t.Errorf("timeout for 300 MiB %s, want %s", got, want)
	}
}

// TestBackupStalledClientCutOff starts a download of a database larger
// than the socket buffers, reads only the headers, and checks that the
// server cuts the connection at the write deadline and frees the slot.
func TestBackupStalledClientCutOff(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a 40 MB database")
	}
	grace, rate := backupWriteGrace, backupMinRate
	backupWriteGrace, backupMinRate = 500*time.Millisecond, 1<<40
	t.Cleanup(func() { backupWriteGrace, backupMinRate = grace, rate })

	s := startServer(t, Options{NoSync: true})
	conn := startStalledBackup(t, s)
	defer conn.Close()
	// Read nothing more for longer than the deadline.
	time.Sleep(2 * time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for len(s.backupSlots) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stalled download still holds its slot 10 s after its write deadline")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The server closed its side: fasthttp counts no open connection.
	for s.fiber.Server().GetOpenConnectionsCount() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the server still has the stalled download's connection open")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startStalledBackup fills s with a database larger than the socket
// buffers, starts a backup download with a small receive buffer, reads
// only the response head and returns the connection, which reads nothing
// more.
func startStalledBackup(t *testing.T, s *testServer) net.Conn {
	t.Helper()
	blob := json.RawMessage(`{"blob":"` + strings.Repeat("x", 200<<10) + `"}`)
	now := time.Now().UTC()
	for i := range 200 {
		err := s.store.CreateSession(&storage.Session{
			ID: fmt.Sprintf("big.%04d", i), Component: "counter", Owner: "stalled-test",
			Props: json.RawMessage(`{}`), State: blob, Version: 1, CreatedAt: now, LastActivity: now,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	// A small receive buffer, so the server's writes block soon.
	_ = conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	if _, err := conn.Write([]byte("GET /api/admin/backup HTTP/1.1\r\nHost: " + s.addr + "\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 512)
	if _, err := conn.Read(head); err != nil || !strings.HasPrefix(string(head), "HTTP/1.1 200") {
		t.Fatalf("backup response head: %q, %v", head, err)
	}
	return conn
}

// TestShutdownCutsBackupDownload checks that a backup download in progress
// does not hold Shutdown until the download's own deadline.
func TestShutdownCutsBackupDownload(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a 40 MB database")
	}
	s := startServer(t, Options{NoSync: true})
	conn := startStalledBackup(t, s)
	defer conn.Close()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("shutdown with a backup download in progress: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("shutdown took %s with a backup download in progress", took)
	}
}
