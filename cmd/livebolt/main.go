// Command livebolt serves live components over WebSocket, with their state
// persisted in an embedded bbolt database.
//
// Every flag can also be set with the environment variable shown in
// -help; a flag on the command line wins over the variable. The
// subcommands inspect and compact read a stopped server's database file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/livebolt/livebolt/app"
	"github.com/livebolt/livebolt/jobs"
	"github.com/livebolt/livebolt/live"
)

func main() {
	os.Exit(dispatch(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// dispatch runs the subcommand named by the first argument, or the server.
func dispatch(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "inspect":
			return runInspect(args[1:], getenv, stdout, stderr)
		case "compact":
			return runCompact(args[1:], getenv, stdout, stderr)
		}
	}
	return run(args, getenv, stderr)
}

// config is the parsed command line.
type config struct {
	addr            string
	data            string
	maxAge          time.Duration
	ageSweep        string
	failedSweep     string
	maxAttempts     int
	maxInstances    int
	maxSessions     int
	maxHeapMB       int
	allowedOrigins  string
	maxFrameBytes   int64
	shutdownTimeout time.Duration
	idleTimeout     time.Duration
	pingInterval    time.Duration
	helloTimeout    time.Duration
	limits          live.Limits
	logLevel        string
	logFormat       string
	pprof           string
}

// flagEnv maps each flag to its environment variable.
var flagEnv = map[string]string{
	"addr":                      "LIVEBOLT_ADDR",
	"data":                      "LIVEBOLT_DATA",
	"max-age":                   "LIVEBOLT_MAX_AGE",
	"age-sweep":                 "LIVEBOLT_AGE_SWEEP",
	"failed-sweep":              "LIVEBOLT_FAILED_SWEEP",
	"max-attempts":              "LIVEBOLT_MAX_ATTEMPTS",
	"health-max-instances":      "LIVEBOLT_HEALTH_MAX_INSTANCES",
	"health-max-sessions":       "LIVEBOLT_HEALTH_MAX_SESSIONS",
	"health-max-heap-mb":        "LIVEBOLT_HEALTH_MAX_HEAP_MB",
	"allowed-origins":           "LIVEBOLT_ALLOWED_ORIGINS",
	"max-frame-bytes":           "LIVEBOLT_MAX_FRAME_BYTES",
	"shutdown-timeout":          "LIVEBOLT_SHUTDOWN_TIMEOUT",
	"idle-timeout":              "LIVEBOLT_IDLE_TIMEOUT",
	"ping-interval":             "LIVEBOLT_PING_INTERVAL",
	"hello-timeout":             "LIVEBOLT_HELLO_TIMEOUT",
	"max-messages-per-second":   "LIVEBOLT_MAX_MESSAGES_PER_SECOND",
	"message-burst":             "LIVEBOLT_MESSAGE_BURST",
	"max-components-per-client": "LIVEBOLT_MAX_COMPONENTS_PER_CLIENT",
	"max-sessions-per-client":   "LIVEBOLT_MAX_SESSIONS_PER_CLIENT",
	"max-state-bytes":           "LIVEBOLT_MAX_STATE_BYTES",
	"max-props-bytes":           "LIVEBOLT_MAX_PROPS_BYTES",
	"max-args":                  "LIVEBOLT_MAX_ARGS",
	"max-key-length":            "LIVEBOLT_MAX_KEY_LENGTH",
	"max-hydrations":            "LIVEBOLT_MAX_HYDRATIONS",
	"log-level":                 "LIVEBOLT_LOG_LEVEL",
	"log-format":                "LIVEBOLT_LOG_FORMAT",
	"pprof":                     "LIVEBOLT_PPROF",
	"migration-timeout":         "LIVEBOLT_MIGRATION_TIMEOUT",
}

func newFlagSet(cfg *config, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("livebolt", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:3000", "`host:port` to listen on; port 0 picks a free port")
	fs.StringVar(&cfg.data, "data", "data", "`folder` of the database file livebolt.db, created if missing")
	cfg.maxAge, cfg.shutdownTimeout = live.DefaultMaxAge, 10*time.Second
	cfg.idleTimeout, cfg.pingInterval, cfg.helloTimeout = app.DefaultIdleTimeout, app.DefaultPingInterval, app.DefaultHelloTimeout
	fs.Var((*durationFlag)(&cfg.maxAge), "max-age", "`duration` a session may go unused before the age sweep removes it")
	fs.StringVar(&cfg.ageSweep, "age-sweep", app.DefaultAgeSweep, "cron `spec` of the age sweep (five fields or a descriptor such as \"@every 5m\")")
	fs.StringVar(&cfg.failedSweep, "failed-sweep", app.DefaultFailedSweep, "cron `spec` of the sweep of sessions with too many failed hydrations")
	fs.IntVar(&cfg.maxAttempts, "max-attempts", live.DefaultMaxAttempts, "failed hydration `attempts` after which a session is rejected and swept")
	fs.IntVar(&cfg.maxInstances, "health-max-instances", 200, "in-memory `instances` above which /api/memory/health reports warning")
	fs.IntVar(&cfg.maxSessions, "health-max-sessions", 300, "stored `sessions` above which /api/memory/health reports warning")
	fs.IntVar(&cfg.maxHeapMB, "health-max-heap-mb", 500, "heap in use, in `MiB`, above which /api/memory/health reports warning")
	fs.StringVar(&cfg.allowedOrigins, "allowed-origins", "", "comma-separated `origins` (scheme://host:port) allowed to open /live besides the server's own host; * allows any")
	fs.Int64Var(&cfg.maxFrameBytes, "max-frame-bytes", app.DefaultMaxFrameBytes, "largest WebSocket frame in `bytes`; a larger one closes the connection with code 1009")
	fs.Var((*durationFlag)(&cfg.shutdownTimeout), "shutdown-timeout", "`duration` to wait for connections and jobs on SIGINT or SIGTERM")
	fs.Var((*durationFlag)(&cfg.idleTimeout), "idle-timeout", "`duration` without a frame or pong after which a WebSocket is closed with 1001")
	fs.Var((*durationFlag)(&cfg.pingInterval), "ping-interval", "`duration` between the server's WebSocket pings; shorter than --idle-timeout")
	fs.Var((*durationFlag)(&cfg.helloTimeout), "hello-timeout", "`duration` a new WebSocket may take to send hello before it is closed with 1008")
	fs.Float64Var(&cfg.limits.MessagesPerSecond, "max-messages-per-second", live.DefaultMessagesPerSecond, "sustained `messages` per second per connection; more are answered with rate_limited")
	fs.IntVar(&cfg.limits.MessageBurst, "message-burst", live.DefaultMessageBurst, "`messages` a connection may send at once above the per-second rate")
	fs.IntVar(&cfg.limits.MaxInstancesPerClient, "max-components-per-client", live.DefaultMaxInstancesPerClient, "in-memory `components` per client over all its connections")
	fs.IntVar(&cfg.limits.MaxSessionsPerClient, "max-sessions-per-client", live.DefaultMaxSessionsPerClient, "stored `sessions` per client")
	fs.IntVar(&cfg.limits.MaxStateBytes, "max-state-bytes", live.DefaultMaxStateBytes, "largest encoded component state in `bytes`")
	fs.IntVar(&cfg.limits.MaxPropsBytes, "max-props-bytes", live.DefaultMaxPropsBytes, "largest encoded mount props in `bytes`")
	fs.IntVar(&cfg.limits.MaxArgs, "max-args", live.DefaultMaxArgs, "most `arguments` in one call")
	fs.IntVar(&cfg.limits.MaxKeyLength, "max-key-length", live.DefaultMaxKeyLength, "longest mount key in `characters`")
	cfg.limits.MigrationTimeout = live.DefaultMigrationTimeout
	fs.Var((*durationFlag)(&cfg.limits.MigrationTimeout), "migration-timeout", "`duration` a component's state migration may take on hydrate before the hydration gets outdated")
	fs.IntVar(&cfg.limits.MaxHydrations, "max-hydrations", live.DefaultMaxHydrations, "hydrations from the database that run at once; more wait their turn")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.StringVar(&cfg.logFormat, "log-format", "text", "log `format`: text or json")
	fs.StringVar(&cfg.pprof, "pprof", "", "loopback `host:port` to serve net/http/pprof on, such as 127.0.0.1:6060; off when empty")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: livebolt [flags]\n"+
			"       livebolt inspect [--data DIR | --file FILE] [--session ID] [--json] [--limit N]\n"+
			"       livebolt compact [--data DIR | --file FILE] [--out FILE]\n\n"+
			"Serves live components on /live and the memory API on /api/memory.\n"+
			"inspect prints what a stopped server's database holds; compact writes a compacted copy of it.\n"+
			"Both open the file read-only and fail if a server holds it. Run \"livebolt inspect --help\" or \"livebolt compact --help\" for their flags.\n\n"+
			"Flags (each also read from the environment variable in brackets; a flag wins):\n")
		fs.VisitAll(func(f *flag.Flag) {
			name, usage := flag.UnquoteUsage(f)
			fmt.Fprintf(stderr, "  --%s %s  [%s]\n    \t%s (default %q)\n", f.Name, name, flagEnv[f.Name], usage, f.DefValue)
		})
		fmt.Fprintf(stderr, "\nEnvironment only:\n"+
			"  LIVEBOLT_SECRET       key of at least %d bytes that signs tokens, fingerprints and snapshots;\n"+
			"                        when unset, a random key is generated once and kept in the database\n"+
			"  LIVEBOLT_ADMIN_TOKEN  bearer token required by POST /api/memory/cleanup and GET /api/admin/backup;\n"+
			"                        when unset, only loopback callers may use them\n", live.MinSecretBytes)
	}
	return fs
}

