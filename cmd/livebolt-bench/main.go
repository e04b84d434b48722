// Command livebolt-bench measures livebolt on this machine. It starts the
// servers in its own process on 127.0.0.1 ports chosen by the kernel and
// drives them with real WebSocket clients over loopback:
//
//   - throughput: increment calls with 1 to 1,000 concurrent clients, one
//     call in flight each, on bbolt with fsync, on an in-memory store, and on
//     a raw WebSocket echo server of the same stack as the ceiling;
//   - idle: server memory per connected client with one mounted counter;
//   - sweep: the age sweep of 1,000 expired sessions among few and many;
//   - startup: opening the server on a database with many sessions;
//   - storm: every stored client reconnecting and hydrating at once after
//     that restart.
//
// Figures that compare two things are measured in the same run, in rounds
// that alternate between them, and printed as a ratio with the spread over
// the rounds. It prints a table, and with --json FILE writes the same
// results as JSON. Progress goes to standard error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Workload names, in the order they run.
const (
	workloadThroughput = "throughput"
	workloadIdle       = "idle"
	workloadSweep      = "sweep"
	workloadStartup    = "startup"
	workloadStorm      = "storm"
	workloadPatch      = "patch"
)

var allWorkloads = []string{workloadThroughput, workloadIdle, workloadSweep, workloadStartup, workloadStorm, workloadPatch}

type config struct {
	duration      time.Duration
	rounds        int
	clients       []int
	idle          []int
	sweepStored   []int
	sweepExpired  int
	startupStored int
	storm         int
	patchItems    int
	patchCalls    int
	workloads     map[string]bool
	dir           string
	keep          bool
	jsonPath      string
	cpuProfile    string

	fileLimit uint64 // soft RLIMIT_NOFILE after raising it
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == idleChildCommand {
		os.Exit(runIdleChild(os.Args[2:]))
	}
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "livebolt-bench:", err)
		os.Exit(2)
	}
	if cfg.cpuProfile != "" {
		stop, err := startCPUProfile(cfg.cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "livebolt-bench:", err)
			os.Exit(2)
		}
		defer stop()
	}
	report, err := run(cfg)
	if report != nil {
		printReport(os.Stdout, report)
		if cfg.jsonPath != "" {
			if werr := writeJSON(cfg.jsonPath, report); werr != nil {
				err = errors.Join(err, werr)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "livebolt-bench:", err)
		os.Exit(1)
	}
}

// startCPUProfile starts profiling into path and returns the function that
// stops and flushes it.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create CPU profile %s: %w", path, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("start CPU profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	cfg := &config{}
	fs := flag.NewFlagSet("livebolt-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	clients := fs.String("clients", "1,10,100,1000", "comma-separated `counts` of concurrent clients for throughput")
	idle := fs.String("idle", "1000,10000", "comma-separated `counts` of idle connected clients")
	sweepStored := fs.String("sweep-stored", "10000,1000000", "comma-separated `counts` of stored sessions to sweep among; ratios are to the first")
	workloads := fs.String("workloads", strings.Join(allWorkloads, ","), "comma-separated `names` of the workloads to run")
	fs.DurationVar(&cfg.duration, "duration", 3*time.Second, "measured `time` of each throughput target at each client count, split over the rounds")
	fs.IntVar(&cfg.rounds, "rounds", 4, "alternating `rounds` of each comparison")
	fs.IntVar(&cfg.sweepExpired, "sweep-expired", 1000, "expired `sessions` among the stored ones in each sweep")
	fs.IntVar(&cfg.startupStored, "startup-stored", 0, "stored `sessions` of the start-up database, storm sessions included (default: the largest --sweep-stored)")
	fs.IntVar(&cfg.storm, "storm", 5000, "`clients` that reconnect and hydrate at once after the restart")
	fs.IntVar(&cfg.patchItems, "patch-items", 1000, "`items` of the todo lists of the patch workload")
	fs.IntVar(&cfg.patchCalls, "patch-calls", 300, "`calls` (toggle, add and remove in turn) each client of the patch workload makes")
	fs.StringVar(&cfg.dir, "dir", "", "parent `folder` of the run's own folder of databases (default: the system's temporary folder); that folder is removed at the end")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the databases after the run")
	fs.StringVar(&cfg.jsonPath, "json", "", "also write the results as JSON to `file`")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to `file`, for go tool pprof")

	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: go run ./cmd/livebolt-bench [flags]")
		fmt.Fprintln(stderr, "Starts livebolt servers in this process on 127.0.0.1 and measures them with WebSocket clients over loopback.")
		fs.PrintDefaults()
	}

	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q; every setting is a flag (see --help)", fs.Args())
	}

	var err error
	if cfg.clients, err = parseCounts("clients", *clients); err != nil {
		return nil, err
	}
	if cfg.idle, err = parseCounts("idle", *idle); err != nil {
		return nil, err
	}
	if cfg.sweepStored, err = parseCounts("sweep-stored", *sweepStored); err != nil {
		return nil, err
	}
	if cfg.workloads, err = parseWorkloads(*workloads); err != nil {
		return nil, err
	}
	if cfg.startupStored == 0 {
		cfg.startupStored = slices.Max(cfg.sweepStored)
	}
	return cfg, cfg.validate()
}

