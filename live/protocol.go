package live

import (
	"encoding/json"
	"fmt"
)

// Message types of the wire protocol. Every frame is one JSON object with a
// "type" field; a client message may carry an integer "ref" that the reply
// echoes.
const (
	TypeHello     = "hello"
	TypeWelcome   = "welcome"
	TypeMount     = "mount"
	TypeCall      = "call"
	TypeHydrate   = "hydrate"
	TypeUnmount   = "unmount"
	TypeUnmounted = "unmounted"
	TypeState     = "state"
	TypePatch     = "patch"
	TypeEvent     = "event"
	TypeBroadcast = "broadcast"
	TypeError     = "error"
)

// clientMessage is the union of all client message fields.
type clientMessage struct {
	Type        string            `json:"type"`
	Ref         *int64            `json:"ref,omitempty"`
	Token       string            `json:"token,omitempty"`
	Component   string            `json:"component,omitempty"`
	Props       json.RawMessage   `json:"props,omitempty"`
	Key         string            `json:"key,omitempty"`
	ID          string            `json:"id,omitempty"`
	Action      string            `json:"action,omitempty"`
	Args        []json.RawMessage `json:"args,omitempty"`
	Fingerprint string            `json:"fingerprint,omitempty"`
	Features    []string          `json:"features,omitempty"`
}

// decodeMessage parses one frame. A frame that is not a JSON object, or whose
// fields have the wrong JSON types, is a bad_json error. The ref is returned
// whenever it could be read, so that the error can echo it.
func decodeMessage(frame []byte) (*clientMessage, *Error) {
	var msg clientMessage
	if err := json.Unmarshal(frame, &msg); err != nil {
		ref := salvageRef(frame)
		e := newError(CodeBadJSON, "frame is not a valid message object: %s", describeJSONError(err))
		return &clientMessage{Ref: ref}, e
	}
	if msg.Type == "" {
		return &msg, newError(CodeBadJSON, `message has no "type" field`)
	}
	return &msg, nil
}

// salvageRef reads "ref" from a frame whose other fields did not decode.
func salvageRef(frame []byte) *int64 {
	var probe struct {
		Ref *int64 `json:"ref"`
	}
	if json.Unmarshal(frame, &probe) != nil {
		return nil
	}
	return probe.Ref
}

// ComponentRef names one stored component of a client in a welcome message.
type ComponentRef struct {
	ID          string `json:"id"`
	Component   string `json:"component"`
	Fingerprint string `json:"fingerprint"`
}

type welcomeMessage struct {
	Type       string         `json:"type"`
	Ref        *int64         `json:"ref,omitempty"`
	ClientID   string         `json:"clientId"`
	Token      string         `json:"token"`
	Resumed    bool           `json:"resumed"`
	Components []ComponentRef `json:"components"`
	Features   []string       `json:"features"`
}

type stateMessage struct {
	Type        string          `json:"type"`
	Ref         *int64          `json:"ref,omitempty"`
	ID          string          `json:"id"`
	Component   string          `json:"component"`
	State       json.RawMessage `json:"state"`
	Fingerprint string          `json:"fingerprint,omitempty"`
	Version     uint64          `json:"version"`
	Result      json.RawMessage `json:"result,omitempty"`
}

// patchMessage carries the JSON Patch that turns the state of version Base,
// the last one sent to this connection, into the state of Version.
type patchMessage struct {
	Type      string          `json:"type"`
	Ref       *int64          `json:"ref,omitempty"`
	ID        string          `json:"id"`
	Component string          `json:"component"`
	Base      uint64          `json:"base"`
	Version   uint64          `json:"version"`
	Patch     json.RawMessage `json:"patch"`
	Result    json.RawMessage `json:"result,omitempty"`
}

type unmountedMessage struct {
	Type string `json:"type"`
	Ref  *int64 `json:"ref,omitempty"`
	ID   string `json:"id"`
}

type eventMessage struct {
	Type  string          `json:"type"`
	ID    string          `json:"id"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

type broadcastMessage struct {
	Type      string          `json:"type"`
	Component string          `json:"component"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
}

type errorMessage struct {
	Type            string `json:"type"`
	Ref             *int64 `json:"ref,omitempty"`
	ID              string `json:"id,omitempty"`
	Code            string `json:"code"`
	Message         string `json:"message"`
	RequiresRefresh bool   `json:"requiresRefresh"`
}

// encode marshals a server message. All message types are plain structs of
// marshalable fields, so an error here is a programming error.
func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("live: encode %T: %v", v, err))
	}
	return b
}
