package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Throughput targets, in the order each round runs them.
const (
	targetDurable  = "durable"
	targetInMemory = "in-memory"
	targetEcho     = "echo"
)

// maxCallsPerRound bounds the calls of one connection in one round; the
// round's duration ends it long before that.
const maxCallsPerRound = 10_000_000

// echoID replaces the component id in the frames sent to the echo server.
// It has the length of a real one: key "c", a dot and 22 characters.
var echoID = "c." + strings.Repeat("e", 22)

// ThroughputResult is workload 1 and 2: increment calls, one in flight per
// client, against each target.
type ThroughputResult struct {
	SecondsPerTarget float64         `json:"secondsPerTarget"`
	Rounds           int             `json:"rounds"`
	Targets          []string        `json:"targets"`
	Notes            []string        `json:"notes,omitempty"`
	Rows             []ThroughputRow `json:"rows"`
}

// ThroughputRow holds one client count.
type ThroughputRow struct {
	Clients           int           `json:"clients"`
	Targets           []TargetStats `json:"targets"`
	DurableOverMemory *Ratio        `json:"durableOverInMemory,omitempty"`
	DurableOverEcho   *Ratio        `json:"durableOverEcho,omitempty"`
	// Commits are the bbolt commits of the durable rounds.
	Commits *CommitStats `json:"durableCommits,omitempty"`
}

// TargetStats sums the measured rounds of one target.
type TargetStats struct {
	Name                string  `json:"name"`
	Calls               int     `json:"calls"`
	Errors              int     `json:"errors"`
	FirstError          string  `json:"firstError,omitempty"`
	Seconds             float64 `json:"seconds"`
	CallsPerSecond      float64 `json:"callsPerSecond"`
	P50Ms               float64 `json:"p50Ms"`
	P99Ms               float64 `json:"p99Ms"`
	RequestBytesPerCall float64 `json:"requestBytesPerCall"`
	ReplyBytesPerCall   float64 `json:"replyBytesPerCall"`

	roundRates []float64
}

// throughputTarget is one server under test and its clients.
type throughputTarget struct {
	name  string
	addr  string
	live  bool // a livebolt server; false for the echo server
	conns []*callConn
	acc   accumulator
}

// accumulator adds up the rounds of one target.
type accumulator struct {
	calls, errors int
	firstErr      string
	elapsed       time.Duration
	bytesOut      int64
	bytesIn       int64
	latencies     []time.Duration
	roundRates    []float64
}

func (a *accumulator) add(results []loopResult, elapsed time.Duration) {
	calls := 0
	for _, r := range results {
		calls += r.calls
		a.bytesOut += r.bytesOut
		a.bytesIn += r.bytesIn
		a.latencies = append(a.latencies, r.latencies...)
		if r.err != nil {
			a.errors++
			if a.firstErr == "" {
				a.firstErr = r.err.Error()
			}
		}
	}
	a.calls += calls
	a.elapsed += elapsed
	a.roundRates = append(a.roundRates, float64(calls)/elapsed.Seconds())
}

func (a *accumulator) stats(name string) TargetStats {
	slices.Sort(a.latencies)
	st := TargetStats{
		Name: name, Calls: a.calls, Errors: a.errors, FirstError: a.firstErr,
		Seconds:    a.elapsed.Seconds(),
		P50Ms:      ms(percentile(a.latencies, 50)),
		P99Ms:      ms(percentile(a.latencies, 99)),
		roundRates: a.roundRates,
	}
	if a.elapsed > 0 {
		st.CallsPerSecond = float64(a.calls) / a.elapsed.Seconds()
	}
	if a.calls > 0 {
		st.RequestBytesPerCall = float64(a.bytesOut) / float64(a.calls)
		st.ReplyBytesPerCall = float64(a.bytesIn) / float64(a.calls)
	}
	return st
}

// throughputServers are the servers of the throughput workload, shared by
// all client counts.
type throughputServers struct {
	durable *liveServer
	memory  *liveServer // nil without an in-memory store
	echo    *echoServer
}

func startThroughputServers(dir string) (*throughputServers, error) {
	s := &throughputServers{}
	var err error
	if s.durable, err = startLive(newLiveOptions(filepath.Join(dir, "throughput-durable"))); err != nil {
		return nil, err
	}
	if newMemoryStore != nil {
		opts := newLiveOptions("")
		opts.Store = newMemoryStore()
		if s.memory, err = startLive(opts); err != nil {
			return nil, errors.Join(err, s.stop())
		}
	}
	if s.echo, err = startEcho(); err != nil {
		return nil, errors.Join(err, s.stop())
	}
	return s, nil
}

func (s *throughputServers) stop() error {
	var errs []error
	for _, ls := range []*liveServer{s.durable, s.memory} {
		if ls != nil {
			errs = append(errs, ls.stop())
		}
	}
	if s.echo != nil {
		errs = append(errs, s.echo.stop())
	}
	return errors.Join(errs...)
}

// targets returns a fresh target for each server, in round order.
func (s *throughputServers) targets() []*throughputTarget {
	ts := []*throughputTarget{{name: targetDurable, addr: s.durable.addr, live: true}}
	if s.memory != nil {
		ts = append(ts, &throughputTarget{name: targetInMemory, addr: s.memory.addr, live: true})
	}
	return append(ts, &throughputTarget{name: targetEcho, addr: s.echo.addr})
}

