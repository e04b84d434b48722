package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/livebolt/livebolt/app"
	"github.com/livebolt/livebolt/live"
)

// stormTimeout bounds the whole reconnect storm; a client without its state
// by then counts as failed.
const stormTimeout = 3 * time.Minute

// StartupResult is the first half of workload 5: opening the server on a
// database with many stored sessions.
type StartupResult struct {
	Stored         int       `json:"stored"`
	Notes          []string  `json:"notes,omitempty"`
	Fill           FillInfo  `json:"fill"`
	SetupSeconds   float64   `json:"setupSeconds"`
	OpenMs         []float64 `json:"openMs"`
	OpenMedianMs   float64   `json:"openMedianMs"`
	EmptyOpenMs    []float64 `json:"emptyOpenMs"`
	EmptyMedianMs  float64   `json:"emptyOpenMedianMs"`
	OverEmpty      *Ratio    `json:"openOverEmptyOpen,omitempty"`
	BeforeOpen     memSample `json:"beforeOpen"`
	AfterOpen      memSample `json:"afterOpen"`
	HeapGrowth     int64     `json:"heapInuseGrowthBytes"`
	RSSGrowth      int64     `json:"rssGrowthBytes"`
	ServedOpenMs   float64   `json:"servedOpenMs"`
	InstancesAfter int       `json:"instancesAfterOpen"`
}

// StormResult is the second half of workload 5: every stored client
// reconnects and hydrates at once after the restart.
type StormResult struct {
	Clients         int            `json:"clients"`
	Hydrated        int            `json:"hydrated"`
	Failed          int            `json:"failed"`
	Failures        map[string]int `json:"failures,omitempty"`
	FirstFailure    string         `json:"firstFailure,omitempty"`
	AllStateSeconds float64        `json:"allStateSeconds"`
	P50Ms           float64        `json:"p50Ms"`
	P99Ms           float64        `json:"p99Ms"`
	MaxHydrations   int            `json:"maxHydrations"`
	AfterStorm      memSample      `json:"afterStorm"`
	InstancesAfter  int            `json:"instancesAfterStorm"`
}

// stormSession is the state one client keeps to reconnect: its token and
// its counter's id and fingerprint.
type stormSession struct {
	token, clientID, id, fingerprint string
}

// startupFixture is the database of workload 5.
type startupFixture struct {
	dir      string
	sessions []stormSession
}

func runStartupAndStorm(cfg *config, fc *fixtureCache, dir string) (*StartupResult, *StormResult, error) {
	stored := max(cfg.startupStored, cfg.storm)
	su := &StartupResult{Stored: stored, Notes: []string{
		fmt.Sprintf("%d made-up sessions are filled in random order through storage.Store on bbolt with NoSync; the %d storm sessions are mounted over WebSocket on a server with NoSync; the file is then flushed, and every timed open has fsync on", stored-cfg.storm, cfg.storm),
		"open times alternate with opening an empty database; the page cache is warm",
	}}
	fx, err := prepareStartup(fc, dir, stored, cfg.storm, su)
	if err != nil {
		return su, nil, err
	}
	if cfg.workloads[workloadStartup] {
		if err := timeOpens(cfg, fx, dir, su); err != nil {
			return su, nil, err
		}
	}
	srv, err := openMeasured(fx, su)
	if err != nil {
		return su, nil, err
	}
	if !cfg.workloads[workloadStorm] {
		return su, nil, srv.stop()
	}
	storm := runStorm(srv, fx.sessions)
	return su, storm, srv.stop()
}

// prepareStartup makes a database of stored-storm made-up sessions, then
// mounts storm counters through a server, one client each, and flushes the
// file.
func prepareStartup(fc *fixtureCache, dir string, stored, storm int, su *StartupResult) (*startupFixture, error) {
	fx := &startupFixture{dir: filepath.Join(dir, "startup")}
	path := filepath.Join(fx.dir, app.DatabaseFile)
	var err error
	if su.Fill, err = fc.make(path, stored, stored-storm, "startup"); err != nil {
		return nil, err
	}
	progress("startup: mounting %d counters over WebSocket", storm)
	began := time.Now()
	opts := newLiveOptions(fx.dir)
	opts.NoSync = true
	srv, err := startLive(opts)
	if err != nil {
		return nil, err
	}
	fx.sessions, err = mountStormSessions(srv.addr, storm)
	su.SetupSeconds = time.Since(began).Seconds()
	if err := errors.Join(err, srv.stop()); err != nil {
		return nil, err
	}
	return fx, syncFile(path)
}

func mountStormSessions(addr string, n int) ([]stormSession, error) {
	sessions := make([]stormSession, n)
	err := parallel(n, connectWorkers, func(i int) error {
		c, err := connectMounted(addr)
		if err != nil {
			return fmt.Errorf("storm client %d: %w", i, err)
		}
		defer c.close()
		sessions[i] = stormSession{token: c.token, clientID: c.clientID, id: c.id, fingerprint: c.fingerprint}
		return nil
	})
	return sessions, err
}

