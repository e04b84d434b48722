package app

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/livebolt/livebolt/live"
)

// Three shapes of one "tally" component, as three releases would ship it.
type (
	tallyShape1 struct {
		Count int `json:"count"`
	}
	tallyShape2 struct {
		Total int `json:"total"`
		Step  int `json:"step"`
	}
	tallyShape3 struct {
		Total int   `json:"total"`
		Steps []int `json:"steps"`
	}
)

func registerTally1(r *live.Registry) error {
	return r.Register(live.Define("tally", func(live.Props) (tallyShape1, error) { return tallyShape1{}, nil }).
		Action("add", func(_ *live.Context, s *tallyShape1, args live.Args) (any, error) {
			n, err := args.Int(0)
			s.Count += n
			return nil, err
		}).
		StateVersion(1, nil))
}

func registerTally2(r *live.Registry) error {
	return r.Register(live.Define("tally", func(live.Props) (tallyShape2, error) { return tallyShape2{Step: 1}, nil }).
		Action("add", func(_ *live.Context, s *tallyShape2, _ live.Args) (any, error) {
			s.Total += s.Step
			return nil, nil
		}).
		StateVersion(2, func(from uint32, old json.RawMessage) (tallyShape2, error) {
			var v1 tallyShape1
			err := json.Unmarshal(old, &v1)
			return tallyShape2{Total: v1.Count, Step: 1}, err
		}))
}

func registerTally3(r *live.Registry) error {
	return r.Register(live.Define("tally", func(live.Props) (tallyShape3, error) { return tallyShape3{}, nil }).
		StateVersion(3, nil))
}

// stopServer shuts s down now, so the next run can open its database.
func stopServer(t *testing.T, s *testServer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

func TestStateShapeChangesBetweenRuns(t *testing.T) {
	dir := t.TempDir()

	// Run 1 mounts the first shape and commits a call.
	run1 := startServer(t, Options{DataDir: dir, Register: registerTally1})
	c := run1.dial(t, nil)
	token := c.do(map[string]any{"type": "hello"})["token"].(string)
	m := c.do(map[string]any{"type": "mount", "component": "tally"})
	if m["type"] != "state" {
		t.Fatalf("mount: %v", m)
	}
	id, fingerprint := m["id"].(string), m["fingerprint"].(string)
	if r := c.do(map[string]any{"type": "call", "id": id, "action": "add", "args": []any{4}}); r["type"] != "state" {
		t.Fatalf("add: %v", r)
	}
	stopServer(t, run1)

	// Run 2 has the second shape and a migration from the first.
	run2 := startServer(t, Options{DataDir: dir, Register: registerTally2})
	c = run2.dial(t, nil)
	c.do(map[string]any{"type": "hello", "token": token})
	r := c.do(map[string]any{"type": "hydrate", "id": id, "fingerprint": fingerprint})
	if r["type"] != "state" {
		t.Fatalf("hydrate in run 2: %v", r)
	}
	state := r["state"].(map[string]any)
	if state["total"] != float64(4) {
		t.Errorf("migrated total = %v, want 4", state["total"])
	}
	if state["step"] != float64(1) {
		t.Errorf("migrated step = %v, want 1", state["step"])
	}
	if _, ok := state["count"]; ok {
		t.Errorf("migrated state still has count: %v", state)
	}
	r = c.do(map[string]any{"type": "call", "id": id, "action": "add", "args": []any{}})
	if r["type"] != "state" || r["state"].(map[string]any)["total"] != float64(5) {
		t.Errorf("call on the migrated state: %v", r)
	}
	stopServer(t, run2)

	// Run 3 has a third shape and no migration.
	run3 := startServer(t, Options{DataDir: dir, Register: registerTally3})
	c = run3.dial(t, nil)
	c.do(map[string]any{"type": "hello", "token": token})
	r = c.do(map[string]any{"type": "hydrate", "id": id, "fingerprint": fingerprint})
	if r["type"] != "error" || r["code"] != "outdated" {
		t.Fatalf("hydrate in run 3 = %v, want an outdated error", r)
	}
	if r["requiresRefresh"] != true {
		t.Errorf("outdated error without requiresRefresh: %v", r)
	}
	_, st := run3.get(t, "/api/memory/stats")
	rejected, _ := st["hydration"].(map[string]any)["rejected"].(map[string]any)
	if rejected["outdated"] != float64(1) {
		t.Errorf("stats rejected = %v, want outdated 1", rejected)
	}
	wantValue(t, run3.scrape(t), 1, "livebolt_hydrations_total", "result", "outdated")

	// The client mounts the new shape in its place.
	m = c.do(map[string]any{"type": "mount", "component": "tally"})
	if m["type"] != "state" {
		t.Errorf("mount after outdated: %v", m)
	}
}
