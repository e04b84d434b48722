package app

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/livebolt/livebolt/live"
	"github.com/livebolt/livebolt/storage"
	"github.com/livebolt/livebolt/storage/memstore"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches /metrics over HTTP and parses the text format.
func (s *testServer) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + s.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET /metrics: Content-Type %q, want text/plain", ct)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: not the Prometheus text format: %v", err)
	}
	return families
}

// sample returns the metric of family name whose labels are exactly
// labels, given as name, value pairs sorted by name. It returns nil when
// there is none.
func sample(families map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	family := families[name]
	if family == nil {
		return nil
	}
	for _, m := range family.GetMetric() {
		if matchLabels(m.GetLabel(), labels) {
			return m
		}
	}
	return nil
}

func matchLabels(have []*dto.LabelPair, want []string) bool {
	if len(have)*2 != len(want) {
		return false
	}
	for i, pair := range have {
		if pair.GetName() != want[2*i] || pair.GetValue() != want[2*i+1] {
			return false
		}
	}
	return true
}

// value returns the value of a counter or gauge sample, failing the test
// when the sample is missing.
func value(t *testing.T, families map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	t.Helper()
	m := sample(families, name, labels...)
	switch {
	case m == nil:
		t.Errorf("%s%v: missing", name, labels)
		return 0, false
	case m.Counter != nil:
		return m.Counter.GetValue(), true
	case m.Gauge != nil:
		return m.Gauge.GetValue(), true
	}
	t.Errorf("%s%v: neither a counter nor a gauge", name, labels)
	return 0, false
}

