package app

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// latencyBuckets are the upper bounds, in seconds, of the latency
// histograms: 0.25 ms doubling up to about 2 s. Fine buckets below a
// millisecond separate a fast commit from one that waited for a slow fsync.
var latencyBuckets = prometheus.ExponentialBuckets(0.00025, 2, 14)

// metrics are the Prometheus metrics of one server, in a registry of its
// own, so that several servers in one process do not collide. It implements
// live.Observer.
type metrics struct {
	registry      *prometheus.Registry
	actions       *prometheus.CounterVec
	actionSeconds *prometheus.HistogramVec
	hydrations    *prometheus.CounterVec
	commitSeconds prometheus.Histogram
	commitWrites  prometheus.Histogram
}

// newMetrics registers the event metrics and the Go and process collectors.
// The metrics read from the server's statistics are added by registerStats.
func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livebolt_actions_total",
			Help: `Call messages handled, by component type and result ("ok" or the error code); component is empty when the id named no component on the connection.`,
		}, []string{"component", "result"}),
		actionSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "livebolt_action_duration_seconds",
			Help:    "Time to handle a call message, store commit included, by component type.",
			Buckets: latencyBuckets,
		}, []string{"component"}),
		hydrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livebolt_hydrations_total",
			Help: `Hydrate messages handled, by result ("ok" or the error code).`,
		}, []string{"result"}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "livebolt_store_commit_duration_seconds",
			Help:    "Time of one committed bbolt transaction of session writes, fsync included.",
			Buckets: latencyBuckets,
		}),
		commitWrites: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "livebolt_store_commit_writes",
			Help:    "Session writes grouped into one committed bbolt transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
	}
	m.registry.MustRegister(
		m.actions, m.actionSeconds, m.hydrations, m.commitSeconds, m.commitWrites,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// ObserveCall implements live.Observer.
func (m *metrics) ObserveCall(component, action, code string, elapsed time.Duration) {
	m.actions.WithLabelValues(component, code).Inc()
	m.actionSeconds.WithLabelValues(component).Observe(elapsed.Seconds())
}

// ObserveHydration implements live.Observer.
func (m *metrics) ObserveHydration(code string) {
	m.hydrations.WithLabelValues(code).Inc()
}

// observeCommit is the boltdb.Options.OnCommit hook.
func (m *metrics) observeCommit(writes int, elapsed time.Duration) {
	m.commitSeconds.Observe(elapsed.Seconds())
	m.commitWrites.Observe(float64(writes))
}

// registerStats adds the gauges and counters that are read from the
// engine, store and sweep statistics at scrape time.
func (m *metrics) registerStats(s *Server) {
	m.registry.MustRegister(newStatsCollector(s))
}

// handler serves the registry in the Prometheus exposition formats. The
// error of a failing collector is logged, and the other metrics are still
// served.
func (m *metrics) handler(log *slog.Logger) fiber.Handler {
	return adaptor.HTTPHandler(promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{
		ErrorLog:      scrapeLogger{log},
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      m.registry,
	}))
}

// scrapeLogger adapts slog to promhttp.Logger.
type scrapeLogger struct{ log *slog.Logger }

func (l scrapeLogger) Println(v ...any) {
	l.log.Error("metrics scrape failed", "err", fmt.Sprint(v...))
}

// statsCollector reads the server's statistics at each scrape. The boltdb
// store's Stats reads key counts that every write keeps up to date, so a
// scrape does not walk the database file.
type statsCollector struct {
	s *Server

	connections    *prometheus.Desc
	clients        *prometheus.Desc
	instances      *prometheus.Desc
	sessions       *prometheus.Desc
	failedSessions *prometheus.Desc
	storedClients  *prometheus.Desc
	bucketKeys     *prometheus.Desc
	fileSize       *prometheus.Desc
	sweepRuns      *prometheus.Desc
	sweepFailures  *prometheus.Desc
	sweepRemoved   *prometheus.Desc
}

func newStatsCollector(s *Server) *statsCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &statsCollector{
		s:              s,
		connections:    desc("livebolt_connections", "Open WebSocket connections, including those that have not sent hello yet."),
		clients:        desc("livebolt_clients", "Distinct clients with at least one open connection that completed hello."),
		instances:      desc("livebolt_instances", "Component instances in memory."),
		sessions:       desc("livebolt_sessions", "Sessions in the store."),
		failedSessions: desc("livebolt_failed_sessions", "Stored sessions with at least one failed hydration attempt."),
		storedClients:  desc("livebolt_stored_clients", "Clients that own at least one stored session."),
		bucketKeys:     desc("livebolt_store_bucket_keys", "Keys in each bucket of the store.", "bucket"),
		fileSize:       desc("livebolt_store_file_size_bytes", "Size of the database file."),
		sweepRuns:      desc("livebolt_sweep_runs_total", "Runs of each sweep, scheduled or manual.", "sweep"),
		sweepFailures:  desc("livebolt_sweep_failures_total", "Runs of each sweep that returned an error or panicked.", "sweep"),
		sweepRemoved:   desc("livebolt_sweep_removed_total", "Sessions removed by each sweep.", "sweep"),
	}
}

func (c *statsCollector) descs() []*prometheus.Desc {
	return []*prometheus.Desc{
		c.connections, c.clients, c.instances, c.sessions, c.failedSessions,
		c.storedClients, c.bucketKeys, c.fileSize, c.sweepRuns, c.sweepFailures, c.sweepRemoved,
	}
}

// Describe implements prometheus.Collector.
func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}

	ls := c.s.engine.Stats()
	gauge(c.connections, float64(ls.ConnectionCount))
	gauge(c.clients, float64(ls.ClientCount))
	gauge(c.instances, float64(ls.InstanceCount))

	if st, err := c.s.store.Stats(); err != nil {
		ch <- prometheus.NewInvalidMetric(c.sessions, err)
	} else {
		gauge(c.sessions, float64(st.Sessions))
		gauge(c.failedSessions, float64(st.FailedSessions))
		gauge(c.storedClients, float64(st.Clients))
		gauge(c.fileSize, float64(st.FileSizeBytes))
		for name, b := range st.Buckets {
			gauge(c.bucketKeys, float64(b.Keys), name)
		}
	}

	for name, js := range c.s.jobs.Stats() {
		counter(c.sweepRuns, float64(js.Runs), name)
		counter(c.sweepFailures, float64(js.Failures), name)
		counter(c.sweepRemoved, float64(js.TotalRemoved), name)
	}
}