// durationFlag is a time.Duration flag whose error explains how to write one.
type durationFlag time.Duration

func (d *durationFlag) String() string { return time.Duration(*d).String() }

func (d *durationFlag) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration; use a number with a unit, such as 30m, 90s or 1h", s)
	}
	*d = durationFlag(v)
	return nil
}

// explainValueError replaces the flag package's bare "parse error" for a
// number or boolean with what the value should look like.
func explainValueError(f *flag.Flag, err error) error {
	if err.Error() != "parse error" && err.Error() != "value out of range" {
		return err
	}
	switch fmt.Sprintf("%T", f.Value) {
	case "*flag.intValue", "*flag.int64Value":
		return fmt.Errorf("%w; use a whole number, such as %s", err, f.DefValue)
	case "*flag.float64Value":
		return fmt.Errorf("%w; use a number, such as %s", err, f.DefValue)
	case "*flag.boolValue":
		return fmt.Errorf("%w; use true or false", err)
	}
	return err
}

// parseConfig reads the environment, then the command line over it.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	cfg := &config{}
	fs := newFlagSet(cfg, stderr)
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := flagEnv[f.Name]
		if v := getenv(name); v != "" && envErr == nil {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("invalid %s=%q: %w", name, v, explainValueError(f, err))
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q; livebolt takes flags, or the subcommand inspect or compact first (see --help)", fs.Arg(0))
	}
	return cfg, cfg.validate()
}

