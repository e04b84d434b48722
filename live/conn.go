package live

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/livebolt/livebolt/storage"
)

// Conn is one client connection. Its Handle method must be called from a
// single goroutine, one frame at a time, so replies keep the frame order.
type Conn struct {
	engine *Engine
	out    Outbox
	// ctx is the context of the actions called on this connection,
	// canceled by Close.
	ctx    context.Context
	cancel context.CancelFunc

	// Guarded by Engine.mu; clientID is written once, by hello.
	clientID  string
	patch     bool // hello asked for FeaturePatch
	instances map[string]*instance
	types     map[string]int // instances per component type, for broadcasts
	closed    bool

	// Token bucket of the message rate limit, used only by Handle.
	tokens     float64
	lastRefill time.Time
}

// allowMessage takes one token from the connection's bucket, refilled at
// MessagesPerSecond up to MessageBurst.
func (c *Conn) allowMessage() bool {
	lim := &c.engine.limits
	now := c.engine.now()
	if c.lastRefill.IsZero() {
		c.tokens = float64(lim.MessageBurst)
	} else {
		c.tokens += now.Sub(c.lastRefill).Seconds() * lim.MessagesPerSecond
		c.tokens = min(c.tokens, float64(lim.MessageBurst))
	}
	c.lastRefill = now
	if c.tokens < 1 {
		return false
	}
	c.tokens--
	return true
}

// Welcomed reports whether the connection completed hello.
func (c *Conn) Welcomed() bool {
	c.engine.mu.Lock()
	defer c.engine.mu.Unlock()
	return c.clientID != ""
}

// ClientID returns the client id set by hello, or "" before it.
func (c *Conn) ClientID() string { return c.clientID }

// Handle processes one text frame and sends the replies to the outbox. A
// panic inside is recovered, logged and sent to the client as an internal
// error, so one bad frame never ends the connection.
func (c *Conn) Handle(frame []byte) {
	if !c.allowMessage() {
		lim := &c.engine.limits
		c.sendError(salvageRef(frame), "", newError(CodeRateLimited, "more than %g messages per second (burst %d); slow down, this message was not handled", lim.MessagesPerSecond, lim.MessageBurst))
		// Pause this connection for one token's time, so that a flood is
		// slowed to the limit instead of producing replies faster than they
		// can be written.
		time.Sleep(min(time.Second, time.Duration(float64(time.Second)/lim.MessagesPerSecond)))
		return
	}
	msg, perr := decodeMessage(frame)
	if perr != nil {
		c.logMessage(msg, len(frame), perr, time.Time{})
		c.sendError(msg.Ref, "", perr)
		return
	}
	var err *Error
	if c.engine.debug {
		start := c.engine.now()
		defer func() { c.logMessage(msg, len(frame), err, start) }()
	}
	defer func() {
		if r := recover(); r != nil {
			c.engine.log.Error("message handler panicked", "type", msg.Type, "client", c.clientID, "panic", r, "stack", string(debug.Stack()))
			err = newError(CodeInternal, "internal error while handling %s", msg.Type)
			c.sendError(msg.Ref, msg.ID, err)
		}
	}()

	switch msg.Type {
	case TypeHello:
		err = c.hello(msg)
	case TypeMount, TypeCall, TypeHydrate, TypeUnmount:
		if c.clientID == "" {
			err = newError(CodeHelloRequired, "send hello before %s", msg.Type)
			break
		}
		err = c.dispatch(msg)
	default:
		err = newError(CodeUnknownType, "unknown message type %q; expected hello, mount, call, hydrate or unmount", msg.Type)
	}
	if err != nil {
		c.sendError(msg.Ref, msg.ID, err)
	}
}

// logMessage writes one debug line per handled frame: its type, the ids
// it names and the outcome. Tokens and fingerprints are left out.
func (c *Conn) logMessage(msg *clientMessage, size int, err *Error, start time.Time) {
	e := c.engine
	if !e.debug {
		return
	}
	result := ResultOK
	if err != nil {
		result = err.Code
	}
	attrs := []any{"type", msg.Type, "client", c.clientID}
	if msg.Component != "" {
		attrs = append(attrs, "component", msg.Component)
	}
	if msg.ID != "" {
		attrs = append(attrs, "component_id", msg.ID)
	}
	if msg.Action != "" {
		attrs = append(attrs, "action", msg.Action)
	}
	attrs = append(attrs, "bytes", size, "result", result)
	if !start.IsZero() {
		attrs = append(attrs, "duration", e.now().Sub(start))
	}
	e.log.Debug("message handled", attrs...)
}

