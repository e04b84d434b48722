package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	fastws "github.com/fasthttp/websocket"
)

// Soak test sizes. Measured on the 2-core test machine with NoSync and no
// other tests running, 8 workers ran 3,400 to 5,800 cycles/s with unmount
// and 2,100 to 3,000 cycles/s without (the database grows), so 20,000 cycles
// take 4 to 9 s. Each test then waits 10 to 20 s for fasthttp's idle workers
// to end, so the two tests take about 40 s together. On a loaded machine the
// rate fell to 400 cycles/s, which soakTimeLimit still allows.
const (
	soakCycles      = 20000
	soakCyclesShort = 2000
	soakWorkers     = 8

	// soakHeapSlack is how much heap in use may grow over a soak, measured
	// after two forced collections on both sides.
	soakHeapSlack = 8 << 20
	// soakGoroutineSlack is how many goroutines above the starting count
	// are tolerated once the server has settled.
	soakGoroutineSlack = 5
	// soakSettle bounds the wait for idle goroutines to end. fasthttp's
	// pool checks its idle workers every 10 s and ends those idle for 10 s,
	// so the last worker of a soak can live up to 20 s after it.
	soakSettle = 25 * time.Second
	// soakTimeLimit bounds the cycles themselves.
	soakTimeLimit = 3 * time.Minute
)

func soakSize() int {
	if testing.Short() {
		return soakCyclesShort
	}
	return soakCycles
}

// heapInuse returns the heap in use after two forced collections. Objects
// in a sync.Pool survive the first one in its victim cache and are freed by
// the second.
func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// soakStats is the part of /api/memory/stats that the soak tests check.
type soakStats struct {
	instances, connections, goroutines, sessions int
	buckets                                      map[string]int
	fileSize                                     int64
}

func readSoakStats(t *testing.T, s *testServer) soakStats {
	t.Helper()
	status, m := s.get(t, "/api/memory/stats")
	if status != http.StatusOK {
		t.Fatalf("stats: status %d: %v", status, m)
	}
	num := func(v any) int {
		f, ok := v.(float64)
		if !ok {
			t.Fatalf("stats: %v (%T) is not a number in %v", v, v, m)
		}
		return int(f)
	}
	section := func(name string) map[string]any {
		sec, ok := m[name].(map[string]any)
		if !ok {
			t.Fatalf("stats: no %q object in %v", name, m)
		}
		return sec
	}
	live, hydration, storage, rt := section("live"), section("hydration"), section("storage"), section("runtime")
	st := soakStats{
		instances:   num(live["instanceCount"]),
		connections: num(live["connectionCount"]),
		goroutines:  num(rt["goroutines"]),
		sessions:    num(hydration["totalSessions"]),
		fileSize:    int64(num(storage["fileSizeBytes"])),
		buckets:     map[string]int{},
	}
	buckets, ok := storage["buckets"].(map[string]any)
	if !ok {
		t.Fatalf("stats: no storage.buckets in %v", m)
	}
	for name, b := range buckets {
		bm, ok := b.(map[string]any)
		if !ok {
			t.Fatalf("stats: bucket %s is %v", name, b)
		}
		st.buckets[name] = num(bm["keys"])
	}
	return st
}

// poolCleaner is the goroutine of a fasthttp worker pool that ends idle
// workers. After its server stops, it runs until its sleep of up to 10 s
// ends.
const poolCleaner = "github.com/valyala/fasthttp.(*workerPool).Start.func2("

// countGoroutines returns how many goroutines have fn in their stack.
func countGoroutines(fn string) int {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	return strings.Count(b.String(), "\n"+fn)
}

// baselineStats reads the stats twice and returns the second reading,
// because the first response of the process starts fasthttp's Date header
// updater. The goroutine count leaves out the pool cleaners of servers that
// earlier tests stopped, since they end by themselves during the soak.
func baselineStats(t *testing.T, s *testServer) soakStats {
	t.Helper()
	readSoakStats(t, s)
	st := readSoakStats(t, s)
	if stale := countGoroutines(poolCleaner) - 1; stale > 0 {
		t.Logf("not counting %d pool cleaners of stopped servers in the %d goroutines before", stale, st.goroutines)
		st.goroutines -= stale
	}
	return st
}

// soakReply holds the fields of server messages that a cycle checks.
type soakReply struct {
	Type    string `json:"type"`
	Ref     int    `json:"ref"`
	ID      string `json:"id"`
	Code    string `json:"code"`
	Message string `json:"message"`
	State   struct {
		Count int `json:"count"`
	} `json:"state"`
}

// soakClient is a WebSocket client that returns errors instead of failing
// the test, so it can run on worker goroutines.
type soakClient struct {
	ws  *fastws.Conn
	ref int
}

