package live

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livebolt/livebolt/storage"
	"github.com/livebolt/livebolt/storage/boltdb"
)

// tallyV1 is the first state shape of the "tally" component.
type tallyV1 struct {
	Count int `json:"count"`
}

// tallyV2 renames count to total and adds step.
type tallyV2 struct {
	Total int `json:"total"`
	Step  int `json:"step"`
}

// tallyOne defines tally with the tallyV1 shape and no state version.
func tallyOne() *Component[tallyV1] {
	return Define("tally", func(Props) (tallyV1, error) { return tallyV1{}, nil }).
		Action("add", func(ctx *Context, s *tallyV1, args Args) (any, error) {
			n, err := args.Int(0)
			s.Count += n
			return nil, err
		})
}

// tallyTwo defines tally with state version v, the tallyV2 shape and
// migrate, which may be nil.
func tallyTwo(v uint32, migrate func(uint32, json.RawMessage) (tallyV2, error)) *Component[tallyV2] {
	return Define("tally", func(Props) (tallyV2, error) { return tallyV2{Step: 1}, nil }).
		Action("add", func(ctx *Context, s *tallyV2, args Args) (any, error) {
			s.Total += s.Step
			return nil, nil
		}).
		StateVersion(v, migrate)
}

// migrateTally converts a tallyV1 snapshot and counts its calls.
func migrateTally(calls *atomic.Int32) func(uint32, json.RawMessage) (tallyV2, error) {
	return func(from uint32, old json.RawMessage) (tallyV2, error) {
		calls.Add(1)
		var v1 tallyV1
		if err := json.Unmarshal(old, &v1); err != nil {
			return tallyV2{}, err
		}
		return tallyV2{Total: v1.Count, Step: 1}, nil
	}
}

// versionRun is one run of the server on a database file, with the log it
// wrote.
type versionRun struct {
	*harness
	logs *bytes.Buffer
}

// startVersionRun opens path and starts an engine offering def.
func startVersionRun(t *testing.T, path string, def Definition) *versionRun {
	t.Helper()
	return startVersionRunWith(t, path, def, Limits{MaxStateBytes: 1024})
}

