// Package components holds the demo components that livebolt registers at
// start-up: counter, toggle and todo. They are written the way an
// application using livebolt writes its own.
package components

import (
	"strings"
	"unicode/utf8"

	"github.com/livebolt/livebolt/live"
)

// Register adds every demo component to reg.
func Register(reg *live.Registry) error {
	for _, def := range []live.Definition{Counter(), Toggle(), Todo()} {
		if err := reg.Register(def); err != nil {
			return err
		}
	}
	return nil
}

// CounterState is the state of a counter.
type CounterState struct {
	Count int `json:"count"`
	Step  int `json:"step"`
}

// Counter counts up and down by a step. Props: initial (default 0) and step
// (default 1). Every change emits count-changed with the new count.
func Counter() *live.Component[CounterState] {
	changed := func(ctx *live.Context, s *CounterState) (any, error) {
		ctx.Emit("count-changed", map[string]int{"count": s.Count})
		return s.Count, nil
	}
	return live.Define("counter", func(props live.Props) (CounterState, error) {
		var p struct {
			Initial int  `json:"initial"`
			Step    *int `json:"step"`
		}
		if err := props.Decode(&p); err != nil {
			return CounterState{}, err
		}
		s := CounterState{Count: p.Initial, Step: 1}
		if p.Step != nil {
			s.Step = *p.Step
		}
		return s, nil
	}).
		Action("increment", func(ctx *live.Context, s *CounterState, args live.Args) (any, error) {
			if err := args.Want(0); err != nil {
				return nil, err
			}
			s.Count += s.Step
			return changed(ctx, s)
		}).
		Action("decrement", func(ctx *live.Context, s *CounterState, args live.Args) (any, error) {
			if err := args.Want(0); err != nil {
				return nil, err
			}
			s.Count -= s.Step
			return changed(ctx, s)
		}).
		Action("reset", func(ctx *live.Context, s *CounterState, args live.Args) (any, error) {
			if err := args.Want(0); err != nil {
				return nil, err
			}
			s.Count = 0
			return changed(ctx, s)
		}).
		Action("setStep", func(ctx *live.Context, s *CounterState, args live.Args) (any, error) {
			if err := args.Want(1); err != nil {
				return nil, err
			}
			n, err := args.Int(0)
			if err != nil {
				return nil, err
			}
			s.Step = n
			return n, nil
		})
}

// ToggleState is the state of a toggle.
type ToggleState struct {
	On bool `json:"on"`
}

// Toggle is a switch. Prop on (default false) sets the initial position.
func Toggle() *live.Component[ToggleState] {
	return live.Define("toggle", func(props live.Props) (ToggleState, error) {
		var p struct {
			On bool `json:"on"`
		}
		err := props.Decode(&p)
		return ToggleState{On: p.On}, err
	}).
		Action("toggle", func(ctx *live.Context, s *ToggleState, args live.Args) (any, error) {
			if err := args.Want(0); err != nil {
				return nil, err
			}
			s.On = !s.On
			return s.On, nil
		})
}

// TodoItem is one entry of a todo list.
type TodoItem struct {
	Text string `json:"text"`
	Done bool   `json:"done"`
}

// TodoState is the state of a todo list.
type TodoState struct {
	Items []TodoItem `json:"items"`
}

// MaxTodoText is the longest item text, in characters, that add accepts.
const MaxTodoText = 500

// Todo is a list of items that can be added, toggled and removed by index.
func Todo() *live.Component[TodoState] {
	index := func(s *TodoState, args live.Args) (int, error) {
		if err := args.Want(1); err != nil {
			return 0, err
		}
		i, err := args.Int(0)
		if err != nil {
			return 0, err
		}
		if i < 0 || i >= len(s.Items) {
			return 0, live.BadArgs("index %d is out of range: the list has %d items", i, len(s.Items))
		}
		return i, nil
	}
	return live.Define("todo", func(props live.Props) (TodoState, error) {
		var p struct{}
		err := props.Decode(&p)
		return TodoState{Items: []TodoItem{}}, err
	}).
		Action("add", func(ctx *live.Context, s *TodoState, args live.Args) (any, error) {
			if err := args.Want(1); err != nil {
				return nil, err
			}
			text, err := args.String(0)
			if err != nil {
				return nil, err
			}
			text = strings.TrimSpace(text)
			if text == "" {
				return nil, live.BadArgs("item text is empty")
			}
			if n := utf8.RuneCountInString(text); n > MaxTodoText {
				return nil, live.BadArgs("item text is %d characters, the limit is %d", n, MaxTodoText)
			}
			s.Items = append(s.Items, TodoItem{Text: text})
			return len(s.Items) - 1, nil
		}).
		Action("toggle", func(ctx *live.Context, s *TodoState, args live.Args) (any, error) {
			i, err := index(s, args)
			if err != nil {
				return nil, err
			}
			s.Items[i].Done = !s.Items[i].Done
			return s.Items[i].Done, nil
		}).
		Action("remove", func(ctx *live.Context, s *TodoState, args live.Args) (any, error) {
			i, err := index(s, args)
			if err != nil {
				return nil, err
			}
			removed := s.Items[i]
			s.Items = append(s.Items[:i], s.Items[i+1:]...)
			return removed, nil
		})
}