func (c *Conn) dispatch(msg *clientMessage) *Error {
	switch msg.Type {
	case TypeMount:
		return c.mount(msg)
	case TypeCall:
		return c.observeCall(msg)
	case TypeHydrate:
		return c.observeHydrate(msg)
	default:
		return c.unmount(msg)
	}
}

// Close releases the connection's instances. Their sessions stay stored, so
// the client can hydrate them again on another connection. Each session's
// last activity is set to now first: an attached instance was in use, so its
// age counts from the disconnect.
func (c *Conn) Close() {
	c.cancel()
	e := c.engine
	e.mu.Lock()
	c.closed = true
	delete(e.conns, c)
	owned := make(map[string]*instance, len(c.instances))
	for id, inst := range c.instances {
		owned[id] = inst
	}
	e.mu.Unlock()
	for id, inst := range owned {
		c.releaseOnClose(id, inst)
	}
}

func (c *Conn) releaseOnClose(id string, inst *instance) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if !c.owns(inst) {
		return // moved to another connection meanwhile
	}
	next := *inst.sess
	next.LastActivity = c.engine.now().UTC().Round(0)
	if err := c.engine.signer.sign(&next); err == nil {
		if err := c.engine.store.UpdateSession(&next); err == nil {
			inst.sess = &next
		} else if !errors.Is(err, storage.ErrNotFound) {
			c.engine.log.Error("record last activity on disconnect failed", "client", c.clientID, "component_id", id, "err", err)
		}
	}
	c.release(id, inst)
}

func (c *Conn) send(v any) { c.out.Send(encode(v)) }

func (c *Conn) sendError(ref *int64, id string, err *Error) {
	c.send(errorMessage{Type: TypeError, Ref: ref, ID: id, Code: err.Code, Message: err.Message, RequiresRefresh: err.RequiresRefresh})
}

// internal logs a storage or encoding failure and returns the error sent to
// the client, which carries no detail of it.
func (c *Conn) internal(what, id string, err error) *Error {
	c.engine.log.Error(what+" failed", "client", c.clientID, "component_id", id, "err", err)
	return newError(CodeInternal, "%s failed on the server; try again", what)
}

func (c *Conn) hello(msg *clientMessage) *Error {
	if c.clientID != "" {
		return newError(CodeBadArgs, "hello was already received on this connection")
	}
	if len(msg.Features) > maxFeatures {
		return newError(CodeBadArgs, "hello lists %d features, the limit is %d", len(msg.Features), maxFeatures)
	}
	e := c.engine

	// A valid token resumes its client; any other gets a new one.
	clientID, resumed, tampered := "", false, false
	if msg.Token != "" {
		if id, ok := e.signer.verifyToken(msg.Token); ok {
			clientID, resumed = id, true
		} else {
			e.reject("invalid_token")
			tampered = true
		}
	}
	if clientID == "" {
		clientID = NewID(e.now())
	}
	if tampered {
		// The log names the new client id; nothing from the token is logged,
		// because it may be a secret sent by mistake. All invalid tokens
		// share one log window, since each gets a new client id.
		e.logRejectionIn("invalid_token", clientID, "", "invalid_token")
	}

	components := []ComponentRef{}
	if resumed {
		refs, err := e.store.ClientSessions(clientID)
		if err != nil {
			// The client can still mount; hydrating by id works without the list.
			e.log.Error("list stored components failed; welcoming with an empty list", "client", clientID, "err", err)
		}
		for _, r := range refs {
			components = append(components, ComponentRef(r))
		}
	}

	e.mu.Lock()
	c.clientID = clientID
	c.patch = slices.Contains(msg.Features, FeaturePatch)
	e.mu.Unlock()
	features := []string{}
	if c.patch {
		features = append(features, FeaturePatch)
	}
	c.send(welcomeMessage{Type: TypeWelcome, Ref: msg.Ref, ClientID: clientID, Token: e.signer.token(clientID), Resumed: resumed, Components: components, Features: features})
	return nil
}

// sanitizeKey keeps the letters, digits, '-' and '_' of a mount key. Every
// other character is dropped, so the key can never forge the '.' that
// separates it from the random part of the id.
func sanitizeKey(key string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return -1
	}, key)
}

