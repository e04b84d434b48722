// Command chat is an example of livebolt embedded in a fiber app of its
// own. It opens its own bbolt store, registers one component, chatroom (see
// chatroom.go), and mounts livebolt's handlers under paths it chooses next
// to its own chat page:
//
//	GET  /                     redirect to /chat
//	GET  /chat                 the chat page (page.html, embedded)
//	GET  /chat/live            livebolt's WebSocket endpoint
//	GET  /chat/live.js         livebolt's browser client
//	GET  /admin/memory/stats   livebolt's memory API, also health and
//	POST /admin/memory/cleanup cleanup
//
// Run it from the repository root with
//
//	go run ./examples/chat [-addr 127.0.0.1:3100] [-data data/chat]
//
// and open http://127.0.0.1:3100/chat in two browser windows.
// LIVEBOLT_SECRET, when set, is the signing key, of at least 32 bytes. When
// it is unset, the store generates a key on first start and keeps it.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/livebolt/livebolt/app"
	"github.com/livebolt/livebolt/live"
	"github.com/livebolt/livebolt/storage/boltdb"
)

// Routes of the example. livebolt's own default paths (/live, /live.js,
// /api/memory, /metrics) are not mounted, so they return 404.
const (
	pathPage   = "/chat"
	pathLive   = "/chat/live"
	pathClient = "/chat/live.js"
	pathMemory = "/admin/memory"
)

const (
	defaultAddr     = "127.0.0.1:3100"
	databaseFile    = "chat.db"
	shutdownTimeout = 10 * time.Second
)

//go:embed page.html
var page []byte

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

// run parses the flags, starts the example and serves until SIGINT or
// SIGTERM. It returns the exit code: 0 after a clean shutdown, 2 for
// invalid flags or environment, 1 for any other failure.
func run(args []string, getenv func(string) string, stderr io.Writer) int {
	flags := flag.NewFlagSet("chat", flag.ContinueOnError)
	flags.SetOutput(stderr)
	addr := flags.String("addr", defaultAddr, "`host:port` to listen on; port 0 picks a free port")
	data := flags.String("data", filepath.Join("data", "chat"), "`folder` of the database file "+databaseFile+", created if missing")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	secret, err := secretFromEnv(getenv)
	if err != nil {
		log.Error("invalid environment", "err", err)
		return 2
	}

	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	s, err := start(config{addr: *addr, dataDir: *data, secret: secret}, log)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	code := 0
	select {
	case <-ctx.Done():
		log.Info("signal received, shutting down")
	case <-s.done:
		// stop reports the error the http server returned.
		log.Error("http server stopped before any signal, shutting down")
		code = 1
	}

	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := s.stop(shutdownCtx); err != nil {
		log.Error("shutdown incomplete", "err", err)
		return 1
	}
	log.Info("stopped")
	return code
}

// secretFromEnv returns the signing key in LIVEBOLT_SECRET, or nil when it
// is unset, so that app.New loads or generates the key kept in the store.
func secretFromEnv(getenv func(string) string) ([]byte, error) {
	s := getenv("LIVEBOLT_SECRET")
	if s == "" {
		return nil, nil
	}
	if len(s) < live.MinSecretBytes {
		// The length only: the key itself never goes into an error or a log.
		return nil, fmt.Errorf("LIVEBOLT_SECRET is %d bytes, at least %d are required; generate one with: openssl rand -hex 32", len(s), live.MinSecretBytes)
	}
	return []byte(s), nil
}

// config is the settings of start, which run reads from the flags and the
// environment.
type config struct {
	addr    string // host:port to listen on
	dataDir string // folder of databaseFile
	secret  []byte // signing key; nil means the one kept in the store
}

// chatServer is the running example: a livebolt server whose handlers are
// mounted on a fiber app that the example owns and serves itself.
type chatServer struct {
	log  *slog.Logger
	srv  *app.Server
	web  *fiber.App
	addr string // the address listened on, with the port chosen

	done     chan struct{} // closed when web stops serving
	serveErr error         // error returned by web's Listener, set before done is closed
}

// start opens the store, builds the livebolt server, mounts its handlers
// with the example's own routes and starts serving on cfg.addr. Stop it
// with stop.
func start(cfg config, log *slog.Logger) (*chatServer, error) {
	// Listen first, so that a busy port fails before the database is opened.
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w; choose another -addr", cfg.addr, err)
	}
	path := filepath.Join(cfg.dataDir, databaseFile)
	store, err := boltdb.Open(path, nil)
	if err != nil {
		_ = ln.Close()
		return nil, err // names the file and what to do
	}
	log.Info("database opened", "path", path)
	srv, err := app.New(app.Options{Store: store, Secret: cfg.secret, Register: registerChat, Logger: log})
	if err != nil {
		_ = store.Close()
		_ = ln.Close()
		return nil, fmt.Errorf("build livebolt server on %s: %w", path, err)
	}

	// FiberConfig gives livebolt's JSON errors, so an unknown path such as
	// /live gets {"error":{"status":404,...}}. A program may keep its own.
	web := fiber.New(srv.FiberConfig())
	mountRoutes(web, srv)
	// Start the session sweeps. Serve starts them itself, but the example
	// serves with its own fiber app instead.
	srv.Start()

	s := &chatServer{log: log, srv: srv, web: web, addr: ln.Addr().String(), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.serveErr = web.Listener(ln)
	}()
	log.Info("listening", "addr", s.addr, "page", "http://"+s.addr+pathPage)
	return s, nil
}

// mountRoutes adds the example's page and livebolt's handlers to web.
func mountRoutes(web *fiber.App, srv *app.Server) {
	web.Get("/", func(c *fiber.Ctx) error { return c.Redirect(pathPage) })
	web.Get(pathPage, servePage)
	web.Get(pathLive, srv.LiveHandler())
	web.Get(pathClient, srv.ClientHandler())
	srv.MountMemoryAPI(web.Group(pathMemory))
}

// servePage sends the embedded chat page.
func servePage(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Type("html", "utf-8")
	return c.Send(page)
}

// stop shuts livebolt down first, which closes every WebSocket with code
// 1012 and then the store, and then the fiber app. It waits for the fiber
// app to stop serving, or for ctx to end.
func (s *chatServer) stop(ctx context.Context) error {
	var errs []error
	if err := s.srv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("shut down livebolt: %w", err))
	}
	// StopFiber repeats fiber's shutdown until Listener has returned, also
	// when stop comes before Listener has started serving.
	if err := app.StopFiber(ctx, s.web, s.done); err != nil {
		errs = append(errs, fmt.Errorf("shut down http server on %s: %w", s.addr, err))
	}
	select {
	case <-s.done: // serveErr is set
		if s.serveErr != nil {
			errs = append(errs, fmt.Errorf("serve on %s: %w", s.addr, s.serveErr))
		}
	default:
	}
	return errors.Join(errs...)
}
