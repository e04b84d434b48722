package live

import (
	"context"
	"encoding/json"
)

// Context is passed to an action. It is a context.Context that is canceled
// when the calling client's connection closes, so an action can hand it to
// work that should stop then. Events it records are sent only after the
// action's new state is committed, and dropped when the action fails.
type Context struct {
	context.Context
	clientID    string
	componentID string
	component   string
	events      []pendingEvent
}

type pendingEvent struct {
	broadcast bool
	event     string
	data      any
}

// ClientID returns the id of the client that called the action.
func (c *Context) ClientID() string { return c.clientID }

// ComponentID returns the id of the component instance.
func (c *Context) ComponentID() string { return c.componentID }

// Emit sends an event to the calling client's instance of this component.
func (c *Context) Emit(event string, data any) {
	c.events = append(c.events, pendingEvent{event: event, data: data})
}

// Broadcast sends an event to every connection that has an instance of this
// component type mounted, the caller's included.
func (c *Context) Broadcast(event string, data any) {
	c.events = append(c.events, pendingEvent{broadcast: true, event: event, data: data})
}

func marshalData(v any) (json.RawMessage, error) {
	if v == nil {
		return json.RawMessage("null"), nil
	}
	return json.Marshal(v)
}
