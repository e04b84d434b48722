package live

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livebolt/livebolt/storage"
	"github.com/livebolt/livebolt/storage/boltdb"
)

// recorder is an Outbox that keeps every message sent to it.
type recorder struct {
	mu   sync.Mutex
	msgs []map[string]any
}

func (r *recorder) Send(msg []byte) {
	var m map[string]any
	if err := json.Unmarshal(msg, &m); err != nil {
		panic(fmt.Sprintf("server sent invalid JSON %q: %v", msg, err))
	}
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
}

// take returns the messages received so far and clears the list.
func (r *recorder) take() []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.msgs
	r.msgs = nil
	return out
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type counterState struct {
	Count int    `json:"count"`
	Blob  string `json:"blob,omitempty"`
	Items []int  `json:"items,omitempty"`
}

// testRegistry has a counter with actions that succeed, fail, panic and
// grow the state, plus a broadcast action.
func testRegistry(t *testing.T) *Registry {
	t.Helper()
	reg := NewRegistry()
	counter := Define("counter", func(p Props) (counterState, error) {
		var in struct {
			Initial int `json:"initial"`
		}
		err := p.Decode(&in)
		return counterState{Count: in.Initial}, err
	}).
		Action("inc", func(ctx *Context, s *counterState, args Args) (any, error) {
			s.Count++
			ctx.Emit("changed", s.Count)
			return s.Count, nil
		}).
		Action("add", func(ctx *Context, s *counterState, args Args) (any, error) {
			if err := args.Want(1); err != nil {
				return nil, err
			}
			n, err := args.Int(0)
			if err != nil {
				return nil, err
			}
			s.Count += n
			return nil, nil
		}).
		Action("fail", func(ctx *Context, s *counterState, args Args) (any, error) {
			s.Count = -100
			ctx.Emit("never", nil)
			return nil, errors.New("refused on purpose")
		}).
		Action("boom", func(ctx *Context, s *counterState, args Args) (any, error) {
			s.Count = -200
			panic("boom on purpose")
		}).
		Action("grow", func(ctx *Context, s *counterState, args Args) (any, error) {
			s.Blob = strings.Repeat("x", 2048)
			return nil, nil
		}).
		Action("push", func(ctx *Context, s *counterState, args Args) (any, error) {
			s.Items = append(s.Items, len(s.Items)*37%101)
			return nil, nil
		}).
		Action("reverse", func(ctx *Context, s *counterState, args Args) (any, error) {
			slices.Reverse(s.Items)
			return nil, nil
		}).
		Action("shout", func(ctx *Context, s *counterState, args Args) (any, error) {
			ctx.Broadcast("shouted", ctx.ClientID())
			return nil, nil
		})
	if err := reg.Register(counter); err != nil {
		t.Fatal(err)
	}
	return reg
}

type harness struct {
	t      *testing.T
	store  *boltdb.Store
	engine *Engine
	clock  *clock
}

func newHarness(t *testing.T) *harness {
	return newHarnessAt(t, filepath.Join(t.TempDir(), "live.db"), testRegistry(t))
}

func newHarnessAt(t *testing.T, path string, reg *Registry) *harness {
	return newHarnessWith(t, path, reg, Limits{MaxStateBytes: 1024})
}