func (cfg *config) validate() error {
	switch {
	case cfg.maxAge <= 0:
		return fmt.Errorf("invalid --max-age %s: must be positive", cfg.maxAge)
	case cfg.maxAttempts < 1:
		return fmt.Errorf("invalid --max-attempts %d: must be at least 1", cfg.maxAttempts)
	case cfg.maxInstances < 1 || cfg.maxSessions < 1 || cfg.maxHeapMB < 1:
		return errors.New("invalid --health-max-* value: each must be at least 1")
	case cfg.maxFrameBytes < 512:
		return fmt.Errorf("invalid --max-frame-bytes %d: must be at least 512", cfg.maxFrameBytes)
	case cfg.shutdownTimeout <= 0:
		return fmt.Errorf("invalid --shutdown-timeout %s: must be positive", cfg.shutdownTimeout)
	case cfg.limits.MigrationTimeout <= 0:
		return fmt.Errorf("invalid --migration-timeout %s: must be positive", cfg.limits.MigrationTimeout)
	case cfg.idleTimeout <= 0 || cfg.pingInterval <= 0 || cfg.helloTimeout <= 0:
		return errors.New("invalid --idle-timeout, --ping-interval or --hello-timeout: each must be positive")
	case cfg.pingInterval >= cfg.idleTimeout:
		return fmt.Errorf("invalid --ping-interval %s: must be shorter than --idle-timeout %s", cfg.pingInterval, cfg.idleTimeout)
	case cfg.limits.MessagesPerSecond <= 0 || cfg.limits.MessageBurst < 1:
		return errors.New("invalid --max-messages-per-second or --message-burst: each must be positive")
	case cfg.limits.MaxInstancesPerClient < 1 || cfg.limits.MaxSessionsPerClient < 1 || cfg.limits.MaxStateBytes < 1 ||
		cfg.limits.MaxPropsBytes < 1 || cfg.limits.MaxArgs < 1 || cfg.limits.MaxKeyLength < 1 || cfg.limits.MaxHydrations < 1:
		return errors.New("invalid --max-components-per-client, --max-sessions-per-client, --max-state-bytes, --max-props-bytes, --max-args, --max-key-length or --max-hydrations: each must be at least 1")
	case cfg.logFormat != "text" && cfg.logFormat != "json":
		return fmt.Errorf("invalid --log-format %q: use text or json", cfg.logFormat)
	}
	for _, spec := range []struct{ flag, value string }{{"age-sweep", cfg.ageSweep}, {"failed-sweep", cfg.failedSweep}} {
		if _, err := jobs.ParseSchedule(spec.value); err != nil {
			return fmt.Errorf("invalid --%s: %w", spec.flag, err)
		}
	}
	for _, origin := range splitList(cfg.allowedOrigins) {
		if err := checkOrigin(origin); err != nil {
			return fmt.Errorf("invalid --allowed-origins entry %q: %w", origin, err)
		}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.logLevel)); err != nil {
		return fmt.Errorf("invalid --log-level %q: use debug, info, warn or error", cfg.logLevel)
	}
	if cfg.pprof != "" {
		if err := checkPprofAddr(cfg.pprof); err != nil {
			return fmt.Errorf("invalid --pprof: %w", err)
		}
	}
	return nil
}