// normalizeProps checks that props are absent, null or a JSON object.
func normalizeProps(raw json.RawMessage) (json.RawMessage, *Error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return json.RawMessage("{}"), nil
	}
	if trimmed[0] != '{' {
		return nil, newError(CodeBadArgs, "props must be a JSON object")
	}
	// Re-encode as encoding/json writes it (compact, escaped), the form the
	// snapshot MAC covers and the store keeps unchanged.
	normalized, err := json.Marshal(json.RawMessage(trimmed))
	if err != nil {
		return nil, newError(CodeBadArgs, "invalid props: %s", describeJSONError(err))
	}
	return normalized, nil
}

func (c *Conn) mount(msg *clientMessage) *Error {
	e := c.engine
	def, ok := e.registry.Lookup(msg.Component)
	if !ok {
		return newError(CodeUnknownComponent, "unknown component %q; registered: %s", msg.Component, strings.Join(e.registry.Names(), ", "))
	}
	if len(msg.Key) > e.limits.MaxKeyLength {
		return newError(CodeBadArgs, "key is %d characters, the limit is %d", len(msg.Key), e.limits.MaxKeyLength)
	}
	if len(msg.Props) > e.limits.MaxPropsBytes {
		return newError(CodeTooLarge, "props are %d bytes, the limit is %d", len(msg.Props), e.limits.MaxPropsBytes)
	}
	props, perr := normalizeProps(msg.Props)
	if perr != nil {
		return perr
	}
	if perr := c.checkInstanceLimit(); perr != nil {
		return perr
	}
	if refs, err := e.store.ClientSessions(c.clientID); err != nil {
		return c.internal("count stored sessions", "", err)
	} else if len(refs) >= e.limits.MaxSessionsPerClient {
		return newError(CodeLimitExceeded, "client has %d stored sessions, the limit is %d; unmount some first", len(refs), e.limits.MaxSessionsPerClient)
	}

	state, err := safeRun(func() (any, error) { return def.mount(Props{raw: props}) })
	if err != nil {
		return c.actionError("mount "+def.Name(), "", err)
	}
	stateJSON, serr := c.encodeState(def, state)
	if serr != nil {
		return serr
	}

	now := e.now().UTC().Round(0)
	id := NewID(now)
	if key := sanitizeKey(msg.Key); key != "" {
		id = key + "." + id
	}
	sess := &storage.Session{
		ID: id, Component: def.Name(), Owner: c.clientID,
		Props: props, State: stateJSON, Version: 1, StateVersion: def.stateVersion(),
		CreatedAt: now, LastActivity: now,
	}
	sess.Fingerprint = e.signer.fingerprint(id, c.clientID, now.UnixNano())
	if err := e.signer.sign(sess); err != nil {
		return c.internal("sign snapshot", id, err)
	}
	if err := e.store.CreateSession(sess); err != nil {
		return c.internal("store new session", id, err)
	}

	inst := &instance{def: def, sess: sess, state: state}
	e.mu.Lock()
	// The id is new and random, so no other instance can hold it.
	c.attach(id, inst)
	e.mu.Unlock()
	c.sendState(msg.Ref, inst, sess, nil)
	return nil
}

// attach binds inst to c, moving it from any other connection. It returns
// false, and changes nothing, when another instance of the same session is
// already in memory: there is never more than one. The caller holds
// Engine.mu.
func (c *Conn) attach(id string, inst *instance) bool {
	if other := c.engine.instances[id]; other != nil && other != inst {
		return false
	}
	if old := inst.conn; old != nil && old != c {
		old.detach(id, inst)
		// Tell the old connection, so its client stops using the id. A
		// connection that is closing drops the message.
		old.sendError(nil, id, refreshError(CodeNotFound, "component %q moved to another connection of this client; mount a new one here", id))
	}
	if inst.conn != c {
		inst.conn = c
		c.instances[id] = inst
		c.types[inst.def.Name()]++
		c.engine.perClient[c.clientID]++
	}
	c.engine.instances[id] = inst
	return true
}

// detach unbinds inst from c. The caller holds Engine.mu.
func (c *Conn) detach(id string, inst *instance) {
	if c.instances[id] != inst {
		return
	}
	delete(c.instances, id)
	name := inst.def.Name()
	if c.types[name]--; c.types[name] <= 0 {
		delete(c.types, name)
	}
	if c.engine.perClient[c.clientID]--; c.engine.perClient[c.clientID] <= 0 {
		delete(c.engine.perClient, c.clientID)
	}
	inst.conn = nil
}

// checkInstanceLimit rejects one more in-memory instance for this client.
func (c *Conn) checkInstanceLimit() *Error {
	e := c.engine
	e.mu.Lock()
	n := e.perClient[c.clientID]
	e.mu.Unlock()
	if n >= e.limits.MaxInstancesPerClient {
		return newError(CodeLimitExceeded, "client has %d components in memory, the limit is %d; unmount or disconnect some first", n, e.limits.MaxInstancesPerClient)
	}
	return nil
}