// soakIO bounds every read and write of a cycle.
const soakIO = 10 * time.Second

func (c *soakClient) do(msg map[string]any) (soakReply, error) {
	c.ref++
	msg["ref"] = c.ref
	_ = c.ws.SetWriteDeadline(time.Now().Add(soakIO))
	if err := c.ws.WriteJSON(msg); err != nil {
		return soakReply{}, fmt.Errorf("write %s failed: %w", msg["type"], err)
	}
	_ = c.ws.SetReadDeadline(time.Now().Add(soakIO))
	// Events, which carry no ref, may come before the reply.
	for range 100 {
		var r soakReply
		if err := c.ws.ReadJSON(&r); err != nil {
			return r, fmt.Errorf("read reply to %s failed: %w", msg["type"], err)
		}
		if r.Ref != c.ref {
			continue
		}
		if r.Type == "error" {
			return r, fmt.Errorf("%s rejected with %s: %s", msg["type"], r.Code, r.Message)
		}
		return r, nil
	}
	return soakReply{}, fmt.Errorf("no reply to %s within 100 messages", msg["type"])
}

// close runs the closing handshake and then waits until the server closes
// the socket, so the server has released the connection before the next
// cycle starts and the TIME_WAIT state stays on the server's side.
func (c *soakClient) close() error {
	defer c.ws.Close()
	msg := fastws.FormatCloseMessage(fastws.CloseNormalClosure, "")
	if err := c.ws.WriteControl(fastws.CloseMessage, msg, time.Now().Add(soakIO)); err != nil {
		return fmt.Errorf("write close frame failed: %w", err)
	}
	_ = c.ws.SetReadDeadline(time.Now().Add(soakIO))
	var err error
	for range 100 {
		if _, _, err = c.ws.ReadMessage(); err != nil {
			break
		}
	}
	if !fastws.IsCloseError(err, fastws.CloseNormalClosure) {
		return fmt.Errorf("closing handshake ended with %v, want close 1000", err)
	}
	nc := c.ws.NetConn()
	_ = nc.SetReadDeadline(time.Now().Add(soakIO))
	buf := make([]byte, 64)
	for range 100 {
		if _, err = nc.Read(buf); err != nil {
			break
		}
	}
	if isTimeout(err) {
		return fmt.Errorf("server did not close the socket within %s", soakIO)
	}
	return nil
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

// soakCycle runs one client's life: connect, hello, mount a counter, call
// increment, unmount it when unmount is set, and disconnect.
func soakCycle(addr string, i int, unmount bool) error {
	ws, resp, err := fastws.DefaultDialer.Dial("ws://"+addr+"/live", nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return fmt.Errorf("dial /live failed: %w", err)
	}
	c := &soakClient{ws: ws}

	if r, err := c.do(map[string]any{"type": "hello"}); err != nil || r.Type != "welcome" {
		_ = ws.Close()
		return fmt.Errorf("hello: %v %v", r.Type, err)
	}

	initial := i % 1000
	m, err := c.do(map[string]any{"type": "mount", "component": "counter", "key": "soak", "props": map[string]any{"initial": initial}})
	if err != nil || m.ID == "" {
		_ = ws.Close()
		return fmt.Errorf("mount: %+v %v", m, err)
	}
	r, err := c.do(map[string]any{"type": "call", "id": m.ID, "action": "increment", "args": []any{}})
	if err != nil || r.State.Count != initial+1 {
		_ = ws.Close()
		return fmt.Errorf("increment: %+v %v, want count %d", r, err, initial+1)
	}

	if unmount {
		if u, err := c.do(map[string]any{"type": "unmount", "id": m.ID}); err != nil || u.Type != "unmounted" {
			_ = ws.Close()
			return fmt.Errorf("unmount: %+v %v", u, err)
		}
	}

	return c.close()
}

// runSoak runs n cycles on workers goroutines and returns how long they
// took. It stops at the first failed cycle, or after soakTimeLimit.
func runSoak(t *testing.T, s *testServer, n, workers int, unmount bool) time.Duration {
	t.Helper()
	var next, done atomic.Int64
	var stop atomic.Bool
	var firstErr error
	var errOnce sync.Once
	deadline := time.Now().Add(soakTimeLimit)
	// marks[k] is when the (k+1)th tenth of the cycles was done, to show
	// whether the rate falls as the soak goes on.
	tenth := max(n/10, 1)
	var marks [10]atomic.Int64

	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if time.Now().After(deadline) {
					errOnce.Do(func() { firstErr = fmt.Errorf("time limit %s reached", soakTimeLimit) })
					stop.Store(true)
					return
				}
				if err := soakCycle(s.addr, i, unmount); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("cycle %d: %w", i, err) })
					stop.Store(true)
					return
				}
				d := done.Add(1)
				if k := d/int64(tenth) - 1; d%int64(tenth) == 0 && k < int64(len(marks)) {
					marks[k].Store(int64(time.Since(start)))
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	if firstErr != nil {
		t.Fatalf("soak stopped after %d of %d cycles in %s: %v", done.Load(), n, elapsed.Round(time.Millisecond), firstErr)
	}

	rates := make([]string, 0, len(marks))
	prev := time.Duration(0)
	for k := range marks {
		at := time.Duration(marks[k].Load())
		if at == 0 {
			break
		}
		rates = append(rates, fmt.Sprintf("%.0f", float64(tenth)/(at-prev).Seconds()))
		prev = at
	}
	t.Logf("%d cycles on %d workers in %s: %.0f cycles/s; by tenth of the cycles: %s cycles/s",
		n, workers, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), strings.Join(rates, ", "))
	return elapsed
}

