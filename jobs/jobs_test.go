package jobs

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer that the test can read while cron goroutines
// write log lines to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newScheduler returns a scheduler that is stopped when the test ends.
func newScheduler(t *testing.T, logger *slog.Logger) *Scheduler {
	t.Helper()
	s := New(logger)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("Stop in cleanup: %v", err)
		}
	})
	return s
}

// waitFor polls cond every 10 ms and reports whether it became true before
// timeout.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

// lineContaining returns the first log line that contains substr, or "".
func lineContaining(logs, substr string) string {
	for line := range strings.SplitSeq(logs, "\n") {
		if strings.Contains(line, substr) {
			return line
		}
	}
	return ""
}

// jobRemoving returns a job that always succeeds and reports removed items.
func jobRemoving(removed int) Func {
	return func(context.Context) (int, error) { return removed, nil }
}

func TestParseScheduleAcceptsValidSpecs(t *testing.T) {
	for _, spec := range []string{"@every 1s", "*/5 * * * *", "@hourly"} {
		t.Run(spec, func(t *testing.T) {
			sched, err := ParseSchedule(spec)
			if err != nil {
				t.Fatalf("ParseSchedule(%q) error: %v", spec, err)
			}
			if sched == nil {
				t.Errorf("ParseSchedule(%q) returned a nil schedule", spec)
			}
		})
	}
}

func TestParseScheduleRejectsInvalidSpecs(t *testing.T) {
	for _, spec := range []string{"", "every 5m", "61 * * * *"} {
		t.Run(spec, func(t *testing.T) {
			sched, err := ParseSchedule(spec)
			if err == nil {
				t.Fatalf("ParseSchedule(%q) returned no error", spec)
			}
			if sched != nil {
				t.Errorf("ParseSchedule(%q) returned a schedule with its error", spec)
			}
			if want := `"` + spec + `"`; !strings.Contains(err.Error(), want) {
				t.Errorf("ParseSchedule(%q) error %q does not contain %s", spec, err, want)
			}
		})
	}
}

func TestAddRejectsInvalidSpec(t *testing.T) {
	s := newScheduler(t, nil)

	err := s.Add("sweep", "every 5m", jobRemoving(0))
	if err == nil {
		t.Fatal("Add with spec \"every 5m\" returned no error")
	}
	if !strings.Contains(err.Error(), "every 5m") {
		t.Errorf("Add error %q does not name the spec", err)
	}
	if names := s.Names(); len(names) != 0 {
		t.Errorf("Names() = %v after a rejected Add, want none", names)
	}
}

func TestAddRejectsDuplicateName(t *testing.T) {
	s := newScheduler(t, nil)
	if err := s.Add("sweep", "@hourly", jobRemoving(0)); err != nil {
		t.Fatalf("first Add: %v", err)
	}

	err := s.Add("sweep", "@hourly", jobRemoving(0))
	if err == nil {
		t.Fatal("second Add of the same name returned no error")
	}
	if !strings.Contains(err.Error(), "sweep") {
		t.Errorf("duplicate Add error %q does not name the job", err)
	}
	if names := s.Names(); len(names) != 1 {
		t.Errorf("Names() = %v after a duplicate Add, want one job", names)
	}
}

func TestAddAfterStartRejected(t *testing.T) {
	s := newScheduler(t, nil)
	if err := s.Add("first", "@hourly", jobRemoving(0)); err != nil {
		t.Fatalf("Add before Start: %v", err)
	}
	s.Start()

	if err := s.Add("second", "@hourly", jobRemoving(0)); err == nil {
		t.Error("Add after Start returned no error")
	}
	if names := s.Names(); len(names) != 1 {
		t.Errorf("Names() = %v after a rejected Add, want only the first job", names)
	}
}