// startVersionRunWith is startVersionRun with the given limits.
func startVersionRunWith(t *testing.T, path string, def Definition, limits Limits) *versionRun {
	t.Helper()
	reg := NewRegistry()
	if err := reg.Register(def); err != nil {
		t.Fatal(err)
	}
	store, err := boltdb.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	logs := &bytes.Buffer{}
	clk := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	e, err := New(Options{
		Store: store, Registry: reg, Secret: []byte(strings.Repeat("k", 32)),
		MaxAge: time.Minute, Now: clk.Now, Limits: limits,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return &versionRun{harness: &harness{t: t, store: store, engine: e, clock: clk}, logs: logs}
}

func (r *versionRun) stop() {
	r.t.Helper()
	if err := r.store.Close(); err != nil {
		r.t.Fatal(err)
	}
}

// mountedTally is a tally mounted in one run, to hydrate in the next.
type mountedTally struct {
	token, id, fingerprint string
}

// mountTally mounts a tally on r, calls add with 5 when add is set, and
// stops r.
func mountTally(t *testing.T, r *versionRun, add bool) mountedTally {
	t.Helper()
	c := r.connect()
	token := c.hello("")["token"].(string)
	m, _ := c.do(map[string]any{"type": "mount", "component": "tally"})
	if m["type"] != "state" {
		t.Fatalf("mount: %v", m)
	}
	id := m["id"].(string)
	if add {
		if reply := c.call(id, "add", 5); reply["type"] != "state" {
			t.Fatalf("add: %v", reply)
		}
	}
	c.conn.Close()
	r.stop()
	return mountedTally{token: token, id: id, fingerprint: m["fingerprint"].(string)}
}

// hydrateTally hydrates m on a new connection of r.
func hydrateTally(t *testing.T, r *versionRun, m mountedTally) (*client, map[string]any) {
	t.Helper()
	c := r.connect()
	c.hello(m.token)
	return c, c.hydrate(m.id, m.fingerprint)
}

func stateOf(t *testing.T, msg map[string]any) map[string]any {
	t.Helper()
	s, ok := msg["state"].(map[string]any)
	if !ok {
		t.Fatalf("no state in %v", msg)
	}
	return s
}

func TestStateVersionMigratesOnHydrate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.db")
	m := mountTally(t, startVersionRun(t, path, tallyOne().StateVersion(1, nil)), true)

	var calls atomic.Int32
	run2 := startVersionRun(t, path, tallyTwo(2, migrateTally(&calls)))
	c, r := hydrateTally(t, run2, m)
	state := stateOf(t, r)
	if state["total"] != float64(5) {
		t.Errorf("migrated total = %v, want 5", state["total"])
	}
	if state["step"] != float64(1) {
		t.Errorf("migrated step = %v, want 1", state["step"])
	}
	if _, ok := state["count"]; ok {
		t.Errorf("migrated state still has count: %v", state)
	}
	if r["version"] != float64(2) {
		t.Errorf("version after migration = %v, want 2 (a migration is not a call)", r["version"])
	}
	if calls.Load() != 1 {
		t.Errorf("migrate ran %d times, want 1", calls.Load())
	}
	stored, err := run2.store.GetSession(m.id)
	if err != nil {
		t.Fatal(err)
	}
	if stored.StateVersion != 2 {
		t.Errorf("stored StateVersion = %d, want 2", stored.StateVersion)
	}
	if string(stored.State) != `{"total":5,"step":1}` {
		t.Errorf("stored state = %s, want the migrated one", stored.State)
	}
	if !run2.engine.signer.verify(stored) {
		t.Error("the migrated snapshot does not verify")
	}
	if r := c.call(m.id, "add", 0); r["type"] != "state" || stateOf(t, r)["total"] != float64(6) {
		t.Errorf("call on the migrated state: %v", r)
	}
	c.conn.Close()
	run2.stop()

	run3 := startVersionRun(t, path, tallyTwo(2, migrateTally(&calls)))
	_, r = hydrateTally(t, run3, m)
	if stateOf(t, r)["total"] != float64(6) {
		t.Errorf("hydrate after the second restart: %v", r)
	}
	if calls.Load() != 1 {
		t.Errorf("migrate ran %d times over two restarts, want 1", calls.Load())
	}
}

func TestStateVersionMigratesUnversionedSnapshot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.db")
	// tallyOne without StateVersion is what every component was before
	// versions existed.
	m := mountTally(t, startVersionRun(t, path, tallyOne()), true)

	var from atomic.Int32
	from.Store(-1)
	var calls atomic.Int32
	migrate := migrateTally(&calls)
	run2 := startVersionRun(t, path, tallyTwo(1, func(v uint32, old json.RawMessage) (tallyV2, error) {
		from.Store(int32(v))
		return migrate(v, old)
	}))
	_, r := hydrateTally(t, run2, m)
	if stateOf(t, r)["total"] != float64(5) {
		t.Errorf("migrated state: %v", r)
	}
	if from.Load() != 0 {
		t.Errorf("migrate got from = %d, want 0", from.Load())
	}
	if stored, err := run2.store.GetSession(m.id); err != nil || stored.StateVersion != 1 {
		t.Errorf("stored session after migration: %+v, %v", stored, err)
	}
}

func TestStateVersionDefaultHydratesUnchanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.db")
	m := mountTally(t, startVersionRun(t, path, tallyOne()), true)
	run2 := startVersionRun(t, path, tallyOne())
	_, r := hydrateTally(t, run2, m)
	if stateOf(t, r)["count"] != float64(5) {
		t.Errorf("hydrate of an unversioned snapshot: %v", r)
	}
	if stored, err := run2.store.GetSession(m.id); err != nil || stored.StateVersion != 0 {
		t.Errorf("stored session: %+v, %v", stored, err)
	}
}