func newHarnessWith(t *testing.T, path string, reg *Registry, limits Limits) *harness {
	t.Helper()
	store, err := boltdb.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	clk := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	e, err := New(Options{
		Store: store, Registry: reg, Secret: []byte(strings.Repeat("k", 32)),
		MaxAge: time.Minute, MaxAttempts: 3, Now: clk.Now,
		Limits: limits,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, store: store, engine: e, clock: clk}
}

// client is one connection with its recorder.
type client struct {
	t    *testing.T
	conn *Conn
	out  *recorder
	ref  int
}

func (h *harness) connect() *client {
	out := &recorder{}
	return &client{t: h.t, conn: h.engine.Connect(out), out: out}
}

// do sends msg with the next ref and returns the reply carrying that ref
// and any other messages sent meanwhile.
func (c *client) do(msg map[string]any) (reply map[string]any, others []map[string]any) {
	c.t.Helper()
	c.ref++
	msg["ref"] = c.ref
	frame, err := json.Marshal(msg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.conn.Handle(frame)
	for _, m := range c.out.take() {
		if ref, ok := m["ref"].(float64); ok && int(ref) == c.ref {
			reply = m
			continue
		}
		others = append(others, m)
	}
	if reply == nil {
		c.t.Fatalf("no reply to %s; other messages: %v", frame, others)
	}
	return reply, others
}

func (c *client) hello(token string) map[string]any {
	c.t.Helper()
	msg := map[string]any{"type": "hello"}
	if token != "" {
		msg["token"] = token
	}
	r, _ := c.do(msg)
	if r["type"] != "welcome" {
		c.t.Fatalf("hello: got %v", r)
	}
	return r
}

func (c *client) mount(props map[string]any) map[string]any {
	c.t.Helper()
	r, _ := c.do(map[string]any{"type": "mount", "component": "counter", "props": props, "key": "main"})
	if r["type"] != "state" {
		c.t.Fatalf("mount: got %v", r)
	}
	return r
}

func (c *client) call(id, action string, args ...any) map[string]any {
	c.t.Helper()
	if args == nil {
		args = []any{}
	}
	r, _ := c.do(map[string]any{"type": "call", "id": id, "action": action, "args": args})
	return r
}

func (c *client) hydrate(id, fingerprint string) map[string]any {
	c.t.Helper()
	r, _ := c.do(map[string]any{"type": "hydrate", "id": id, "fingerprint": fingerprint})
	return r
}

func count(msg map[string]any) int {
	return int(msg["state"].(map[string]any)["count"].(float64))
}

func wantError(t *testing.T, msg map[string]any, code string, refresh bool) {
	t.Helper()
	if msg["type"] != "error" || msg["code"] != code {
		t.Fatalf("want error %s, got %v", code, msg)
	}
	if msg["requiresRefresh"] != refresh {
		t.Errorf("error %s: requiresRefresh = %v, want %v", code, msg["requiresRefresh"], refresh)
	}
	if msg["message"] == "" {
		t.Errorf("error %s has an empty message", code)
	}
}

func TestHelloNewAndResumed(t *testing.T) {
	h := newHarness(t)
	first := h.connect().hello("")
	if first["resumed"] != false {
		t.Errorf("first hello resumed = %v, want false", first["resumed"])
	}
	id, token := first["clientId"].(string), first["token"].(string)
	if id == "" || token == "" || !strings.HasPrefix(token, id+".") {
		t.Fatalf("welcome ids: clientId %q token %q", id, token)
	}
	again := h.connect().hello(token)
	if again["clientId"] != id {
		t.Errorf("resumed clientId = %v, want %s", again["clientId"], id)
	}
	if again["resumed"] != true {
		t.Errorf("resumed = %v, want true", again["resumed"])
	}
	if comps := again["components"].([]any); len(comps) != 0 {
		t.Errorf("components of a client without sessions = %v", comps)
	}
}

func TestHelloTamperedTokenStartsNewClient(t *testing.T) {
	h := newHarness(t)
	first := h.connect().hello("")
	token := first["token"].(string)
	for _, bad := range []string{token + "x", "other." + strings.SplitN(token, ".", 2)[1], "nodot", ".", "a.!!!"} {
		w := h.connect().hello(bad)
		if w["resumed"] != false || w["clientId"] == first["clientId"] {
			t.Errorf("token %q: resumed %v clientId %v", bad, w["resumed"], w["clientId"])
		}
	}
	if n := h.engine.Stats().Rejected["invalid_token"]; n != 5 {
		t.Errorf("rejected invalid_token = %d, want 5", n)
	}
}

func TestHelloTwiceIsRejected(t *testing.T) {
	c := newHarness(t).connect()
	c.hello("")
	r, _ := c.do(map[string]any{"type": "hello"})
	wantError(t, r, CodeBadArgs, false)
}

func TestMessagesBeforeHello(t *testing.T) {
	c := newHarness(t).connect()
	for _, typ := range []string{"mount", "call", "hydrate", "unmount"} {
		r, _ := c.do(map[string]any{"type": typ, "id": "x", "component": "counter"})
		wantError(t, r, CodeHelloRequired, false)
	}
}

func TestBadFrames(t *testing.T) {
	c := newHarness(t).connect()
	c.conn.Handle([]byte("not json"))
	wantError(t, c.out.take()[0], CodeBadJSON, false)

	c.conn.Handle([]byte(`{"type":"call","ref":7,"args":"notalist"}`))
	msg := c.out.take()[0]
	wantError(t, msg, CodeBadJSON, false)
	if msg["ref"] != float64(7) {
		t.Errorf("bad_json reply ref = %v, want 7", msg["ref"])
	}

	c.conn.Handle([]byte(`{"ref":8}`))
	wantError(t, c.out.take()[0], CodeBadJSON, false)

	r, _ := c.do(map[string]any{"type": "launch"})
	wantError(t, r, CodeUnknownType, false)

	// The connection still works after every error.
	c.hello("")
	if got := count(c.mount(nil)); got != 0 {
		t.Errorf("count after errors = %d", got)
	}
}

func TestMountValidation(t *testing.T) {
	c := newHarness(t).connect()
	c.hello("")
	cases := []struct {
		name string
		msg  map[string]any
		code string
	}{
		{"unknown component", map[string]any{"type": "mount", "component": "nope"}, CodeUnknownComponent},
		{"props not object", map[string]any{"type": "mount", "component": "counter", "props": []int{1}}, CodeBadArgs},
		{"unknown prop", map[string]any{"type": "mount", "component": "counter", "props": map[string]any{"intial": 1}}, CodeBadArgs},
		{"wrong prop type", map[string]any{"type": "mount", "component": "counter", "props": map[string]any{"initial": "five"}}, CodeBadArgs},
		{"key too long", map[string]any{"type": "mount", "component": "counter", "key": strings.Repeat("k", 65)}, CodeBadArgs},
		{"props too large", map[string]any{"type": "mount", "component": "counter", "props": map[string]any{"initial": 1, "pad": strings.Repeat("p", DefaultMaxPropsBytes)}}, CodeTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := c.do(tc.msg)
			wantError(t, r, tc.code, false)
		})
	}
}

func TestMountSanitizesKey(t *testing.T) {
	c := newHarness(t).connect()
	c.hello("")
	r, _ := c.do(map[string]any{"type": "mount", "component": "counter", "key": "my key/../<x>.y"})
	id := r["id"].(string)
	prefix, random, ok := strings.Cut(id, ".")
	if !ok || prefix != "mykeyxy" || len(random) < 20 {
		t.Errorf("id %q: want prefix mykeyxy and a random part", id)
	}
	r2, _ := c.do(map[string]any{"type": "mount", "component": "counter"})
	if strings.Contains(r2["id"].(string), ".") {
		t.Errorf("id without key %q contains a separator", r2["id"])
	}
}

func TestMountCallAndEvents(t *testing.T) {
	c := newHarness(t).connect()
	c.hello("")
	m := c.mount(map[string]any{"initial": 5})
	if count(m) != 5 || m["version"] != float64(1) || m["fingerprint"] == "" {
		t.Fatalf("mount reply %v", m)
	}
	id := m["id"].(string)
	r, others := c.do(map[string]any{"type": "call", "id": id, "action": "inc", "args": []any{}})
	if count(r) != 6 || r["version"] != float64(2) || r["result"] != float64(6) {
		t.Errorf("inc reply %v", r)
	}
	if len(others) != 1 || others[0]["type"] != "event" || others[0]["event"] != "changed" || others[0]["id"] != id || others[0]["data"] != float64(6) {
		t.Errorf("events after inc: %v", others)
	}
	r = c.call(id, "add", 10)
	if count(r) != 16 || r["version"] != float64(3) {
		t.Errorf("add reply %v", r)
	}
	stored, err := c.conn.engine.store.GetSession(id)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Version != 3 || string(stored.State) != `{"count":16}` {
		t.Errorf("stored version %d state %s", stored.Version, stored.State)
	}
}

func TestCallErrorsRollBack(t *testing.T) {
	c := newHarness(t).connect()
	c.hello("")
	id := c.mount(map[string]any{"initial": 1})["id"].(string)

	wantError(t, c.call(id, "nope"), CodeUnknownAction, false)
	wantError(t, c.call(id, "add", "x"), CodeBadArgs, false)
	wantError(t, c.call(id, "add"), CodeBadArgs, false)
	wantError(t, c.call(id, "add", 1.5), CodeBadArgs, false)
	many := make([]any, DefaultMaxArgs+1)
	wantError(t, c.call(id, "add", many...), CodeBadArgs, false)
	wantError(t, c.call("missing", "inc"), CodeNotFound, true)

	// Each failing action changed the state before failing; the next call
	// must start from the committed snapshot.
	r, others := c.do(map[string]any{"type": "call", "id": id, "action": "fail"})
	wantError(t, r, CodeActionFailed, false)
	if len(others) != 0 {
		t.Errorf("a failed action sent events: %v", others)
	}
	if r := c.call(id, "inc"); count(r) != 2 || r["version"] != float64(2) {
		t.Errorf("after fail: %v, want count 2 version 2", r)
	}
	wantError(t, c.call(id, "boom"), CodeActionFailed, false)
	if r := c.call(id, "inc"); count(r) != 3 || r["version"] != float64(3) {
		t.Errorf("after panic: %v, want count 3 version 3", r)
	}
	wantError(t, c.call(id, "grow"), CodeTooLarge, false)
	if r := c.call(id, "inc"); count(r) != 4 || r["version"] != float64(4) {
		t.Errorf("after too_large: %v, want count 4 version 4", r)
	}
}

func TestDisconnectKeepsSessionAndHydrates(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	w := c.hello("")
	m := c.mount(map[string]any{"initial": 3})
	id, fp := m["id"].(string), m["fingerprint"].(string)
	c.call(id, "inc")
	c.conn.Close()
	if n := h.engine.Stats().InstanceCount; n != 0 {
		t.Errorf("instances after close = %d, want 0", n)
	}

	c2 := h.connect()
	w2 := c2.hello(w["token"].(string))
	comps := w2["components"].([]any)
	if len(comps) != 1 || comps[0].(map[string]any)["id"] != id || comps[0].(map[string]any)["fingerprint"] != fp {
		t.Fatalf("resumed components %v", comps)
	}
	r := c2.hydrate(id, fp)
	if r["type"] != "state" || count(r) != 4 || r["version"] != float64(2) {
		t.Fatalf("hydrate %v", r)
	}
	if count(c2.call(id, "inc")) != 5 {
		t.Error("call after hydrate did not continue from the stored state")
	}
}

func TestHydrateAfterRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "live.db")
	h := newHarnessAt(t, path, testRegistry(t))
	c := h.connect()
	token := c.hello("")["token"].(string)
	m := c.mount(nil)
	id, fp := m["id"].(string), m["fingerprint"].(string)
	c.call(id, "add", 41)
	if err := h.store.Close(); err != nil {
		t.Fatal(err)
	}

	h2 := newHarnessAt(t, path, testRegistry(t))
	c2 := h2.connect()
	c2.hello(token)
	r := c2.hydrate(id, fp)
	if count(r) != 41 || r["version"] != float64(2) {
		t.Errorf("hydrate after reopen: %v", r)
	}
}