// release detaches inst and drops it from memory. The caller holds inst.mu.
func (c *Conn) release(id string, inst *instance) {
	e := c.engine
	e.mu.Lock()
	defer e.mu.Unlock()
	if inst.conn != nil {
		inst.conn.detach(id, inst)
	}
	if e.instances[id] == inst {
		delete(e.instances, id)
	}
}

// lookup returns this connection's instance with the given id.
func (c *Conn) lookup(id string) *instance {
	c.engine.mu.Lock()
	defer c.engine.mu.Unlock()
	return c.instances[id]
}

func (c *Conn) owns(inst *instance) bool {
	c.engine.mu.Lock()
	defer c.engine.mu.Unlock()
	return inst.conn == c
}

// sendState sends the full state of sess, a snapshot of inst. The caller
// holds inst.mu, or inst is new.
func (c *Conn) sendState(ref *int64, inst *instance, sess *storage.Session, result json.RawMessage) {
	inst.sentTo, inst.sentVersion = c, sess.Version
	c.send(stateMessage{
		Type: TypeState, Ref: ref, ID: sess.ID, Component: sess.Component,
		State: sess.State, Fingerprint: sess.Fingerprint, Version: sess.Version, Result: result,
	})
}

// sendChange sends next, the snapshot that follows prev, as a patch when the
// client asked for patches and was last sent prev, and as the full state
// otherwise, or when the patch would not be smaller. The caller holds
// inst.mu.
func (c *Conn) sendChange(ref *int64, inst *instance, prev, next *storage.Session, result json.RawMessage) {
	if !c.patch || inst.sentTo != c || inst.sentVersion != prev.Version {
		c.sendState(ref, inst, next, result)
		return
	}
	ops, err := diffJSON(prev.State, next.State)
	if err != nil {
		// Both are the output of json.Marshal, so this is a bug; the full
		// state still reaches the client.
		c.engine.log.Error("diff of component states failed; sending the full state", "component", next.Component, "component_id", next.ID, "err", err)
		c.sendState(ref, inst, next, result)
		return
	}
	if ops == nil {
		ops = []patchOp{}
	}
	// The patch message carries what the state message does, less the
	// state and fingerprint, plus the patch and its base version.
	patch, err := json.Marshal(ops)
	if err != nil || len(patch) >= len(next.State)+len(next.Fingerprint) {
		c.sendState(ref, inst, next, result)
		return
	}
	frame := encode(patchMessage{
		Type: TypePatch, Ref: ref, ID: next.ID, Component: next.Component,
		Base: prev.Version, Version: next.Version, Patch: patch, Result: result,
	})
	inst.sentTo, inst.sentVersion = c, next.Version
	c.out.Send(frame)
}

// encodeState marshals a state and checks it against the size limit.
func (c *Conn) encodeState(def Definition, state any) (json.RawMessage, *Error) {
	b, err := json.Marshal(state)
	if err != nil {
		c.engine.log.Error("component state does not encode to JSON", "component", def.Name(), "err", err)
		return nil, newError(CodeActionFailed, "state of %s could not be encoded", def.Name())
	}
	if len(b) > c.engine.limits.MaxStateBytes {
		return nil, newError(CodeTooLarge, "state of %s would be %d bytes, the limit is %d", def.Name(), len(b), c.engine.limits.MaxStateBytes)
	}
	return b, nil
}

// actionError turns an error from a mount or action into its protocol
// error: bad_args for ErrBadArgs, action_failed otherwise.
func (c *Conn) actionError(what, id string, err error) *Error {
	if errors.Is(err, ErrBadArgs) {
		return newError(CodeBadArgs, "%s: %v", what, err)
	}
	var p *panicError
	if errors.As(err, &p) {
		c.engine.log.Error("component panicked", "op", what, "client", c.clientID, "component_id", id, "panic", p.value, "stack", p.stack)
		return newError(CodeActionFailed, "%s panicked", what)
	}
	return newError(CodeActionFailed, "%s: %v", what, err)
}

type panicError struct {
	value any
	stack string
}

func (p *panicError) Error() string { return fmt.Sprintf("panic: %v", p.value) }

// safeRun calls fn and turns a panic into a *panicError.
func safeRun(fn func() (any, error)) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, &panicError{value: r, stack: string(debug.Stack())}
		}
	}()
	return fn()
}

