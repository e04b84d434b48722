package app

import (
	"fmt"
	"time"

	"github.com/gofiber/fiber/v2"
)

// Default paths of the routes that Mount adds.
const (
	PathLive      = "/live"
	PathMemoryAPI = "/api/memory"
	PathMetrics   = "/metrics"
	PathAdminAPI  = "/api/admin"
	PathClient    = "/live.js"
)

// FiberConfig returns the fiber settings of livebolt's own HTTP server:
// JSON errors through ErrorHandler, a body limit of DefaultBodyLimit and a
// 30 s read timeout. An embedding program may use them for its fiber.App or
// keep its own; the handlers work either way.
func (s *Server) FiberConfig() fiber.Config {
	return fiber.Config{
		DisableStartupMessage: true,
		BodyLimit:             DefaultBodyLimit,
		ReadTimeout:           30 * time.Second,
		ErrorHandler:          s.ErrorHandler,
	}
}

// LiveHandler returns the handler of the live WebSocket endpoint. Register
// it for GET on the path of your choice:
//
//	web.Get("/ws", srv.LiveHandler())
//
// It responds with 426 to a request that is not a WebSocket upgrade, with
// 403 to one from a foreign Origin, and with 503 to any request after
// Shutdown.
func (s *Server) LiveHandler() fiber.Handler { return s.upgradeLive }

// MountMemoryAPI adds the memory endpoints under r: GET stats, GET health
// and POST cleanup. Pass a group to choose their prefix:
//
//	srv.MountMemoryAPI(web.Group("/ops/memory"))
//
// After Shutdown they respond with 503.
func (s *Server) MountMemoryAPI(r fiber.Router) {
	r.Get("/stats", s.whileOpen, s.stats)
	r.Get("/health", s.whileOpen, s.health)
	r.Post("/cleanup", s.whileOpen, s.cleanup)
}

// MountAdminAPI adds the admin endpoints under r: GET backup, a
// consistent copy of the database file. They are protected like cleanup:
// the bearer Options.AdminToken, or loopback callers only when it is
// empty. A download must keep up 1 MiB/s after its first minute. A
// fiber.Config.WriteTimeout of the embedding app replaces that deadline, so
// leave it unset or longer than a backup takes.
//
//	srv.MountAdminAPI(web.Group("/ops/admin"))
func (s *Server) MountAdminAPI(r fiber.Router) {
	// GET only: a HEAD would copy the whole file to send no body.
	r.Add(fiber.MethodGet, "/backup", s.backup)
}

// MetricsHandler returns the handler of the Prometheus metrics, in the text
// exposition format, from MetricsRegistry. After Shutdown it responds with
// 503.
func (s *Server) MetricsHandler() fiber.Handler {
	return func(c *fiber.Ctx) error {
		if err := s.closedError(); err != nil {
			return err
		}
		return s.metricsHandler(c)
	}
}

// ClientHandler returns a handler that serves live.js, the browser client,
// as an ES module. Pass the path of LiveHandler to its connect function.
func (s *Server) ClientHandler() fiber.Handler { return s.pages[PathClient] }

// Mount adds every route at its default path to app: the demo page at /,
// the dashboard, the browser client and its assets, LiveHandler at
// PathLive, the memory API under PathMemoryAPI, MetricsHandler at
// PathMetrics and the admin API under PathAdminAPI. A known path called with another method gets 405, and any
// other path 404, both as JSON. That 404 handler matches every path, so
// register routes of your own before calling Mount. An embedding program
// that wants other paths, or not the demo pages, uses the handlers one by
// one instead.
func (s *Server) Mount(app *fiber.App) error {
	allowed := map[string]string{
		PathLive: "GET, HEAD", PathMemoryAPI + "/stats": "GET, HEAD",
		PathMemoryAPI + "/health": "GET, HEAD", PathMemoryAPI + "/cleanup": "POST",
		PathMetrics: "GET, HEAD", PathAdminAPI + "/backup": "GET",
	}
	for url, handler := range s.pages {
		app.Get(url, handler)
		allowed[url] = "GET, HEAD"
	}
	app.Get(PathLive, s.LiveHandler())
	s.MountMemoryAPI(app.Group(PathMemoryAPI))
	app.Get(PathMetrics, s.MetricsHandler())
	s.MountAdminAPI(app.Group(PathAdminAPI))
	for path, allow := range allowed {
		app.All(path, methodNotAllowed(allow))
	}
	app.Use(func(c *fiber.Ctx) error {
		return fiber.NewError(fiber.StatusNotFound, fmt.Sprintf("no route for %s %s", c.Method(), c.Path()))
	})
	return nil
}

// whileOpen is a middleware that answers 503 once Shutdown has begun, when
// the store may already be closed.
func (s *Server) whileOpen(c *fiber.Ctx) error {
	if err := s.closedError(); err != nil {
		return err
	}
	return c.Next()
}

// closedError returns a 503 error once Shutdown has begun, and nil before.
func (s *Server) closedError() error {
	if s.isClosing() {
		return fiber.NewError(fiber.StatusServiceUnavailable, "server is shutting down")
	}
	return nil
}

// isClosing reports whether Shutdown has begun.
func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// loadPages reads the embedded files once, so that a missing one fails New
// instead of a request.
func loadPages() (map[string]fiber.Handler, error) {
	handlers := make(map[string]fiber.Handler, len(pages))
	for url, file := range pages {
		h, err := servePage(file)
		if err != nil {
			return nil, err
		}
		handlers[url] = h
	}
	return handlers, nil
}