func TestHydrateOtherClientForbidden(t *testing.T) {
	h := newHarness(t)
	owner := h.connect()
	owner.hello("")
	m := owner.mount(nil)
	id, fp := m["id"].(string), m["fingerprint"].(string)

	thief := h.connect()
	thief.hello("")
	wantError(t, thief.hydrate(id, fp), CodeForbidden, true)
	r, _ := thief.do(map[string]any{"type": "unmount", "id": id})
	wantError(t, r, CodeForbidden, true)
	wantError(t, thief.call(id, "inc"), CodeNotFound, true)

	stored, err := h.store.GetSession(id)
	if err != nil {
		t.Fatal(err)
	}
	if stored.FailedAttempts != 0 {
		t.Errorf("another client's attempts counted against the owner: %d", stored.FailedAttempts)
	}
	if n := h.engine.Stats().Rejected[CodeForbidden]; n != 2 {
		t.Errorf("rejected forbidden = %d, want 2", n)
	}
}

func TestFingerprintAttempts(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	token := c.hello("")["token"].(string)
	m := c.mount(nil)
	id, fp := m["id"].(string), m["fingerprint"].(string)
	c.conn.Close()

	c2 := h.connect()
	c2.hello(token)
	wantError(t, c2.hydrate(id, "wrong"), CodeFingerprintMismatch, true)
	// A successful hydration resets the count.
	if r := c2.hydrate(id, fp); r["type"] != "state" {
		t.Fatalf("hydrate with right fingerprint: %v", r)
	}
	c2.conn.Close()

	c3 := h.connect()
	c3.hello(token)
	wantError(t, c3.hydrate(id, "wrong"), CodeFingerprintMismatch, true)
	wantError(t, c3.hydrate(id, "wrong-too"), CodeFingerprintMismatch, true)
	wantError(t, c3.hydrate(id, "wrong"), CodeFingerprintMismatch, true)
	// Past the limit even the right fingerprint is rejected.
	wantError(t, c3.hydrate(id, fp), CodeMaxAttemptsExceeded, true)
	wantError(t, c3.hydrate(id, "wrong"), CodeMaxAttemptsExceeded, true)

	r, err := h.engine.SweepFailed()
	if err != nil {
		t.Fatal(err)
	}
	if r.Sessions != 1 {
		t.Errorf("failed sweep removed %d sessions, want 1", r.Sessions)
	}
	wantError(t, c3.hydrate(id, fp), CodeNotFound, true)
}

func TestHydrateAttachedInstanceWrongFingerprint(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	c.hello("")
	id := c.mount(nil)["id"].(string)
	for i := 0; i < 3; i++ {
		wantError(t, c.hydrate(id, "wrong"), CodeFingerprintMismatch, true)
	}
	if n := h.engine.Stats().InstanceCount; n != 0 {
		t.Errorf("instances after attempts ran out = %d, want 0", n)
	}
}