func (c *Conn) call(msg *clientMessage) *Error {
	e := c.engine
	if msg.ID == "" {
		return newError(CodeBadArgs, `call needs the "id" of a mounted component`)
	}
	inst := c.lookup(msg.ID)
	if inst == nil {
		return c.rejectHydration(msg.ID, CodeNotFound, "component %q is not mounted on this connection; hydrate it, or mount a new one if that fails", msg.ID)
	}
	if !inst.def.hasAction(msg.Action) {
		return newError(CodeUnknownAction, "component %s has no action %q; actions: %s", inst.def.Name(), msg.Action, strings.Join(inst.def.Actions(), ", "))
	}
	if len(msg.Args) > e.limits.MaxArgs {
		return newError(CodeBadArgs, "call has %d arguments, the limit is %d", len(msg.Args), e.limits.MaxArgs)
	}

	inst.mu.Lock()
	defer inst.mu.Unlock()
	if !c.owns(inst) {
		return newError(CodeNotFound, "component %q is no longer mounted on this connection", msg.ID)
	}
	ctx := &Context{Context: c.ctx, clientID: c.clientID, componentID: msg.ID, component: inst.def.Name()}
	what := inst.def.Name() + "." + msg.Action
	result, err := safeRun(func() (any, error) { return inst.def.call(ctx, inst.state, msg.Action, Args(msg.Args)) })
	if err != nil {
		c.rollback(msg.ID, inst)
		return c.actionError(what, msg.ID, err)
	}
	stateJSON, serr := c.encodeState(inst.def, inst.state)
	if serr != nil {
		c.rollback(msg.ID, inst)
		return serr
	}
	var resultJSON json.RawMessage
	if result != nil {
		if resultJSON, err = json.Marshal(result); err != nil {
			c.rollback(msg.ID, inst)
			return c.actionError(what, msg.ID, fmt.Errorf("encode result: %w", err))
		}
	}

	next := *inst.sess
	next.State = stateJSON
	next.Version++
	next.LastActivity = e.now().UTC().Round(0)
	if err := e.signer.sign(&next); err != nil {
		c.rollback(msg.ID, inst)
		return c.internal("sign snapshot", msg.ID, err)
	}
	if err := e.store.UpdateSession(&next); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			c.release(msg.ID, inst)
			return refreshError(CodeExpired, "session %q was removed (expired or swept); mount the component again", msg.ID)
		}
		c.rollback(msg.ID, inst)
		return c.internal("store new state", msg.ID, err)
	}
	prev := inst.sess
	inst.sess = &next
	c.sendChange(msg.Ref, inst, prev, &next, resultJSON)
	c.flushEvents(ctx)
	return nil
}

// rollback restores an instance's state from its last committed snapshot.
// The caller holds inst.mu.
func (c *Conn) rollback(id string, inst *instance) {
	state, err := inst.def.restore(inst.sess.State)
	if err != nil {
		// The snapshot was produced from this state type, so this means the
		// component's JSON encoding does not round-trip.
		c.engine.log.Error("restore state after failed action", "component_id", id, "err", err)
		c.release(id, inst)
		return
	}
	inst.state = state
}

func (c *Conn) flushEvents(ctx *Context) {
	for _, ev := range ctx.events {
		data, err := marshalData(ev.data)
		if err != nil {
			c.engine.log.Error("event data does not encode to JSON", "component_id", ctx.componentID, "event", ev.event, "err", err)
			continue
		}
		if ev.broadcast {
			c.engine.broadcast(ctx.component, ev.event, data)
		} else {
			c.send(eventMessage{Type: TypeEvent, ID: ctx.componentID, Event: ev.event, Data: data})
		}
	}
}

// broadcast sends an event to every connection with an instance of the
// component type.
func (e *Engine) broadcast(component, event string, data json.RawMessage) {
	msg := encode(broadcastMessage{Type: TypeBroadcast, Component: component, Event: event, Data: data})
	e.mu.Lock()
	targets := make([]*Conn, 0, len(e.conns))
	for conn := range e.conns {
		if conn.types[component] > 0 {
			targets = append(targets, conn)
		}
	}
	e.mu.Unlock()
	for _, conn := range targets {
		conn.out.Send(msg)
	}
}

