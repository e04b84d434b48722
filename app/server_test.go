package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	fastws "github.com/fasthttp/websocket"
	"github.com/livebolt/livebolt/app/components"
	"github.com/livebolt/livebolt/live"
)

// testServer is a Server listening on a loopback port.
type testServer struct {
	*Server
	addr string
	logs *syncBuffer
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startServer(t *testing.T, opts Options) *testServer {
	t.Helper()
	return startServerLogging(t, opts, slog.LevelDebug)
}

// startServerLogging is startServer with the server log kept from level on.
// The soak tests keep info and up: debug has a line per frame, which would
// fill the heap they measure.
func startServerLogging(t *testing.T, opts Options, level slog.Level) *testServer {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	logs := &syncBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level}))
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// fasthttp ends idle workers after 10 s by default; a short time lets
	// the soak and leak checks see goroutines return without long waits.
	srv.fiber.Server().MaxIdleWorkerDuration = 100 * time.Millisecond
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return &testServer{Server: srv, addr: ln.Addr().String(), logs: logs}
}

// wsClient is a real WebSocket client of /live.
type wsClient struct {
	t   *testing.T
	ws  *fastws.Conn
	ref int
}

func (s *testServer) dial(t *testing.T, header http.Header) *wsClient {
	t.Helper()
	ws, resp, err := fastws.DefaultDialer.Dial("ws://"+s.addr+"/live", header)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial: %v (status %d)", err, status)
	}
	t.Cleanup(func() { _ = ws.Close() })
	return &wsClient{t: t, ws: ws}
}

func (c *wsClient) send(msg map[string]any) int {
	c.t.Helper()
	c.ref++
	msg["ref"] = c.ref
	if err := c.ws.WriteJSON(msg); err != nil {
		c.t.Fatalf("write: %v", err)
	}
	return c.ref
}

func (c *wsClient) read() (map[string]any, error) {
	_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var m map[string]any
	err := c.ws.ReadJSON(&m)
	return m, err
}

// reply reads until the message with ref arrives.
func (c *wsClient) reply(ref int) map[string]any {
	c.t.Helper()
	for {
		m, err := c.read()
		if err != nil {
			c.t.Fatalf("waiting for ref %d: %v", ref, err)
		}
		if r, ok := m["ref"].(float64); ok && int(r) == ref {
			return m
		}
	}
}

func (c *wsClient) do(msg map[string]any) map[string]any {
	c.t.Helper()
	return c.reply(c.send(msg))
}

func (s *testServer) get(t *testing.T, path string) (int, map[string]any) {
	t.Helper()
	return s.request(t, http.MethodGet, path, "", nil)
}

func (s *testServer) request(t *testing.T, method, path, auth string, body io.Reader) (int, map[string]any) {
	t.Helper()
	resp, raw := s.rawRequest(t, method, path, auth, body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s %s: body is not JSON: %q", method, path, raw)
	}
	return resp.StatusCode, m
}

// rawRequest sends a request with an optional Authorization header and
// returns the response with its whole body.
func (s *testServer) rawRequest(t *testing.T, method, path, auth string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+s.addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, raw
}