func TestHydrateExpired(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	token := c.hello("")["token"].(string)
	m := c.mount(nil)
	c.conn.Close()
	h.clock.Advance(2 * time.Minute)

	c2 := h.connect()
	c2.hello(token)
	wantError(t, c2.hydrate(m["id"].(string), m["fingerprint"].(string)), CodeExpired, true)
	if _, err := h.store.GetSession(m["id"].(string)); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("expired session still stored: %v", err)
	}
}

func TestHydrateTamperedSnapshot(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	token := c.hello("")["token"].(string)
	m := c.mount(nil)
	other := c.mount(nil)
	c.conn.Close()

	// Rewrite the state without the key: the record is well-formed, so only
	// the MAC can tell.
	sess, err := h.store.GetSession(m["id"].(string))
	if err != nil {
		t.Fatal(err)
	}
	sess.State = json.RawMessage(`{"count":1000000}`)
	if err := h.store.UpdateSession(sess); err != nil {
		t.Fatal(err)
	}

	c2 := h.connect()
	c2.hello(token)
	wantError(t, c2.hydrate(m["id"].(string), m["fingerprint"].(string)), CodeInvalidChecksum, true)
	if _, err := h.store.GetSession(m["id"].(string)); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("tampered session still stored: %v", err)
	}
	if n := h.engine.Stats().Rejected[CodeInvalidChecksum]; n != 1 {
		t.Errorf("rejected invalid_checksum = %d, want 1", n)
	}
	if r := c2.hydrate(other["id"].(string), other["fingerprint"].(string)); r["type"] != "state" {
		t.Errorf("untouched session no longer hydrates: %v", r)
	}
}

func TestHydrateTamperedWithWrongFingerprintIsNotResigned(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	token := c.hello("")["token"].(string)
	m := c.mount(nil)
	c.conn.Close()
	sess, _ := h.store.GetSession(m["id"].(string))
	sess.State = json.RawMessage(`{"count":7}`)
	if err := h.store.UpdateSession(sess); err != nil {
		t.Fatal(err)
	}
	c2 := h.connect()
	c2.hello(token)
	wantError(t, c2.hydrate(m["id"].(string), "wrong"), CodeInvalidChecksum, true)
}

func TestHydrateUnregisteredComponent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.db")
	h := newHarnessAt(t, path, testRegistry(t))
	c := h.connect()
	token := c.hello("")["token"].(string)
	m := c.mount(nil)
	_ = h.store.Close()

	h2 := newHarnessAt(t, path, NewRegistry())
	c2 := h2.connect()
	c2.hello(token)
	wantError(t, c2.hydrate(m["id"].(string), m["fingerprint"].(string)), CodeUnknownComponent, true)
	// The connection keeps working.
	r, _ := c2.do(map[string]any{"type": "mount", "component": "counter"})
	wantError(t, r, CodeUnknownComponent, false)
}

func TestHydrateMissingAndBadRequest(t *testing.T) {
	c := newHarness(t).connect()
	c.hello("")
	wantError(t, c.hydrate("nope", "x"), CodeNotFound, true)
	r, _ := c.do(map[string]any{"type": "hydrate"})
	wantError(t, r, CodeBadArgs, false)
}

func TestHydrateMovesBetweenConnections(t *testing.T) {
	h := newHarness(t)
	tab1 := h.connect()
	token := tab1.hello("")["token"].(string)
	m := tab1.mount(nil)
	id, fp := m["id"].(string), m["fingerprint"].(string)
	tab1.call(id, "inc")

	tab2 := h.connect()
	tab2.hello(token)
	if r := tab2.hydrate(id, fp); count(r) != 1 {
		t.Fatalf("hydrate on second connection: %v", r)
	}
	wantError(t, tab1.call(id, "inc"), CodeNotFound, true)
	if count(tab2.call(id, "inc")) != 2 {
		t.Error("second connection does not own the instance")
	}
	if n := h.engine.Stats().InstanceCount; n != 1 {
		t.Errorf("instances = %d, want 1", n)
	}
	tab1.conn.Close()
	if n := h.engine.Stats().InstanceCount; n != 1 {
		t.Errorf("closing the old connection dropped the moved instance: %d", n)
	}
}

func TestConcurrentHydrateSameID(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	token := c.hello("")["token"].(string)
	m := c.mount(nil)
	id, fp := m["id"].(string), m["fingerprint"].(string)
	c.conn.Close()

	var wg sync.WaitGroup
	conns := make([]*client, 8)
	for i := range conns {
		conns[i] = h.connect()
		conns[i].hello(token)
	}
	for _, cc := range conns {
		wg.Add(1)
		go func(cc *client) {
			defer wg.Done()
			frame, _ := json.Marshal(map[string]any{"type": "hydrate", "id": id, "fingerprint": fp})
			cc.conn.Handle(frame)
		}(cc)
	}
	wg.Wait()
	if n := h.engine.Stats().InstanceCount; n != 1 {
		t.Errorf("instances after concurrent hydrate = %d, want 1", n)
	}
	owners := 0
	for _, cc := range conns {
		if cc.conn.engine.instanceByID(id).conn == cc.conn {
			owners++
		}
	}
	if owners != 1 {
		t.Errorf("%d connections own the instance, want 1", owners)
	}
}

func TestUnmount(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	token := c.hello("")["token"].(string)
	attached := c.mount(nil)["id"].(string)
	stored := c.mount(nil)["id"].(string)
	c.conn.Close()

	c2 := h.connect()
	c2.hello(token)
	m := c2.hydrate(attached, "wrong")
	wantError(t, m, CodeFingerprintMismatch, true)
	r, _ := c2.do(map[string]any{"type": "unmount", "id": stored})
	if r["type"] != "unmounted" || r["id"] != stored {
		t.Errorf("unmount of a stored session: %v", r)
	}
	r, _ = c2.do(map[string]any{"type": "unmount", "id": stored})
	wantError(t, r, CodeNotFound, false)
	r, _ = c2.do(map[string]any{"type": "unmount"})
	wantError(t, r, CodeBadArgs, false)

	st, err := h.store.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Sessions != 1 {
		t.Errorf("sessions after unmount = %d, want 1", st.Sessions)
	}
}