func (cfg *config) logger(w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.logLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// checkOrigin accepts "*" or an origin as browsers send it:
// scheme://host[:port], with no path.
func checkOrigin(origin string) error {
	if origin == "*" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return errors.New("write it as scheme://host:port, for example http://localhost:3000, or * for any origin")
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// run starts the server and blocks until SIGINT or SIGTERM. It returns the
// process exit code.
func run(args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "livebolt: %v\n", err)
		return 2
	}
	log := cfg.logger(stderr)
	// Catch the signals before opening anything: one that arrives while the
	// database opens then stops the server once it is up, instead of being
	// lost (a shell starts background jobs with SIGINT ignored until a
	// handler is installed).
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)

	var secret []byte
	if s := getenv("LIVEBOLT_SECRET"); s != "" {
		if len(s) < live.MinSecretBytes {
			log.Error("LIVEBOLT_SECRET is too short", "bytes", len(s), "min_bytes", live.MinSecretBytes, "hint", "generate one with: openssl rand -hex 32")
			return 2
		}
		secret = []byte(s)
	}

	// Listen first: a busy port then fails before the database is touched.
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		log.Error("start failed", "err", fmt.Errorf("listen on %s: %w; choose another --addr", cfg.addr, err))
		return 1
	}
	srv, err := app.New(app.Options{
		DataDir: cfg.data, Secret: secret, AdminToken: getenv("LIVEBOLT_ADMIN_TOKEN"),
		MaxAge: cfg.maxAge, MaxAttempts: cfg.maxAttempts,
		AgeSweep: cfg.ageSweep, FailedSweep: cfg.failedSweep,
		Health:         app.HealthLimits{MaxInstances: cfg.maxInstances, MaxSessions: cfg.maxSessions, MaxHeapMB: cfg.maxHeapMB},
		AllowedOrigins: splitList(cfg.allowedOrigins),
		MaxFrameBytes:  cfg.maxFrameBytes,
		IdleTimeout:    cfg.idleTimeout,
		PingInterval:   cfg.pingInterval,
		HelloTimeout:   cfg.helloTimeout,
		Limits:         cfg.limits,
		Logger:         log,
	})
	if err != nil {
		_ = ln.Close()
		log.Error("start failed", "err", err)
		return 1
	}

	if cfg.pprof != "" {
		prof, err := startPprof(cfg.pprof, log)
		if err != nil {
			_ = srv.Close()
			_ = ln.Close()
			log.Error("start failed", "err", err)
			return 1
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			prof.stop(ctx, log)
		}()
	}

	// The binary mounts livebolt on a fiber.App of its own through the same
	// API an embedding program uses.
	web := fiber.New(srv.FiberConfig())
	if err := srv.Mount(web); err != nil {
		_ = srv.Close()
		_ = ln.Close()
		log.Error("start failed", "err", err)
		return 1
	}
	srv.Start()

	var serveErr error
	listenerDone := make(chan struct{})
	log.Info("listening", "addr", ln.Addr().String())
	go func() {
		serveErr = web.Listener(ln)
		close(listenerDone)
	}()

	select {
	case <-listenerDone:
		log.Error("server stopped unexpectedly", "err", fmt.Errorf("serve on %s: %w", ln.Addr(), serveErr))
		_ = srv.Close()
		return 1
	case sig := <-signals:
		log.Info("signal received; shutting down", "signal", sig.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	code := 0
	if err := srv.Shutdown(ctx); err != nil {
		log.Error("shutdown incomplete", "err", err)
		code = 1
	}
	if err := app.StopFiber(ctx, web, listenerDone); err != nil {
		log.Error("stop http server", "err", err)
		code = 1
	}
	select {
	case <-listenerDone: // serveErr is set
		if serveErr != nil {
			log.Error("serve returned an error during shutdown", "err", serveErr)
		}
	default:
	}
	return code
}
