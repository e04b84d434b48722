package live

import (
	"encoding/json"
	"errors"
	"fmt"
)

// The functions below split JSON text into the members of one object or
// the elements of one array without decoding the values, for diffJSON.
// They find where each value ends by counting brackets outside strings,
// which is several times faster than encoding/json's Unmarshal into
// json.RawMessage, and they check only that structure: a misspelled literal
// inside a value goes through unnoticed. Their input is the output of
// encoding/json.

var errUnterminated = errors.New("unterminated JSON value")

// isSpace reports JSON's insignificant white space.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// stringEnd returns the index just past the string that starts at b[i].
func stringEnd(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errUnterminated
}

// valueEnd returns the index just past the value that starts at b[i].
func valueEnd(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errors.New("missing JSON value")
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, err := stringEnd(b, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errUnterminated
	}
	j := i
	for j < len(b) && !isSpace(b[j]) && b[j] != ',' && b[j] != ']' && b[j] != '}' && b[j] != ':' {
		j++
	}
	if j == i {
		return 0, fmt.Errorf("missing JSON value at byte %d", i)
	}
	return j, nil
}

// wholeValue checks that b, without surrounding space, is one value.
func wholeValue(b []byte) error {
	end, err := valueEnd(b, 0)
	if err != nil {
		return err
	}
	if end != len(b) {
		return fmt.Errorf("data after the JSON value at byte %d", end)
	}
	return nil
}

// splitArray returns the elements of the array b.
func splitArray(b []byte) ([]json.RawMessage, error) {
	var elems []json.RawMessage
	i := skipSpace(b, 1)
	if i < len(b) && b[i] == ']' && i == len(b)-1 {
		return elems, nil
	}
	for {
		end, err := valueEnd(b, i)
		if err != nil {
			return nil, err
		}
		elems = append(elems, b[i:end])
		i = skipSpace(b, end)
		switch {
		case i < len(b) && b[i] == ',':
			i = skipSpace(b, i+1)
		case i == len(b)-1 && b[i] == ']':
			return elems, nil
		default:
			return nil, fmt.Errorf("expected , or ] at byte %d of an array", i)
		}
	}
}

// splitObject returns the members of the object b by key.
func splitObject(b []byte) (map[string]json.RawMessage, error) {
	members := map[string]json.RawMessage{}
	i := skipSpace(b, 1)
	if i < len(b) && b[i] == '}' && i == len(b)-1 {
		return members, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return nil, fmt.Errorf("expected a key at byte %d of an object", i)
		}
		keyEnd, err := stringEnd(b, i)
		if err != nil {
			return nil, err
		}
		var key string
		if err := json.Unmarshal(b[i:keyEnd], &key); err != nil {
			return nil, fmt.Errorf("key at byte %d: %w", i, err)
		}
		i = skipSpace(b, keyEnd)
		if i >= len(b) || b[i] != ':' {
			return nil, fmt.Errorf("expected : at byte %d of an object", i)
		}
		i = skipSpace(b, i+1)
		end, err := valueEnd(b, i)
		if err != nil {
			return nil, err
		}
		members[key] = b[i:end]
		i = skipSpace(b, end)
		switch {
		case i < len(b) && b[i] == ',':
			i = skipSpace(b, i+1)
		case i == len(b)-1 && b[i] == '}':
			return members, nil
		default:
			return nil, fmt.Errorf("expected , or } at byte %d of an object", i)
		}
	}
}
