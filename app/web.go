package app

import (
	"embed"
	"fmt"
	"path"

	"github.com/gofiber/fiber/v2"
)

// web holds the browser client, the demo page and the dashboard. They are
// plain files, served as written, with no build step.
//
//go:embed web/*
var web embed.FS

// pages maps each URL path to its embedded file.
var pages = map[string]string{
	"/":             "web/index.html",
	"/dashboard":    "web/dashboard.html",
	"/live.js":      "web/live.js",
	"/demo.js":      "web/demo.js",
	"/dashboard.js": "web/dashboard.js",
	"/app.css":      "web/app.css",
}

var contentTypes = map[string]string{
	".html": fiber.MIMETextHTMLCharsetUTF8,
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

// servePage returns a handler for one embedded file. The files are read at
// start-up, so a missing one fails New instead of a request.
func servePage(file string) (fiber.Handler, error) {
	body, err := web.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read embedded %s: %w", file, err)
	}
	contentType := contentTypes[path.Ext(file)]
	return func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, contentType)
		// Pages change with the binary, so browsers revalidate on each load.
		c.Set(fiber.HeaderCacheControl, "no-cache")
		c.Set("X-Content-Type-Options", "nosniff")
		return c.Send(body)
	}, nil
}
