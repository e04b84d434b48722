package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/livebolt/livebolt/app"
	"github.com/livebolt/livebolt/live"
)

const shutdownTimeout = 30 * time.Second

// benchLimits lifts the per-connection rate limit and the per-client
// instance and session limits, which the benchmark would otherwise hit.
// The other limits keep their defaults (among them MaxHydrations).
func benchLimits() live.Limits {
	return live.Limits{
		MessagesPerSecond:     1e9,
		MessageBurst:          1 << 30,
		MaxInstancesPerClient: 1 << 20,
		MaxSessionsPerClient:  1 << 20,
	}
}

// serverLogger sends the servers' errors to stderr, so that a failure in a
// workload can be traced; the rest is discarded.
var serverLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

// liveServer is a livebolt server serving on a loopback port.
type liveServer struct {
	*app.Server
	addr   string
	served chan error
}

// newLiveOptions returns Options for a benchmark server on dataDir.
func newLiveOptions(dataDir string) app.Options {
	return app.Options{DataDir: dataDir, Limits: benchLimits(), Logger: serverLogger}
}

// listen opens a port on 127.0.0.1 chosen by the kernel.
func listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen on 127.0.0.1: %w", err)
	}
	return ln, nil
}

// startLive builds a server with opts and serves it.
func startLive(opts app.Options) (*liveServer, error) {
	srv, err := app.New(opts)
	if err != nil {
		return nil, fmt.Errorf("start livebolt: %w", err)
	}
	return serveLive(srv)
}

// serveLive serves a built server on a new loopback port.
func serveLive(srv *app.Server) (*liveServer, error) {
	ln, err := listen()
	if err != nil {
		_ = srv.Close()
		return nil, err
	}
	s := &liveServer{Server: srv, addr: ln.Addr().String(), served: make(chan error, 1)}
	go func() { s.served <- srv.Serve(ln) }()
	return s, nil
}

func (s *liveServer) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := s.Shutdown(ctx)
	select {
	case serveErr := <-s.served:
		err = errors.Join(err, serveErr)
	case <-ctx.Done():
		err = errors.Join(err, errors.New("serve did not return after shutdown"))
	}
	if err != nil {
		return fmt.Errorf("stop livebolt on %s: %w", s.addr, err)
	}
	return nil
}

// waitInstances waits until the engine holds want instances, at most
// timeout, and returns the count it last saw.
func (s *liveServer) waitInstances(want int, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		n := s.Engine().Stats().InstanceCount
		if n == want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// echoServer is the ceiling of the throughput workload: the same fiber and
// contrib/websocket stack as livebolt, returning every text frame as it
// came.
type echoServer struct {
	fiber  *fiber.App
	addr   string
	served chan error
}

func startEcho() (*echoServer, error) {
	f := fiber.New(fiber.Config{DisableStartupMessage: true, ReadTimeout: 30 * time.Second})
	f.Get("/echo", websocket.New(echo, websocket.Config{Origins: []string{"*"}, HandshakeTimeout: 10 * time.Second}))
	ln, err := listen()
	if err != nil {
		return nil, err
	}
	s := &echoServer{fiber: f, addr: ln.Addr().String(), served: make(chan error, 1)}
	go func() { s.served <- f.Listener(ln) }()
	return s, nil
}

// echo sends each text frame back until the client goes away. The
// benchmark's clients are bounded in calls and time, so this loop is too.
func echo(c *websocket.Conn) {
	for {
		kind, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		if kind != websocket.TextMessage {
			continue
		}
		if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
			return
		}
	}
}

func (s *echoServer) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := s.fiber.ShutdownWithContext(ctx); err != nil {
		return fmt.Errorf("stop echo server on %s: %w", s.addr, err)
	}
	select {
	case <-s.served:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop echo server on %s: listener did not return", s.addr)
	}
}