// waitSettled polls the stats until ok accepts them or soakSettle has
// passed, and returns the last stats and the time waited.
func waitSettled(t *testing.T, s *testServer, ok func(soakStats) bool) (soakStats, time.Duration) {
	t.Helper()
	start := time.Now()
	st := readSoakStats(t, s)
	for !ok(st) && time.Since(start) < soakSettle {
		time.Sleep(250 * time.Millisecond)
		st = readSoakStats(t, s)
	}
	return st, time.Since(start)
}

// logGoroutines writes every goroutine's stack to the test log, to name
// the ones that did not end.
func logGoroutines(t *testing.T) {
	t.Helper()
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	t.Logf("goroutines:\n%s", b.String())
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// checkHeap fails when the heap in use grew by more than soakHeapSlack.
func checkHeap(t *testing.T, before, after uint64) {
	t.Helper()
	if after > before+soakHeapSlack {
		t.Errorf("heap in use grew from %.1f MiB to %.1f MiB (+%.1f MiB), more than the %d MiB allowed",
			mib(before), mib(after), mib(after-before), soakHeapSlack>>20)
	}
}

func bucketsJSON(b map[string]int) string {
	out, _ := json.Marshal(b)
	return string(out)
}

// TestSoakReleasesEverything mounts, calls and unmounts a counter on many
// short connections and checks that nothing stays behind: no instance, no
// connection, no stored session, no goroutine and no heap growth.
func TestSoakReleasesEverything(t *testing.T) {
	n := soakSize()
	s := startServerLogging(t, Options{NoSync: true}, slog.LevelInfo)
	before := baselineStats(t, s)
	heapBefore := heapInuse()

	elapsed := runSoak(t, s, n, soakWorkers, true)

	settleStart := time.Now()
	var releasedIn time.Duration
	after, waited := waitSettled(t, s, func(st soakStats) bool {
		released := st.instances == 0 && st.connections == 0
		if released && releasedIn == 0 {
			releasedIn = time.Since(settleStart)
		}
		return released && st.goroutines <= before.goroutines
	})
	heapAfter := heapInuse()
	t.Logf("cycles %d, duration %s; heap in use %.2f MiB before, %.2f MiB after (%+.2f MiB); goroutines %d before, %d after; instances and connections 0 after %s, goroutines settled after %s; instances %d, connections %d, sessions %d after; buckets %s; file %d bytes; server log %d bytes",
		n, elapsed.Round(time.Millisecond), mib(heapBefore), mib(heapAfter), mib(heapAfter)-mib(heapBefore),
		before.goroutines, after.goroutines, releasedIn.Round(time.Millisecond), waited.Round(time.Millisecond),
		after.instances, after.connections, after.sessions, bucketsJSON(after.buckets), after.fileSize, len(s.logs.String()))

	if after.instances != 0 || after.connections != 0 {
		t.Errorf("after %s: %d instances and %d connections in memory, want 0", soakSettle, after.instances, after.connections)
	}
	if after.sessions != 0 {
		t.Errorf("%d sessions stored after every component was unmounted, want 0", after.sessions)
	}
	for name, keys := range before.buckets {
		if after.buckets[name] != keys {
			t.Errorf("bucket %s has %d keys after the soak, %d before", name, after.buckets[name], keys)
		}
	}
	if after.goroutines > before.goroutines+soakGoroutineSlack {
		t.Errorf("goroutines: %d after %s of settling, %d before (at most %d more allowed)",
			after.goroutines, soakSettle, before.goroutines, soakGoroutineSlack)
		logGoroutines(t)
	}
	checkHeap(t, heapBefore, heapAfter)
}

// soakClock is the engine's clock in TestSoakKeptSessionsGrowDiskNotHeap:
// real time plus an offset that the test moves forward to age every session
// at once.
type soakClock struct{ offset atomic.Int64 }

func (c *soakClock) now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// TestSoakKeptSessionsGrowDiskNotHeap runs the soak without unmount, so
// every session stays stored after its connection closes. The database
// grows by one session per cycle while the heap does not, and the scheduled
// age sweep then brings every bucket back to its starting key count.
//
// The test moves the engine's clock past MaxAge after the soak instead of
// setting a MaxAge of about a second. With a sweep every second, such a
// MaxAge would remove sessions during the soak, so the peak key counts could
// not be compared with the number of cycles.
func TestSoakKeptSessionsGrowDiskNotHeap(t *testing.T) {
	n := soakSize()
	const maxAge = time.Hour
	clock := &soakClock{}
	s := startServerLogging(t, Options{NoSync: true, MaxAge: maxAge, AgeSweep: "@every 1s", Now: clock.now}, slog.LevelInfo)
	before := baselineStats(t, s)
	heapBefore := heapInuse()

	elapsed := runSoak(t, s, n, soakWorkers, false)

	peak, waited := waitSettled(t, s, func(st soakStats) bool {
		return st.instances == 0 && st.connections == 0
	})
	heapPeak := heapInuse()
	t.Logf("cycles %d, duration %s; released in %s; keys before %s, at peak %s; file %d bytes before, %d at peak; heap in use %.2f MiB before, %.2f MiB with %d sessions stored (%+.2f MiB)",
		n, elapsed.Round(time.Millisecond), waited.Round(time.Millisecond), bucketsJSON(before.buckets), bucketsJSON(peak.buckets),
		before.fileSize, peak.fileSize, mib(heapBefore), mib(heapPeak), peak.sessions, mib(heapPeak)-mib(heapBefore))
	if peak.instances != 0 || peak.connections != 0 {
		t.Fatalf("after %s: %d instances and %d connections in memory, want 0", soakSettle, peak.instances, peak.connections)
	}
	// Each cycle is a new client with one session: one key in each bucket
	// that indexes sessions or clients.
	for _, name := range []string{"sessions", "session_keys", "by_activity", "by_owner", "clients"} {
		if got, want := peak.buckets[name], before.buckets[name]+n; got != want {
			t.Errorf("bucket %s has %d keys after %d cycles, want %d", name, got, n, want)
		}
	}
	if peak.sessions != before.sessions+n {
		t.Errorf("totalSessions %d after %d cycles, want %d", peak.sessions, n, before.sessions+n)
	}
	checkHeap(t, heapBefore, heapPeak)

	clock.offset.Store(int64(2 * maxAge))
	sweepStart := time.Now()
	var sweptIn time.Duration
	after, waited := waitSettled(t, s, func(st soakStats) bool {
		for name, keys := range before.buckets {
			if st.buckets[name] != keys {
				return false
			}
		}
		if sweptIn == 0 {
			sweptIn = time.Since(sweepStart)
		}
		return st.goroutines <= before.goroutines
	})
	heapAfter := heapInuse()
	_, raw := s.get(t, "/api/memory/stats")
	sweep, _ := raw["jobs"].(map[string]any)[JobAgeSweep].(map[string]any)
	t.Logf("age sweep: keys after %s, back to the start %s after moving the clock; sweep runs %v, removed %v; file %d bytes; heap in use %.2f MiB (%+.2f MiB); goroutines %d before, %d after, settled after %s; server log %d bytes",
		bucketsJSON(after.buckets), sweptIn.Round(time.Millisecond), sweep["runs"], sweep["totalRemoved"],
		after.fileSize, mib(heapAfter), mib(heapAfter)-mib(heapBefore), before.goroutines, after.goroutines, waited.Round(time.Millisecond), len(s.logs.String()))
	for name, keys := range before.buckets {
		if after.buckets[name] != keys {
			t.Errorf("bucket %s has %d keys after the age sweep, %d before the soak", name, after.buckets[name], keys)
		}
	}
	if removed, _ := sweep["totalRemoved"].(float64); int(removed) != n {
		t.Errorf("age sweep removed %v sessions, want %d", sweep["totalRemoved"], n)
	}
	if after.goroutines > before.goroutines+soakGoroutineSlack {
		t.Errorf("goroutines: %d after %s of settling, %d before (at most %d more allowed)",
			after.goroutines, soakSettle, before.goroutines, soakGoroutineSlack)
		logGoroutines(t)
	}
	checkHeap(t, heapBefore, heapAfter)
}
