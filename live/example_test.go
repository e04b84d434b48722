package live_test

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/livebolt/livebolt/live"
	"github.com/livebolt/livebolt/storage/memstore"
)

// CartState is the state of the example's cart component.
type CartState struct {
	Items []string `json:"items"`
}

// printer is an Outbox that prints the fields of each message that do not
// change from run to run.
type printer struct{ ids map[string]string }

func (p printer) Send(frame []byte) {
	var m struct {
		Type    string          `json:"type"`
		ID      string          `json:"id"`
		State   json.RawMessage `json:"state"`
		Version uint64          `json:"version"`
		Result  json.RawMessage `json:"result"`
		Event   string          `json:"event"`
		Data    json.RawMessage `json:"data"`
		Code    string          `json:"code"`
	}
	_ = json.Unmarshal(frame, &m)
	if m.ID != "" {
		p.ids["last"] = m.ID
	}
	switch m.Type {
	case live.TypeWelcome:
		fmt.Println("welcome")
	case live.TypeState:
		fmt.Printf("state v%d %s result=%s\n", m.Version, m.State, m.Result)
	case live.TypeEvent:
		fmt.Printf("event %s %s\n", m.Event, m.Data)
	case live.TypeError:
		fmt.Printf("error %s\n", m.Code)
	}
}

// Example defines a component, registers it, and drives it through an
// engine on an in-memory store the way a WebSocket client would.
func Example() {
	cart := live.Define("cart", func(p live.Props) (CartState, error) {
		return CartState{Items: []string{}}, p.Decode(&struct{}{})
	}).
		Action("add", live.Typed(func(ctx *live.Context, s *CartState, item string) (any, error) {
			s.Items = append(s.Items, item)
			ctx.Emit("added", item)
			return len(s.Items), nil
		}))

	reg := live.NewRegistry()
	if err := reg.Register(cart); err != nil {
		panic(err)
	}
	engine, err := live.New(live.Options{
		Store:    memstore.New(),
		Registry: reg,
		Secret:   []byte(strings.Repeat("example secret ", 3)),
	})
	if err != nil {
		panic(err)
	}

	out := printer{ids: map[string]string{}}
	conn := engine.Connect(out)
	defer conn.Close()
	conn.Handle([]byte(`{"type":"hello"}`))
	conn.Handle([]byte(`{"type":"mount","component":"cart"}`))
	id := out.ids["last"]
	conn.Handle([]byte(`{"type":"call","id":"` + id + `","action":"add","args":["tea"]}`))
	conn.Handle([]byte(`{"type":"call","id":"` + id + `","action":"add","args":[42]}`))
	// Output:
	// welcome
	// state v1 {"items":[]} result=
	// state v2 {"items":["tea"]} result=1
	// event added "tea"
	// error bad_args
}