func TestRunNowRecordsStats(t *testing.T) {
	s := newScheduler(t, nil)
	removedByRun := []int{3, 4}
	var calls atomic.Int32
	err := s.Add("sweep", "@hourly", func(context.Context) (int, error) {
		return removedByRun[calls.Add(1)-1], nil
	})
	if err != nil {
		t.Fatalf("Add: %v", err)
	}

	before := time.Now()
	removed, err := s.RunNow("sweep")
	after := time.Now()
	if err != nil {
		t.Fatalf("first RunNow: %v", err)
	}
	if removed != 3 {
		t.Errorf("first RunNow removed = %d, want 3", removed)
	}
	st := s.Stats()["sweep"]
	if st.Runs != 1 {
		t.Errorf("Runs = %d after one run, want 1", st.Runs)
	}
	if st.LastRun == nil {
		t.Fatal("LastRun is nil after a run")
	}
	if st.LastRun.Before(before) || st.LastRun.After(after) {
		t.Errorf("LastRun = %v, want between %v and %v", st.LastRun, before, after)
	}
	if st.LastRemoved != 3 {
		t.Errorf("LastRemoved = %d after one run, want 3", st.LastRemoved)
	}
	if st.TotalRemoved != 3 {
		t.Errorf("TotalRemoved = %d after one run, want 3", st.TotalRemoved)
	}
	if st.Failures != 0 {
		t.Errorf("Failures = %d after a successful run, want 0", st.Failures)
	}

	removed, err = s.RunNow("sweep")
	if err != nil {
		t.Fatalf("second RunNow: %v", err)
	}
	if removed != 4 {
		t.Errorf("second RunNow removed = %d, want 4", removed)
	}
	st = s.Stats()["sweep"]
	if st.Runs != 2 {
		t.Errorf("Runs = %d after two runs, want 2", st.Runs)
	}
	if st.LastRemoved != 4 {
		t.Errorf("LastRemoved = %d after two runs, want 4", st.LastRemoved)
	}
	if st.TotalRemoved != 7 {
		t.Errorf("TotalRemoved = %d after two runs, want 7", st.TotalRemoved)
	}
}

func TestRunNowUnknownJob(t *testing.T) {
	s := newScheduler(t, nil)

	_, err := s.RunNow("missing")
	if err == nil {
		t.Fatal("RunNow of an unknown job returned no error")
	}
	if !strings.Contains(err.Error(), "missing") {
		t.Errorf("RunNow error %q does not name the job", err)
	}
}

func TestRunNowJobError(t *testing.T) {
	s := newScheduler(t, nil)
	errSweep := errors.New("database locked")
	err := s.Add("sweep", "@hourly", func(context.Context) (int, error) {
		return 0, errSweep
	})
	if err != nil {
		t.Fatalf("Add: %v", err)
	}

	_, err = s.RunNow("sweep")
	if !errors.Is(err, errSweep) {
		t.Errorf("RunNow error = %v, want %v", err, errSweep)
	}
	st := s.Stats()["sweep"]
	if st.Runs != 1 {
		t.Errorf("Runs = %d, want 1", st.Runs)
	}
	if st.Failures != 1 {
		t.Errorf("Failures = %d, want 1", st.Failures)
	}
	if st.LastError != errSweep.Error() {
		t.Errorf("LastError = %q, want %q", st.LastError, errSweep.Error())
	}
}

func TestRunNowErrorClearedBySuccess(t *testing.T) {
	s := newScheduler(t, nil)
	var calls atomic.Int32
	err := s.Add("sweep", "@hourly", func(context.Context) (int, error) {
		if calls.Add(1) == 1 {
			return 0, errors.New("database locked")
		}
		return 1, nil
	})
	if err != nil {
		t.Fatalf("Add: %v", err)
	}

	if _, err := s.RunNow("sweep"); err == nil {
		t.Fatal("first RunNow returned no error")
	}
	if _, err := s.RunNow("sweep"); err != nil {
		t.Fatalf("second RunNow: %v", err)
	}
	st := s.Stats()["sweep"]
	if st.LastError != "" {
		t.Errorf("LastError = %q after a successful run, want empty", st.LastError)
	}
	if st.Failures != 1 {
		t.Errorf("Failures = %d, want 1", st.Failures)
	}
}

func TestPanickingJobRecovered(t *testing.T) {
	t.Parallel()
	s := newScheduler(t, nil)
	err := s.Add("crash", "@every 1s", func(context.Context) (int, error) {
		panic("boom")
	})
	if err != nil {
		t.Fatalf("Add crash: %v", err)
	}
	if err := s.Add("sweep", "@hourly", jobRemoving(2)); err != nil {
		t.Fatalf("Add sweep: %v", err)
	}

	_, err = s.RunNow("crash")
	if !errors.Is(err, errPanic) {
		t.Errorf("RunNow of a panicking job error = %v, want %v", err, errPanic)
	}
	if err != nil && !strings.Contains(err.Error(), "boom") {
		t.Errorf("RunNow error %q does not contain the panic value", err)
	}
	st := s.Stats()["crash"]
	if st.Failures != 1 {
		t.Errorf("Failures = %d after a panic, want 1", st.Failures)
	}
	if !strings.Contains(st.LastError, "boom") {
		t.Errorf("LastError = %q, want it to contain the panic value", st.LastError)
	}

	removed, err := s.RunNow("sweep")
	if err != nil {
		t.Errorf("RunNow of another job after a panic: %v", err)
	}
	if removed != 2 {
		t.Errorf("RunNow of another job removed = %d, want 2", removed)
	}

	s.Start()
	grew := waitFor(3*time.Second, func() bool {
		return s.Stats()["crash"].Runs >= 2
	})
	if !grew {
		t.Errorf("Runs of the panicking job = %d after 3 s of \"@every 1s\", want at least 2",
			s.Stats()["crash"].Runs)
	}
}

