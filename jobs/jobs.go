// Package jobs runs livebolt's periodic sweeps on robfig/cron schedules and
// keeps statistics of every run.
package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// Func is the work of one job. It returns how many items it removed. It
// should return early when ctx is cancelled, which happens on Stop.
type Func func(ctx context.Context) (removed int, err error)

// Stats describes the runs of one job.
type Stats struct {
	Schedule       string     `json:"schedule"`
	Runs           uint64     `json:"runs"`
	Failures       uint64     `json:"failures"`
	LastRun        *time.Time `json:"lastRun"`
	LastDurationMs float64    `json:"lastDurationMs"`
	LastRemoved    int        `json:"lastRemoved"`
	TotalRemoved   int        `json:"totalRemoved"`
	LastError      string     `json:"lastError,omitempty"`
	NextRun        *time.Time `json:"nextRun"`
}

// Scheduler runs named jobs. Add every job before Start.
type Scheduler struct {
	cron   *cron.Cron
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	jobs    map[string]*job
	started bool
	stopped bool
}

type job struct {
	name     string
	schedule string
	fn       Func
	entry    cron.EntryID

	running sync.Mutex // held while fn runs, so runs never overlap

	mu    sync.Mutex
	stats Stats
}

// parser accepts the standard five cron fields and descriptors such as
// "@every 5m" and "@hourly".
var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule checks a cron spec and returns an error naming it.
func ParseSchedule(spec string) (cron.Schedule, error) {
	sched, err := parser.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("invalid schedule %q (use five cron fields or a descriptor such as \"@every 5m\"): %w", spec, err)
	}
	return sched, nil
}

// New returns a scheduler that logs to logger; nil discards logs.
func New(logger *slog.Logger) *Scheduler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Scheduler{log: logger, ctx: ctx, cancel: cancel, jobs: map[string]*job{}}
	s.cron = cron.New(
		cron.WithParser(parser),
		cron.WithLogger(cronLogger{logger}),
		// Backstop only: job.run recovers panics itself and records them.
		cron.WithChain(cron.Recover(cronLogger{logger})),
	)
	return s
}

// Add registers fn under name on a cron spec.
func (s *Scheduler) Add(name, spec string, fn Func) error {
	sched, err := ParseSchedule(spec)
	if err != nil {
		return fmt.Errorf("add job %s: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return fmt.Errorf("add job %s: scheduler already started", name)
	}
	if _, dup := s.jobs[name]; dup {
		return fmt.Errorf("add job %s: already added", name)
	}
	j := &job{name: name, schedule: spec, fn: fn, stats: Stats{Schedule: spec}}
	j.entry = s.cron.Schedule(sched, cron.FuncJob(func() { s.runScheduled(j) }))
	s.jobs[name] = j
	return nil
}

// ErrStopped is returned by RunNow after Stop.
var ErrStopped = errors.New("scheduler is stopped")

// Start starts the schedule in the background. It does nothing after Stop.
func (s *Scheduler) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return
	}
	s.started = true
	s.cron.Start()
	s.log.Info("scheduler started", "jobs", len(s.jobs))
}

// stopGrace is how long Stop waits for idle jobs to report that they are
// done after its context has expired.
const stopGrace = 100 * time.Millisecond

// Stop cancels running jobs' context, stops the schedule and waits for
// running jobs until ctx is done. It is safe to call more than once.
func (s *Scheduler) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	s.mu.Unlock()

	s.cancel()
	cronDone := s.cron.Stop()
	// cron waits only for the runs it started; taking every job's running
	// lock also waits for runs started by RunNow.
	done := make(chan struct{})
	go func() {
		<-cronDone.Done()
		for _, j := range s.jobList() {
			j.running.Lock()
			j.running.Unlock()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		// With no job running, done closes within moments, but cron
		// cancels its context from a goroutine of its own, so a context that
		// had already expired would report running jobs that do not exist.
		// Wait that moment before saying so.
		select {
		case <-done:
		case <-time.After(stopGrace):
			return fmt.Errorf("stop scheduler: jobs still running: %w", ctx.Err())
		}
	}
	s.log.Info("scheduler stopped")
	return nil
}

func (s *Scheduler) jobList() []*job {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := make([]*job, 0, len(s.jobs))
	for _, j := range s.jobs {
		list = append(list, j)
	}
	return list
}

// RunNow runs a job at once, waiting for a scheduled run of it to finish
// first, and returns what it removed.
func (s *Scheduler) RunNow(name string) (int, error) {
	s.mu.Lock()
	j, ok := s.jobs[name]
	stopped := s.stopped
	s.mu.Unlock()
	if !ok {
		return 0, fmt.Errorf("run job %s: no such job", name)
	}
	if stopped {
		return 0, fmt.Errorf("run job %s: %w", name, ErrStopped)
	}
	j.running.Lock()
	defer j.running.Unlock()
	return s.run(j, "manual")
}

func (s *Scheduler) runScheduled(j *job) {
	if !j.running.TryLock() {
		s.log.Warn("job skipped: previous run still running", "job", j.name)
		return
	}
	defer j.running.Unlock()
	_, _ = s.run(j, "schedule")
}

// errPanic marks a job that panicked.
var errPanic = errors.New("job panicked")

// run calls the job, records the outcome and logs it. The caller holds
// j.running.
func (s *Scheduler) run(j *job, trigger string) (removed int, err error) {
	start := time.Now()
	func() {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%w: %v", errPanic, r)
				s.log.Error("job panicked", "job", j.name, "panic", r, "stack", string(debug.Stack()))
			}
		}()
		removed, err = j.fn(s.ctx)
	}()
	elapsed := time.Since(start)

	j.mu.Lock()
	j.stats.Runs++
	j.stats.LastRun = &start
	j.stats.LastDurationMs = float64(elapsed.Microseconds()) / 1000
	j.stats.LastRemoved = removed
	j.stats.TotalRemoved += removed
	j.stats.LastError = ""
	if err != nil {
		j.stats.Failures++
		j.stats.LastError = err.Error()
	}
	j.mu.Unlock()

	switch {
	case err != nil && !errors.Is(err, errPanic):
		s.log.Error("job failed", "job", j.name, "trigger", trigger, "removed", removed, "duration", elapsed, "err", err)
	case removed > 0:
		s.log.Info("job removed items", "job", j.name, "trigger", trigger, "removed", removed, "duration", elapsed)
	default:
		s.log.Debug("job ran", "job", j.name, "trigger", trigger, "duration", elapsed)
	}
	return removed, err
}

// Stats returns the statistics of every job by name.
func (s *Scheduler) Stats() map[string]Stats {
	jobs := s.jobList()
	s.mu.Lock()
	started := s.started && !s.stopped
	s.mu.Unlock()

	out := make(map[string]Stats, len(jobs))
	for _, j := range jobs {
		j.mu.Lock()
		st := j.stats
		j.mu.Unlock()
		if started {
			if next := s.cron.Entry(j.entry).Next; !next.IsZero() {
				st.NextRun = &next
			}
		}
		out[j.name] = st
	}
	return out
}

// Names returns the job names, sorted.
func (s *Scheduler) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.jobs))
	for name := range s.jobs {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// cronLogger adapts slog to cron.Logger. cron's info messages are routine
// (schedule, wake, run), so they go to debug.
type cronLogger struct{ log *slog.Logger }

func (l cronLogger) Info(msg string, keysAndValues ...any) {
	l.log.Debug("cron: "+msg, keysAndValues...)
}

func (l cronLogger) Error(err error, msg string, keysAndValues ...any) {
	l.log.Error("cron: "+msg, append(keysAndValues, "err", err)...)
}
