package live

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type moveArgs struct {
	From int `json:"from"`
	To   int `json:"to"`
}

func (m moveArgs) Validate() error {
	if m.From == m.To {
		return errors.New("from and to are the same")
	}
	return nil
}

type positive int

func (p *positive) Validate() error {
	if *p <= 0 {
		return BadArgs("step must be positive, got %d", int(*p))
	}
	return nil
}

type listState struct {
	Items []string `json:"items"`
	Step  int      `json:"step"`
}

// typedRegistry has a list whose actions take typed arguments.
func typedRegistry(t *testing.T, canceled chan<- error) *Registry {
	t.Helper()
	list := Define("list", func(Props) (listState, error) { return listState{Items: []string{"a", "b", "c"}, Step: 1}, nil }).
		Action("add", Typed(func(ctx *Context, s *listState, text string) (any, error) {
			s.Items = append(s.Items, text)
			return len(s.Items), nil
		})).
		Action("move", Typed(func(ctx *Context, s *listState, m moveArgs) (any, error) {
			if m.From < 0 || m.From >= len(s.Items) || m.To < 0 || m.To >= len(s.Items) {
				return nil, BadArgs("index out of range")
			}
			s.Items[m.From], s.Items[m.To] = s.Items[m.To], s.Items[m.From]
			return nil, nil
		})).
		Action("step", Typed(func(ctx *Context, s *listState, p positive) (any, error) {
			s.Step = int(p)
			return nil, nil
		})).
		Action("clear", NoArgs(func(ctx *Context, s *listState) (any, error) {
			s.Items = nil
			return nil, nil
		})).
		Action("watch", NoArgs(func(ctx *Context, s *listState) (any, error) {
			// Report when the connection's context ends.
			go func() {
				select {
				case <-ctx.Done():
					canceled <- ctx.Err()
				case <-time.After(5 * time.Second):
					canceled <- errors.New("not canceled within 5 s")
				}
			}()
			return nil, nil
		}))
	reg := NewRegistry()
	if err := reg.Register(list); err != nil {
		t.Fatal(err)
	}
	return reg
}

func TestTypedActions(t *testing.T) {
	canceled := make(chan error, 1)
	h := newHarnessWith(t, filepath.Join(t.TempDir(), "typed.db"), typedRegistry(t, canceled), Limits{})
	c := h.connect()
	c.hello("")
	m, _ := c.do(map[string]any{"type": "mount", "component": "list"})
	id := m["id"].(string)

	items := func(msg map[string]any) string {
		t.Helper()
		if msg["type"] != TypeState {
			t.Fatalf("want state, got %v", msg)
		}
		var out []string
		for _, it := range msg["state"].(map[string]any)["items"].([]any) {
			out = append(out, it.(string))
		}
		return strings.Join(out, ",")
	}
	if got := items(c.call(id, "add", "d")); got != "a,b,c,d" {
		t.Errorf("add: items %s", got)
	}
	if got := items(c.call(id, "move", map[string]any{"from": 0, "to": 3})); got != "d,b,c,a" {
		t.Errorf("move: items %s", got)
	}
	if r := c.call(id, "step", 5); r["state"].(map[string]any)["step"] != float64(5) {
		t.Errorf("step: %v", r)
	}

	for _, tc := range []struct {
		action string
		args   []any
		want   string
	}{
		{"add", nil, "expected 1 argument(s), got 0"},
		{"add", []any{"x", "y"}, "expected 1 argument(s), got 2"},
		{"add", []any{nil}, "argument 0 is null"},
		{"add", []any{7}, "must be a string"},
		{"move", []any{"0,3"}, "must be an object"},
		{"move", []any{map[string]any{"from": 0, "to": 1, "by": 2}}, `unknown field "by"`},
		{"move", []any{map[string]any{"from": 1.5, "to": 1}}, `field "from" must be an integer`},
		{"move", []any{map[string]any{"from": 2, "to": 2}}, "from and to are the same"},
		{"move", []any{map[string]any{"from": 0, "to": 9}}, "index out of range"},
		{"step", []any{0}, "step must be positive, got 0"},
		{"step", []any{1e30}, "must be an integer from -9223372036854775808 to 9223372036854775807, not number 1e+30"},
		{"step", []any{2.5}, "must be an integer from -9223372036854775808 to 9223372036854775807, not number 2.5"},
		{"step", []any{"2"}, "value must be an integer, not string"},
		{"clear", []any{1}, "expected 0 argument(s), got 1"},
	} {
		r := c.call(id, tc.action, tc.args...)
		wantError(t, r, CodeBadArgs, false)
		if msg := r["message"].(string); !strings.Contains(msg, tc.want) {
			t.Errorf("%s %v: message %q does not contain %q", tc.action, tc.args, msg, tc.want)
		}
	}
	// Rejected calls left the state as it was.
	if got := items(c.call(id, "add", "e")); got != "d,b,c,a,e" {
		t.Errorf("after rejected calls: items %s", got)
	}
	if got := c.call(id, "clear"); got["type"] != TypeState {
		t.Errorf("clear: %v", got)
	}

	// The action's context ends when the connection closes.
	c.call(id, "watch")
	select {
	case err := <-canceled:
		t.Fatalf("context ended before the connection closed: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	c.conn.Close()
	if err := <-canceled; !errors.Is(err, context.Canceled) {
		t.Errorf("after Close the action's context reports %v, want context.Canceled", err)
	}
}

func TestIntegerRangeInMessages(t *testing.T) {
	var small uint8
	err := json.Unmarshal([]byte(`256`), &small)
	if got := describeJSONError(err); got != "value must be an integer from 0 to 255, not number 256" {
		t.Errorf("uint8 256: %q", got)
	}
	var signed struct {
		N *int8 `json:"n"`
	}
	err = json.Unmarshal([]byte(`{"n":-129}`), &signed)
	if got := describeJSONError(err); got != `field "n" must be an integer from -128 to 127, not number -129` {
		t.Errorf("int8 -129: %q", got)
	}
}