func TestScheduledRun(t *testing.T) {
	t.Parallel()
	s := newScheduler(t, nil)
	if err := s.Add("sweep", "@every 1s", jobRemoving(1)); err != nil {
		t.Fatalf("Add: %v", err)
	}
	if next := s.Stats()["sweep"].NextRun; next != nil {
		t.Errorf("NextRun = %v before Start, want nil", next)
	}

	startedAt := time.Now()
	s.Start()
	next := s.Stats()["sweep"].NextRun
	if next == nil {
		t.Fatal("NextRun is nil after Start")
	}
	if !next.After(startedAt) {
		t.Errorf("NextRun = %v, want after Start at %v", next, startedAt)
	}

	ran := waitFor(2500*time.Millisecond, func() bool {
		return s.Stats()["sweep"].Runs >= 1
	})
	if !ran {
		t.Fatal("job on \"@every 1s\" did not run within 2.5 s")
	}
	if total := s.Stats()["sweep"].TotalRemoved; total < 1 {
		t.Errorf("TotalRemoved = %d after a scheduled run, want at least 1", total)
	}
}

func TestRunsNeverOverlap(t *testing.T) {
	t.Parallel()
	logs := &lockedBuffer{}
	s := newScheduler(t, slog.New(slog.NewTextHandler(logs, nil)))

	var active, maxActive, entered atomic.Int32
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	closeRelease := sync.OnceFunc(func() { close(release) })
	t.Cleanup(closeRelease)

	err := s.Add("sweep", "@every 1s", func(context.Context) (int, error) {
		n := active.Add(1)
		defer active.Add(-1)
		for {
			m := maxActive.Load()
			if n <= m || maxActive.CompareAndSwap(m, n) {
				break
			}
		}
		entered.Add(1)
		select {
		case started <- struct{}{}:
		default:
		}
		<-release
		return 1, nil
	})
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	s.Start()

	select {
	case <-started:
	case <-time.After(2500 * time.Millisecond):
		t.Fatal("scheduled run did not start within 2.5 s")
	}
	skipped := waitFor(3*time.Second, func() bool {
		return strings.Contains(logs.String(), "job skipped: previous run still running")
	})
	if !skipped {
		t.Fatal("schedule did not fire again within 3 s while the job was running")
	}
	if got := entered.Load(); got != 1 {
		t.Errorf("job entered %d times while the first run was blocked, want 1", got)
	}

	type result struct {
		removed int
		err     error
	}
	done := make(chan result, 1)
	go func() {
		removed, err := s.RunNow("sweep")
		done <- result{removed, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("RunNow returned %+v while the scheduled run was still running", r)
	case <-time.After(200 * time.Millisecond):
	}
	if got := entered.Load(); got != 1 {
		t.Errorf("job entered %d times while RunNow waited, want 1", got)
	}

	closeRelease()
	select {
	case r := <-done:
		if r.err != nil {
			t.Errorf("RunNow after release: %v", r.err)
		}
		if r.removed != 1 {
			t.Errorf("RunNow after release removed = %d, want 1", r.removed)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("RunNow did not return within 2 s of releasing the scheduled run")
	}
	if runs := s.Stats()["sweep"].Runs; runs < 2 {
		t.Errorf("Runs = %d when RunNow returned, want at least 2 (scheduled and manual)", runs)
	}
	if got := maxActive.Load(); got != 1 {
		t.Errorf("max concurrent runs = %d, want 1", got)
	}
}

func TestStopCancelsAndWaits(t *testing.T) {
	t.Parallel()
	s := New(nil)
	var sawDone, finished atomic.Bool
	started := make(chan struct{}, 1)
	err := s.Add("sweep", "@every 1s", func(ctx context.Context) (int, error) {
		select {
		case started <- struct{}{}:
		default:
		}
		select {
		case <-ctx.Done():
			sawDone.Store(true)
		case <-time.After(5 * time.Second):
		}
		// Finish a little after cancellation so that a Stop that does not
		// wait would return before finished is set.
		time.Sleep(100 * time.Millisecond)
		finished.Store(true)
		return 0, ctx.Err()
	})
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	s.Start()
	select {
	case <-started:
	case <-time.After(2500 * time.Millisecond):
		t.Fatal("scheduled run did not start within 2.5 s")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if !sawDone.Load() {
		t.Error("running job did not see its context cancelled")
	}
	if !finished.Load() {
		t.Error("Stop returned before the running job finished")
	}
	if err := s.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestStopWaitsForRunNow(t *testing.T) {
	t.Parallel()
	s := New(nil)
	started := make(chan struct{})
	var finished atomic.Bool
	err := s.Add("sweep", "@every 1h", func(ctx context.Context) (int, error) {
		close(started)
		<-ctx.Done()
		time.Sleep(100 * time.Millisecond)
		finished.Store(true)
		return 0, nil
	})
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	s.Start()
	manual := make(chan error, 1)
	go func() {
		_, err := s.RunNow("sweep")
		manual <- err
	}()
	<-started

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if !finished.Load() {
		t.Error("Stop returned before the manual run finished")
	}
	if err := <-manual; err != nil {
		t.Errorf("RunNow: %v", err)
	}
	if _, err := s.RunNow("sweep"); !errors.Is(err, ErrStopped) {
		t.Errorf("RunNow after Stop: %v, want ErrStopped", err)
	}
}

func TestStopExpiredContext(t *testing.T) {
	t.Parallel()
	s := New(nil)
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	closeRelease := sync.OnceFunc(func() { close(release) })
	t.Cleanup(closeRelease)
	finished := make(chan struct{})
	var runs atomic.Int32

	// The job ignores ctx, so only release ends it.
	err := s.Add("sweep", "@every 1s", func(context.Context) (int, error) {
		if runs.Add(1) > 1 {
			return 0, nil
		}
		defer close(finished)
		started <- struct{}{}
		<-release
		return 0, nil
	})
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	s.Start()
	select {
	case <-started:
	case <-time.After(2500 * time.Millisecond):
		t.Fatal("scheduled run did not start within 2.5 s")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	err = s.Stop(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop with an expired context = %v, want an error wrapping %v", err, context.DeadlineExceeded)
	}

	closeRelease()
	select {
	case <-finished:
	case <-time.After(2 * time.Second):
		t.Error("job did not finish within 2 s of release")
	}
}

func TestLogRemovedItems(t *testing.T) {
	var logs bytes.Buffer
	s := newScheduler(t, slog.New(slog.NewTextHandler(&logs, nil)))
	if err := s.Add("sweep", "@hourly", jobRemoving(5)); err != nil {
		t.Fatalf("Add: %v", err)
	}

	if _, err := s.RunNow("sweep"); err != nil {
		t.Fatalf("RunNow: %v", err)
	}
	line := lineContaining(logs.String(), `msg="job removed items"`)
	if line == "" {
		t.Fatalf("no \"job removed items\" line in logs:\n%s", logs.String())
	}
	if !strings.Contains(line, "job=sweep") {
		t.Errorf("log line %q does not contain job=sweep", line)
	}
	if !strings.Contains(line, "removed=5") {
		t.Errorf("log line %q does not contain removed=5", line)
	}
	if !strings.Contains(line, "level=INFO") {
		t.Errorf("log line %q is not at INFO", line)
	}
}

func TestLogFailureAtError(t *testing.T) {
	var logs bytes.Buffer
	s := newScheduler(t, slog.New(slog.NewTextHandler(&logs, nil)))
	err := s.Add("sweep", "@hourly", func(context.Context) (int, error) {
		return 0, errors.New("database locked")
	})
	if err != nil {
		t.Fatalf("Add: %v", err)
	}

	if _, err := s.RunNow("sweep"); err == nil {
		t.Fatal("RunNow of a failing job returned no error")
	}
	line := lineContaining(logs.String(), `msg="job failed"`)
	if line == "" {
		t.Fatalf("no \"job failed\" line in logs:\n%s", logs.String())
	}
	if !strings.Contains(line, "level=ERROR") {
		t.Errorf("log line %q is not at ERROR", line)
	}
	if !strings.Contains(line, "job=sweep") {
		t.Errorf("log line %q does not contain job=sweep", line)
	}
	if !strings.Contains(line, `err="database locked"`) {
		t.Errorf("log line %q does not contain the error", line)
	}
}

// TestStopExpiredContextNoJobRunning checks that Stop with a context that
// already expired reports no running jobs when none runs.
func TestStopExpiredContextNoJobRunning(t *testing.T) {
	t.Parallel()
	for i := range 50 {
		s := New(nil)
		if err := s.Add("sweep", "@every 1h", func(context.Context) (int, error) { return 0, nil }); err != nil {
			t.Fatalf("Add: %v", err)
		}
		s.Start()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := s.Stop(ctx); err != nil {
			t.Fatalf("stop %d with an expired context and no job running: %v", i+1, err)
		}
	}
}
