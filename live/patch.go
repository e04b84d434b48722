package live

import (
	"bytes"
	"encoding/json"
	"fmt"
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
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value"` // absent for remove, see MarshalJSON
}

// MarshalJSON leaves out value for remove.
func (op patchOp) MarshalJSON() ([]byte, error) {
	if op.Op == "remove" {
		return json.Marshal(struct {
			Op   string `json:"op"`
			Path string `json:"path"`
		}{op.Op, op.Path})
	}
	type withValue patchOp // the same fields without this method
	return json.Marshal(withValue(op))
}

// diffJSON returns the JSON Patch that turns document a into document b.
// Objects are compared key by key. Arrays keep their common head and tail
// and change only the part between, so adding, removing or editing one
// element of a long list yields one operation.
//
// Values are compared by their bytes, without decoding them: the states
// come from encoding/json, which writes equal values as equal bytes. For
// other valid JSON the patch is still correct, only longer than it could
// be. Input that is not valid JSON gets an error or, where only a literal
// is misspelled, a patch that does not encode.
func diffJSON(a, b []byte) ([]patchOp, error) {
	a, b = bytes.TrimSpace(a), bytes.TrimSpace(b)
	if err := wholeValue(a); err != nil {
		return nil, fmt.Errorf("old state: %w", err)
	}
	if err := wholeValue(b); err != nil {
		return nil, fmt.Errorf("new state: %w", err)
	}
	var ops []patchOp
	if err := diffValue(&ops, "", a, b); err != nil {
		return nil, err
	}
	return ops, nil
}

// diffValue appends the operations that turn a into b, two valid JSON
// values without surrounding space, at path.
func diffValue(ops *[]patchOp, path string, a, b json.RawMessage) error {
	if bytes.Equal(a, b) {
		return nil
	}
	switch {
	case a[0] == '{' && b[0] == '{':
		ma, err := splitObject(a)
		if err != nil {
			return fmt.Errorf("old object at %q: %w", path, err)
		}
		mb, err := splitObject(b)
		if err != nil {
			return fmt.Errorf("new object at %q: %w", path, err)
		}
		return diffObject(ops, path, ma, mb)
	case a[0] == '[' && b[0] == '[':
		la, err := splitArray(a)
		if err != nil {
			return fmt.Errorf("old array at %q: %w", path, err)
		}
		lb, err := splitArray(b)
		if err != nil {
			return fmt.Errorf("new array at %q: %w", path, err)
		}
		return diffArray(ops, path, la, lb)
	}
	*ops = append(*ops, patchOp{Op: "replace", Path: path, Value: b})
	return nil
}

func diffObject(ops *[]patchOp, path string, a, b map[string]json.RawMessage) error {
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
			if err := diffValue(ops, p, av, bv); err != nil {
				return err
			}
		}
	}
	return nil
}

func diffArray(ops *[]patchOp, path string, a, b []json.RawMessage) error {
	head := 0
	for head < len(a) && head < len(b) && bytes.Equal(a[head], b[head]) {
		head++
	}
	tail := 0
	for tail < len(a)-head && tail < len(b)-head && bytes.Equal(a[len(a)-1-tail], b[len(b)-1-tail]) {
		tail++
	}
	oldMid, newMid := a[head:len(a)-tail], b[head:len(b)-tail]
	var kept []edit
	if len(oldMid) != len(newMid) && len(oldMid) > 0 && len(newMid) > 0 {
		kept, _ = editScript(oldMid, newMid, maxEdits)
	}
	return diffEdits(ops, path, head, oldMid, newMid, kept)
}

// maxEdits bounds the insertions and deletions editScript looks for, and so
// its time, which grows with the list length times this.
const maxEdits = 64

// diffEdits appends the operations that turn oldMid into newMid, which start
// at index head of the array at path. kept lists the elements that stay.
// Between two of them, deleted and inserted elements are paired and diffed
// in place, and the rest are removed or added. With nothing kept, the lists
// are paired from the start.
func diffEdits(ops *[]patchOp, path string, head int, oldMid, newMid []json.RawMessage, kept []edit) error {
	pos := head // the array's elements before pos already match the new list
	i, j := 0, 0
	flush := func(oldEnd, newEnd int) error {
		for ; i < oldEnd && j < newEnd; i, j = i+1, j+1 {
			if err := diffValue(ops, path+"/"+strconv.Itoa(pos), oldMid[i], newMid[j]); err != nil {
				return err
			}
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
		return nil
	}
	for _, e := range kept {
		if err := flush(e.old, e.new); err != nil {
			return err
		}
		i, j = e.old+1, e.new+1
		pos++
	}
	return flush(len(oldMid), len(newMid))
}

// edit is one element kept by editScript: old[old] equals new[new].
type edit struct{ old, new int }

// editScript finds a shortest edit script from a to b with at most maxD
// insertions and deletions, after E. Myers, "An O(ND) difference algorithm
// and its variations" (1986). It returns the kept elements in order, or
// false when more edits would be needed.
func editScript(a, b []json.RawMessage, maxD int) ([]edit, bool) {
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
			for x < n && y < m && bytes.Equal(a[x], b[y]) {
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