// timeOpens times app.New followed by Close, alternating between the
// filled database and an empty one, after one untimed open of each.
func timeOpens(cfg *config, fx *startupFixture, dir string, su *StartupResult) error {
	empty := filepath.Join(dir, "startup-empty")
	var full, none []time.Duration
	for r := range cfg.rounds + 1 {
		for _, d := range []string{fx.dir, empty} {
			took, err := openAndClose(d)
			if err != nil {
				return err
			}
			if r == 0 {
				continue // warm-up
			}
			if d == fx.dir {
				full = append(full, took)
			} else {
				none = append(none, took)
			}
		}
		if r > 0 {
			progress("startup: round %d/%d: open %.1f ms, empty %.1f ms", r, cfg.rounds, ms(full[r-1]), ms(none[r-1]))
		}
	}
	for i := range full {
		su.OpenMs = append(su.OpenMs, ms(full[i]))
		su.EmptyOpenMs = append(su.EmptyOpenMs, ms(none[i]))
	}
	su.OpenMedianMs, su.EmptyMedianMs = ms(median(full)), ms(median(none))
	su.OverEmpty = newRatio(sum(su.OpenMs), sum(su.EmptyOpenMs), su.OpenMs, su.EmptyOpenMs)
	return nil
}

func openAndClose(dataDir string) (time.Duration, error) {
	began := time.Now()
	srv, err := app.New(newLiveOptions(dataDir))
	took := time.Since(began)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", dataDir, err)
	}
	if err := srv.Close(); err != nil {
		return 0, fmt.Errorf("close %s: %w", dataDir, err)
	}
	return took, nil
}

// openMeasured opens the server that the storm reconnects to, recording
// heap and RSS before and after app.New.
func openMeasured(fx *startupFixture, su *StartupResult) (*liveServer, error) {
	var err error
	if su.BeforeOpen, err = sampleMemory(); err != nil {
		return nil, err
	}
	began := time.Now()
	built, err := app.New(newLiveOptions(fx.dir))
	su.ServedOpenMs = ms(time.Since(began))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", fx.dir, err)
	}
	if su.AfterOpen, err = sampleMemory(); err != nil {
		return nil, errors.Join(err, built.Close())
	}
	su.HeapGrowth = int64(su.AfterOpen.HeapInuse) - int64(su.BeforeOpen.HeapInuse)
	su.RSSGrowth = int64(su.AfterOpen.RSS) - int64(su.BeforeOpen.RSS)
	su.InstancesAfter = built.Engine().Stats().InstanceCount
	return serveLive(built)
}

// stormOutcome is the result of one reconnecting client.
type stormOutcome struct {
	took   time.Duration // from the start of the storm until its state arrived
	failed string        // reason, empty on success
	err    error
	client *liveClient
}

// runStorm lets every client dial, say hello with its token and hydrate its
// counter at the same moment, and keeps them connected until all are done.
func runStorm(srv *liveServer, sessions []stormSession) *StormResult {
	progress("storm: %d clients reconnect and hydrate at once", len(sessions))
	outcomes := make([]stormOutcome, len(sessions))
	start := make(chan struct{})
	var began time.Time
	var wg sync.WaitGroup
	for i, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			outcomes[i] = reconnect(srv.addr, s, began.Add(stormTimeout))
			outcomes[i].took = time.Since(began)
		}()
	}
	began = time.Now()
	close(start)
	wg.Wait()
	res := summarizeStorm(outcomes)
	res.MaxHydrations = maxHydrations()
	res.AfterStorm, _ = sampleMemory()
	res.InstancesAfter = srv.Engine().Stats().InstanceCount
	for _, o := range outcomes {
		if o.client != nil {
			o.client.close()
		}
	}
	srv.waitInstances(0, 30*time.Second)
	return res
}

// reconnect is one client of the storm.
func reconnect(addr string, s stormSession, deadline time.Time) stormOutcome {
	c, err := dialLive(addr)
	if err != nil {
		return stormOutcome{failed: failureReason("dial", err), err: err}
	}
	out := stormOutcome{client: c}
	timeout := time.Until(deadline)
	if err := c.hello(s.token); err != nil {
		out.failed, out.err = failureReason("hello", err), err
		return out
	}
	if c.clientID != s.clientID {
		out.failed, out.err = "hello: other client", fmt.Errorf("hello resumed client %q, expected %q", c.clientID, s.clientID)
		return out
	}
	if _, err := c.hydrate(s.id, s.fingerprint, timeout); err != nil {
		out.failed, out.err = failureReason("hydrate", err), err
	}
	return out
}

// failureReason names a failure by step and error code, or timeout.
func failureReason(step string, err error) string {
	var pe *protocolError
	switch {
	case errors.As(err, &pe):
		return step + ": " + pe.Code
	case isTimeout(err):
		return step + ": timeout"
	default:
		return step + ": error"
	}
}

func summarizeStorm(outcomes []stormOutcome) *StormResult {
	res := &StormResult{Clients: len(outcomes), Failures: map[string]int{}}
	var took []time.Duration
	var last time.Duration
	for _, o := range outcomes {
		if o.failed != "" {
			res.Failed++
			res.Failures[o.failed]++
			if res.FirstFailure == "" {
				res.FirstFailure = o.err.Error()
			}
			continue
		}
		res.Hydrated++
		took = append(took, o.took)
		last = max(last, o.took)
	}
	slices.Sort(took)
	res.AllStateSeconds = last.Seconds()
	res.P50Ms, res.P99Ms = ms(percentile(took, 50)), ms(percentile(took, 99))
	if len(res.Failures) == 0 {
		res.Failures = nil
	}
	return res
}

// maxHydrations is the engine's bound on hydrations from the store at
// once, as the benchmark servers run with it.
func maxHydrations() int {
	if n := benchLimits().MaxHydrations; n > 0 {
		return n
	}
	return live.DefaultMaxHydrations
}
