// Package live runs live components: stateful UI components whose state
// lives on the server, changed only by actions that clients call over a
// WebSocket. It holds the registry of component types, the in-memory
// instances of connected clients, ownership, hydration from stored
// snapshots and the JSON wire protocol. It imports no HTTP or database
// package: storage.Store hides the database, and the app package serves an
// Engine over fiber.
//
// # Writing a component
//
// A component is a Go type for its state and a set of actions that change
// it. The state is stored as its JSON encoding, so give it exported fields
// with json tags, and keep it small: it is written to the database on every
// call.
//
//	type CartState struct {
//		Items []string `json:"items"`
//	}
//
// Define names the component type and builds the first state from the
// props a client mounts it with; Props.Decode rejects unknown props, and
// the client gets bad_args. Each Action registers a name clients can call:
//
//	cart := live.Define("cart", func(p live.Props) (CartState, error) {
//		return CartState{Items: []string{}}, p.Decode(&struct{}{})
//	}).
//		Action("add", live.Typed(func(ctx *live.Context, s *CartState, item string) (any, error) {
//			s.Items = append(s.Items, item)
//			ctx.Emit("added", item)
//			return len(s.Items), nil
//		})).
//		Action("empty", live.NoArgs(func(ctx *live.Context, s *CartState) (any, error) {
//			s.Items = s.Items[:0]
//			return nil, nil
//		}))
//
// Typed decodes the call's one argument into the function's argument type,
// a struct included, and calls its Validate method if it has one; NoArgs
// takes none. Either way a wrong argument gets bad_args before the action
// runs. For positional arguments, register an ActionFunc that
// reads Args itself.
//
// An action changes the state it is given and may return a result for the
// caller. What happens next:
//
//   - On success the new state is committed to the store, fsync included,
//     and only then sent to the client with the result. Events recorded
//     with Context.Emit (to this client) and Context.Broadcast (to every
//     connection with this component type mounted) follow the reply.
//   - An error wrapping ErrBadArgs (see BadArgs) is sent as bad_args, any
//     other error as action_failed, and a panic is recovered and logged. In
//     each case the state is rolled back to the last committed snapshot and
//     the events are dropped.
//
// The Context is a context.Context that is canceled when the client's
// connection closes; hand it to work the action starts.
//
// # Changing the state shape
//
// Stored snapshots outlive deploys. When a new build changes the state type
// so that old JSON would decode wrongly, declare a higher version and, if
// the old state can be carried over, a migration:
//
//	cart.StateVersion(1, func(from uint32, old json.RawMessage) (CartState, error) {
//		switch from {
//		case 0: // {"item": "..."}, before the cart held several items
//			var v0 struct {
//				Item string `json:"item"`
//			}
//			if err := live.DecodeState(old, &v0); err != nil {
//				return CartState{}, err
//			}
//			return CartState{Items: []string{v0.Item}}, nil
//		}
//		return CartState{}, fmt.Errorf("no migration from state version %d", from)
//	})
//
// A snapshot of an older version is migrated when it is hydrated, then
// signed and stored at the new version. One that cannot be migrated is
// rejected with the outdated code, so the client mounts a fresh component;
// it is never reset silently.
//
// # Running components
//
// Register every Definition in a Registry, then build an Engine with
// New. Each client connection is a Conn from Engine.Connect; feed it one
// text frame at a time with Conn.Handle, and send what it writes to its
// Outbox back to the client. The app package does that over WebSocket,
// with the sweeps and HTTP endpoints around it, and is what most programs
// use. The package's Example (in its documentation page, or with go test
// -run Example -v) drives the engine on its own.
//
// The engine keeps one instance of a session in memory at a time, owned by
// one connection, and releases it when that connection closes. A client
// that comes back, even to a restarted server, sends hello with its token
// and hydrate with the component's id and fingerprint, and gets the last
// committed state. docs/protocol.md in the repository describes every
// message.
package live
