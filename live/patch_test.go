package live

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// applyPatch applies a JSON Patch of add, remove and replace operations to
// doc, as RFC 6902 defines them, and fails on any path that does not
// resolve. It is the reference the diff is checked against; live.js has
// the browser's own.
func applyPatch(doc []byte, patch []byte) (any, error) {
	v, err := decodeValue(doc)
	if err != nil {
		return nil, fmt.Errorf("decode document: %w", err)
	}
	var ops []struct {
		Op    string          `json:"op"`
		Path  *string         `json:"path"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(patch, &ops); err != nil {
		return nil, fmt.Errorf("decode patch: %w", err)
	}
	for i, op := range ops {
		if op.Path == nil {
			return nil, fmt.Errorf("op %d has no path", i)
		}
		var value any
		if op.Op != "remove" {
			if op.Value == nil {
				return nil, fmt.Errorf("op %d (%s) has no value", i, op.Op)
			}
			if value, err = decodeValue(op.Value); err != nil {
				return nil, fmt.Errorf("op %d value: %w", i, err)
			}
		}
		if v, err = applyOp(v, op.Op, *op.Path, value); err != nil {
			return nil, fmt.Errorf("op %d (%s %q): %w", i, op.Op, *op.Path, err)
		}
	}
	return v, nil
}

func applyOp(doc any, op, path string, value any) (any, error) {
	if path == "" {
		if op != "replace" && op != "add" {
			return nil, errors.New("only add and replace may target the whole document")
		}
		return value, nil
	}
	if path[0] != '/' {
		return nil, errors.New("path does not start with /")
	}
	tokens := strings.Split(path[1:], "/")
	for i, t := range tokens {
		tokens[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	parent := doc
	for _, t := range tokens[:len(tokens)-1] {
		child, err := step(parent, t)
		if err != nil {
			return nil, err
		}
		parent = child
	}
	last := tokens[len(tokens)-1]
	switch p := parent.(type) {
	case map[string]any:
		_, exists := p[last]
		switch op {
		case "add":
			p[last] = value
		case "replace", "remove":
			if !exists {
				return nil, fmt.Errorf("no member %q", last)
			}
			if op == "replace" {
				p[last] = value
			} else {
				delete(p, last)
			}
		default:
			return nil, fmt.Errorf("unsupported op %q", op)
		}
		return doc, nil
	case []any:
		i, err := strconv.Atoi(last)
		if err != nil || i < 0 || i > len(p) || (i == len(p) && op != "add") || last != strconv.Itoa(i) {
			return nil, fmt.Errorf("bad array index %q for length %d", last, len(p))
		}
		var next []any
		switch op {
		case "add":
			next = append(append(append([]any{}, p[:i]...), value), p[i:]...)
		case "replace":
			p[i] = value
			next = p
		case "remove":
			next = append(append([]any{}, p[:i]...), p[i+1:]...)
		default:
			return nil, fmt.Errorf("unsupported op %q", op)
		}
		// The array header changed, so store it back into its parent.
		return setAt(doc, tokens[:len(tokens)-1], next)
	default:
		return nil, fmt.Errorf("parent of %q is neither an object nor an array", last)
	}
}

func step(v any, token string) (any, error) {
	switch p := v.(type) {
	case map[string]any:
		child, ok := p[token]
		if !ok {
			return nil, fmt.Errorf("no member %q", token)
		}
		return child, nil
	case []any:
		i, err := strconv.Atoi(token)
		if err != nil || i < 0 || i >= len(p) {
			return nil, fmt.Errorf("bad array index %q", token)
		}
		return p[i], nil
	}
	return nil, fmt.Errorf("cannot step into a scalar with %q", token)
}

func setAt(doc any, tokens []string, value any) (any, error) {
	if len(tokens) == 0 {
		return value, nil
	}
	parent := doc
	for _, t := range tokens[:len(tokens)-1] {
		var err error
		if parent, err = step(parent, t); err != nil {
			return nil, err
		}
	}
	last := tokens[len(tokens)-1]
	switch p := parent.(type) {
	case map[string]any:
		p[last] = value
	case []any:
		i, _ := strconv.Atoi(last)
		p[i] = value
	}
	return doc, nil
}

// decodeValue parses JSON keeping numbers as written, so that no number
// changes through a float64.
func decodeValue(b []byte) (any, error) {
	if !json.Valid(b) {
		return nil, fmt.Errorf("not one valid JSON value: %.40q", b)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// checkDiff diffs a against b, applies the result to a and compares it
// with b. It returns the patch.
func checkDiff(t testing.TB, a, b string) string {
	t.Helper()
	ops, err := diffJSON([]byte(a), []byte(b))
	if err != nil {
		t.Fatalf("diff %s -> %s: %v", a, b, err)
	}
	if ops == nil {
		ops = []patchOp{}
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	got, err := applyPatch([]byte(a), patch)
	if err != nil {
		t.Fatalf("apply %s to %s: %v", patch, a, err)
	}
	want, err := decodeValue([]byte(b))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("diff %s -> %s gave %s, which yields %v", a, b, patch, got)
	}
	return string(patch)
}

func TestDiffJSON(t *testing.T) {
	for _, tc := range []struct{ a, b, want string }{
		{`{"count":1}`, `{"count":1}`, `[]`},
		{`{"count":1}`, `{"count":2}`, `[{"op":"replace","path":"/count","value":2}]`},
		{`{"a":1}`, `{"b":null}`, `[{"op":"remove","path":"/a"},{"op":"add","path":"/b","value":null}]`},
		{`{"n":1}`, `{"n":1.50}`, `[{"op":"replace","path":"/n","value":1.50}]`},
		{`{"n":12345678901234567890}`, `{"n":12345678901234567891}`, `[{"op":"replace","path":"/n","value":12345678901234567891}]`},
		{`{"x":[1,2]}`, `{"x":{"0":1}}`, `[{"op":"replace","path":"/x","value":{"0":1}}]`},
		{`[1]`, `{}`, `[{"op":"replace","path":"","value":{}}]`},
		{`{"a/b":1,"c~d":2}`, `{"a/b":3,"c~d":4}`, `[{"op":"replace","path":"/a~1b","value":3},{"op":"replace","path":"/c~0d","value":4}]`},
		{`{"items":[1,2,3]}`, `{"items":[1,2,3,4]}`, `[{"op":"add","path":"/items/3","value":4}]`},
		{`{"items":[1,2,3]}`, `{"items":[0,1,2,3]}`, `[{"op":"add","path":"/items/0","value":0}]`},
		{`{"items":[1,2,3]}`, `{"items":[1,3]}`, `[{"op":"remove","path":"/items/1"}]`},
		{`{"items":[1,2,3,4,5]}`, `{"items":[1,5]}`, `[{"op":"remove","path":"/items/1"},{"op":"remove","path":"/items/1"},{"op":"remove","path":"/items/1"}]`},
		{`{"items":[{"t":"a","done":false},{"t":"b","done":false}]}`, `{"items":[{"t":"a","done":false},{"t":"b","done":true}]}`, `[{"op":"replace","path":"/items/1/done","value":true}]`},
		{`{"items":[1,2,3]}`, `{"items":[9,8]}`, `[{"op":"replace","path":"/items/0","value":9},{"op":"replace","path":"/items/1","value":8},{"op":"remove","path":"/items/2"}]`},
		{`{"items":[]}`, `{"items":[[1],{"a":"\u00e9"}]}`, `[{"op":"add","path":"/items/0","value":[1]},{"op":"add","path":"/items/1","value":{"a":"\u00e9"}}]`},
		{`{"s":"a"}`, `{"s":"<b>"}`, `[{"op":"replace","path":"/s","value":"\u003cb\u003e"}]`},
	} {
		if got := checkDiff(t, tc.a, tc.b); got != tc.want {
			t.Errorf("diff %s -> %s:\n got %s\nwant %s", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestDiffJSONRejectsInvalidInput(t *testing.T) {
	for _, tc := range [][2]string{
		{`{`, `{}`}, {`{}`, `{"a":}`}, {`{} {}`, `{}`}, {`{}`, ``},
		{`[1]`, `[1,]`}, {`[1]`, `[1 2]`}, {`{"a":1}`, `{"a" 1}`}, {`{"a":1}`, `{1:2}`},
		{`{"a":"x"}`, `{"a":"x}`}, {`[[1]]`, `[[1]`}, {`{"a":1}`, `{"a":1,}`}, {`{"a":1}`, `{"a":[1}`},
	} {
		if _, err := diffJSON([]byte(tc[0]), []byte(tc[1])); err == nil {
			t.Errorf("diff %q -> %q: no error", tc[0], tc[1])
		}
	}
}

// TestDiffJSONLongList checks that one change to a list of 1,000 items
// costs one small operation.
func TestDiffJSONLongList(t *testing.T) {
	list := func(change func(items []map[string]any) []map[string]any) string {
		items := make([]map[string]any, 1000)
		for i := range items {
			items[i] = map[string]any{"text": fmt.Sprintf("item number %d", i), "done": false}
		}
		b, _ := json.Marshal(map[string]any{"items": change(items)})
		return string(b)
	}
	before := list(func(items []map[string]any) []map[string]any { return items })
	for _, tc := range []struct {
		name   string
		change func(items []map[string]any) []map[string]any
		ops    int
	}{
		{"toggle", func(items []map[string]any) []map[string]any { items[500]["done"] = true; return items }, 1},
		{"remove", func(items []map[string]any) []map[string]any { return slices.Delete(items, 10, 11) }, 1},
		{"append", func(items []map[string]any) []map[string]any {
			return append(items, map[string]any{"text": "new", "done": false})
		}, 1},
		{"toggle and remove", func(items []map[string]any) []map[string]any {
			items[500]["done"] = true
			return slices.Delete(items, 10, 11)
		}, 2},
		{"remove three apart", func(items []map[string]any) []map[string]any {
			items = slices.Delete(items, 900, 901)
			items = slices.Delete(items, 500, 501)
			return slices.Delete(items, 100, 101)
		}, 3},
		{"insert two apart", func(items []map[string]any) []map[string]any {
			items = slices.Insert(items, 700, map[string]any{"text": "b"})
			return slices.Insert(items, 200, map[string]any{"text": "a"})
		}, 2},
	} {
		after := list(tc.change)
		patch := checkDiff(t, before, after)
		var ops []patchOp
		if err := json.Unmarshal([]byte(patch), &ops); err != nil {
			t.Fatal(err)
		}
		if len(ops) != tc.ops {
			t.Errorf("%s: %d operations, want %d: %.300s", tc.name, len(ops), tc.ops, patch)
		}
	}
}

// TestDiffJSONManyEditsFallsBack checks that lists too different for the
// edit script still get a correct patch.
func TestDiffJSONManyEditsFallsBack(t *testing.T) {
	a, b := make([]int, 300), make([]int, 200)
	for i := range a {
		a[i] = i
	}
	for i := range b {
		b[i] = 1000 + i*7
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	checkDiff(t, string(ja), string(jb))
	if _, ok := editScript(rawList("1", "2", "3"), rawList("4", "5", "6", "7"), 3); ok {
		t.Error("editScript found 7 edits within a limit of 3")
	}
}

func FuzzDiffJSON(f *testing.F) {
	for _, seed := range [][2]string{
		{`{"count":1}`, `{"count":2}`},
		{`{"items":[1,2,3]}`, `{"items":[3,2,1,0]}`},
		{`{"a":{"b":[{"c":1}]}}`, `{"a":{"b":[{"c":1},{"d":null}]}}`},
		{`[1,[2,[3]]]`, `[[2,[3,4]],1]`},
		{`"x"`, `{"~/":true}`},
	} {
		f.Add([]byte(seed[0]), []byte(seed[1]))
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		if _, err := decodeValue(a); err != nil {
			return
		}
		if _, err := decodeValue(b); err != nil {
			return
		}
		checkDiff(t, string(a), string(b))
	})
}

// follow applies a state or patch message to the client's copy of one
// component and returns the new copy, failing on a patch that does not
// apply to the version it names.
func follow(t *testing.T, have map[string]any, msg map[string]any) map[string]any {
	t.Helper()
	switch msg["type"] {
	case TypeState:
		return map[string]any{"version": msg["version"], "state": msg["state"]}
	case TypePatch:
		if have == nil || have["version"] != msg["base"] {
			t.Fatalf("patch on base %v, but the client has version %v", msg["base"], have["version"])
		}
		doc, _ := json.Marshal(have["state"])
		patch, _ := json.Marshal(msg["patch"])
		next, err := applyPatch(doc, patch)
		if err != nil {
			t.Fatalf("patch %s does not apply to %s: %v", patch, doc, err)
		}
		b, _ := json.Marshal(next)
		var state map[string]any
		_ = json.Unmarshal(b, &state)
		return map[string]any{"version": msg["version"], "state": state}
	}
	t.Fatalf("want state or patch, got %v", msg)
	return nil
}

// storedState returns the committed state of a session, decoded.
func storedState(t *testing.T, h *harness, id string) map[string]any {
	t.Helper()
	sess, err := h.store.GetSession(id)
	if err != nil {
		t.Fatal(err)
	}
	var state map[string]any
	if err := json.Unmarshal(sess.State, &state); err != nil {
		t.Fatal(err)
	}
	return state
}

func TestPatchFeature(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	r, _ := c.do(map[string]any{"type": "hello", "features": []any{"compress", "patch", "patch"}})
	if got := fmt.Sprint(r["features"]); got != "[patch]" {
		t.Fatalf("welcome features = %s, want [patch]", got)
	}
	m := c.mount(nil)
	id := m["id"].(string)
	have := follow(t, nil, m)
	for i := range 5 {
		reply, others := c.do(map[string]any{"type": "call", "id": id, "action": "push", "args": []any{}})
		if reply["type"] != TypePatch || reply["base"] != float64(i+1) || reply["version"] != float64(i+2) {
			t.Fatalf("push %d: want a patch from version %d, got %v", i, i+1, reply)
		}
		if _, ok := reply["fingerprint"]; ok || len(others) != 0 {
			t.Fatalf("push %d: patch carries a fingerprint or extra messages: %v %v", i, reply, others)
		}
		have = follow(t, have, reply)
	}
	reply, others := c.do(map[string]any{"type": "call", "id": id, "action": "inc", "args": []any{}})
	have = follow(t, have, reply)
	if reply["type"] != TypePatch || reply["result"] != float64(1) || len(others) != 1 || others[0]["type"] != TypeEvent {
		t.Fatalf("inc: want a patch with its result, then the event; got %v, %v", reply, others)
	}
	if !reflect.DeepEqual(have["state"], storedState(t, h, id)) {
		t.Fatalf("patched state %v differs from the stored %v", have["state"], storedState(t, h, id))
	}

	// Reversing the list changes every element, so the full state is
	// smaller than the patch and is sent instead.
	reply = c.call(id, "reverse")
	if reply["type"] != TypeState {
		t.Fatalf("reverse: want the full state, got %v", reply)
	}
	have = follow(t, have, reply)
	// A failed call sends an error and no patch; the next patch still
	// applies to the last version the client got.
	wantError(t, c.call(id, "fail"), CodeActionFailed, false)
	have = follow(t, have, c.call(id, "push"))
	if !reflect.DeepEqual(have["state"], storedState(t, h, id)) {
		t.Fatalf("patched state %v differs from the stored %v", have["state"], storedState(t, h, id))
	}

	// A client without the feature gets full states, also for the same
	// component after moving it over.
	plain := h.connect()
	if w := plain.hello(r["token"].(string)); fmt.Sprint(w["features"]) != "[]" {
		t.Fatalf("welcome without features lists %v", w["features"])
	}
	if got := plain.hydrate(id, m["fingerprint"].(string)); got["type"] != TypeState {
		t.Fatalf("hydrate: got %v", got)
	}
	if got := plain.call(id, "push"); got["type"] != TypeState {
		t.Fatalf("call without the patch feature: got %v", got)
	}

	// Back on the first connection, hydrate sends the full state and later
	// calls patch from its version.
	back := c.hydrate(id, m["fingerprint"].(string))
	if back["type"] != TypeState {
		t.Fatalf("hydrate back: got %v", back)
	}
	have = follow(t, nil, back)
	have = follow(t, have, c.call(id, "push"))
	if !reflect.DeepEqual(have["state"], storedState(t, h, id)) {
		t.Fatalf("patched state %v differs from the stored %v", have["state"], storedState(t, h, id))
	}
}

func TestPatchFeatureBadHello(t *testing.T) {
	h := newHarness(t)
	many := make([]any, maxFeatures+1)
	for i := range many {
		many[i] = fmt.Sprintf("f%d", i)
	}
	for _, tc := range []struct {
		features any
		code     string
	}{
		{"patch", CodeBadJSON},
		{[]any{1}, CodeBadJSON},
		{map[string]any{"patch": true}, CodeBadJSON},
		{many, CodeBadArgs},
	} {
		c := h.connect()
		r, _ := c.do(map[string]any{"type": "hello", "features": tc.features})
		wantError(t, r, tc.code, false)
		// The connection can still say hello properly.
		if w := c.hello(""); w["clientId"] == "" {
			t.Fatalf("hello after a bad one: %v", w)
		}
	}
}

func rawList(values ...string) []json.RawMessage {
	out := make([]json.RawMessage, len(values))
	for i, v := range values {
		out[i] = json.RawMessage(v)
	}
	return out
}