func runThroughput(cfg *config, dir string) (*ThroughputResult, error) {
	servers, err := startThroughputServers(dir)
	if err != nil {
		return nil, err
	}
	res := &ThroughputResult{SecondsPerTarget: cfg.duration.Seconds(), Rounds: cfg.rounds}
	for _, t := range servers.targets() {
		res.Targets = append(res.Targets, t.name)
	}
	if servers.memory == nil {
		res.Notes = append(res.Notes, "in-memory target skipped: no in-memory store is wired in (newMemoryStore is nil)")
	}
	for _, n := range cfg.clients {
		row, err := throughputAt(cfg, servers, n)
		if err != nil {
			return res, errors.Join(fmt.Errorf("%d clients: %w", n, err), servers.stop())
		}
		res.Rows = append(res.Rows, row)
	}
	return res, servers.stop()
}

// throughputAt connects n clients to every target and runs the rounds, the
// targets taking turns within each round.
func throughputAt(cfg *config, servers *throughputServers, n int) (ThroughputRow, error) {
	targets := servers.targets()
	defer closeTargets(servers, targets)
	for _, t := range targets {
		progress("throughput: connecting %d clients to %s", n, t.name)
		if err := t.connect(n); err != nil {
			return ThroughputRow{}, err
		}
	}
	perRound := cfg.duration / time.Duration(cfg.rounds)
	warmUp := min(perRound, 300*time.Millisecond)
	for _, t := range targets {
		runRound(t.conns, warmUp)
	}
	var commits commitAccumulator
	for r := range cfg.rounds {
		for _, t := range targets {
			var before commitSample
			if t.name == targetDurable {
				before, _ = sampleCommits(servers.durable)
			}
			results, elapsed := runRound(t.conns, perRound)
			if t.name == targetDurable {
				if after, err := sampleCommits(servers.durable); err == nil {
					commits.add(before, after, elapsed)
				}
			}
			t.acc.add(results, elapsed)
			progress("throughput: %d clients, round %d/%d, %s: %.0f calls/s", n, r+1, cfg.rounds, t.name, t.acc.roundRates[r])
		}
	}
	row := buildRow(n, targets)
	row.Commits = commits.stats()
	return row, nil
}

func buildRow(n int, targets []*throughputTarget) ThroughputRow {
	row := ThroughputRow{Clients: n}
	byName := map[string]TargetStats{}
	for _, t := range targets {
		st := t.acc.stats(t.name)
		row.Targets = append(row.Targets, st)
		byName[t.name] = st
	}
	ratio := func(a, b string) *Ratio {
		sa, okA := byName[a]
		sb, okB := byName[b]
		if !okA || !okB {
			return nil
		}
		return newRatio(sa.CallsPerSecond, sb.CallsPerSecond, sa.roundRates, sb.roundRates)
	}
	row.DurableOverMemory = ratio(targetDurable, targetInMemory)
	row.DurableOverEcho = ratio(targetDurable, targetEcho)
	return row
}

// connect opens n clients. Livebolt clients also send hello and mount a
// counter.
func (t *throughputTarget) connect(n int) error {
	t.conns = make([]*callConn, n)
	return parallel(n, connectWorkers, func(i int) error {
		if t.live {
			c, err := connectMounted(t.addr)
			if err != nil {
				return fmt.Errorf("%s client %d: %w", t.name, i, err)
			}
			t.conns[i] = &callConn{ws: c.ws, id: c.id, ref: c.ref}
			return nil
		}
		ws, err := dial(t.addr, "/echo")
		if err != nil {
			return fmt.Errorf("%s client %d: %w", t.name, i, err)
		}
		t.conns[i] = &callConn{ws: ws, id: echoID}
		return nil
	})
}

// closeTargets closes every client and waits, at most 30 s, for the
// livebolt servers to release the instances.
func closeTargets(servers *throughputServers, targets []*throughputTarget) {
	for _, t := range targets {
		for _, c := range t.conns {
			if c != nil {
				_ = c.ws.Close()
			}
		}
	}
	for _, ls := range []*liveServer{servers.durable, servers.memory} {
		if ls != nil {
			if left := ls.waitInstances(0, 30*time.Second); left != 0 {
				progress("throughput: %d instances still in memory 30 s after the clients left", left)
			}
		}
	}
}

// runRound lets every live connection call in a loop for d, all starting
// together, and returns their results and the time until the last one
// finished its last call. A connection that fails is not used again.
func runRound(conns []*callConn, d time.Duration) ([]loopResult, time.Duration) {
	results := make([]loopResult, len(conns))
	start := make(chan struct{})
	var deadline time.Time
	var wg sync.WaitGroup
	for i, c := range conns {
		if c.dead {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i] = c.callLoop(deadline, maxCallsPerRound)
		}()
	}
	began := time.Now()
	deadline = began.Add(d)
	close(start)
	wg.Wait()
	elapsed := time.Since(began)
	for i, r := range results {
		if r.err != nil {
			conns[i].dead = true
		}
	}
	return results, elapsed
}
