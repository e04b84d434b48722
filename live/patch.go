package live

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// FeaturePatch is the hello feature with which a client asks for state
// changes as JSON Patch (RFC 6902) documents instead of full states.
const FeaturePatch = "patch"

// maxFeatures bounds the feature names one hello may list.
const maxFeatures = 16

// patchOp is one JSON Patch operation. diffJSON emits only add, remove and
// replace.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"` // absent for remove, see MarshalJSON
}

// MarshalJSON writes value for add and replace even when it is null, and
// never for remove.
func (op patchOp) MarshalJSON() ([]byte, error) {
	type plain struct {
		Op   string `json:"op"`
		Path string `json:"path"`
	}
	if op.Op == "remove" {
		return json.Marshal(plain{op.Op, op.Path})
	}
	type withValue patchOp // the same fields without this method
	return json.Marshal(withValue(op))
}

// diffJSON returns the JSON Patch that turns document a into document b.
// Both must be valid JSON. Objects are compared key by key; arrays keep
// their common head and tail and change only the part between, so adding,
// removing or editing one element of a long list yields one operation.
func diffJSON(a, b []byte) ([]patchOp, error) {
	if bytes.Equal(a, b) {
		return nil, nil
	}
	va, err := decodeValue(a)
	if err != nil {
		return nil, fmt.Errorf("decode old state: %w", err)
	}
	vb, err := decodeValue(b)
	if err != nil {
		return nil, fmt.Errorf("decode new state: %w", err)
	}
	var ops []patchOp
	diffValue(&ops, "", va, vb)
	return ops, nil
}

// decodeValue parses JSON keeping numbers as written, so that no number
// changes through a float64.
func decodeValue(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("data after the JSON value at offset %d", dec.InputOffset())
	}
	return v, nil
}

func diffValue(ops *[]patchOp, path string, a, b any) {
	switch av := a.(type) {
	case map[string]any:
		if bv, ok := b.(map[string]any); ok {
			diffObject(ops, path, av, bv)
			return
		}
	case []any:
		if bv, ok := b.([]any); ok {
			diffArray(ops, path, av, bv)
			return
		}
	}
	if !reflect.DeepEqual(a, b) {
		*ops = append(*ops, patchOp{Op: "replace", Path: path, Value: b})
	}
}

func diffObject(ops *[]patchOp, path string, a, b map[string]any) {
	// Sorted keys make the patch the same for the same change every time.
	keys := make([]string, 0, len(a)+len(b))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		av, inA := a[k]
		bv, inB := b[k]
		p := path + "/" + escapePointer(k)
		switch {
		case !inB:
			*ops = append(*ops, patchOp{Op: "remove", Path: p})
		case !inA:
			*ops = append(*ops, patchOp{Op: "add", Path: p, Value: bv})
		default:
			diffValue(ops, p, av, bv)
		}
	}
}

func diffArray(ops *[]patchOp, path string, a, b []any) {
	head := 0
	for head < len(a) && head < len(b) && reflect.DeepEqual(a[head], b[head]) {
		head++
	}
	tail := 0
	for tail < len(a)-head && tail < len(b)-head && reflect.DeepEqual(a[len(a)-1-tail], b[len(b)-1-tail]) {
		tail++
	}
	oldMid, newMid := a[head:len(a)-tail], b[head:len(b)-tail]
	if len(oldMid) != len(newMid) && len(oldMid) > 0 && len(newMid) > 0 {
		if edits, ok := editScript(encodeAll(oldMid), encodeAll(newMid), maxEdits); ok {
			diffEdits(ops, path, head, oldMid, newMid, edits)
			return
		}
	}
	diffEdits(ops, path, head, oldMid, newMid, nil)
}

// maxEdits bounds the insertions and deletions editScript looks for, and so
// its time, which grows with the list length times this.
const maxEdits = 64

