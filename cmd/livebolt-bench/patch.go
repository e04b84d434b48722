package main

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"time"
)

// PatchResult compares the bytes the server sends for changes to a long
// todo list, as full states and as patches.
type PatchResult struct {
	Items int        `json:"items"`
	Rows  []PatchRow `json:"rows"`
	Notes []string   `json:"notes"`
}

// PatchRow is one kind of change, made the same number of times by both
// clients, alternating.
type PatchRow struct {
	Operation    string  `json:"operation"`
	Calls        int     `json:"calls"`
	FullBytes    float64 `json:"fullBytesPerCall"`
	PatchBytes   float64 `json:"patchBytesPerCall"`
	Ratio        float64 `json:"patchToFull"`
	FullP50Ms    float64 `json:"fullP50Ms"`
	PatchP50Ms   float64 `json:"patchP50Ms"`
	FullTotalKiB float64 `json:"fullTotalKiB"`
}

// patchSide is one of the two clients with its measurements per operation.
type patchSide struct {
	c     *liveClient
	id    string
	bytes map[string]int64
	times map[string][]time.Duration
}

// runPatch mounts a todo list on two clients, one that requests patches and
// one that does not, fills both to cfg.patchItems items and then makes the
// same changes on both, alternating, counting the bytes of every frame the
// server sends back.
func runPatch(cfg *config, dir string) (*PatchResult, error) {
	opts := newLiveOptions(filepath.Join(dir, "patch"))
	opts.NoSync = true
	srv, err := startLive(opts)
	if err != nil {
		return nil, err
	}
	defer func() { _ = srv.stop() }()

	sides := map[string]*patchSide{}
	for _, name := range []string{"full", "patch"} {
		c, err := dialLive(srv.addr)
		if err != nil {
			return nil, err
		}
		defer c.close()
		var features []string
		if name == "patch" {
			features = []string{"patch"}
		}
		if err := c.hello("", features...); err != nil {
			return nil, err
		}
		r, err := c.request(map[string]any{"type": "mount", "component": "todo", "key": name}, requestTimeout)
		if err != nil {
			return nil, fmt.Errorf("mount a todo list: %w", err)
		}
		sides[name] = &patchSide{c: c, id: r.ID, bytes: map[string]int64{}, times: map[string][]time.Duration{}}
	}
	progress("patch: filling two todo lists with %d items", cfg.patchItems)
	for i := range cfg.patchItems {
		for _, s := range sides {
			if _, err := s.call("fill", "add", todoText(i)); err != nil {
				return nil, err
			}
		}
	}

	// Both clients make the same changes: the random numbers are drawn once
	// per change and used for both.
	rng := rand.New(rand.NewPCG(7, 11))
	ops := []string{"toggle", "add", "remove"}
	for i := range cfg.patchCalls {
		op := ops[i%len(ops)]
		var args []any
		switch op {
		case "toggle":
			args = []any{rng.IntN(cfg.patchItems)}
		case "add":
			args = []any{todoText(cfg.patchItems + i)}
		case "remove":
			args = []any{rng.IntN(cfg.patchItems)}
		}
		order := []string{"full", "patch"}
		if i%2 == 1 {
			order = []string{"patch", "full"}
		}
		for _, name := range order {
			if _, err := sides[name].call(op, op, args...); err != nil {
				return nil, err
			}
		}
	}

	res := &PatchResult{Items: cfg.patchItems, Notes: []string{
		"both clients mount a todo list and add the same items; \"patch\" lists the patch feature in hello, \"full\" does not",
		"bytes count every frame the server sends for a call, event frames included; the list stays near its size because adds and removes alternate",
		"store: bbolt without fsync (only bytes and server time per call are compared)",
	}}
	for _, op := range ops {
		full, patch := sides["full"], sides["patch"]
		n := len(full.times[op])
		row := PatchRow{
			Operation: op, Calls: n,
			FullBytes:    float64(full.bytes[op]) / float64(n),
			PatchBytes:   float64(patch.bytes[op]) / float64(n),
			FullP50Ms:    ms(median(full.times[op])),
			PatchP50Ms:   ms(median(patch.times[op])),
			FullTotalKiB: float64(full.bytes[op]) / 1024,
		}
		row.Ratio = row.PatchBytes / row.FullBytes
		res.Rows = append(res.Rows, row)
	}
	return res, nil
}

// call runs one todo action and records its bytes and round trip under op.
func (s *patchSide) call(op, action string, args ...any) (*reply, error) {
	if args == nil {
		args = []any{}
	}
	before := s.c.received
	start := time.Now()
	r, err := s.c.request(map[string]any{"type": "call", "id": s.id, "action": action, "args": args}, requestTimeout)
	if err != nil {
		return nil, fmt.Errorf("todo %s: %w", action, err)
	}
	s.times[op] = append(s.times[op], time.Since(start))
	s.bytes[op] += s.c.received - before
	return r, nil
}

// todoText is the text of item i, about as long as a short task.
func todoText(i int) string {
	return fmt.Sprintf("task %d: water the plants on the balcony", i)
}