func (c *Conn) unmount(msg *clientMessage) *Error {
	e := c.engine
	if msg.ID == "" {
		return newError(CodeBadArgs, `unmount needs an "id"`)
	}
	if inst := e.instanceByID(msg.ID); inst != nil {
		inst.mu.Lock()
		defer inst.mu.Unlock()
		if inst.sess.Owner != c.clientID {
			return c.rejectHydration(msg.ID, CodeForbidden, "component %q belongs to another client", msg.ID)
		}
		c.release(msg.ID, inst)
	} else {
		sess, err := e.store.GetSession(msg.ID)
		switch {
		case errors.Is(err, storage.ErrNotFound):
			return newError(CodeNotFound, "no session %q", msg.ID)
		case errors.Is(err, storage.ErrCorrupt):
			return c.dropCorrupt(msg.ID, err)
		case err != nil:
			return c.internal("read session", msg.ID, err)
		case sess.Owner != c.clientID:
			return c.rejectHydration(msg.ID, CodeForbidden, "component %q belongs to another client", msg.ID)
		}
	}
	if err := e.store.DeleteSession(msg.ID); err != nil {
		return c.internal("delete session", msg.ID, err)
	}
	c.send(unmountedMessage{Type: TypeUnmounted, Ref: msg.Ref, ID: msg.ID})
	return nil
}

func (e *Engine) instanceByID(id string) *instance {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.instances[id]
}

// rejectHydration counts and logs a rejected access to a session. The log
// names the client and component ids, never the token or fingerprint.
func (c *Conn) rejectHydration(id, code, format string, args ...any) *Error {
	c.engine.reject(code)
	c.engine.logRejection(c.clientID, id, code)
	return refreshError(code, format, args...)
}

// dropCorrupt deletes a session whose record failed its integrity check.
func (c *Conn) dropCorrupt(id string, cause error) *Error {
	if err := c.engine.store.DeleteSession(id); err != nil {
		c.engine.log.Error("delete corrupt session failed", "component_id", id, "err", err)
	}
	c.engine.log.Debug("deleted corrupt session", "client", c.clientID, "component_id", id, "err", cause)
	return c.rejectHydration(id, CodeInvalidChecksum, "session %q failed its integrity check and was deleted; mount the component again", id)
}

func equalSecret(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

var errRetry = errors.New("instance changed while waiting")

// hydrate restores an instance from its snapshot: the in-memory one when the
// component is attached to any connection, the stored one otherwise.
// Concurrent hydrations of one id are serialized.
func (c *Conn) hydrate(msg *clientMessage) *Error {
	e := c.engine
	if msg.ID == "" || msg.Fingerprint == "" {
		// A missing fingerprint is a malformed request, not a guess, so it
		// does not count as a failed attempt.
		return newError(CodeBadArgs, `hydrate needs an "id" and the "fingerprint" returned by mount`)
	}
	for {
		e.mu.Lock()
		if inst := e.instances[msg.ID]; inst != nil {
			e.mu.Unlock()
			err := c.hydrateAttached(msg, inst)
			if errors.Is(err, errRetry) {
				continue
			}
			return asProtocolError(err)
		}
		if wait, busy := e.hydrating[msg.ID]; busy {
			e.mu.Unlock()
			<-wait
			continue
		}
		done := make(chan struct{})
		e.hydrating[msg.ID] = done
		e.mu.Unlock()

		err := c.hydrateFromStore(msg, done)
		if errors.Is(err, errRetry) {
			continue
		}
		return asProtocolError(err)
	}
}

// hydrateFromStore runs hydrateStored and then, even after a panic, clears
// the in-progress mark so other hydrations of the id can go on.
func (c *Conn) hydrateFromStore(msg *clientMessage, done chan struct{}) error {
	e := c.engine
	defer func() {
		e.mu.Lock()
		delete(e.hydrating, msg.ID)
		e.mu.Unlock()
		close(done)
	}()
	e.admission <- struct{}{}
	defer func() { <-e.admission }()
	return c.hydrateStored(msg)
}

func asProtocolError(err error) *Error {
	if err == nil {
		return nil
	}
	var perr *Error
	if errors.As(err, &perr) {
		return perr
	}
	return newError(CodeInternal, "%v", err)
}

func (c *Conn) hydrateAttached(msg *clientMessage, inst *instance) error {
	e := c.engine
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if e.instanceByID(msg.ID) != inst {
		return errRetry
	}
	if perr := c.verifySession(msg, inst.sess, inst); perr != nil {
		return perr
	}
	touched, perr := c.touch(inst.sess)
	if perr != nil {
		if perr.Code == CodeNotFound {
			c.release(msg.ID, inst)
		}
		return perr
	}
	inst.sess = touched
	e.mu.Lock()
	attached := c.attach(msg.ID, inst)
	e.mu.Unlock()
	if !attached {
		// The instance was released while the store was written, and
		// another hydration loaded the session again: use that one.
		return errRetry
	}
	c.sendState(msg.Ref, inst, touched, nil)
	return nil
}

func (c *Conn) hydrateStored(msg *clientMessage) error {
	e := c.engine
	if perr := c.checkInstanceLimit(); perr != nil {
		return perr
	}

	sess, err := e.store.GetSession(msg.ID)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return c.rejectHydration(msg.ID, CodeNotFound, "no session %q; it may have expired or been unmounted", msg.ID)
	case errors.Is(err, storage.ErrCorrupt):
		return c.dropCorrupt(msg.ID, err)
	case err != nil:
		return c.internal("read session", msg.ID, err)
	}
	if perr := c.verifySession(msg, sess, nil); perr != nil {
		return perr
	}

	def, _ := e.registry.Lookup(sess.Component)
	if sess.StateVersion != def.stateVersion() {
		migrated, perr := c.migrateStored(def, sess)
		if perr != nil {
			return perr
		}
		sess = migrated
	}
	state, err := def.restore(sess.State)
	if err != nil {
		// A state that does not decode at the component's own version has
		// changed shape without a new StateVersion: the client can only
		// mount again, as for a snapshot that cannot be migrated.
		return c.rejectOutdated(sess, def, err, "stored state of %q no longer matches component %s; mount it again", sess.ID, sess.Component)
	}
	// touch also signs and stores a migrated state.
	touched, perr := c.touch(sess)
	if perr != nil {
		return perr
	}

	inst := &instance{def: def, sess: touched, state: state}
	e.mu.Lock()
	attached := c.attach(msg.ID, inst)
	e.mu.Unlock()
	if !attached {
		return errRetry
	}
	c.sendState(msg.Ref, inst, touched, nil)
	return nil
}