// diffEdits appends the operations that turn oldMid into newMid, which start
// at index head of the array at path. Between two kept elements, deleted
// and inserted elements are paired and diffed in place; the rest are
// removed or added. With no edits, the lists are paired from the start.
func diffEdits(ops *[]patchOp, path string, head int, oldMid, newMid []any, edits []edit) {
	pos := head // the array's elements before pos already match the new list
	i, j := 0, 0
	flush := func(oldEnd, newEnd int) {
		for ; i < oldEnd && j < newEnd; i, j = i+1, j+1 {
			diffValue(ops, path+"/"+strconv.Itoa(pos), oldMid[i], newMid[j])
			pos++
		}
		// Each removal shifts the rest left, so all remove the same index.
		for ; i < oldEnd; i++ {
			*ops = append(*ops, patchOp{Op: "remove", Path: path + "/" + strconv.Itoa(pos)})
		}
		for ; j < newEnd; j++ {
			*ops = append(*ops, patchOp{Op: "add", Path: path + "/" + strconv.Itoa(pos), Value: newMid[j]})
			pos++
		}
	}
	for _, e := range edits {
		flush(e.old, e.new)
		i, j = e.old+1, e.new+1
		pos++
	}
	flush(len(oldMid), len(newMid))
}

// edit is one element kept by editScript: old[old] equals new[new].
type edit struct{ old, new int }

// encodeAll returns the JSON encoding of each value, to compare elements as
// strings. encoding/json sorts object keys, so equal values encode equally.
func encodeAll(values []any) []string {
	keys := make([]string, len(values))
	for i, v := range values {
		b, err := json.Marshal(v)
		if err != nil {
			// Decoded JSON always encodes again; make the element unique.
			b = []byte(fmt.Sprintf("\x00%d", i))
		}
		keys[i] = string(b)
	}
	return keys
}

// editScript finds a shortest edit script from a to b with at most maxD
// insertions and deletions, after E. Myers, "An O(ND) difference algorithm
// and its variations" (1986). It returns the kept elements in order, or
// false when more edits would be needed.
func editScript(a, b []string, maxD int) ([]edit, bool) {
	n, m := len(a), len(b)
	off := maxD + 1
	v := make([]int, 2*maxD+3)
	var trace [][]int
	for d := 0; d <= maxD; d++ {
		trace = append(trace, slices.Clone(v))
		for k := -d; k <= d; k += 2 {
			var x int
			if k == -d || (k != d && v[off+k-1] < v[off+k+1]) {
				x = v[off+k+1] // down: an insertion
			} else {
				x = v[off+k-1] + 1 // right: a deletion
			}
			y := x - k
			for x < n && y < m && a[x] == b[y] {
				x, y = x+1, y+1
			}
			v[off+k] = x
			if x >= n && y >= m {
				return backtrack(trace, off, n, m), true
			}
		}
	}
	return nil, false
}

// backtrack walks the saved frontiers of editScript back from the end and
// returns the kept elements in order.
func backtrack(trace [][]int, off, x, y int) []edit {
	var kept []edit
	for d := len(trace) - 1; d > 0; d-- {
		v := trace[d]
		k := x - y
		prevK := k - 1
		if k == -d || (k != d && v[off+k-1] < v[off+k+1]) {
			prevK = k + 1
		}
		prevX := v[off+prevK]
		prevY := prevX - prevK
		// The edit of step d ends at (xMid, xMid-k); a run of kept
		// elements leads from there to (x, y).
		xMid := prevX
		if prevK == k-1 {
			xMid++
		}
		for x > xMid {
			x, y = x-1, y-1
			kept = append(kept, edit{x, y})
		}
		x, y = prevX, prevY
	}
	for x > 0 && y > 0 {
		x, y = x-1, y-1
		kept = append(kept, edit{x, y})
	}
	slices.Reverse(kept)
	return kept
}

// escapePointer escapes one JSON Pointer (RFC 6901) reference token.
func escapePointer(token string) string {
	if !strings.ContainsAny(token, "~/") {
		return token
	}
	return strings.ReplaceAll(strings.ReplaceAll(token, "~", "~0"), "/", "~1")
}
