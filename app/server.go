// Package app serves live components over fiber: it opens the store (or
// takes one), builds the live engine and the sweep jobs, and provides the
// WebSocket endpoint and the HTTP API as fiber handlers.
//
// # Running it
//
// New builds a Server from Options: a data folder or a storage.Store, the
// signing secret, limits, the session lifetime, the sweep schedules, the
// logger, and a Register function that adds the component types (see
// package live for writing one). Serve then runs every route at its
// default path on a listener of its own, and Shutdown stops it.
//
// # Embedding it in a fiber app
//
// A program with its own fiber.App mounts only what it wants, where it
// wants it, and calls Start for the sweeps:
//
//	web.Get("/ws", srv.LiveHandler())               // the live WebSocket
//	web.Get("/assets/live.js", srv.ClientHandler()) // the browser client
//	srv.MountMemoryAPI(web.Group("/ops/memory"))    // stats, health, cleanup
//	srv.MountAdminAPI(web.Group("/ops/admin"))      // backup
//	web.Get("/metrics", srv.MetricsHandler())       // Prometheus metrics
//	srv.Start()
//
// Mount adds them all at the default paths, with the demo pages; the
// livebolt command does exactly that. On shutdown, call Server.Shutdown
// first, which closes the WebSockets with 1012 and closes the store, then
// shut down the fiber app. FiberConfig and ErrorHandler give the JSON
// error responses livebolt's own server uses.
//
// # Metrics
//
// GET /metrics serves Prometheus metrics from a registry of the Server's
// own (see Server.MetricsRegistry). Calls and hydrations reach it through
// live.Observer, bbolt commits through boltdb.Options.OnCommit, and the
// gauges and sweep counters are read from the engine, store and job
// statistics at each scrape.
package app

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/livebolt/livebolt/app/components"
	"github.com/livebolt/livebolt/jobs"
	"github.com/livebolt/livebolt/live"
	"github.com/livebolt/livebolt/storage"
	"github.com/livebolt/livebolt/storage/boltdb"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for Options fields left zero.
const (
	DefaultAgeSweep      = "@every 5m"
	DefaultFailedSweep   = "@every 1m"
	DefaultMaxFrameBytes = 64 << 10
	DefaultSendQueue     = 256
	DefaultSendQueueMiB  = 8
	DefaultWriteTimeout  = 10 * time.Second
	DefaultBodyLimit     = 64 << 10
	DefaultIdleTimeout   = 60 * time.Second
	DefaultPingInterval  = 25 * time.Second
	DefaultHelloTimeout  = 10 * time.Second
	DatabaseFile         = "livebolt.db"
)

// Job names, as reported under "jobs" in the stats.
const (
	JobAgeSweep    = "ageSweep"
	JobFailedSweep = "failedSweep"
)

// HealthLimits are the thresholds above which /api/memory/health reports
// "warning". Zero fields take the defaults noted on each.
type HealthLimits struct {
	MaxInstances int `json:"maxInstances"` // in-memory instances; default 200
	MaxSessions  int `json:"maxSessions"`  // stored sessions; default 300
	MaxHeapMB    int `json:"maxHeapMB"`    // heap in use, MiB; default 500
}

