package components

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livebolt/livebolt/live"
	"github.com/livebolt/livebolt/storage/boltdb"
)

// outbox keeps the messages sent since the last request.
type outbox struct{ msgs []map[string]any }

func (o *outbox) Send(msg []byte) {
	var m map[string]any
	if err := json.Unmarshal(msg, &m); err != nil {
		panic(fmt.Sprintf("invalid JSON from the server: %s", msg))
	}
	// Keep the state as sent, so tests compare the component's own encoding.
	var raw struct {
		State json.RawMessage `json:"state"`
	}
	_ = json.Unmarshal(msg, &raw)
	if raw.State != nil {
		m["state"] = string(raw.State)
	}
	o.msgs = append(o.msgs, m)
}

// session is one connection to an engine with the demo components.
type session struct {
	t    *testing.T
	conn *live.Conn
	out  *outbox
}

func newSession(t *testing.T) *session {
	t.Helper()
	store, err := boltdb.Open(filepath.Join(t.TempDir(), "demo.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	reg := live.NewRegistry()
	if err := Register(reg); err != nil {
		t.Fatal(err)
	}
	engine, err := live.New(live.Options{Store: store, Registry: reg, Secret: []byte(strings.Repeat("s", 32))})
	if err != nil {
		t.Fatal(err)
	}
	s := &session{t: t, out: &outbox{}}
	s.conn = engine.Connect(s.out)
	s.send(map[string]any{"type": "hello"})
	return s
}

// send handles one request and returns the reply, the first message sent.
func (s *session) send(msg map[string]any) map[string]any {
	s.t.Helper()
	s.out.msgs = nil
	frame, _ := json.Marshal(msg)
	s.conn.Handle(frame)
	if len(s.out.msgs) == 0 {
		s.t.Fatalf("no reply to %s", frame)
	}
	return s.out.msgs[0]
}

func (s *session) mount(component string, props map[string]any) string {
	s.t.Helper()
	r := s.send(map[string]any{"type": "mount", "component": component, "props": props})
	if r["type"] != "state" {
		s.t.Fatalf("mount %s: %v", component, r)
	}
	return r["id"].(string)
}

// call runs an action and returns the new state, or the error message.
func (s *session) call(id, action string, args ...any) map[string]any {
	s.t.Helper()
	if args == nil {
		args = []any{}
	}
	return s.send(map[string]any{"type": "call", "id": id, "action": action, "args": args})
}

func state(t *testing.T, r map[string]any) string {
	t.Helper()
	if r["type"] != "state" {
		t.Fatalf("want state, got %v", r)
	}
	return r["state"].(string)
}

func wantBadArgs(t *testing.T, r map[string]any) {
	t.Helper()
	if r["type"] != "error" || r["code"] != live.CodeBadArgs {
		t.Errorf("want bad_args, got %v", r)
	}
}

func TestCounter(t *testing.T) {
	s := newSession(t)
	id := s.mount("counter", map[string]any{"initial": 5, "step": 2})
	for _, tc := range []struct {
		action string
		args   []any
		want   string
	}{
		{"increment", nil, `{"count":7,"step":2}`},
		{"decrement", nil, `{"count":5,"step":2}`},
		{"setStep", []any{10}, `{"count":5,"step":10}`},
		{"increment", nil, `{"count":15,"step":10}`},
		{"reset", nil, `{"count":0,"step":10}`},
	} {
		if got := state(t, s.call(id, tc.action, tc.args...)); got != tc.want {
			t.Errorf("%s(%v): state %s, want %s", tc.action, tc.args, got, tc.want)
		}
	}
	wantBadArgs(t, s.call(id, "setStep", "3"))
	wantBadArgs(t, s.call(id, "setStep"))
	wantBadArgs(t, s.call(id, "increment", 1))
}

func TestCounterDefaultsAndBadProps(t *testing.T) {
	s := newSession(t)
	r := s.send(map[string]any{"type": "mount", "component": "counter"})
	if got := state(t, r); got != `{"count":0,"step":1}` {
		t.Errorf("default state %s", got)
	}
	wantBadArgs(t, s.send(map[string]any{"type": "mount", "component": "counter", "props": map[string]any{"initial": "5"}}))
	wantBadArgs(t, s.send(map[string]any{"type": "mount", "component": "counter", "props": map[string]any{"start": 5}}))
}

func TestCounterEmitsCountChanged(t *testing.T) {
	s := newSession(t)
	id := s.mount("counter", nil)
	s.call(id, "increment")
	if len(s.out.msgs) != 2 {
		t.Fatalf("messages after increment: %v, want state and event", s.out.msgs)
	}
	ev := s.out.msgs[1]
	if ev["type"] != "event" || ev["event"] != "count-changed" || ev["data"].(map[string]any)["count"] != float64(1) {
		t.Errorf("message after the state: %v, want count-changed event", ev)
	}
}

func TestToggle(t *testing.T) {
	s := newSession(t)
	id := s.mount("toggle", map[string]any{"on": true})
	if got := state(t, s.call(id, "toggle")); got != `{"on":false}` {
		t.Errorf("after toggle: %s", got)
	}
	if got := state(t, s.call(id, "toggle")); got != `{"on":true}` {
		t.Errorf("after second toggle: %s", got)
	}
	wantBadArgs(t, s.call(id, "toggle", true))
}

func TestTodo(t *testing.T) {
	s := newSession(t)
	id := s.mount("todo", nil)
	state(t, s.call(id, "add", "milk"))
	state(t, s.call(id, "add", "  bread  "))
	if got := state(t, s.call(id, "toggle", 0)); got != `{"items":[{"text":"milk","done":true},{"text":"bread","done":false}]}` {
		t.Errorf("after toggle(0): %s", got)
	}
	if got := state(t, s.call(id, "remove", 0)); got != `{"items":[{"text":"bread","done":false}]}` {
		t.Errorf("after remove(0): %s", got)
	}
	for _, args := range [][]any{{1}, {-1}, {"0"}, {0.5}, {}} {
		wantBadArgs(t, s.call(id, "remove", args...))
		wantBadArgs(t, s.call(id, "toggle", args...))
	}
	wantBadArgs(t, s.call(id, "add", "   "))
	wantBadArgs(t, s.call(id, "add", strings.Repeat("x", MaxTodoText+1)))
	// The limit counts characters, as the page's maxlength does, not bytes.
	state(t, s.call(id, "add", strings.Repeat("é", MaxTodoText)))
	state(t, s.call(id, "remove", 1))
	wantBadArgs(t, s.call(id, "add", 5))
	if got := state(t, s.call(id, "add", "eggs")); got != `{"items":[{"text":"bread","done":false},{"text":"eggs","done":false}]}` {
		t.Errorf("state after rejected calls: %s", got)
	}
}

func TestTodoRejectsProps(t *testing.T) {
	s := newSession(t)
	wantBadArgs(t, s.send(map[string]any{"type": "mount", "component": "todo", "props": map[string]any{"items": []string{"x"}}}))
}
