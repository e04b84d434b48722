package live

import (
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livebolt/livebolt/storage/boltdb"
)

// observed is one call reported to a recordingObserver.
type observed struct {
	component, action, code string
}

// recordingObserver keeps every report it receives.
type recordingObserver struct {
	mu         sync.Mutex
	calls      []observed
	elapsed    []time.Duration
	hydrations []string
}

func (o *recordingObserver) ObserveCall(component, action, code string, elapsed time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, observed{component, action, code})
	o.elapsed = append(o.elapsed, elapsed)
}

func (o *recordingObserver) ObserveHydration(code string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.hydrations = append(o.hydrations, code)
}

// newObservedHarness is newHarness with obs as the engine's observer.
func newObservedHarness(t *testing.T, obs Observer) *harness {
	t.Helper()
	store, err := boltdb.Open(filepath.Join(t.TempDir(), "live.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	clk := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	e, err := New(Options{
		Store: store, Registry: testRegistry(t), Secret: []byte(strings.Repeat("k", 32)),
		MaxAge: time.Minute, MaxAttempts: 3, Now: clk.Now, Observer: obs,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, store: store, engine: e, clock: clk}
}

func TestObserverReportsCalls(t *testing.T) {
	obs := &recordingObserver{}
	h := newObservedHarness(t, obs)
	c := h.connect()
	c.hello("")
	id := c.mount(nil)["id"].(string)

	c.call(id, "inc")
	c.call(id, "inc")
	c.call(id, "add", "not a number")
	c.call(id, "fail")
	c.call(id, "no-such-action")
	c.call("main.unknown", "inc")

	want := []observed{
		{"counter", "inc", ResultOK},
		{"counter", "inc", ResultOK},
		{"counter", "add", CodeBadArgs},
		{"counter", "fail", CodeActionFailed},
		{"counter", "", CodeUnknownAction},
		{"", "", CodeNotFound},
	}
	if !slices.Equal(obs.calls, want) {
		t.Errorf("calls reported:\n%v\nwant\n%v", obs.calls, want)
	}
	for i, d := range obs.elapsed {
		if d <= 0 {
			t.Errorf("call %d: elapsed %v, want above 0", i, d)
		}
	}
	if len(obs.hydrations) != 0 {
		t.Errorf("calls reported hydrations: %v", obs.hydrations)
	}
}

func TestObserverReportsHydrations(t *testing.T) {
	obs := &recordingObserver{}
	h := newObservedHarness(t, obs)
	first := h.connect()
	token := first.hello("")["token"].(string)
	m := first.mount(nil)
	id, fingerprint := m["id"].(string), m["fingerprint"].(string)

	second := h.connect()
	second.hello(token)
	wantError(t, second.hydrate(id, "wrong"), CodeFingerprintMismatch, true)
	if r := second.hydrate(id, fingerprint); r["type"] != "state" {
		t.Fatalf("hydrate with the right fingerprint: %v", r)
	}
	second.hydrate(id, "")
	second.hydrate("main.unknown", fingerprint)

	want := []string{CodeFingerprintMismatch, ResultOK, CodeBadArgs, CodeNotFound}
	if !slices.Equal(obs.hydrations, want) {
		t.Errorf("hydrations reported: %v, want %v", obs.hydrations, want)
	}
	if len(obs.calls) != 0 {
		t.Errorf("hydrations reported calls: %v", obs.calls)
	}
}