// Options configures a Server. DataDir or Store is required; every other
// zero field takes the default documented on it.
type Options struct {
	// DataDir is the folder of the database file DatabaseFile; it is created
	// if missing. It is required unless Store is set.
	DataDir string
	// Secret signs tokens, fingerprints and snapshots. Nil means: load the key
	// stored in the database, generating a random 32-byte one on first start.
	Secret []byte
	// AdminToken, when set, is the bearer token that POST
	// /api/memory/cleanup and GET /api/admin/backup require. When empty,
	// they accept only loopback callers.
	AdminToken string
	// MaxAge and MaxAttempts are passed to the engine; zero means
	// live.DefaultMaxAge and live.DefaultMaxAttempts.
	MaxAge      time.Duration
	MaxAttempts int
	// AgeSweep and FailedSweep are cron specs; defaults DefaultAgeSweep and
	// DefaultFailedSweep.
	AgeSweep    string
	FailedSweep string
	Health      HealthLimits
	// AllowedOrigins lists extra Origin header values allowed to open a
	// WebSocket; "*" allows any. A browser page served by this server (same
	// host) is always allowed, and so are clients that send no Origin.
	AllowedOrigins []string
	// MaxFrameBytes is the largest WebSocket frame accepted; a larger one
	// closes the connection with code 1009. Default DefaultMaxFrameBytes.
	MaxFrameBytes int64
	// SendQueue and SendQueueBytes bound the messages buffered per
	// connection, in count and in bytes; a client that falls further behind
	// is disconnected with 1008. Defaults DefaultSendQueue messages and
	// DefaultSendQueueMiB MiB.
	SendQueue      int
	SendQueueBytes int
	// LockTimeout is how long to wait for a database file held by another
	// process; default boltdb.DefaultLockTimeout.
	LockTimeout time.Duration
	// IdleTimeout closes a WebSocket, with 1001, after this long without a
	// frame or a pong from the client. The server pings every PingInterval,
	// and browsers reply to pings by themselves, so an open page stays
	// connected. HelloTimeout closes, with 1008, a connection that has not
	// sent hello by then. Defaults DefaultIdleTimeout, DefaultPingInterval
	// and DefaultHelloTimeout.
	IdleTimeout  time.Duration
	PingInterval time.Duration
	HelloTimeout time.Duration
	// Limits bound what each client may send and hold; zero fields take the
	// live package defaults.
	Limits live.Limits
	// Store replaces the bbolt database under DataDir with another
	// storage.Store, such as an in-memory one for benchmarks. The server
	// closes it on Shutdown.
	Store storage.Store
	// NoSync skips fsync on every commit. Only for tests and benchmarks that
	// do not kill the machine: acknowledged state then survives a killed
	// process (the page cache keeps it) but not a power loss.
	NoSync bool
	// Register adds the component types. Nil registers the demo components.
	Register func(*live.Registry) error
	// Logger receives all logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock of the engine; nil means time.Now.
	Now func() time.Time
}

// fill sets the defaults of zero fields, then validates the options.
func (o *Options) fill() error {
	if o.DataDir == "" && o.Store == nil {
		return errors.New("app: Options.DataDir is required")
	}
	o.setDefaults()
	return o.validate()
}

