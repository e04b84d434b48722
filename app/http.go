package app

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/livebolt/livebolt/live"
	"github.com/livebolt/livebolt/storage"
)

// routes builds the fiber application of Serve, with every route at its
// default path.
func (s *Server) routes() (*fiber.App, error) {
	app := fiber.New(s.FiberConfig())
	if err := s.Mount(app); err != nil {
		return nil, err
	}
	return app, nil
}

// methodNotAllowed rejects a known path called with another method.
func methodNotAllowed(allow string) fiber.Handler {
	return func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderAllow, allow)
		return fiber.NewError(fiber.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s; use %s", c.Method(), c.Path(), allow))
	}
}

// errorBody is the JSON of every HTTP error response.
type errorBody struct {
	Error struct {
		Status  int    `json:"status"`
		Message string `json:"message"`
	} `json:"error"`
}

// ErrorHandler writes an error returned by a handler as the JSON body
// {"error":{"status":N,"message":"..."}}, with the status of a *fiber.Error
// or 500 for any other error, which it logs. FiberConfig sets it; an
// embedding program can use it as its own fiber.Config.ErrorHandler.
func (s *Server) ErrorHandler(c *fiber.Ctx, err error) error {
	var body errorBody
	body.Error.Status = fiber.StatusInternalServerError
	body.Error.Message = "internal server error"
	var fe *fiber.Error
	if errors.As(err, &fe) {
		body.Error.Status = fe.Code
		body.Error.Message = fe.Message
	} else {
		s.log.Error("http handler failed", "method", c.Method(), "path", c.Path(), "err", err)
	}
	return c.Status(body.Error.Status).JSON(body)
}

type runtimeStats struct {
	HeapAllocBytes uint64 `json:"heapAllocBytes"`
	HeapInuseBytes uint64 `json:"heapInuseBytes"`
	SysBytes       uint64 `json:"sysBytes"`
	Goroutines     int    `json:"goroutines"`
	NumGC          uint32 `json:"numGC"`
}

func readRuntime() runtimeStats {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return runtimeStats{
		HeapAllocBytes: m.HeapAlloc, HeapInuseBytes: m.HeapInuse, SysBytes: m.Sys,
		Goroutines: runtime.NumGoroutine(), NumGC: m.NumGC,
	}
}

// Pressure levels of the stats analysis.
const (
	pressureLow    = "LOW"
	pressureMedium = "MEDIUM"
	pressureHigh   = "HIGH"
)

// pressure grades used/limit: below half is LOW, below 80% MEDIUM.
func pressure(used, limit float64) string {
	switch ratio := used / limit; {
	case ratio < 0.5:
		return pressureLow
	case ratio < 0.8:
		return pressureMedium
	default:
		return pressureHigh
	}
}

type analysis struct {
	MemoryPressure    string   `json:"memoryPressure"`
	HydrationPressure string   `json:"hydrationPressure"`
	Recommendations   []string `json:"recommendations"`
}

func (s *Server) analyze(rt runtimeStats, ls live.Stats, st storage.Stats) analysis {
	lim := s.opts.Health
	heapMB := float64(rt.HeapInuseBytes) / (1 << 20)
	a := analysis{
		MemoryPressure:    pressure(max(heapMB/float64(lim.MaxHeapMB), float64(ls.InstanceCount)/float64(lim.MaxInstances)), 1),
		HydrationPressure: pressure(float64(st.Sessions), float64(lim.MaxSessions)),
		Recommendations:   []string{},
	}
	if st.Sessions > 0 && st.FailedSessions*10 > st.Sessions && a.HydrationPressure == pressureLow {
		a.HydrationPressure = pressureMedium
	}
	if heapMB > float64(lim.MaxHeapMB)*0.8 {
		a.Recommendations = append(a.Recommendations, fmt.Sprintf("heap in use is %.0f MiB of the %d MiB limit; look for clients holding many instances under live.componentsPerClient", heapMB, lim.MaxHeapMB))
	}
	if ls.InstanceCount > lim.MaxInstances*8/10 {
		a.Recommendations = append(a.Recommendations, fmt.Sprintf("%d in-memory instances of the %d limit; raise --health-max-instances if this load is expected", ls.InstanceCount, lim.MaxInstances))
	}
	if st.Sessions > lim.MaxSessions*8/10 {
		a.Recommendations = append(a.Recommendations, fmt.Sprintf("%d stored sessions of the %d limit; lower --max-age or run POST /api/memory/cleanup", st.Sessions, lim.MaxSessions))
	}
	if st.FailedSessions > 0 {
		a.Recommendations = append(a.Recommendations, fmt.Sprintf("%d sessions have failed hydration attempts; the failed sweep removes those that reach %d", st.FailedSessions, s.engine.MaxAttempts()))
	}
	return a
}

// snapshot reads the store, engine and runtime statistics together.
func (s *Server) snapshot() (storage.Stats, live.Stats, runtimeStats, error) {
	st, err := s.store.Stats()
	if err != nil {
		return st, live.Stats{}, runtimeStats{}, err
	}
	return st, s.engine.Stats(), readRuntime(), nil
}

