package live

import (
	"bytes"
	"encoding/json"
	"errors"
)

// Validator is implemented by action argument types that check their own
// values. Typed calls Validate after decoding; an error from it is sent to
// the client as bad_args with its message.
type Validator interface {
	Validate() error
}

// NoArgs adapts fn into an ActionFunc for an action that takes no
// arguments. A call with any argument gets bad_args before fn runs.
//
//	Action("reset", live.NoArgs(func(ctx *live.Context, s *State) (any, error) {
//		s.Count = 0
//		return nil, nil
//	}))
func NoArgs[S any](fn func(ctx *Context, state *S) (any, error)) ActionFunc[S] {
	return func(ctx *Context, state *S, args Args) (any, error) {
		if err := args.Want(0); err != nil {
			return nil, err
		}
		return fn(ctx, state)
	}
}

// Typed adapts fn into an ActionFunc whose single argument is decoded into
// A before fn runs, so that fn never handles JSON. A may be any type that
// encoding/json decodes: a number, a string or a slice is sent as it is
// (call("add", "milk")), and a struct as one JSON object whose unknown
// fields are rejected (call("move", {"from": 1, "to": 3})). A missing,
// extra or null argument, a value of the wrong type and an error from A's
// Validate method are all answered with bad_args, and the state is left
// unchanged. Inside the argument, encoding/json's rules apply: a null
// field or element is left at its zero value, and field names match
// without regard to case. Use a pointer field, or Validate, where a
// missing or null value must be told apart from zero.
func Typed[S, A any](fn func(ctx *Context, state *S, arg A) (any, error)) ActionFunc[S] {
	return func(ctx *Context, state *S, args Args) (any, error) {
		if err := args.Want(1); err != nil {
			return nil, err
		}
		arg, err := decodeArg[A](args[0])
		if err != nil {
			return nil, err
		}
		return fn(ctx, state, arg)
	}
}

// decodeArg decodes one argument into A, strictly, and validates it.
func decodeArg[A any](raw json.RawMessage) (A, error) {
	var arg A
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return arg, BadArgs("argument 0 is null")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&arg); err != nil {
		return arg, BadArgs("invalid argument 0: %s", describeJSONError(err))
	}
	var v any = arg
	if _, ok := v.(Validator); !ok {
		v = &arg // Validate may have a pointer receiver
	}
	if val, ok := v.(Validator); ok {
		if err := val.Validate(); err != nil {
			if errors.Is(err, ErrBadArgs) {
				return arg, err
			}
			return arg, BadArgs("%s", err.Error())
		}
	}
	return arg, nil
}
