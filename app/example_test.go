package app_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/gofiber/fiber/v2"
	"github.com/livebolt/livebolt/app"
	"github.com/livebolt/livebolt/live"
	"github.com/livebolt/livebolt/storage/memstore"
)

// NoteState is the state of the example's note component.
type NoteState struct {
	Text string `json:"text"`
}

// Example_embed adds livebolt to a fiber app of the program's own, with a
// component of its own, under paths of its choosing.
func Example_embed() {
	note := live.Define("note", func(p live.Props) (NoteState, error) {
		return NoteState{}, p.Decode(&struct{}{})
	}).
		Action("write", live.Typed(func(ctx *live.Context, s *NoteState, text string) (any, error) {
			s.Text = text
			return nil, nil
		}))

	srv, err := app.New(app.Options{
		Store: memstore.New(), // or boltdb.Open for state that survives restarts
		Register: func(r *live.Registry) error {
			return r.Register(note)
		},
	})
	if err != nil {
		panic(err)
	}
	web := fiber.New(fiber.Config{ErrorHandler: srv.ErrorHandler})
	web.Get("/ws", srv.LiveHandler())
	web.Get("/assets/live.js", srv.ClientHandler())
	srv.MountMemoryAPI(web.Group("/ops/memory"))
	web.Get("/ops/metrics", srv.MetricsHandler())
	srv.Start()
	// A real program now calls web.Listen, and on SIGTERM srv.Shutdown
	// followed by web.Shutdown.

	for _, path := range []string{"/ops/memory/health", "/assets/live.js", "/ws"} {
		resp, err := web.Test(httptest.NewRequest("GET", path, nil))
		if err != nil {
			panic(err)
		}
		fmt.Println(path, resp.StatusCode)
	}
	_ = srv.Shutdown(context.Background())
	// Output:
	// /ops/memory/health 200
	// /assets/live.js 200
	// /ws 426
}