func TestUnmountAttached(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	c.hello("")
	id := c.mount(nil)["id"].(string)
	r, _ := c.do(map[string]any{"type": "unmount", "id": id})
	if r["type"] != "unmounted" {
		t.Fatalf("unmount: %v", r)
	}
	if n := h.engine.Stats().InstanceCount; n != 0 {
		t.Errorf("instances after unmount = %d", n)
	}
	wantError(t, c.call(id, "inc"), CodeNotFound, true)
	st, _ := h.store.Stats()
	if st.Sessions != 0 || st.Clients != 0 {
		t.Errorf("after unmount: sessions %d clients %d, want 0 0", st.Sessions, st.Clients)
	}
}

func TestBroadcastReachesMountedTypeOnly(t *testing.T) {
	h := newHarness(t)
	a, b, idle := h.connect(), h.connect(), h.connect()
	a.hello("")
	b.hello("")
	idle.hello("")
	id := a.mount(nil)["id"].(string)
	b.mount(nil)
	_, others := a.do(map[string]any{"type": "call", "id": id, "action": "shout"})
	if len(others) != 1 || others[0]["type"] != "broadcast" || others[0]["component"] != "counter" || others[0]["event"] != "shouted" {
		t.Errorf("caller's broadcast: %v", others)
	}
	if got := b.out.take(); len(got) != 1 || got[0]["type"] != "broadcast" {
		t.Errorf("other mounted connection got %v", got)
	}
	if got := idle.out.take(); len(got) != 0 {
		t.Errorf("connection without the component got %v", got)
	}
}

func TestSweepExpiredKeepsAttached(t *testing.T) {
	h := newHarness(t)
	live := h.connect()
	live.hello("")
	kept := live.mount(nil)["id"].(string)
	gone := h.connect()
	gone.hello("")
	dropped := gone.mount(nil)["id"].(string)
	gone.conn.Close()
	h.clock.Advance(2 * time.Minute)

	r, err := h.engine.SweepExpired()
	if err != nil {
		t.Fatal(err)
	}
	if r.Sessions != 1 {
		t.Errorf("swept %d sessions, want 1", r.Sessions)
	}
	if _, err := h.store.GetSession(dropped); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("disconnected expired session: %v", err)
	}
	if _, err := h.store.GetSession(kept); err != nil {
		t.Errorf("attached session was swept: %v", err)
	}
}

func TestCallAfterSessionDeleted(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	c.hello("")
	id := c.mount(nil)["id"].(string)
	released, r, err := h.engine.DeleteAllSessions()
	if err != nil {
		t.Fatal(err)
	}
	if released != 1 || r.Sessions != 1 {
		t.Errorf("DeleteAllSessions released %d, deleted %d; want 1 1", released, r.Sessions)
	}
	wantError(t, c.call(id, "inc"), CodeNotFound, true)

	id = c.mount(nil)["id"].(string)
	if err := h.store.DeleteSession(id); err != nil {
		t.Fatal(err)
	}
	wantError(t, c.call(id, "inc"), CodeExpired, true)
	if n := h.engine.Stats().InstanceCount; n != 0 {
		t.Errorf("instance of a deleted session kept in memory: %d", n)
	}
}

func TestStatsComponentsPerClient(t *testing.T) {
	h := newHarness(t)
	big, small := h.connect(), h.connect()
	big.hello("")
	small.hello("")
	for i := 0; i < 3; i++ {
		big.mount(nil)
	}
	small.mount(nil)
	st := h.engine.Stats()
	if st.InstanceCount != 4 || st.ClientCount != 2 || st.ConnectionCount != 2 || st.RegistrySize != 1 {
		t.Errorf("stats %+v", st)
	}
	if len(st.ComponentsPerClient) != 2 || st.ComponentsPerClient[0].Instances != 3 || st.ComponentsPerClient[0].ClientID != big.conn.ClientID() {
		t.Errorf("componentsPerClient %+v", st.ComponentsPerClient)
	}
}