// errMigrationTimeout is the error of a migration abandoned after
// Limits.MigrationTimeout.
var errMigrationTimeout = errors.New("migration did not return within the time limit")

// errMigrationRunning is the error of a hydration whose session is still
// being migrated by an abandoned migration.
var errMigrationRunning = errors.New("an earlier migration of this session is still running")

// runWithin runs fn, as safeRun does, in a goroutine of its own, and gives
// up on it after d. fn then runs on, and its result is dropped. finished,
// when not nil, is called once fn has returned, abandoned or not.
func runWithin(d time.Duration, fn func() (any, error), finished func()) (any, error) {
	type outcome struct {
		v   any
		err error
	}
	done := make(chan outcome, 1) // buffered: an abandoned fn does not block
	go func() {
		if finished != nil {
			defer finished()
		}
		v, err := safeRun(fn)
		done <- outcome{v, err}
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case o := <-done:
		return o.v, o.err
	case <-timer.C:
		return nil, fmt.Errorf("%w (%s)", errMigrationTimeout, d)
	}
}

// beginMigration marks a migration of the session id as running and
// returns the function that clears the mark. It returns false when one is
// already running: one migration per session at a time, because
// hydrations repeated while an abandoned one runs on would otherwise each
// start another.
func (e *Engine) beginMigration(id string) (finished func(), ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.migrating[id] {
		return nil, false
	}
	e.migrating[id] = true
	return func() {
		e.mu.Lock()
		delete(e.migrating, id)
		e.mu.Unlock()
	}, true
}

// migrateStored returns sess with its state migrated to the state version
// of def, not yet signed or stored. The caller has verified the MAC of sess.
func (c *Conn) migrateStored(def Definition, sess *storage.Session) (*storage.Session, *Error) {
	from, to := sess.StateVersion, def.stateVersion()
	if from > to {
		err := fmt.Errorf("stored state version %d is newer than version %d of the component", from, to)
		return nil, c.rejectOutdated(sess, def, err, "stored state of %q has version %d, newer than version %d of component %s on this server; mount it again", sess.ID, from, to, sess.Component)
	}

	finished, ok := c.engine.beginMigration(sess.ID)
	if !ok {
		return nil, c.rejectOutdated(sess, def, errMigrationRunning, "stored state of %q is still being migrated by an earlier hydration that timed out; try again later or mount it again", sess.ID)
	}
	state, err := runWithin(c.engine.limits.MigrationTimeout, func() (any, error) { return def.migrate(from, sess.State) }, finished)
	if err != nil {
		return nil, c.rejectOutdated(sess, def, err, "stored state of %q has version %d, which component %s cannot migrate to version %d; mount it again", sess.ID, from, sess.Component, to)
	}

	stateJSON, perr := c.encodeState(def, state)
	if perr != nil {
		return nil, c.rejectOutdated(sess, def, perr, "migrated state of %q cannot be stored: %s; mount it again", sess.ID, perr.Message)
	}
	next := *sess
	next.State = stateJSON
	next.StateVersion = to
	return &next, nil
}

