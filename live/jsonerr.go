package live

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// describeJSONError rewrites an encoding/json error in the protocol's terms,
// without Go type names, for error messages sent to clients.
func describeJSONError(err error) string {
	var syntax *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax) && strings.Contains(syntax.Error(), "unexpected end"):
		return "incomplete JSON"
	case errors.As(err, &syntax):
		return fmt.Sprintf("invalid JSON at byte %d", syntax.Offset)
	case errors.As(err, &typeErr):
		kind := jsonKind(typeErr.Type)
		if strings.HasPrefix(typeErr.Value, "number") {
			// A number refused for an integer is a fraction or out of range.
			kind += integerRange(typeErr.Type)
		}
		if typeErr.Field == "" {
			return fmt.Sprintf("value must be %s, not %s", kind, typeErr.Value)
		}
		return fmt.Sprintf("field %q must be %s, not %s", typeErr.Field, kind, typeErr.Value)
	}
	msg := err.Error()
	if field, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return "unknown field " + field
	}
	return strings.TrimPrefix(msg, "json: ")
}

// integerRange returns " from MIN to MAX" for an integer type, to explain
// why a number was refused, and "" for any other type.
func integerRange(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		bits := t.Bits()
		return fmt.Sprintf(" from %d to %d", -(int64(1) << (bits - 1)), int64(uint64(1)<<(bits-1)-1))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return fmt.Sprintf(" from 0 to %d", uint64(1)<<t.Bits()-1)
	}
	return ""
}

// jsonKind names the JSON value that decodes into t.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	case reflect.Interface:
		return "a value of another kind"
	default:
		return "an object"
	}
}
