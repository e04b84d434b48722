package live

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
)

// Definition describes one component type. Create one with Define; the
// interface has unexported methods so that the engine can rely on how state
// is created, restored and changed.
type Definition interface {
	// Name returns the component type name clients mount by.
	Name() string
	// Actions returns the registered action names, sorted.
	Actions() []string

	mount(props Props) (any, error)
	restore(state json.RawMessage) (any, error)
	stateVersion() uint32
	migrate(from uint32, old json.RawMessage) (any, error)
	hasAction(name string) bool
	call(ctx *Context, state any, action string, args Args) (any, error)
}

// ActionFunc changes a component's state in response to a client call. It
// may return a result, which is sent back with the new state. An error
// wrapping ErrBadArgs is sent as bad_args and any other error as
// action_failed. In both cases the state is rolled back to the last
// committed snapshot.
type ActionFunc[S any] func(ctx *Context, state *S, args Args) (any, error)

// Component is the Definition of a component whose state is S. S must
// encode to and decode from JSON without loss, because the snapshot stored
// in the database is its JSON encoding.
type Component[S any] struct {
	name    string
	mountFn func(props Props) (S, error)
	actions map[string]ActionFunc[S]

	version   uint32                                            // state version of S, 0 by default
	migrateFn func(from uint32, old json.RawMessage) (S, error) // nil: older snapshots are outdated
}

// Define starts the definition of a component type called name. mount builds
// the initial state from the client's props; return an error from
// Props.Decode or BadArgs for invalid props.
func Define[S any](name string, mount func(props Props) (S, error)) *Component[S] {
	return &Component[S]{name: name, mountFn: mount, actions: map[string]ActionFunc[S]{}}
}

// Action registers an action under name and returns c for chaining. Only
// registered actions can be called. Registering the same name twice panics,
// because it is a programming error found at start-up.
func (c *Component[S]) Action(name string, fn ActionFunc[S]) *Component[S] {
	if _, dup := c.actions[name]; dup {
		panic(fmt.Sprintf("live: component %q registers action %q twice", c.name, name))
	}
	c.actions[name] = fn
	return c
}

// StateVersion declares v as the version of the state shape S and returns c
// for chaining. Raise v when old state JSON no longer decodes to the
// intended S, such as after a renamed or split field. Components that never
// call it, and snapshots stored before versions existed, are version 0.
//
// On hydrate, migrate gets the version and state JSON of an older snapshot,
// and its result is stored as version v. The hydration gets the outdated
// code when migrate is nil, returns an error, panics or takes longer than
// Limits.MigrationTimeout, and for a snapshot newer than v, which a
// rollback leaves behind.
//
// Write migrate as a switch on from, one case for each old shape still
// stored, decoding with DecodeState and returning an error in the default
// case. Then a later version bump that lacks a case gets outdated instead
// of a state decoded from the wrong shape, which json.Unmarshal would fill
// with zero values.
func (c *Component[S]) StateVersion(v uint32, migrate func(from uint32, old json.RawMessage) (S, error)) *Component[S] {
	c.version = v
	c.migrateFn = migrate
	return c
}

// DecodeState decodes the state JSON of an old snapshot into v, a pointer
// to the old shape, for a StateVersion migration. Unlike json.Unmarshal, it
// rejects fields v does not have and data after the value, so a snapshot of
// another shape fails instead of decoding to zero values.
func DecodeState(old json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(old))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode old state into %T: %w", v, err)
	}
	if dec.More() {
		return fmt.Errorf("decode old state into %T: data after the JSON value", v)
	}
	return nil
}

// Name implements Definition.
func (c *Component[S]) Name() string { return c.name }