func (o *Options) setDefaults() {
	if o.AgeSweep == "" {
		o.AgeSweep = DefaultAgeSweep
	}
	if o.FailedSweep == "" {
		o.FailedSweep = DefaultFailedSweep
	}
	if o.Health.MaxInstances == 0 {
		o.Health.MaxInstances = 200
	}
	if o.Health.MaxSessions == 0 {
		o.Health.MaxSessions = 300
	}
	if o.Health.MaxHeapMB == 0 {
		o.Health.MaxHeapMB = 500
	}
	if o.MaxFrameBytes == 0 {
		o.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if o.SendQueue == 0 {
		o.SendQueue = DefaultSendQueue
	}
	if o.SendQueueBytes == 0 {
		o.SendQueueBytes = DefaultSendQueueMiB << 20
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.PingInterval == 0 {
		o.PingInterval = DefaultPingInterval
	}
	if o.HelloTimeout == 0 {
		o.HelloTimeout = DefaultHelloTimeout
	}
	if o.Register == nil {
		o.Register = components.Register
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

func (o *Options) validate() error {
	if o.IdleTimeout < 0 || o.PingInterval < 0 || o.HelloTimeout < 0 {
		return errors.New("app: IdleTimeout, PingInterval and HelloTimeout must not be negative")
	}
	if o.PingInterval >= o.IdleTimeout {
		return fmt.Errorf("app: PingInterval (%s) must be shorter than IdleTimeout (%s), or clients that reply to pings are closed as idle", o.PingInterval, o.IdleTimeout)
	}
	for _, spec := range []struct{ name, value string }{{"AgeSweep", o.AgeSweep}, {"FailedSweep", o.FailedSweep}} {
		if _, err := jobs.ParseSchedule(spec.value); err != nil {
			return fmt.Errorf("app: Options.%s: %w", spec.name, err)
		}
	}
	if o.MaxFrameBytes < 0 || o.SendQueue < 0 || o.SendQueueBytes < 0 {
		return fmt.Errorf("app: MaxFrameBytes (%d), SendQueue (%d) and SendQueueBytes (%d) must not be negative", o.MaxFrameBytes, o.SendQueue, o.SendQueueBytes)
	}
	return nil
}

// Server is a running livebolt: store, engine, jobs and HTTP routes.
type Server struct {
	opts        Options
	log         *slog.Logger
	store       storage.Store
	engine      *live.Engine
	jobs        *jobs.Scheduler
	fiber       *fiber.App // Serve's own, unused when embedded
	liveHandler fiber.Handler
	metrics     *metrics
	pages       map[string]fiber.Handler
	// metricsHandler serves MetricsHandler.
	metricsHandler fiber.Handler
	startOnce      sync.Once
	serveDone      chan struct{} // closed when Serve returns; nil before Serve

	mu      sync.Mutex
	conns   map[*wsConn]struct{}
	closing bool
	wsDone  sync.WaitGroup // one per open WebSocket handler
	backups sync.WaitGroup // one per open backup snapshot
	// backupSlots holds one token per backup being spooled or sent.
	backupSlots chan struct{}
	backupConns map[net.Conn]struct{} // connections sending a backup; guarded by mu

	shutdownOnce sync.Once
	shutdownErr  error
}

// New opens the database under opts.DataDir, or takes opts.Store, and
// builds the server. It does not listen yet: call Serve, or mount the
// handlers on a fiber.App of your own and call Start.
func New(opts Options) (*Server, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	m := newMetrics()
	if opts.Store != nil {
		s, err := build(opts, opts.Store, m)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	path := filepath.Join(opts.DataDir, DatabaseFile)
	store, err := boltdb.Open(path, &boltdb.Options{
		LockTimeout: opts.LockTimeout, NoSync: opts.NoSync, OnCommit: m.observeCommit,
	})
	if err != nil {
		return nil, err
	}
	// Open upgrades an older file, so the file is now at this version.
	opts.Logger.Info("database opened", "path", path, "schema_version", boltdb.SchemaVersion)
	s, err := build(opts, store, m)
	if err != nil {
		_ = store.Close()
		return nil, err
	}
	return s, nil
}

func build(opts Options, store storage.Store, m *metrics) (*Server, error) {
	secret := opts.Secret
	if secret == nil {
		var err error
		secret, err = store.LoadOrCreateSecret(func() ([]byte, error) {
			opts.Logger.Info("generated a new signing secret and stored it in the database")
			b := make([]byte, 32)
			_, err := rand.Read(b)
			return b, err
		})
		if err != nil {
			return nil, err
		}
	}
	reg := live.NewRegistry()
	if err := opts.Register(reg); err != nil {
		return nil, fmt.Errorf("register components: %w", err)
	}
	engine, err := live.New(live.Options{
		Store: store, Registry: reg, Secret: secret,
		MaxAge: opts.MaxAge, MaxAttempts: opts.MaxAttempts,
		Limits: opts.Limits, Logger: opts.Logger, Now: opts.Now,
		Observer: m,
	})
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts: opts, log: opts.Logger, store: store, engine: engine,
		jobs:  jobs.New(opts.Logger),
		conns: map[*wsConn]struct{}{},
		// One token per backup being spooled or sent.
		backupSlots: make(chan struct{}, maxBackups),
		metrics:     m,
	}
	if err := s.addJobs(); err != nil {
		return nil, err
	}
	m.registerStats(s)
	if s.pages, err = loadPages(); err != nil {
		return nil, err
	}
	s.liveHandler = s.newLiveHandler()
	s.metricsHandler = s.metrics.handler(s.log)
	if s.fiber, err = s.routes(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) addJobs() error {
	err := s.jobs.Add(JobAgeSweep, s.opts.AgeSweep, func(ctx context.Context) (int, error) {
		// Refresh sessions in use first, so that a crash before the next run
		// does not make an open but idle page look unused for too long.
		if _, err := s.engine.TouchAttached(); err != nil {
			s.log.Error("record activity of open sessions failed", "err", err)
		}
		r, err := s.engine.SweepExpired()
		return r.Sessions, err
	})
	if err != nil {
		return err
	}
	return s.jobs.Add(JobFailedSweep, s.opts.FailedSweep, func(ctx context.Context) (int, error) {
		r, err := s.engine.SweepFailed()
		return r.Sessions, err
	})
}

// Engine returns the live engine, for tests and embedding programs.
func (s *Server) Engine() *live.Engine { return s.engine }

// Store returns the session store, for tests and embedding programs.
func (s *Server) Store() storage.Store { return s.store }

// MetricsRegistry returns the Prometheus registry that GET /metrics serves.
// An embedding program may register its own collectors on it.
func (s *Server) MetricsRegistry() *prometheus.Registry { return s.metrics.registry }

// Start starts the scheduled sweeps. Serve calls it; a program that mounts
// the handlers on its own fiber.App calls it once they are mounted. Later
// calls do nothing.
func (s *Server) Start() {
	s.startOnce.Do(s.jobs.Start)
}

// Serve starts the sweeps and serves every route at its default path (see
// Mount) on ln until Shutdown, with a fiber.App of its own. It returns nil
// after a Shutdown. It serves one listener: a second call while the first
// runs is not supported.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	done := make(chan struct{})
	s.serveDone = done
	s.mu.Unlock()
	defer close(done)

	s.Start()
	s.log.Info("listening", "addr", ln.Addr().String())
	err := s.fiber.Listener(ln)
	if s.isClosing() {
		return nil
	}
	return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
}

// StopFiber shuts web down and waits until its Listener returns, which the
// caller reports by closing served. fasthttp's Shutdown does nothing while
// Serve has not yet registered its listener, as when a signal arrives right
// after start-up. Serve would then run on, so the shutdown is repeated
// until Listener has returned or ctx is done. A program that runs livebolt
// on its own fiber.App calls it after Server.Shutdown.
func StopFiber(ctx context.Context, web *fiber.App, served <-chan struct{}) error {
	for {
		err := web.ShutdownWithContext(ctx)
		select {
		case <-served:
			return err
		case <-ctx.Done():
			return fmt.Errorf("stop http server: listener still serving: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Shutdown stops the server gracefully. New WebSocket upgrades are rejected.
// Each open connection finishes the frame it is handling, flushes its
// replies and is closed with code 1012 (service restart). Then the listener
// and HTTP connections of Serve close, backup downloads are cut, the
// sweeps stop, a backup still copying its snapshot finishes the copy, and
// the database is closed. A program that mounted the handlers on its own
// fiber.App stops that app after Shutdown returns (see StopFiber). Until
// then livebolt's routes respond with 503. It is safe to call more than
// once: later calls return the first result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() { s.shutdownErr = s.shutdown(ctx) })
	return s.shutdownErr
}

func (s *Server) shutdown(ctx context.Context) error {
	s.log.Info("shutting down")
	s.mu.Lock()
	s.closing = true
	open := make([]*wsConn, 0, len(s.conns))
	for c := range s.conns {
		open = append(open, c)
	}
	// A backup download would hold the HTTP server's shutdown until its
	// own deadline, a minute or more: cut it now. The client sees fewer
	// bytes than Content-Length.
	for conn := range s.backupConns {
		_ = conn.SetWriteDeadline(time.Now())
	}
	s.mu.Unlock()

	for _, c := range open {
		c.beginClose(closeServiceRestart, "server restart")
	}
	var errs []error
	if err := waitGroup(ctx, &s.wsDone); err != nil {
		errs = append(errs, fmt.Errorf("close websockets: %w", err))
	}
	s.mu.Lock()
	serveDone := s.serveDone
	s.mu.Unlock()
	if serveDone == nil {
		// Never served: nothing listens, and no Serve can start now.
		if err := s.fiber.ShutdownWithContext(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop http server: %w", err))
		}
	} else if err := StopFiber(ctx, s.fiber, serveDone); err != nil {
		errs = append(errs, fmt.Errorf("stop http server: %w", err))
	}
	if err := s.jobs.Stop(ctx); err != nil {
		errs = append(errs, err)
	}
	// A snapshot ends when its copy to local disk is written, so this wait
	// is not bounded by ctx. bbolt's Close would wait for it anyway.
	s.backups.Wait()
	if err := s.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close database: %w", err))
	}
	s.log.Info("server stopped", "websockets_closed", len(open))
	return errors.Join(errs...)
}

// Close releases the server's resources without serving; use it when Serve
// was never called.
func (s *Server) Close() error {
	return s.Shutdown(context.Background())
}

func waitGroup(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