func (cfg *config) validate() error {
	switch {
	case cfg.duration <= 0:
		return errors.New("--duration must be positive")
	case cfg.rounds < 1:
		return errors.New("--rounds must be at least 1")
	case cfg.sweepExpired < 1:
		return errors.New("--sweep-expired must be at least 1")
	case cfg.startupStored < 1:
		return errors.New("--startup-stored must be positive")
	case cfg.storm < 1:
		return errors.New("--storm must be at least 1")
	case cfg.patchItems < 1:
		return errors.New("--patch-items must be at least 1")
	case cfg.patchCalls < 3:
		return errors.New("--patch-calls must be at least 3, one of each change")
	case cfg.duration/time.Duration(cfg.rounds) < 10*time.Millisecond:
		return fmt.Errorf("--duration %s over %d rounds leaves under 10 ms a round", cfg.duration, cfg.rounds)
	}
	return nil
}

// parseCounts reads a comma-separated list of positive integers; "_" may
// group digits, as in 1_000_000.
func parseCounts(name, value string) ([]int, error) {
	var counts []int
	for _, part := range strings.Split(value, ",") {
		part = strings.ReplaceAll(strings.TrimSpace(part), "_", "")
		n, err := strconv.Atoi(part)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--%s: %q is not a positive whole number", name, part)
		}
		counts = append(counts, n)
	}
	return counts, nil
}

func parseWorkloads(value string) (map[string]bool, error) {
	picked := map[string]bool{}
	for _, name := range strings.Split(value, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(allWorkloads, name) {
			return nil, fmt.Errorf("--workloads: unknown workload %q; choose from %s", name, strings.Join(allWorkloads, ","))
		}
		picked[name] = true
	}
	return picked, nil
}

var runStarted = time.Now()

// progress reports what the benchmark is doing on standard error.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(runStarted).Seconds(), fmt.Sprintf(format, args...))
}

// run runs the picked workloads in order. A failed workload is recorded in
// the report and the others still run; the returned error lists failures.
func run(cfg *config) (*Report, error) {
	runStarted = time.Now()
	report := newReport(cfg)
	soft, hard, err := raiseFileLimit()
	cfg.fileLimit = soft
	report.Machine.FileLimit, report.Machine.FileLimitHard = soft, hard
	if err != nil {
		report.Machine.FileLimitError = err.Error()
	}
	dir, cleanup, err := workDir(cfg)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	report.Settings.Dir = dir

	fixtures := newFixtureCache(dir, max(cfg.sweepExpired, cfg.storm), time.Now())
	defer fixtures.remove()
	var failures []error
	fail := func(workload string, err error) {
		if err == nil {
			return
		}
		report.Errors = append(report.Errors, WorkloadError{Workload: workload, Error: err.Error()})
		failures = append(failures, fmt.Errorf("%s: %w", workload, err))
		progress("%s failed: %v", workload, err)
	}
	if cfg.workloads[workloadThroughput] {
		err := cfg.needFiles(workloadThroughput, 2*3*slices.Max(cfg.clients))
		if err == nil {
			report.Throughput, err = runThroughput(cfg, dir)
		}
		fail(workloadThroughput, err)
	}
	if cfg.workloads[workloadIdle] {
		var err error
		report.Idle, err = runIdle(cfg, dir)
		fail(workloadIdle, err)
	}
	if cfg.workloads[workloadSweep] {
		var err error
		report.Sweep, err = runSweep(cfg, fixtures, dir)
		fail(workloadSweep, err)
	}
	if cfg.workloads[workloadStartup] || cfg.workloads[workloadStorm] {
		err := cfg.needFiles(workloadStorm, 2*cfg.storm)
		if err == nil {
			report.Startup, report.Storm, err = runStartupAndStorm(cfg, fixtures, dir)
			if !cfg.workloads[workloadStartup] {
				report.Startup = nil
			}
		}
		fail(workloadStartup+"/"+workloadStorm, err)
	}
	if cfg.workloads[workloadPatch] {
		var err error
		report.Patch, err = runPatch(cfg, dir)
		fail(workloadPatch, err)
	}
	report.ElapsedSeconds = time.Since(runStarted).Seconds()
	return report, errors.Join(failures...)
}

// needFiles checks that the file limit leaves room for conns sockets in
// this process.
func (cfg *config) needFiles(workload string, conns int) error {
	if need := uint64(conns) + 256; cfg.fileLimit < need {
		return fmt.Errorf("the file limit is %d, but %s needs about %d open files; raise the hard limit (ulimit -Hn) or use fewer clients", cfg.fileLimit, workload, need)
	}
	return nil
}

// workDir creates a new folder for the run's databases, inside --dir when
// it is set, and returns a function that removes it unless --keep is set.
func workDir(cfg *config) (string, func(), error) {
	if cfg.dir != "" {
		if err := os.MkdirAll(cfg.dir, 0o755); err != nil {
			return "", nil, fmt.Errorf("create --dir %s: %w", cfg.dir, err)
		}
	}
	dir, err := os.MkdirTemp(cfg.dir, "livebolt-bench-")
	if err != nil {
		return "", nil, fmt.Errorf("create the folder for the databases: %w", err)
	}
	if cfg.keep {
		return dir, func() { progress("databases kept in %s", dir) }, nil
	}
	return dir, func() { _ = os.RemoveAll(dir) }, nil
}