// Actions implements Definition.
func (c *Component[S]) Actions() []string {
	names := make([]string, 0, len(c.actions))
	for name := range c.actions {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

func (c *Component[S]) mount(props Props) (any, error) {
	s, err := c.mountFn(props)
	if err != nil {
		return nil, err
	}
	return &s, nil
}

func (c *Component[S]) restore(state json.RawMessage) (any, error) {
	s := new(S)
	if err := json.Unmarshal(state, s); err != nil {
		return nil, fmt.Errorf("restore %s state: %w", c.name, err)
	}
	return s, nil
}

func (c *Component[S]) stateVersion() uint32 { return c.version }

// errNoMigration is the migrate error of a component without a migration.
var errNoMigration = errors.New("component declares no migration")

func (c *Component[S]) migrate(from uint32, old json.RawMessage) (any, error) {
	if c.migrateFn == nil {
		return nil, errNoMigration
	}
	s, err := c.migrateFn(from, old)
	if err != nil {
		return nil, fmt.Errorf("migrate %s state from version %d to %d: %w", c.name, from, c.version, err)
	}
	return &s, nil
}

func (c *Component[S]) hasAction(name string) bool {
	_, ok := c.actions[name]
	return ok
}

func (c *Component[S]) call(ctx *Context, state any, action string, args Args) (any, error) {
	return c.actions[action](ctx, state.(*S), args)
}

// Props are the JSON object a client passes to mount.
type Props struct {
	raw json.RawMessage
}

// Decode unmarshals the props into v, usually a pointer to a struct. Unknown
// fields are rejected so that a misspelled prop is reported instead of
// ignored. Errors wrap ErrBadArgs.
func (p Props) Decode(v any) error {
	if len(p.raw) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(p.raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return BadArgs("invalid props: %s", describeJSONError(err))
	}
	return nil
}

// Raw returns the props as sent, normalized to "{}" when absent.
func (p Props) Raw() json.RawMessage {
	if len(p.raw) == 0 {
		return json.RawMessage("{}")
	}
	return p.raw
}

// Args are the positional arguments of an action call, each still JSON.
type Args []json.RawMessage

// Len returns the number of arguments.
func (a Args) Len() int { return len(a) }

// Want returns a bad-args error unless there are exactly n arguments.
func (a Args) Want(n int) error {
	if len(a) != n {
		return BadArgs("expected %d argument(s), got %d", n, len(a))
	}
	return nil
}

// Decode unmarshals argument i into v. Errors wrap ErrBadArgs. As with
// encoding/json, a null argument leaves v unchanged.
func (a Args) Decode(i int, v any) error {
	if i < 0 || i >= len(a) {
		return BadArgs("missing argument %d", i)
	}
	if err := json.Unmarshal(a[i], v); err != nil {
		return BadArgs("invalid argument %d: %s", i, describeJSONError(err))
	}
	return nil
}

// decodeNonNull is Decode that rejects null, because JSON null would
// otherwise silently become the zero value.
func (a Args) decodeNonNull(i int, v any) error {
	if i >= 0 && i < len(a) && bytes.Equal(bytes.TrimSpace(a[i]), []byte("null")) {
		return BadArgs("argument %d is null", i)
	}
	return a.Decode(i, v)
}

// Int returns argument i as an integer; a string, a fraction, null or a
// missing argument is a bad-args error.
func (a Args) Int(i int) (int, error) {
	var n int
	if err := a.decodeNonNull(i, &n); err != nil {
		return 0, err
	}
	return n, nil
}

// String returns argument i as a string; null is a bad-args error.
func (a Args) String(i int) (string, error) {
	var s string
	if err := a.decodeNonNull(i, &s); err != nil {
		return "", err
	}
	return s, nil
}

// Registry is the set of component types a server offers. Register all
// definitions before the engine starts; lookups are then safe from any
// goroutine.
type Registry struct {
	defs map[string]Definition
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{defs: map[string]Definition{}}
}

var componentName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)

// Register adds a definition. It returns an error for an invalid or
// duplicate name.
func (r *Registry) Register(def Definition) error {
	name := def.Name()
	if !componentName.MatchString(name) {
		return fmt.Errorf("register component %q: name must match %s", name, componentName)
	}
	if _, dup := r.defs[name]; dup {
		return fmt.Errorf("register component %q: already registered", name)
	}
	r.defs[name] = def
	return nil
}

// Lookup returns the definition registered under name.
func (r *Registry) Lookup(name string) (Definition, bool) {
	def, ok := r.defs[name]
	return def, ok
}

// Len returns the number of registered component types.
func (r *Registry) Len() int { return len(r.defs) }

// Names returns the registered component type names, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.defs))
	for name := range r.defs {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