// rejectOutdated counts and logs a stored state that cannot be restored at
// the state version of def, and returns the outdated error.
func (c *Conn) rejectOutdated(sess *storage.Session, def Definition, cause error, format string, args ...any) *Error {
	e := c.engine
	e.reject(CodeOutdated)
	attrs := []any{"component", sess.Component, "stored_state_version", sess.StateVersion, "state_version", def.stateVersion(), "err", cause}
	var p *panicError
	if errors.As(cause, &p) {
		attrs = append(attrs, "stack", p.stack)
	}
	e.logRejectionIn(c.clientID, c.clientID, sess.ID, CodeOutdated, attrs...)
	return refreshError(CodeOutdated, format, args...)
}

// verifySession checks a hydration request against a session: owner,
// attempt count, fingerprint, age and MAC, cheapest first. inst is the
// attached instance or nil; an attached session is in use, so it does not
// expire. The caller holds inst.mu when inst is not nil.
func (c *Conn) verifySession(msg *clientMessage, sess *storage.Session, inst *instance) *Error {
	e := c.engine
	if sess.Owner != c.clientID {
		return c.rejectHydration(msg.ID, CodeForbidden, "component %q belongs to another client", msg.ID)
	}
	if sess.FailedAttempts >= e.attempts {
		return c.rejectHydration(msg.ID, CodeMaxAttemptsExceeded, "component %q had %d failed hydration attempts; mount it again", msg.ID, sess.FailedAttempts)
	}
	if !equalSecret(sess.Fingerprint, msg.Fingerprint) {
		return c.failAttempt(msg.ID, sess, inst)
	}
	if inst == nil && e.now().Sub(sess.LastActivity) > e.maxAge {
		if err := e.store.DeleteSession(sess.ID); err != nil {
			e.log.Error("delete expired session failed", "component_id", sess.ID, "err", err)
		}
		return c.rejectHydration(msg.ID, CodeExpired, "component %q was unused for more than %s; mount it again", msg.ID, e.maxAge)
	}
	if !e.signer.verify(sess) {
		if inst != nil {
			c.release(msg.ID, inst)
		}
		return c.dropCorrupt(msg.ID, errors.New("snapshot MAC does not verify"))
	}
	if _, ok := e.registry.Lookup(sess.Component); !ok {
		return refreshError(CodeUnknownComponent, "component type %q of %q is no longer registered; mount another component", sess.Component, msg.ID)
	}
	return nil
}

// failAttempt records a wrong fingerprint on the session and returns
// fingerprint_mismatch. Once the count reaches MaxAttempts, every later
// hydration gets max_attempts_exceeded until the failed sweep removes the
// session. The record is verified before it is re-signed, so a tampered
// record is never laundered.
func (c *Conn) failAttempt(id string, sess *storage.Session, inst *instance) *Error {
	e := c.engine
	if !e.signer.verify(sess) {
		if inst != nil {
			c.release(id, inst)
		}
		return c.dropCorrupt(id, errors.New("snapshot MAC does not verify"))
	}
	next := *sess
	next.FailedAttempts++
	if err := e.signer.sign(&next); err != nil {
		return c.internal("sign snapshot", id, err)
	}
	if err := e.store.UpdateSession(&next); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return c.internal("record failed attempt", id, err)
	}
	if inst != nil {
		inst.sess = &next
		if next.FailedAttempts >= e.attempts {
			c.release(id, inst)
		}
	}
	return c.rejectHydration(id, CodeFingerprintMismatch, "wrong fingerprint for %q (failed attempt %d of %d)", id, next.FailedAttempts, e.attempts)
}

// touch stores a session with fresh activity and no failed attempts.
func (c *Conn) touch(sess *storage.Session) (*storage.Session, *Error) {
	e := c.engine
	next := *sess
	next.LastActivity = e.now().UTC().Round(0)
	next.FailedAttempts = 0
	if err := e.signer.sign(&next); err != nil {
		return nil, c.internal("sign snapshot", sess.ID, err)
	}
	if err := e.store.UpdateSession(&next); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, refreshError(CodeNotFound, "session %q was removed meanwhile; mount it again", sess.ID)
		}
		return nil, c.internal("store hydrated session", sess.ID, err)
	}
	return &next, nil
}
