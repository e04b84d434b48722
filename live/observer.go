package live

import "time"

// ResultOK is the result code an Observer receives for a call or hydration
// that succeeded. Failures carry their protocol error code instead.
const ResultOK = "ok"

// Observer receives the outcome of every call and hydration that an engine
// handles, for metrics. Its methods run on the connection's goroutine before
// the next frame is read, so they must be quick and must not block. Every
// string passed to them comes from a bounded set: registered component and
// action names, ResultOK and the Code constants.
type Observer interface {
	// ObserveCall reports one call message. component is the type of the
	// instance the id names on this connection, or "" when it names none.
	// action is "" unless the component has an action of that name. code is
	// ResultOK or the error code sent to the client. elapsed is the time
	// spent handling the call, the store commit included.
	ObserveCall(component, action, code string, elapsed time.Duration)

	// ObserveHydration reports one hydrate message with ResultOK or the
	// error code sent to the client.
	ObserveHydration(code string)
}

// observeCall handles a call and reports it to the engine's observer, if
// there is one.
func (c *Conn) observeCall(msg *clientMessage) *Error {
	obs := c.engine.observer
	if obs == nil {
		return c.call(msg)
	}
	start := time.Now()
	component, action := c.callTarget(msg)
	err := c.call(msg)
	obs.ObserveCall(component, action, resultCode(err), time.Since(start))
	return err
}

// callTarget returns the registered component and action names a call
// addresses, each "" when it does not name one, so that a client cannot add
// label values of its own choosing.
func (c *Conn) callTarget(msg *clientMessage) (component, action string) {
	inst := c.lookup(msg.ID)
	if inst == nil {
		return "", ""
	}
	if inst.def.hasAction(msg.Action) {
		action = msg.Action
	}
	return inst.def.Name(), action
}

// observeHydrate handles a hydrate message and reports its result to the
// engine's observer, if there is one.
func (c *Conn) observeHydrate(msg *clientMessage) *Error {
	err := c.hydrate(msg)
	if obs := c.engine.observer; obs != nil {
		obs.ObserveHydration(resultCode(err))
	}
	return err
}

func resultCode(err *Error) string {
	if err == nil {
		return ResultOK
	}
	return err.Code
}