// wantOutdated checks that r is an outdated error, counted once, logged at
// warn with the component and id, and that the snapshot is still stored
// as it was.
func wantOutdated(t *testing.T, run *versionRun, m mountedTally, r map[string]any, storedVersion uint32) {
	t.Helper()
	wantError(t, r, CodeOutdated, true)
	if n := run.engine.Stats().Rejected[CodeOutdated]; n != 1 {
		t.Errorf("rejected outdated = %d, want 1", n)
	}
	logs := run.logs.String()
	if !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "reason=outdated") {
		t.Errorf("no warn line for outdated in the log:\n%s", logs)
	}
	if !strings.Contains(logs, "component=tally") || !strings.Contains(logs, "component_id="+m.id) {
		t.Errorf("log does not name the component and id:\n%s", logs)
	}
	stored, err := run.store.GetSession(m.id)
	if err != nil {
		t.Fatalf("outdated snapshot no longer stored: %v", err)
	}
	if stored.StateVersion != storedVersion {
		t.Errorf("stored StateVersion = %d, want %d", stored.StateVersion, storedVersion)
	}
}

func TestStateVersionMigrationErrorIsOutdated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.db")
	m := mountTally(t, startVersionRun(t, path, tallyOne().StateVersion(1, nil)), true)
	run2 := startVersionRun(t, path, tallyTwo(2, func(uint32, json.RawMessage) (tallyV2, error) {
		return tallyV2{}, errors.New("cannot convert on purpose")
	}))
	_, r := hydrateTally(t, run2, m)
	wantOutdated(t, run2, m, r, 1)
	if !strings.Contains(run2.logs.String(), "cannot convert on purpose") {
		t.Errorf("log does not carry the migration error:\n%s", run2.logs.String())
	}
}

func TestStateVersionMigrationPanicIsOutdated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.db")
	m := mountTally(t, startVersionRun(t, path, tallyOne().StateVersion(1, nil)), true)
	run2 := startVersionRun(t, path, tallyTwo(2, func(uint32, json.RawMessage) (tallyV2, error) {
		panic("migration panics on purpose")
	}))
	c, r := hydrateTally(t, run2, m)
	wantOutdated(t, run2, m, r, 1)
	if !strings.Contains(run2.logs.String(), "migration panics on purpose") {
		t.Errorf("log does not carry the panic:\n%s", run2.logs.String())
	}
	// The connection keeps working, and a new mount is of the new shape.
	if r, _ := c.do(map[string]any{"type": "mount", "component": "tally"}); r["type"] != "state" || stateOf(t, r)["step"] != float64(1) {
		t.Errorf("mount after a migration panic: %v", r)
	}
}

func TestStateVersionWithoutMigrationIsOutdated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.db")
	m := mountTally(t, startVersionRun(t, path, tallyOne().StateVersion(1, nil)), true)
	run2 := startVersionRun(t, path, tallyTwo(2, nil))
	_, r := hydrateTally(t, run2, m)
	wantOutdated(t, run2, m, r, 1)
}

func TestStateVersionNewerSnapshotIsOutdated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.db")
	m := mountTally(t, startVersionRun(t, path, tallyTwo(3, nil)), false)
	var calls atomic.Int32
	run2 := startVersionRun(t, path, tallyTwo(2, migrateTally(&calls)))
	_, r := hydrateTally(t, run2, m)
	wantOutdated(t, run2, m, r, 3)
	if calls.Load() != 0 {
		t.Errorf("migrate ran %d times on a newer snapshot, want 0", calls.Load())
	}
}

func TestStateVersionUndecodableStateIsOutdated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.db")
	m := mountTally(t, startVersionRun(t, path, tallyOne().StateVersion(1, nil)), true)
	// The same version with count now a string: the stored number does not
	// decode into it.
	type renamed struct {
		Count string `json:"count"`
	}
	run2 := startVersionRun(t, path, Define("tally", func(Props) (renamed, error) { return renamed{}, nil }).StateVersion(1, nil))
	_, r := hydrateTally(t, run2, m)
	wantOutdated(t, run2, m, r, 1)
}

func TestStateVersionMigratedStateTooLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.db")
	m := mountTally(t, startVersionRun(t, path, tallyOne().StateVersion(1, nil)), true)
	type big struct {
		Blob string `json:"blob"`
	}
	run2 := startVersionRun(t, path, Define("tally", func(Props) (big, error) { return big{}, nil }).
		StateVersion(2, func(uint32, json.RawMessage) (big, error) { return big{Blob: strings.Repeat("x", 2048)}, nil }))
	_, r := hydrateTally(t, run2, m)
	wantOutdated(t, run2, m, r, 1)
	if !strings.Contains(r["message"].(string), "limit is 1024") {
		t.Errorf("message does not name the size limit: %v", r["message"])
	}
}

func TestStateVersionTamperedOnDisk(t *testing.T) {
	for _, tc := range []struct{ stored, tampered uint32 }{{1, 2}, {1, 0}, {0, 1}} {
		t.Run(fmt.Sprintf("%d_to_%d", tc.stored, tc.tampered), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "live.db")
			m := mountTally(t, startVersionRun(t, path, tallyOne().StateVersion(tc.stored, nil)), true)

			store, err := boltdb.Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			sess, err := store.GetSession(m.id)
			if err != nil {
				t.Fatal(err)
			}
			sess.StateVersion = tc.tampered
			if err := store.UpdateSession(sess); err != nil {
				t.Fatal(err)
			}
			if err := store.Close(); err != nil {
				t.Fatal(err)
			}

			// The server runs the tampered version, so only the MAC can tell.
			run2 := startVersionRun(t, path, tallyOne().StateVersion(tc.tampered, nil))
			_, r := hydrateTally(t, run2, m)
			wantError(t, r, CodeInvalidChecksum, true)
			if _, err := run2.store.GetSession(m.id); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("tampered session still stored: %v", err)
			}
		})
	}
}

