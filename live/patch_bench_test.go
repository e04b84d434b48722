package live

import (
	"encoding/json"
	"fmt"
	"testing"
)

// BenchmarkDiffTodo1000 diffs a todo list of 1,000 items before and after
// one item is toggled, the change behind one patch reply.
func BenchmarkDiffTodo1000(b *testing.B) {
	type item struct {
		Text string `json:"text"`
		Done bool   `json:"done"`
	}
	items := make([]item, 1000)
	for i := range items {
		items[i] = item{Text: fmt.Sprintf("task %d: water the plants on the balcony", i)}
	}
	before, _ := json.Marshal(map[string]any{"items": items})
	items[500].Done = true
	after, _ := json.Marshal(map[string]any{"items": items})
	b.SetBytes(int64(len(before)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := diffJSON(before, after); err != nil {
			b.Fatal(err)
		}
	}
}
