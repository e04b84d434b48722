package app

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	fastws "github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/livebolt/livebolt/storage/boltdb"
)

// TestMountOnOwnFiberApp embeds livebolt in a fiber.App of the test's own,
// with every route under a prefix of its choosing, and checks that each
// works, that the default paths stay free, and that Shutdown leaves the
// app to its owner.
func TestMountOnOwnFiberApp(t *testing.T) {
	store, err := boltdb.Open(filepath.Join(t.TempDir(), "embedded.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	web := fiber.New(fiber.Config{DisableStartupMessage: true, ErrorHandler: srv.ErrorHandler})
	web.Get("/hello", func(c *fiber.Ctx) error { return c.SendString("own route") })
	web.Get("/ws/live", srv.LiveHandler())
	srv.MountMemoryAPI(web.Group("/ops/memory"))
	web.Get("/ops/metrics", srv.MetricsHandler())
	web.Get("/static/live.js", srv.ClientHandler())
	srv.Start()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- web.Listener(ln) }()
	base := "http://" + ln.Addr().String()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type") + "\n" + string(body)
	}

	ws, _, err := fastws.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/ws/live", nil)
	if err != nil {
		t.Fatalf("dial the mounted live endpoint: %v", err)
	}
	defer ws.Close()
	c := &wsClient{t: t, ws: ws}
	if w := c.do(map[string]any{"type": "hello"}); w["type"] != "welcome" {
		t.Fatalf("hello: %v", w)
	}
	m := c.do(map[string]any{"type": "mount", "component": "counter"})
	if r := c.do(map[string]any{"type": "call", "id": m["id"], "action": "increment"}); r["type"] != "state" {
		t.Fatalf("call: %v", r)
	}

	if status, body := get("/hello"); status != 200 || !strings.Contains(body, "own route") {
		t.Errorf("own route: %d %q", status, body)
	}
	status, body := get("/ops/memory/stats")
	var stats struct {
		Live struct {
			InstanceCount int `json:"instanceCount"`
		} `json:"live"`
	}
	if status != 200 || json.Unmarshal([]byte(body[strings.Index(body, "\n")+1:]), &stats) != nil || stats.Live.InstanceCount != 1 {
		t.Errorf("stats under the prefix: %d %.300s", status, body)
	}
	if status, body := get("/ops/metrics"); status != 200 || !strings.Contains(body, `livebolt_actions_total{component="counter",result="ok"} 1`) {
		t.Errorf("metrics under the prefix: %d %.300s", status, body)
	}
	if status, body := get("/static/live.js"); status != 200 || !strings.HasPrefix(body, "text/javascript") || !strings.Contains(body, "export class LiveClient") {
		t.Errorf("client script: %d %.100q", status, body)
	}
	for _, path := range []string{"/live", "/api/memory/stats", "/metrics", "/"} {
		if status, _ := get(path); status != http.StatusNotFound {
			t.Errorf("GET %s on the embedding app: status %d, want 404 (not mounted)", path, status)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			if !fastws.IsCloseError(err, fastws.CloseServiceRestart) {
				t.Errorf("live connection ended with %v, want close 1012", err)
			}
			break
		}
	}
	for _, path := range []string{"/ops/memory/stats", "/ops/metrics"} {
		if status, _ := get(path); status != http.StatusServiceUnavailable {
			t.Errorf("GET %s after Shutdown: status %d, want 503", path, status)
		}
	}
	if status, body := get("/hello"); status != 200 || !strings.Contains(body, "own route") {
		t.Errorf("own route after livebolt's Shutdown: %d %q", status, body)
	}
	if err := web.ShutdownWithContext(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}