func wantValue(t *testing.T, families map[string]*dto.MetricFamily, want float64, name string, labels ...string) {
	t.Helper()
	if got, ok := value(t, families, name, labels...); ok && got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

// histogram returns a histogram sample, failing the test when it is missing.
func histogram(t *testing.T, families map[string]*dto.MetricFamily, name string, labels ...string) *dto.Histogram {
	t.Helper()
	m := sample(families, name, labels...)
	if m == nil || m.Histogram == nil {
		t.Fatalf("%s%v: missing histogram", name, labels)
	}
	return m.Histogram
}

func TestMetricsAfterTraffic(t *testing.T) {
	clock := &soakClock{}
	s := startServer(t, Options{MaxAttempts: 1, Now: clock.now})

	// Client A mounts a counter on one connection, calls it and hydrates
	// it on a second one.
	a1 := s.dial(t, nil)
	token := a1.do(map[string]any{"type": "hello"})["token"].(string)
	mounted := a1.do(map[string]any{"type": "mount", "component": "counter"})
	id, fingerprint := mounted["id"].(string), mounted["fingerprint"].(string)
	const increments = 5
	for range increments {
		if r := a1.do(map[string]any{"type": "call", "id": id, "action": "increment", "args": []any{}}); r["type"] != "state" {
			t.Fatalf("increment: %v", r)
		}
	}
	if r := a1.do(map[string]any{"type": "call", "id": id, "action": "setStep", "args": []any{"two"}}); r["code"] != live.CodeBadArgs {
		t.Fatalf("setStep with a string: %v, want bad_args", r)
	}
	if r := a1.do(map[string]any{"type": "call", "id": "main.unknown", "action": "increment", "args": []any{}}); r["code"] != live.CodeNotFound {
		t.Fatalf("call of an unknown id: %v, want not_found", r)
	}
	a2 := s.dial(t, nil)
	a2.do(map[string]any{"type": "hello", "token": token})
	if r := a2.do(map[string]any{"type": "hydrate", "id": id, "fingerprint": fingerprint}); r["type"] != "state" {
		t.Fatalf("hydrate: %v", r)
	}

	// Client B mounts a counter and disconnects. Its session then ages past
	// MaxAge, so the age sweep removes it.
	b := s.dial(t, nil)
	b.do(map[string]any{"type": "hello"})
	b.do(map[string]any{"type": "mount", "component": "counter"})
	_ = b.ws.Close()
	waitConnections(t, s, 2)
	clock.offset.Add(int64(live.DefaultMaxAge + time.Minute))

	// Client C mounts a toggle after the clock moved, and hydrates it with a
	// wrong fingerprint. With MaxAttempts 1 that releases it, and the
	// failed sweep removes it.
	c := s.dial(t, nil)
	c.do(map[string]any{"type": "hello"})
	toggle := c.do(map[string]any{"type": "mount", "component": "toggle"})
	if r := c.do(map[string]any{"type": "hydrate", "id": toggle["id"], "fingerprint": "wrong"}); r["code"] != live.CodeFingerprintMismatch {
		t.Fatalf("hydrate with a wrong fingerprint: %v", r)
	}

	status, body := s.request(t, http.MethodPost, "/api/memory/cleanup", "", nil)
	if status != http.StatusOK {
		t.Fatalf("cleanup: %d %v", status, body)
	}

	f := s.scrape(t)
	wantValue(t, f, increments, "livebolt_actions_total", "component", "counter", "result", "ok")
	wantValue(t, f, 1, "livebolt_actions_total", "component", "counter", "result", "bad_args")
	wantValue(t, f, 1, "livebolt_actions_total", "component", "", "result", "not_found")
	if n := len(f["livebolt_actions_total"].GetMetric()); n != 3 {
		t.Errorf("livebolt_actions_total has %d series, want 3", n)
	}
	if h := histogram(t, f, "livebolt_action_duration_seconds", "component", "counter"); h.GetSampleCount() != increments+1 {
		t.Errorf("action duration of counter: %d samples, want %d", h.GetSampleCount(), increments+1)
	}
	if h := histogram(t, f, "livebolt_action_duration_seconds", "component", ""); h.GetSampleCount() != 1 {
		t.Errorf("action duration without a component: %d samples, want 1", h.GetSampleCount())
	}
	wantValue(t, f, 1, "livebolt_hydrations_total", "result", "ok")
	wantValue(t, f, 1, "livebolt_hydrations_total", "result", "fingerprint_mismatch")

	// Still open: a1 and a2 of client A and c of client C. Only A's counter
	// is left, in memory and in the store.
	wantValue(t, f, 3, "livebolt_connections")
	wantValue(t, f, 2, "livebolt_clients")
	wantValue(t, f, 1, "livebolt_instances")
	wantValue(t, f, 1, "livebolt_sessions")
	wantValue(t, f, 0, "livebolt_failed_sessions")
	wantValue(t, f, 1, "livebolt_stored_clients")
	wantValue(t, f, 1, "livebolt_store_bucket_keys", "bucket", "sessions")
	wantValue(t, f, 1, "livebolt_store_bucket_keys", "bucket", "by_owner")
	wantValue(t, f, 1, "livebolt_store_bucket_keys", "bucket", "clients")
	wantValue(t, f, 0, "livebolt_store_bucket_keys", "bucket", "failed")
	if v, ok := value(t, f, "livebolt_store_file_size_bytes"); ok && v <= 0 {
		t.Errorf("livebolt_store_file_size_bytes = %v, want above 0", v)
	}

	for _, sweep := range []string{JobAgeSweep, JobFailedSweep} {
		wantValue(t, f, 1, "livebolt_sweep_runs_total", "sweep", sweep)
		wantValue(t, f, 0, "livebolt_sweep_failures_total", "sweep", sweep)
		wantValue(t, f, 1, "livebolt_sweep_removed_total", "sweep", sweep)
	}

	commits := histogram(t, f, "livebolt_store_commit_duration_seconds")
	if commits.GetSampleCount() == 0 {
		t.Error("livebolt_store_commit_duration_seconds has no samples")
	}
	if commits.GetSampleSum() <= 0 {
		t.Errorf("livebolt_store_commit_duration_seconds sum = %v, want above 0", commits.GetSampleSum())
	}
	writes := histogram(t, f, "livebolt_store_commit_writes")
	if writes.GetSampleCount() != commits.GetSampleCount() {
		t.Errorf("commit writes has %d samples, commit duration %d", writes.GetSampleCount(), commits.GetSampleCount())
	}
	// At least three mounts, the increments, the hydration and the failed
	// attempt were written.
	if least := float64(3 + increments + 2); writes.GetSampleSum() < least {
		t.Errorf("commit writes sum = %v, want at least %v", writes.GetSampleSum(), least)
	}

	if sample(f, "go_goroutines") == nil {
		t.Error("go_goroutines missing")
	}
	for _, name := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"} {
		if sample(f, name) == nil {
			t.Errorf("%s missing", name)
		}
	}
}

// statsFailingStore is a memstore whose Stats always fails.
type statsFailingStore struct{ *memstore.Store }

func (statsFailingStore) Stats() (storage.Stats, error) {
	return storage.Stats{}, errors.New("stats failed on purpose")
}

func TestMetricsWhenStoreStatsFail(t *testing.T) {
	s := startServer(t, Options{Store: statsFailingStore{memstore.New()}})
	f := s.scrape(t)
	wantValue(t, f, 0, "livebolt_connections")
	if sample(f, "go_goroutines") == nil {
		t.Error("go_goroutines missing")
	}
	if sample(f, "livebolt_sessions") != nil {
		t.Error("livebolt_sessions served although the store's Stats failed")
	}
	if logs := s.logs.String(); !strings.Contains(logs, "metrics scrape failed") || !strings.Contains(logs, "stats failed on purpose") {
		t.Errorf("scrape failure not logged; log:\n%s", logs)
	}
}

func TestMetricsHooksAllocateNothing(t *testing.T) {
	m := newMetrics()
	observe := func() {
		m.ObserveCall("counter", "increment", live.ResultOK, time.Millisecond)
		m.ObserveHydration(live.CodeFingerprintMismatch)
		m.observeCommit(3, time.Millisecond)
	}
	observe() // creates the labelled series
	if allocs := testing.AllocsPerRun(1000, observe); allocs != 0 {
		t.Errorf("one call, hydration and commit observed: %v allocations, want 0", allocs)
	}
}
