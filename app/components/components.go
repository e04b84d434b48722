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
		Action("increment", live.NoArgs(func(ctx *live.Context, s *CounterState) (any, error) {
			s.Count += s.Step
			return changed(ctx, s)
		})).
		Action("decrement", live.NoArgs(func(ctx *live.Context, s *CounterState) (any, error) {
			s.Count -= s.Step
			return changed(ctx, s)
		})).
		Action("reset", live.NoArgs(func(ctx *live.Context, s *CounterState) (any, error) {
			s.Count = 0
			return changed(ctx, s)
		})).
		Action("setStep", live.Typed(func(ctx *live.Context, s *CounterState, step int) (any, error) {
			s.Step = step
			return step, nil
		}))
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
		Action("toggle", live.NoArgs(func(ctx *live.Context, s *ToggleState) (any, error) {
			s.On = !s.On
			return s.On, nil
		}))
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
	checkIndex := func(s *TodoState, i int) error {
		if i < 0 || i >= len(s.Items) {
			return live.BadArgs("index %d is out of range: the list has %d items", i, len(s.Items))
		}
		return nil
	}
	return live.Define("todo", func(props live.Props) (TodoState, error) {
		var p struct{}
		err := props.Decode(&p)
		return TodoState{Items: []TodoItem{}}, err
	}).
		Action("add", live.Typed(func(ctx *live.Context, s *TodoState, text string) (any, error) {
			text = strings.TrimSpace(text)
			if text == "" {
				return nil, live.BadArgs("item text is empty")
			}
			if n := utf8.RuneCountInString(text); n > MaxTodoText {
				return nil, live.BadArgs("item text is %d characters, the limit is %d", n, MaxTodoText)
			}
			s.Items = append(s.Items, TodoItem{Text: text})
			return len(s.Items) - 1, nil
		})).
		Action("toggle", live.Typed(func(ctx *live.Context, s *TodoState, i int) (any, error) {
			if err := checkIndex(s, i); err != nil {
				return nil, err
			}
			s.Items[i].Done = !s.Items[i].Done
			return s.Items[i].Done, nil
		})).
		Action("remove", live.Typed(func(ctx *live.Context, s *TodoState, i int) (any, error) {
			if err := checkIndex(s, i); err != nil {
				return nil, err
			}
			removed := s.Items[i]
			s.Items = append(s.Items[:i], s.Items[i+1:]...)
			return removed, nil
		}))
}