func TestNewValidatesOptions(t *testing.T) {
	store, err := boltdb.Open(filepath.Join(t.TempDir(), "x.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	good := Options{Store: store, Registry: NewRegistry(), Secret: make([]byte, 32)}
	for name, mutate := range map[string]func(*Options){
		"no store":       func(o *Options) { o.Store = nil },
		"no registry":    func(o *Options) { o.Registry = nil },
		"short secret":   func(o *Options) { o.Secret = make([]byte, 31) },
		"negative age":   func(o *Options) { o.MaxAge = -time.Second },
		"negative tries": func(o *Options) { o.MaxAttempts = -1 },
	} {
		opts := good
		mutate(&opts)
		if _, err := New(opts); err == nil {
			t.Errorf("%s: New accepted the options", name)
		}
	}
	if _, err := New(good); err != nil {
		t.Errorf("valid options: %v", err)
	}
}

func TestRegistryRejectsBadNames(t *testing.T) {
	reg := NewRegistry()
	for _, name := range []string{"", "Counter", "1abc", "has space", strings.Repeat("a", 65)} {
		if err := reg.Register(Define(name, func(Props) (int, error) { return 0, nil })); err == nil {
			t.Errorf("registered invalid name %q", name)
		}
	}
	def := Define("ok", func(Props) (int, error) { return 0, nil })
	if err := reg.Register(def); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(def); err == nil {
		t.Error("registered the same name twice")
	}
}

func TestErrorMessagesUseProtocolTerms(t *testing.T) {
	c := newHarness(t).connect()
	c.conn.Handle([]byte(`{"type":"hello","ref":"one"}`))
	msg := c.out.take()[0]
	if got := msg["message"].(string); !strings.Contains(got, `field "ref" must be an integer, not string`) {
		t.Errorf("ref as string: message %q", got)
	}
	c.conn.Handle([]byte(`{"type":`))
	if got := c.out.take()[0]["message"].(string); !strings.Contains(got, "incomplete JSON") {
		t.Errorf("truncated frame: message %q", got)
	}
	c.hello("")
	r, _ := c.do(map[string]any{"type": "mount", "component": "counter", "props": map[string]any{"initial": "5"}})
	if got := r["message"].(string); !strings.Contains(got, `field "initial" must be an integer, not string`) || strings.Contains(got, "Go") {
		t.Errorf("prop of the wrong type: message %q", got)
	}
	r, _ = c.do(map[string]any{"type": "mount", "component": "counter", "props": map[string]any{"start": 1}})
	if got := r["message"].(string); !strings.Contains(got, `unknown field "start"`) {
		t.Errorf("unknown prop: message %q", got)
	}
}

func TestHydrateWithoutFingerprintIsNotAnAttempt(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	c.hello("")
	id := c.mount(nil)["id"].(string)
	r, _ := c.do(map[string]any{"type": "hydrate", "id": id})
	wantError(t, r, CodeBadArgs, false)
	sess, err := h.store.GetSession(id)
	if err != nil {
		t.Fatal(err)
	}
	if sess.FailedAttempts != 0 {
		t.Errorf("failed attempts after a hydrate without fingerprint = %d, want 0", sess.FailedAttempts)
	}
}

// slowStore delays every UpdateSession of a real store, to widen the window
// between a hydration's check and its attach.
type slowStore struct {
	storage.Store
	delay time.Duration
}

func (s slowStore) UpdateSession(sess *storage.Session) error {
	time.Sleep(s.delay)
	return s.Store.UpdateSession(sess)
}

func TestHydrateRaceKeepsOneInstance(t *testing.T) {
	h := newHarness(t)
	e, err := New(Options{
		Store: slowStore{Store: h.store, delay: time.Millisecond}, Registry: testRegistry(t),
		Secret: []byte(strings.Repeat("k", 32)), MaxAge: time.Minute, Now: h.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.engine = e
	first := h.connect()
	token := first.hello("")["token"].(string)
	m := first.mount(nil)
	id, fp := m["id"].(string), m["fingerprint"].(string)
	hydrateFrame, _ := json.Marshal(map[string]any{"type": "hydrate", "id": id, "fingerprint": fp})
	incFrame, _ := json.Marshal(map[string]any{"type": "call", "id": id, "action": "inc", "args": []any{}})

	owner := first
	acked := 0
	for round := 0; round < 200; round++ {
		b, c := h.connect(), h.connect()
		b.hello(token)
		c.hello(token)
		var wg sync.WaitGroup
		wg.Add(3)
		go func() { defer wg.Done(); b.conn.Handle(hydrateFrame) }()
		go func() { defer wg.Done(); owner.conn.Close() }()
		go func() { defer wg.Done(); c.conn.Handle(hydrateFrame) }()
		wg.Wait()

		holders := 0
		for _, cl := range []*client{b, c} {
			cl.out.take()
			cl.conn.Handle(incFrame)
			for _, msg := range cl.out.take() {
				if msg["type"] == "state" {
					acked++
					holders++
					owner = cl
				}
			}
		}
		if holders != 1 {
			t.Fatalf("round %d: %d connections could call the component, want exactly 1", round, holders)
		}
		if n := h.engine.Stats().InstanceCount; n != 1 {
			t.Fatalf("round %d: %d instances in memory, want 1", round, n)
		}
		for _, cl := range []*client{b, c} {
			if cl != owner {
				cl.conn.Close()
			}
		}
	}
	stored, err := h.store.GetSession(id)
	if err != nil {
		t.Fatal(err)
	}
	if int(stored.Version) != acked+1 {
		t.Errorf("stored version %d, want %d (1 + %d acknowledged calls)", stored.Version, acked+1, acked)
	}
}

type panicOnRestore struct{ N int }

func (p *panicOnRestore) UnmarshalJSON([]byte) error { panic("restore panics on purpose") }

func TestPanicInHydrateDoesNotBlockID(t *testing.T) {
	reg := NewRegistry()
	if err := reg.Register(Define("fragile", func(Props) (panicOnRestore, error) { return panicOnRestore{}, nil })); err != nil {
		t.Fatal(err)
	}
	h := newHarnessAt(t, filepath.Join(t.TempDir(), "live.db"), reg)
	c := h.connect()
	token := c.hello("")["token"].(string)
	r, _ := c.do(map[string]any{"type": "mount", "component": "fragile"})
	id, fp := r["id"].(string), r["fingerprint"].(string)
	c.conn.Close()

	c2 := h.connect()
	c2.hello(token)
	for attempt := 1; attempt <= 2; attempt++ {
		done := make(chan map[string]any, 1)
		go func() { done <- c2.hydrate(id, fp) }()
		select {
		case r := <-done:
			wantError(t, r, CodeInternal, false)
		case <-time.After(5 * time.Second):
			t.Fatalf("hydrate attempt %d after a panic did not return", attempt)
		}
	}
}

func TestTokenOnlyCanonicalForm(t *testing.T) {
	h := newHarness(t)
	token := h.connect().hello("")["token"].(string)
	last := token[len(token)-1]
	// The last of 43 base64 characters carries 2 unused bits; flipping one
	// of them decodes to the same bytes.
	sibling := token[:len(token)-1] + string(b64Sibling(last))
	for name, bad := range map[string]string{
		"newline inside": token[:10] + "\n" + token[10:],
		"unused bits":    sibling,
		"trailing CR":    token + "\r",
	} {
		if w := h.connect().hello(bad); w["resumed"] != false {
			t.Errorf("%s: token accepted", name)
		}
	}
}

// b64Sibling returns another base64url character that differs only in the
// lowest bit of its 6-bit value.
func b64Sibling(ch byte) byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, ch)
	return alphabet[i^1]
}

func TestCloseRecordsLastActivity(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	token := c.hello("")["token"].(string)
	m := c.mount(nil)
	// Attached and idle for 50 s of the 60 s limit, then disconnected.
	h.clock.Advance(50 * time.Second)
	c.conn.Close()
	h.clock.Advance(30 * time.Second)

	c2 := h.connect()
	c2.hello(token)
	if r := c2.hydrate(m["id"].(string), m["fingerprint"].(string)); r["type"] != "state" {
		t.Errorf("hydrate 30 s after disconnect, 80 s after the last call: %v", r)
	}
}

func TestNullArgumentsRejected(t *testing.T) {
	c := newHarness(t).connect()
	c.hello("")
	id := c.mount(nil)["id"].(string)
	wantError(t, c.call(id, "add", nil), CodeBadArgs, false)
	r, _ := c.do(map[string]any{"type": "call", "action": "inc"})
	wantError(t, r, CodeBadArgs, false)
}

func TestRateLimitPerConnection(t *testing.T) {
	h := newHarnessWith(t, filepath.Join(t.TempDir(), "live.db"), testRegistry(t), Limits{MessagesPerSecond: 10, MessageBurst: 3})
	c := h.connect()
	c.hello("")
	id := c.mount(nil)["id"].(string)
	if r := c.call(id, "inc"); r["type"] != "state" {
		t.Fatalf("third message within the burst: %v", r)
	}
	r := c.call(id, "inc")
	wantError(t, r, CodeRateLimited, false)
	if r["ref"] != float64(c.ref) {
		t.Errorf("rate_limited reply ref = %v, want %d", r["ref"], c.ref)
	}
	other := h.connect()
	if w := other.hello(""); w["type"] != "welcome" {
		t.Errorf("another connection was limited too: %v", w)
	}
	// 100 ms at 10 per second refills one token.
	h.clock.Advance(100 * time.Millisecond)
	if r := c.call(id, "inc"); r["type"] != "state" || count(r) != 2 {
		t.Errorf("after the refill: %v, want count 2", r)
	}
	wantError(t, c.call(id, "inc"), CodeRateLimited, false)
}

func TestInstanceLimitPerClient(t *testing.T) {
	h := newHarnessWith(t, filepath.Join(t.TempDir(), "live.db"), testRegistry(t), Limits{MaxInstancesPerClient: 2})
	tab1 := h.connect()
	token := tab1.hello("")["token"].(string)
	tab1.mount(nil)
	tab2 := h.connect()
	tab2.hello(token)
	m := tab2.mount(nil)
	// The limit counts the client's instances over both connections.
	r, _ := tab2.do(map[string]any{"type": "mount", "component": "counter"})
	wantError(t, r, CodeLimitExceeded, false)
	other := h.connect()
	other.hello("")
	other.mount(nil)

	// Moving an instance between the client's own connections is allowed.
	if r := tab1.hydrate(m["id"].(string), m["fingerprint"].(string)); r["type"] != "state" {
		t.Errorf("moving an instance at the limit: %v", r)
	}
	tab1.conn.Close()
	if r := tab2.mount(nil); r["type"] != "state" {
		t.Errorf("mount after the instances were released: %v", r)
	}
}

func TestSessionLimitPerClient(t *testing.T) {
	h := newHarnessWith(t, filepath.Join(t.TempDir(), "live.db"), testRegistry(t), Limits{MaxSessionsPerClient: 2})
	c := h.connect()
	token := c.hello("")["token"].(string)
	first := c.mount(nil)["id"].(string)
	c.mount(nil)
	c.conn.Close()

	c2 := h.connect()
	c2.hello(token)
	r, _ := c2.do(map[string]any{"type": "mount", "component": "counter"})
	wantError(t, r, CodeLimitExceeded, false)
	if r, _ := c2.do(map[string]any{"type": "unmount", "id": first}); r["type"] != "unmounted" {
		t.Fatalf("unmount: %v", r)
	}
	if r := c2.mount(nil); r["type"] != "state" {
		t.Errorf("mount after an unmount: %v", r)
	}
}

func TestRejectionLogRateLimited(t *testing.T) {
	h := newHarness(t)
	var logs syncLog
	h.engine.log = slog.New(slog.NewTextHandler(&logs, nil))
	owner := h.connect()
	owner.hello("")
	id := owner.mount(nil)["id"].(string)
	attacker := h.connect()
	attacker.hello("")
	for i := 0; i < 50; i++ {
		attacker.hydrate(id, "stolen")
	}
	if n := h.engine.Stats().Rejected[CodeForbidden]; n != 50 {
		t.Errorf("rejected forbidden = %d, want 50", n)
	}
	if n := strings.Count(logs.String(), "session access rejected"); n != rejectLogBurst {
		t.Errorf("%d warn lines for 50 rejections, want %d", n, rejectLogBurst)
	}
	h.clock.Advance(rejectLogWindow)
	attacker.hydrate(id, "stolen")
	if !strings.Contains(logs.String(), "suppressed_before=45") {
		t.Errorf("the next window does not report the 45 suppressed lines:\n%s", logs.String())
	}
}

type syncLog struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func TestTouchAttachedRefreshesOpenSessions(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	c.hello("")
	id := c.mount(nil)["id"].(string)
	closed := h.connect()
	closed.hello("")
	idle := closed.mount(nil)["id"].(string)
	closed.conn.Close()

	h.clock.Advance(50 * time.Second)
	n, err := h.engine.TouchAttached()
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("TouchAttached wrote %d sessions, want 1 (the open one)", n)
	}
	sess, _ := h.store.GetSession(id)
	if !sess.LastActivity.Equal(h.clock.Now()) {
		t.Errorf("open session's last activity %s, want %s", sess.LastActivity, h.clock.Now())
	}
	if other, _ := h.store.GetSession(idle); other.LastActivity.Equal(h.clock.Now()) {
		t.Error("a released session's activity was refreshed")
	}
	// Fresh activity (under a quarter of MaxAge old) is not written again.
	h.clock.Advance(5 * time.Second)
	if n, _ := h.engine.TouchAttached(); n != 0 {
		t.Errorf("TouchAttached rewrote %d fresh sessions", n)
	}
	if count(c.call(id, "inc")) != 1 {
		t.Error("instance unusable after TouchAttached")
	}
}

func TestMoveNotifiesOldConnection(t *testing.T) {
	h := newHarness(t)
	tab1 := h.connect()
	token := tab1.hello("")["token"].(string)
	m := tab1.mount(nil)
	tab2 := h.connect()
	tab2.hello(token)
	tab2.hydrate(m["id"].(string), m["fingerprint"].(string))
	pushed := tab1.out.take()
	if len(pushed) != 1 {
		t.Fatalf("old connection got %v, want one message", pushed)
	}
	wantError(t, pushed[0], CodeNotFound, true)
	if pushed[0]["id"] != m["id"] || pushed[0]["ref"] != nil {
		t.Errorf("push %v: want the component id and no ref", pushed[0])
	}
}

// countingStore records the most GetSession calls that ran at once.
type countingStore struct {
	storage.Store
	mu      sync.Mutex
	current int
	peak    int
}

func (s *countingStore) GetSession(id string) (*storage.Session, error) {
	s.mu.Lock()
	s.current++
	s.peak = max(s.peak, s.current)
	s.mu.Unlock()
	time.Sleep(2 * time.Millisecond)
	defer func() {
		s.mu.Lock()
		s.current--
		s.mu.Unlock()
	}()
	return s.Store.GetSession(id)
}

func TestHydrationsAdmittedInBoundedNumbers(t *testing.T) {
	h := newHarness(t)
	const clients = 12
	type owned struct {
		token, id, fp string
	}
	var sessions []owned
	for i := 0; i < clients; i++ {
		c := h.connect()
		token := c.hello("")["token"].(string)
		m := c.mount(nil)
		sessions = append(sessions, owned{token, m["id"].(string), m["fingerprint"].(string)})
		c.conn.Close()
	}
	counting := &countingStore{Store: h.store}
	e, err := New(Options{
		Store: counting, Registry: testRegistry(t), Secret: []byte(strings.Repeat("k", 32)),
		MaxAge: time.Minute, Now: h.clock.Now, Limits: Limits{MaxHydrations: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.engine = e

	var wg sync.WaitGroup
	for _, s := range sessions {
		c := h.connect()
		c.hello(s.token)
		wg.Add(1)
		go func(c *client, s owned) {
			defer wg.Done()
			frame, _ := json.Marshal(map[string]any{"type": "hydrate", "ref": 99, "id": s.id, "fingerprint": s.fp})
			c.conn.Handle(frame)
		}(c, s)
	}
	wg.Wait()
	if counting.peak > 3 {
		t.Errorf("%d hydrations read the store at once, want at most 3", counting.peak)
	}
	if n := h.engine.Stats().InstanceCount; n != clients {
		t.Errorf("%d instances after the storm, want %d", n, clients)
	}
}

func TestSpacedPropsSurviveTheStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.db")
	h := newHarnessAt(t, path, testRegistry(t))
	c := h.connect()
	token := c.hello("")["token"].(string)
	c.conn.Handle([]byte(`{"type":"mount","ref":50,"component":"counter","props":{ "initial" :  7 }}`))
	m := c.out.take()[0]
	if m["type"] != "state" {
		t.Fatalf("mount with spaced props: %v", m)
	}
	_ = h.store.Close()

	h2 := newHarnessAt(t, path, testRegistry(t))
	c2 := h2.connect()
	c2.hello(token)
	if r := c2.hydrate(m["id"].(string), m["fingerprint"].(string)); r["type"] != "state" || count(r) != 7 {
		t.Errorf("hydrate after reopening: %v", r)
	}
}

func TestVerifyAcceptsCanonicalJSONMAC(t *testing.T) {
	sg, err := newSigner([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	sess := &storage.Session{
		ID: "x", Component: "counter", Owner: "o", Fingerprint: "f", Version: 3,
		Props: json.RawMessage(`{"b":1, "a":2}`), State: json.RawMessage(`{"count": 3}`),
		CreatedAt: time.Unix(10, 0), LastActivity: time.Unix(20, 0),
	}
	props, _ := canonicalJSON(sess.Props)
	state, _ := canonicalJSON(sess.State)
	sess.MAC = sg.snapshotMAC(sess, props, state) // as earlier versions signed
	if !sg.verify(sess) {
		t.Error("a MAC over canonical JSON no longer verifies")
	}
	sess.State = json.RawMessage(`{"count": 4}`)
	if sg.verify(sess) {
		t.Error("a changed state verifies")
	}
}

func TestNewIDSortsByTime(t *testing.T) {
	base := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	ids := []string{NewID(base), NewID(base.Add(time.Millisecond)), NewID(base.Add(time.Hour)), NewID(base.Add(24 * 365 * time.Hour))}
	for i := 1; i < len(ids); i++ {
		if ids[i-1][:8] >= ids[i][:8] {
			t.Errorf("id %q made before %q does not sort first", ids[i-1], ids[i])
		}
	}
	a, b := NewID(base), NewID(base)
	if a == b || a[:8] != b[:8] {
		t.Errorf("two ids of one millisecond: %q %q; want one prefix and different random parts", a, b)
	}
	if len(a) != 30 || strings.ContainsAny(a, ".+/=") {
		t.Errorf("id %q: want 30 URL-safe characters without '.'", a)
	}
}

// TestDebugLogsEveryMessage checks the per-frame debug line: one for each
// frame with its type, ids and result, never the token or fingerprint, and
// none at info level.
func TestDebugLogsEveryMessage(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelDebug, slog.LevelInfo} {
		logs := &syncLog{}
		store, err := boltdb.Open(filepath.Join(t.TempDir(), "debug.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		e, err := New(Options{
			Store: store, Registry: testRegistry(t), Secret: []byte(strings.Repeat("k", 32)),
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level})),
		})
		if err != nil {
			t.Fatal(err)
		}
		h := &harness{t: t, store: store, engine: e}
		c := h.connect()
		w := c.hello("")
		m := c.mount(nil)
		c.call(m["id"].(string), "inc")
		c.call(m["id"].(string), "nope")
		c.hydrate(m["id"].(string), m["fingerprint"].(string))
		c.conn.Handle([]byte(`{"type":`))
		_ = store.Close()

		out := logs.String()
		n := strings.Count(out, `msg="message handled"`)
		if level == slog.LevelInfo {
			if n != 0 {
				t.Errorf("info level logged %d message lines", n)
			}
			continue
		}
		if n != 6 {
			t.Errorf("%d message lines, want 6:\n%s", n, out)
		}
		for _, want := range []string{
			"type=hello", "type=mount", "component=counter", "action=inc bytes=",
			"action=nope bytes=92 result=unknown_action", "type=hydrate", "result=bad_json", "component_id=" + m["id"].(string),
		} {
			if !strings.Contains(out, want) {
				t.Errorf("debug log lacks %q:\n%s", want, out)
			}
		}
		for _, secret := range []string{w["token"].(string), m["fingerprint"].(string)} {
			if strings.Contains(out, secret) {
				t.Errorf("debug log contains a token or fingerprint:\n%s", out)
			}
		}
	}
}