func TestLiveOverWebSocket(t *testing.T) {
	s := startServer(t, Options{})
	c := s.dial(t, nil)
	w := c.do(map[string]any{"type": "hello"})
	if w["type"] != "welcome" {
		t.Fatalf("hello: %v", w)
	}
	m := c.do(map[string]any{"type": "mount", "component": "counter", "props": map[string]any{"initial": 2}})
	id := m["id"].(string)
	r := c.do(map[string]any{"type": "call", "id": id, "action": "increment", "args": []any{}})
	if r["state"].(map[string]any)["count"] != float64(3) {
		t.Errorf("increment: %v", r)
	}
	_, st := s.get(t, "/api/memory/stats")
	if n := st["live"].(map[string]any)["instanceCount"]; n != float64(1) {
		t.Errorf("instanceCount = %v, want 1", n)
	}

	_ = c.ws.Close()
	deadline := time.Now().Add(5 * time.Second)
	for s.engine.Stats().InstanceCount != 0 {
		if time.Now().After(deadline) {
			t.Fatal("instance not released after disconnect")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBinaryFrameIsAnError(t *testing.T) {
	s := startServer(t, Options{})
	c := s.dial(t, nil)
	if err := c.ws.WriteMessage(fastws.BinaryMessage, []byte(`{"type":"hello"}`)); err != nil {
		t.Fatal(err)
	}
	m, err := c.read()
	if err != nil || m["code"] != "bad_json" {
		t.Fatalf("binary frame: %v %v", m, err)
	}
	if w := c.do(map[string]any{"type": "hello"}); w["type"] != "welcome" {
		t.Errorf("connection unusable after binary frame: %v", w)
	}
}

func TestOversizedFrameClosesWith1009(t *testing.T) {
	s := startServer(t, Options{MaxFrameBytes: 1024})
	c := s.dial(t, nil)
	c.do(map[string]any{"type": "hello"})
	big := fmt.Sprintf(`{"type":"hello","token":%q}`, strings.Repeat("a", 2048))
	if err := c.ws.WriteMessage(fastws.TextMessage, []byte(big)); err != nil {
		t.Fatal(err)
	}
	_, err := c.read()
	if !fastws.IsCloseError(err, fastws.CloseMessageTooBig) {
		t.Fatalf("after oversized frame: %v, want close 1009", err)
	}
}

func TestShutdownClosesWith1012AfterInFlightReplies(t *testing.T) {
	s := startServer(t, Options{})
	c := s.dial(t, nil)
	c.do(map[string]any{"type": "hello"})
	id := c.do(map[string]any{"type": "mount", "component": "counter"})["id"].(string)

	const calls = 50
	for i := 0; i < calls; i++ {
		c.send(map[string]any{"type": "call", "id": id, "action": "increment", "args": []any{}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(ctx) }()

	acked, lastVersion := 0, 0.0
	var closeErr error
	for {
		m, err := c.read()
		if err != nil {
			closeErr = err
			break
		}
		if m["type"] == "state" {
			acked++
			lastVersion = m["version"].(float64)
		}
	}
	if !fastws.IsCloseError(closeErr, fastws.CloseServiceRestart) {
		t.Fatalf("connection ended with %v, want close 1012", closeErr)
	}
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	t.Logf("%d of %d calls acknowledged before close", acked, calls)

	// Every acknowledged version is in the database.
	srv2, err := New(Options{DataDir: s.opts.DataDir})
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Close()
	sess, err := srv2.store.GetSession(id)
	if err != nil {
		t.Fatal(err)
	}
	if float64(sess.Version) < lastVersion {
		t.Errorf("stored version %d below acknowledged %v", sess.Version, lastVersion)
	}
}

func TestUpgradeRefusedDuringShutdown(t *testing.T) {
	s := startServer(t, Options{})
	// Serve is running once a request gets a response. A Serve that starts
	// after closing is set returns at once.
	if status, _ := s.get(t, "/api/memory/health"); status != http.StatusOK {
		t.Fatalf("health before the test: status %d", status)
	}
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	_, resp, err := fastws.DefaultDialer.Dial("ws://"+s.addr+"/live", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("dial during shutdown: err %v, response %v", err, resp)
	}
	s.mu.Lock()
	s.closing = false
	s.mu.Unlock()
}

func TestOriginCheck(t *testing.T) {
	s := startServer(t, Options{AllowedOrigins: []string{"http://app.example"}})
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{"http://" + s.addr, true},
		{"http://app.example", true},
		{"http://evil.example", false},
		{"null", false},
	} {
		header := http.Header{}
		if tc.origin != "" {
			header.Set("Origin", tc.origin)
		}
		ws, resp, err := fastws.DefaultDialer.Dial("ws://"+s.addr+"/live", header)
		if tc.ok && err != nil {
			t.Errorf("origin %q rejected: %v", tc.origin, err)
		}
		if !tc.ok && (err == nil || resp.StatusCode != http.StatusForbidden) {
			t.Errorf("origin %q: err %v, want 403", tc.origin, err)
		}
		if ws != nil {
			_ = ws.Close()
		}
	}
}

func TestHTTPErrorsAreJSON(t *testing.T) {
	s := startServer(t, Options{})
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/nope", http.StatusNotFound},
		{http.MethodGet, "/api/memory/nope", http.StatusNotFound},
		{http.MethodPut, "/api/memory/stats", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/api/memory/health", http.StatusMethodNotAllowed},
		{http.MethodGet, "/api/memory/cleanup", http.StatusMethodNotAllowed},
		{http.MethodPost, "/metrics", http.StatusMethodNotAllowed},
		{http.MethodPost, "/live", http.StatusMethodNotAllowed},
		{http.MethodGet, "/live", http.StatusUpgradeRequired},
	} {
		status, body := s.request(t, tc.method, tc.path, "", nil)
		if status != tc.status {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.path, status, tc.status)
		}
		if e, ok := body["error"].(map[string]any); !ok || e["message"] == "" {
			t.Errorf("%s %s: body %v has no error message", tc.method, tc.path, body)
		}
	}
	status, _ := s.request(t, http.MethodPost, "/api/memory/cleanup", "", strings.NewReader(strings.Repeat("x", DefaultBodyLimit+1)))
	if status != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: status %d, want 413", status)
	}
}

func TestStatsAndHealth(t *testing.T) {
	s := startServer(t, Options{Health: HealthLimits{MaxInstances: 1, MaxSessions: 10, MaxHeapMB: 1000}})
	c := s.dial(t, nil)
	c.do(map[string]any{"type": "hello"})
	c.do(map[string]any{"type": "mount", "component": "counter"})
	c.do(map[string]any{"type": "mount", "component": "todo"})

	status, st := s.get(t, "/api/memory/stats")
	if status != http.StatusOK {
		t.Fatalf("stats status %d", status)
	}
	for _, key := range []string{"timestamp", "live", "hydration", "storage", "jobs", "runtime", "analysis"} {
		if _, ok := st[key]; !ok {
			t.Errorf("stats has no %q", key)
		}
	}
	if n := st["hydration"].(map[string]any)["totalSessions"]; n != float64(2) {
		t.Errorf("totalSessions = %v, want 2", n)
	}
	buckets := st["storage"].(map[string]any)["buckets"].(map[string]any)
	if n := buckets["sessions"].(map[string]any)["keys"]; n != float64(2) {
		t.Errorf("sessions bucket keys = %v, want 2", n)
	}
	jobs := st["jobs"].(map[string]any)
	for _, name := range []string{JobAgeSweep, JobFailedSweep} {
		job, ok := jobs[name].(map[string]any)
		if !ok || job["schedule"] == "" || job["nextRun"] == nil {
			t.Errorf("job %s: %v", name, jobs[name])
		}
	}

	_, h := s.get(t, "/api/memory/health")
	if h["status"] != "warning" || h["instances"] != float64(2) || h["sessions"] != float64(2) {
		t.Errorf("health with 2 instances over a limit of 1: %v", h)
	}
	if lim := h["limits"].(map[string]any); lim["maxInstances"] != float64(1) || lim["maxHeapMB"] != float64(1000) {
		t.Errorf("health limits %v", lim)
	}
}

func TestCleanupAuth(t *testing.T) {
	s := startServer(t, Options{AdminToken: "admin-secret"})
	for _, auth := range []string{"", "Bearer wrong", "admin-secret", "Basic admin-secret", "Bearer admin-secret2", "Bearer  admin-secret", "Bearer", "Bearer-admin-secret"} {
		status, _ := s.request(t, http.MethodPost, "/api/memory/cleanup", auth, nil)
		if status != http.StatusUnauthorized {
			t.Errorf("auth %q: status %d, want 401", auth, status)
		}
	}
	status, body := s.request(t, http.MethodPost, "/api/memory/cleanup", "Bearer admin-secret", nil)
	if status != http.StatusOK || body["cleaned"] == nil || body["before"] == nil || body["after"] == nil {
		t.Errorf("authorized cleanup: %d %v", status, body)
	}
	// The scheme name is case-insensitive.
	if status, _ := s.request(t, http.MethodPost, "/api/memory/cleanup", "bearer admin-secret", nil); status != http.StatusOK {
		t.Errorf("lowercase bearer scheme: status %d, want 200", status)
	}
	if strings.Contains(s.logs.String(), "admin-secret") {
		t.Error("the admin token appears in the log")
	}
}

func TestCleanupWithoutTokenOnlyLoopback(t *testing.T) {
	s := startServer(t, Options{})
	status, _ := s.request(t, http.MethodPost, "/api/memory/cleanup", "", nil)
	if status != http.StatusOK {
		t.Errorf("loopback cleanup: status %d, want 200", status)
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+s.addr+"/api/memory/cleanup?all=true", strings.NewReader("a=b"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", "http://evil.example")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin cleanup from a browser page: status %d, want 403", resp.StatusCode)
	}
	// fiber's in-memory test connection reports the peer as 0.0.0.0, which
	// is not a loopback address.
	req = httptest.NewRequest(http.MethodPost, "/api/memory/cleanup", nil)
	resp, err = s.fiber.Test(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("non-loopback cleanup: status %d, want 403", resp.StatusCode)
	}
}

func TestCleanupKeepsLiveSessions(t *testing.T) {
	s := startServer(t, Options{})
	c := s.dial(t, nil)
	c.do(map[string]any{"type": "hello"})
	id := c.do(map[string]any{"type": "mount", "component": "counter"})["id"].(string)

	status, body := s.request(t, http.MethodPost, "/api/memory/cleanup", "", nil)
	if status != http.StatusOK {
		t.Fatalf("cleanup: %d %v", status, body)
	}
	if after := body["after"].(map[string]any); after["sessions"] != float64(1) || after["instances"] != float64(1) {
		t.Errorf("plain cleanup removed a live session: %v", body)
	}
	if status, _ := s.request(t, http.MethodPost, "/api/memory/cleanup?all=maybe", "", nil); status != http.StatusBadRequest {
		t.Errorf("all=maybe: status %d, want 400", status)
	}
	status, body = s.request(t, http.MethodPost, "/api/memory/cleanup?all=true", "", nil)
	if status != http.StatusOK {
		t.Fatalf("cleanup all: %d %v", status, body)
	}
	if after := body["after"].(map[string]any); after["sessions"] != float64(0) || after["instances"] != float64(0) {
		t.Errorf("cleanup all left %v", after)
	}
	r := c.do(map[string]any{"type": "call", "id": id, "action": "increment", "args": []any{}})
	if r["code"] != "not_found" {
		t.Errorf("call after cleanup all: %v", r)
	}
	_, st := s.get(t, "/api/memory/stats")
	if runs := st["jobs"].(map[string]any)[JobAgeSweep].(map[string]any)["runs"]; runs != float64(2) {
		t.Errorf("age sweep runs after two cleanups = %v, want 2", runs)
	}
}

func TestSecretGeneratedOnceAndKept(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, Options{DataDir: dir})
	c := s.dial(t, nil)
	token := c.do(map[string]any{"type": "hello"})["token"].(string)
	_ = c.ws.Close()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	s2 := startServer(t, Options{DataDir: dir})
	w := s2.dial(t, nil).do(map[string]any{"type": "hello", "token": token})
	if w["resumed"] != true {
		t.Errorf("token from before the restart not accepted: %v", w)
	}
}

func TestOptionsValidation(t *testing.T) {
	for name, opts := range map[string]Options{
		"no data dir":     {},
		"bad age sweep":   {DataDir: t.TempDir(), AgeSweep: "every minute"},
		"bad failed cron": {DataDir: t.TempDir(), FailedSweep: "* * *"},
		"short secret":    {DataDir: t.TempDir(), Secret: []byte("short")},
	} {
		if srv, err := New(opts); err == nil {
			_ = srv.Close()
			t.Errorf("%s: New accepted the options", name)
		}
	}
}

// registerFlood adds the demo components and "flood", whose spam(n) action
// emits n events of 16 KiB each, to fill a connection's send queue.
func registerFlood(reg *live.Registry) error {
	if err := components.Register(reg); err != nil {
		return err
	}
	payload := strings.Repeat("x", 16<<10)
	return reg.Register(live.Define("flood", func(live.Props) (struct{}, error) { return struct{}{}, nil }).
		Action("spam", func(ctx *live.Context, _ *struct{}, args live.Args) (any, error) {
			n, err := args.Int(0)
			if err != nil {
				return nil, err
			}
			for i := 0; i < n; i++ {
				ctx.Emit("spam", payload)
			}
			return nil, nil
		}))
}

func waitConnections(t *testing.T, s *testServer, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.engine.Stats().ConnectionCount != want {
		if time.Now().After(deadline) {
			t.Fatalf("connections = %d after 5 s, want %d", s.engine.Stats().ConnectionCount, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSlowClientDisconnected(t *testing.T) {
	s := startServer(t, Options{Register: registerFlood, SendQueue: 16, SendQueueBytes: 256 << 10})
	slow := s.dial(t, nil)
	slow.do(map[string]any{"type": "hello"})
	id := slow.do(map[string]any{"type": "mount", "component": "flood"})["id"].(string)
	other := s.dial(t, nil)
	other.do(map[string]any{"type": "hello"})
	counter := other.do(map[string]any{"type": "mount", "component": "counter"})["id"].(string)

	// 4,000 events of 16 KiB are far more than the socket buffers hold, and
	// the slow client reads none of them.
	slow.send(map[string]any{"type": "call", "id": id, "action": "spam", "args": []any{4000}})
	waitConnections(t, s, 1)
	if !strings.Contains(s.logs.String(), "disconnecting slow client") {
		t.Error("no log line for the slow client")
	}
	r := other.do(map[string]any{"type": "call", "id": counter, "action": "increment", "args": []any{}})
	if r["type"] != "state" {
		t.Errorf("other client's call after the slow one was cut: %v", r)
	}
	// The slow client sees its connection end.
	var err error
	for i := 0; i < 100000 && err == nil; i++ {
		_, err = slow.read()
	}
	if err == nil {
		t.Error("slow client's connection still delivers messages")
	}
}

func TestShutdownWithStalledClient(t *testing.T) {
	s := startServer(t, Options{Register: registerFlood})
	c := s.dial(t, nil)
	c.do(map[string]any{"type": "hello"})
	id := c.do(map[string]any{"type": "mount", "component": "flood"})["id"].(string)
	// 200 events of 16 KiB stay within the send queue, but the socket buffers
	// fill, so the writer blocks on a client that does not read.
	c.send(map[string]any{"type": "call", "id": id, "action": "spam", "args": []any{200}})
	time.Sleep(300 * time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with a stalled client: %v", err)
	}
	if elapsed := time.Since(start); elapsed > closeGrace+time.Second {
		t.Errorf("shutdown took %s, want at most %s", elapsed, closeGrace+time.Second)
	}
}

func TestIdleConnectionsClosed(t *testing.T) {
	s := startServer(t, Options{IdleTimeout: 600 * time.Millisecond, PingInterval: 150 * time.Millisecond})
	reader := s.dial(t, nil)
	reader.do(map[string]any{"type": "hello"})
	silent := s.dial(t, nil)
	silent.do(map[string]any{"type": "hello"})

	// The reader sends nothing but keeps reading, so its client library
	// replies to the server's pings. The silent client reads nothing, so it
	// replies to none.
	readerErr := make(chan error, 1)
	go func() {
		_ = reader.ws.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
		_, _, err := reader.ws.ReadMessage()
		readerErr <- err
	}()
	waitConnections(t, s, 1)
	if err := <-readerErr; fastws.IsCloseError(err, fastws.CloseGoingAway) {
		t.Fatalf("the connection that answers pings was closed as idle: %v", err)
	}
	_, err := silent.read()
	if !fastws.IsCloseError(err, fastws.CloseGoingAway) {
		t.Errorf("silent client: %v, want close 1001", err)
	}
}

func TestHelloTimeout(t *testing.T) {
	s := startServer(t, Options{HelloTimeout: 300 * time.Millisecond})
	c := s.dial(t, nil)
	_, err := c.read()
	if !fastws.IsCloseError(err, fastws.ClosePolicyViolation) {
		t.Errorf("connection without hello: %v, want close 1008", err)
	}
	waitConnections(t, s, 0)
}

// callLatencies makes n increment calls 5 ms apart, within the default
// rate limit, and returns their round trips.
func callLatencies(t *testing.T, c *wsClient, id string, n int) []time.Duration {
	t.Helper()
	rtts := make([]time.Duration, n)
	for i := range rtts {
		time.Sleep(5 * time.Millisecond)
		start := time.Now()
		r := c.do(map[string]any{"type": "call", "id": id, "action": "increment", "args": []any{}})
		rtts[i] = time.Since(start)
		if r["type"] != "state" {
			t.Fatalf("call %d: %v", i, r)
		}
	}
	return rtts
}

func median(d []time.Duration) time.Duration {
	sorted := slices.Clone(d)
	slices.Sort(sorted)
	return sorted[len(sorted)/2]
}

func TestFloodingClientDoesNotSlowOthers(t *testing.T) {
	// NoSync keeps disk latency, which other tests running at the same time
	// disturb, out of a comparison of CPU and scheduling fairness.
	s := startServer(t, Options{NoSync: true})
	victim := s.dial(t, nil)
	victim.do(map[string]any{"type": "hello"})
	id := victim.do(map[string]any{"type": "mount", "component": "counter"})["id"].(string)
	callLatencies(t, victim, id, 10) // warm up

	flooder := s.dial(t, nil)
	flooder.do(map[string]any{"type": "hello"})
	var flooding atomic.Bool
	stop := make(chan struct{})
	var sent, limited atomic.Int64
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // while flooding, send as fast as the socket takes frames
		defer wg.Done()
		frame := []byte(`{"type":"call","ref":1,"id":"nope","action":"x","args":[]}`)
		for i := 0; i < 1000000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if !flooding.Load() {
				time.Sleep(time.Millisecond)
				continue
			}
			if flooder.ws.WriteMessage(fastws.TextMessage, frame) != nil {
				return
			}
			sent.Add(1)
		}
	}()
	go func() { // read the replies, so the flooder is not cut off as slow
		defer wg.Done()
		for {
			_ = flooder.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, msg, err := flooder.ws.ReadMessage()
			if err != nil {
				return
			}
			if bytes.Contains(msg, []byte(`"rate_limited"`)) {
				limited.Add(1)
			}
		}
	}()

	// Alternate rounds alone and under the flood, so that load from other
	// processes affects both sides alike.
	var alone, flooded []time.Duration
	for round := 0; round < 5; round++ {
		flooding.Store(false)
		time.Sleep(50 * time.Millisecond)
		alone = append(alone, callLatencies(t, victim, id, 12)...)
		flooding.Store(true)
		time.Sleep(50 * time.Millisecond)
		flooded = append(flooded, callLatencies(t, victim, id, 12)...)
	}
	close(stop)
	_ = flooder.ws.Close()
	wg.Wait()

	baseline, during := median(alone), median(flooded)
	ratio := float64(during) / float64(baseline)
	t.Logf("victim p50 %s alone, %s during the flood (%.1fx); flooder sent %d frames, %d rate_limited", baseline, during, ratio, sent.Load(), limited.Load())
	if limited.Load() == 0 {
		t.Error("the flood was never rate limited")
	}
	if ratio > 5 {
		t.Errorf("flood slowed the other client's calls %.1fx, want at most 5x", ratio)
	}
}

// TestShutdownRightAfterServe calls Shutdown at once after starting Serve,
// before it can have registered its listener, and checks that Serve
// returns instead of serving on with the store closed.
func TestShutdownRightAfterServe(t *testing.T) {
	for i := range 20 {
		srv, err := New(Options{DataDir: t.TempDir(), NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("round %d: shutdown: %v", i+1, err)
		}
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("round %d: serve: %v", i+1, err)
			}
		case <-time.After(5 * time.Second):
			_ = ln.Close()
			t.Fatalf("round %d: Serve still running 5 s after Shutdown", i+1)
		}
	}
}