func TestSnapshotMACCoversStateVersion(t *testing.T) {
	sg, err := newSigner([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	sess := &storage.Session{
		ID: "main.x", Component: "counter", Owner: "o", Fingerprint: "f", Version: 3,
		Props: json.RawMessage(`{}`), State: json.RawMessage(`{"count":3}`),
		CreatedAt: time.Unix(10, 0), LastActivity: time.Unix(20, 0), FailedAttempts: 1,
	}
	_ = sg.sign(sess)
	// The MAC that the builds from before StateVersion existed computed for
	// this session, so snapshots they stored still verify.
	const legacy = "93ec3afe4c835ac819ae604a05f6a4e46884817d0e4ef7d40e33fcbde571c401"
	if got := hex.EncodeToString(sess.MAC); got != legacy {
		t.Errorf("MAC of StateVersion 0 = %s, want the legacy %s", got, legacy)
	}

	sess.StateVersion = 1
	if sg.verify(sess) {
		t.Error("a MAC of StateVersion 0 verifies with StateVersion 1")
	}
	_ = sg.sign(sess)
	if !sg.verify(sess) {
		t.Error("a MAC of StateVersion 1 does not verify")
	}
	sess.StateVersion = 0
	if sg.verify(sess) {
		t.Error("a MAC of StateVersion 1 verifies with StateVersion 0")
	}
}

func TestDecodeState(t *testing.T) {
	var v tallyV1
	if err := DecodeState(json.RawMessage(`{"count":3}`), &v); err != nil || v.Count != 3 {
		t.Fatalf("DecodeState of its own shape: %v, %+v", err, v)
	}
	for _, old := range []string{`{"total":3,"step":1}`, `{"count":3} {}`, `{"count":"3"}`, `[1]`, ``} {
		var v tallyV1
		err := DecodeState(json.RawMessage(old), &v)
		if err == nil {
			t.Errorf("DecodeState(%q) into tallyV1 accepted it as %+v", old, v)
		} else if !strings.Contains(err.Error(), "live.tallyV1") {
			t.Errorf("DecodeState(%q): error %q does not name the type", old, err)
		}
	}
}

// TestStateVersionForgottenCaseIsOutdated follows the documented way of
// writing a migration through two version bumps, the second of which
// lacks a case for the shape the first one stored.
func TestStateVersionForgottenCaseIsOutdated(t *testing.T) {
	fromZero := func(from uint32, old json.RawMessage) (tallyV2, error) {
		switch from {
		case 0:
			var v0 tallyV1
			if err := DecodeState(old, &v0); err != nil {
				return tallyV2{}, err
			}
			return tallyV2{Total: v0.Count, Step: 1}, nil
		}
		return tallyV2{}, fmt.Errorf("no migration from state version %d", from)
	}
	path := filepath.Join(t.TempDir(), "live.db")
	m := mountTally(t, startVersionRun(t, path, tallyOne()), true)

	run2 := startVersionRun(t, path, tallyTwo(1, fromZero))
	if _, r := hydrateTally(t, run2, m); stateOf(t, r)["total"] != float64(5) {
		t.Fatalf("migration from 0: %v", r)
	}
	run2.stop()

	run3 := startVersionRun(t, path, tallyTwo(2, fromZero))
	_, r := hydrateTally(t, run3, m)
	wantOutdated(t, run3, m, r, 1)
}

// TestStateVersionSlowMigrationIsAbandoned checks that a migration that
// does not return within MigrationTimeout gets outdated at once, and that
// its late result is dropped rather than stored.
func TestStateVersionSlowMigrationIsAbandoned(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.db")
	m := mountTally(t, startVersionRun(t, path, tallyOne()), true)
	release := make(chan struct{})
	returned := make(chan struct{})
	slow := func(uint32, json.RawMessage) (tallyV2, error) {
		defer close(returned)
		<-release
		return tallyV2{Total: 99, Step: 1}, nil
	}
	run2 := startVersionRunWith(t, path, tallyTwo(1, slow), Limits{MaxStateBytes: 1024, MigrationTimeout: 100 * time.Millisecond})
	start := time.Now()
	_, r := hydrateTally(t, run2, m)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("hydrate took %s with a migration limit of 100 ms", took)
	}
	wantOutdated(t, run2, m, r, 0)
	if !strings.Contains(run2.logs.String(), "did not return within the time limit") {
		t.Errorf("the log does not say the migration timed out:\n%s", run2.logs.String())
	}
	close(release)
	<-returned
	stored, err := run2.store.GetSession(m.id)
	if err != nil {
		t.Fatal(err)
	}
	if stored.StateVersion != 0 || strings.Contains(string(stored.State), "99") {
		t.Errorf("the abandoned migration's result was stored: version %d, state %s", stored.StateVersion, stored.State)
	}
}

// TestStateVersionOneMigrationPerSession hydrates one session again and
// again while its abandoned migration still runs, and checks that no
// second migration starts until the first returns.
func TestStateVersionOneMigrationPerSession(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.db")
	m := mountTally(t, startVersionRun(t, path, tallyOne()), true)

	// The first migration blocks until released; later ones return at once.
	release := make(chan struct{})
	var started atomic.Int32
	blocking := func(uint32, json.RawMessage) (tallyV2, error) {
		if started.Add(1) == 1 {
			<-release
		}
		return tallyV2{Total: 5, Step: 1}, nil
	}
	run2 := startVersionRunWith(t, path, tallyTwo(1, blocking), Limits{MaxStateBytes: 1024, MigrationTimeout: 20 * time.Millisecond})

	c := run2.connect()
	c.hello(m.token)
	for i := range 10 {
		r := c.hydrate(m.id, m.fingerprint)
		wantError(t, r, CodeOutdated, true)
		if i > 0 && !strings.Contains(r["message"].(string), "still being migrated") {
			t.Errorf("hydration %d while the first migration runs: %q", i+1, r["message"])
		}
	}
	if n := started.Load(); n != 1 {
		t.Fatalf("%d migrations started for one session, want 1", n)
	}

	close(release)
	// Once the first returns, a hydration migrates again, and succeeds.
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := c.hydrate(m.id, m.fingerprint)
		if r["type"] == TypeState {
			if stateOf(t, r)["total"] != float64(5) {
				t.Errorf("migrated state: %v", r)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hydrate still fails 5 s after the first migration returned: %v", r)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