func (s *Server) stats(c *fiber.Ctx) error {
	st, ls, rt, err := s.snapshot()
	if err != nil {
		return err
	}
	js := s.jobs.Stats()
	return c.JSON(fiber.Map{
		"timestamp": time.Now().UTC(),
		"live": fiber.Map{
			"registrySize":        ls.RegistrySize,
			"instanceCount":       ls.InstanceCount,
			"connectionCount":     ls.ConnectionCount,
			"clientCount":         ls.ClientCount,
			"componentsPerClient": ls.ComponentsPerClient,
		},
		"hydration": fiber.Map{
			"totalSessions":  st.Sessions,
			"failedSessions": st.FailedSessions,
			"storedClients":  st.Clients,
			"oldestSession":  st.OldestActivity,
			"newestSession":  st.NewestActivity,
			"maxAgeSeconds":  s.engine.MaxAge().Seconds(),
			"maxAttempts":    s.engine.MaxAttempts(),
			"rejected":       ls.Rejected,
		},
		"storage": fiber.Map{
			"path":          st.Path,
			"fileSizeBytes": st.FileSizeBytes,
			"buckets":       st.Buckets,
		},
		"jobs": fiber.Map{
			JobAgeSweep:    js[JobAgeSweep],
			JobFailedSweep: js[JobFailedSweep],
		},
		"runtime":  rt,
		"analysis": s.analyze(rt, ls, st),
	})
}

func (s *Server) health(c *fiber.Ctx) error {
	st, ls, rt, err := s.snapshot()
	if err != nil {
		return err
	}
	heapMB := float64(rt.HeapInuseBytes) / (1 << 20)
	lim := s.opts.Health
	warnings := []string{}
	if ls.InstanceCount > lim.MaxInstances {
		warnings = append(warnings, fmt.Sprintf("instances %d above %d", ls.InstanceCount, lim.MaxInstances))
	}
	if st.Sessions > lim.MaxSessions {
		warnings = append(warnings, fmt.Sprintf("sessions %d above %d", st.Sessions, lim.MaxSessions))
	}
	if heapMB > float64(lim.MaxHeapMB) {
		warnings = append(warnings, fmt.Sprintf("heap %.1f MiB above %d MiB", heapMB, lim.MaxHeapMB))
	}
	status := "healthy"
	if len(warnings) > 0 {
		status = "warning"
	}
	return c.JSON(fiber.Map{
		"status":     status,
		"instances":  ls.InstanceCount,
		"sessions":   st.Sessions,
		"heapUsedMB": float64(int(heapMB*10)) / 10,
		"limits":     lim,
		"warnings":   warnings,
	})
}

// authorizeAdmin checks the caller of an administrative endpoint: the bearer
// token when one is configured, a loopback peer address otherwise.
func (s *Server) authorizeAdmin(c *fiber.Ctx) error {
	// A page on another site can make a browser send a simple POST to a
	// loopback server. Browsers mark such a request with Origin, so reject
	// it first.
	if c.Get(fiber.HeaderOrigin) != "" && !s.checkOrigin(c) {
		return fiber.NewError(fiber.StatusForbidden, c.Path()+" does not accept cross-origin requests from "+c.Get(fiber.HeaderOrigin))
	}
	if s.opts.AdminToken == "" {
		if ip := c.Context().RemoteIP(); !ip.IsLoopback() {
			return fiber.NewError(fiber.StatusForbidden, c.Path()+" is allowed only from loopback addresses unless LIVEBOLT_ADMIN_TOKEN is set")
		}
		return nil
	}
	// The scheme name is case-insensitive (RFC 9110, section 11.1).
	scheme, token, ok := strings.Cut(c.Get(fiber.HeaderAuthorization), " ")
	ok = ok && strings.EqualFold(scheme, "Bearer")
	if !ok || subtle.ConstantTimeCompare([]byte(token), []byte(s.opts.AdminToken)) != 1 {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="livebolt"`)
		return fiber.NewError(fiber.StatusUnauthorized, "missing or wrong bearer token")
	}
	return nil
}

type counts struct {
	Instances int `json:"instances"`
	Sessions  int `json:"sessions"`
}

func (s *Server) counts() (counts, error) {
	st, err := s.store.Stats()
	if err != nil {
		return counts{}, err
	}
	return counts{Instances: s.engine.Stats().InstanceCount, Sessions: st.Sessions}, nil
}

// cleanup runs both sweeps now and releases orphaned instances. Only
// ?all=true deletes sessions that are still valid.
func (s *Server) cleanup(c *fiber.Ctx) error {
	if err := s.authorizeAdmin(c); err != nil {
		return err
	}

	all := false
	switch v := c.Query("all"); v {
	case "", "false", "0":
	case "true", "1":
		all = true
	default:
		return fiber.NewError(fiber.StatusBadRequest, fmt.Sprintf("invalid value %q for all; use true or false", v))
	}

	before, err := s.counts()
	if err != nil {
		return err
	}

	cleaned := fiber.Map{}
	expired, err := s.jobs.RunNow(JobAgeSweep)
	if err != nil {
		return err
	}
	failed, err := s.jobs.RunNow(JobFailedSweep)
	if err != nil {
		return err
	}
	cleaned["expiredSessions"] = expired
	cleaned["failedSessions"] = failed
	cleaned["orphanInstances"] = s.engine.ReleaseOrphans()

	if all {
		released, r, err := s.engine.DeleteAllSessions()
		if err != nil {
			return err
		}
		cleaned["releasedInstances"] = released
		cleaned["allSessions"] = r.Sessions
		s.log.Warn("cleanup deleted all sessions", "sessions", r.Sessions, "instances", released)
	}

	after, err := s.counts()
	if err != nil {
		return err
	}
	s.log.Info("cleanup ran", "all", all, "expired", expired, "failed", failed, "sessions_before", before.Sessions, "sessions_after", after.Sessions)
	return c.JSON(fiber.Map{"cleaned": cleaned, "before": before, "after": after})
}
