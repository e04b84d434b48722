//go:build unix

// Browser tests: the demo page and the dashboard in a real headless
// Chromium, against the real binary, including SIGKILL and restart.

package main

import (
	"context"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath is where Debian's chromium package installs the browser.
const chromiumPath = "/usr/bin/chromium"

const browserTimeout = 20 * time.Second

// newBrowser starts a headless Chromium with a fresh profile and returns the
// context of its first tab. It skips the test when Chromium is missing.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("browser test skipped: %s not found; install it with: apt-get install -y chromium", chromiumPath)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	tab, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return tab
}

// newTab opens another tab of the same browser, so it shares the profile's
// localStorage but has its own sessionStorage.
func newTab(t *testing.T, browser context.Context) context.Context {
	t.Helper()
	tab, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	// The first run creates the tab and ties it to the context it runs on,
	// so it must run without the deadline the later actions use.
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("open tab: %v", err)
	}
	return tab
}

// browse runs browser actions with a deadline.
func browse(t *testing.T, tab context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, browserTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

// value runs one browser action that returns a value, with a deadline.
func value[T any](t *testing.T, tab context.Context, action chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, browserTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, action)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	return v
}

// waitJS waits until the JavaScript expression is true.
func waitJS(t *testing.T, tab context.Context, what, expr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, browserTimeout)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		diagCtx, cancelDiag := context.WithTimeout(tab, 5*time.Second)
		defer cancelDiag()
		page, _ := chromedp.Run(diagCtx, chromedp.Evaluate[string](`document.body.innerText + ' | banner: ' + document.getElementById('banner').dataset.status`))
		t.Fatalf("waiting for %s (%s): %v; page shows: %s", what, expr, err, page)
	}
}

func text(t *testing.T, tab context.Context, id string) string {
	t.Helper()
	return strings.TrimSpace(value(t, tab, chromedp.Text(chromedp.CSS("#"+id))))
}

func openDemo(t *testing.T, tab context.Context, srv *e2eServer) {
	t.Helper()
	browse(t, tab, chromedp.Navigate(srv.url("/")))
	waitJS(t, tab, "the demo page to mount its components", `document.body.dataset.ready === 'true'`)
}

func waitCount(t *testing.T, tab context.Context, want int) {
	t.Helper()
	waitJS(t, tab, fmt.Sprintf("counter to show %d", want), fmt.Sprintf(`document.getElementById('counter-count').textContent === '%d'`, want))
}

func clickIncrement(t *testing.T, tab context.Context, times int) {
	t.Helper()
	start := text(t, tab, "counter-count")
	var n int
	if _, err := fmt.Sscan(start, &n); err != nil {
		t.Fatalf("counter shows %q, not a number", start)
	}
	for i := 1; i <= times; i++ {
		browse(t, tab, chromedp.Click(chromedp.CSS("#counter-inc")))
		waitCount(t, tab, n+i)
	}
}

func waitBanner(t *testing.T, tab context.Context, status string) {
	t.Helper()
	waitJS(t, tab, "banner "+status, fmt.Sprintf(`document.getElementById('banner').dataset.status === %q`, status))
}

// restart kills the server with SIGKILL and starts it again on the same
// address and data folder, so open pages reconnect by themselves.
func (e *e2e) restart(t *testing.T, srv *e2eServer, data string, extra ...string) *e2eServer {
	t.Helper()
	srv.kill(t)
	return e.start(t, srv.name+"-restarted", nil, append([]string{"--addr", srv.addr, "--data", data}, extra...)...)
}

func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test: builds the binary and drives Chromium")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("browser tests skipped: %s not found; install it with: apt-get install -y chromium", chromiumPath)
	}
	e := buildBinary(t)
	t.Run("CounterSurvivesReload", e.testCounterSurvivesReload)
	t.Run("KillAndRestart", e.testKillAndRestart)
	t.Run("TwoTabs", e.testTwoTabs)
	t.Run("ExpiredSession", e.testExpiredSession)
	t.Run("Dashboard", e.testDashboard)
	t.Run("ClientLibrary", e.testClientLibrary)
	t.Run("Patches", e.testPatches)
}

func (e *e2e) testCounterSurvivesReload(t *testing.T) {
	srv := e.startData(t, "reload", t.TempDir(), nil)
	tab := newBrowser(t)
	openDemo(t, tab, srv)
	waitCount(t, tab, 0)
	clickIncrement(t, tab, 3)
	id := text(t, tab, "counter-id")

	browse(t, tab, chromedp.Reload())
	waitJS(t, tab, "the reloaded page", `document.body.dataset.ready === 'true'`)
	if got := text(t, tab, "counter-count"); got != "3" {
		t.Errorf("count after reload = %q, want 3", got)
	}
	if got := text(t, tab, "counter-id"); got != id {
		t.Errorf("component id after reload = %q, want %q", got, id)
	}
	if got := text(t, tab, "counter-version"); got != "4" {
		t.Errorf("version after reload = %q, want 4", got)
	}
}

func (e *e2e) testKillAndRestart(t *testing.T) {
	data := t.TempDir()
	srv := e.startData(t, "restart", data, nil)
	tab := newBrowser(t)
	openDemo(t, tab, srv)
	clickIncrement(t, tab, 3)
	const unicode = "Grüße, 世界 👋 — ünïcödé"
	browse(t, tab,
		chromedp.SendKeys(chromedp.CSS("#todo-input"), unicode),
		chromedp.Click(chromedp.CSS("#todo-add")),
	)
	waitJS(t, tab, "the todo item", `document.querySelectorAll('#todo-list li').length === 1`)
	counterID, todoID := text(t, tab, "counter-id"), text(t, tab, "todo-id")

	srv.kill(t)
	waitBanner(t, tab, "reconnecting")
	if !value(t, tab, chromedp.Evaluate[bool](`document.getElementById('counter-inc').disabled`)) {
		t.Error("increment button is enabled while the server is down")
	}

	srv = e.start(t, "restart-2", nil, "--addr", srv.addr, "--data", data)
	waitBanner(t, tab, "open")
	waitCount(t, tab, 3)
	if got := text(t, tab, "counter-id"); got != counterID {
		t.Errorf("counter id after restart = %q, want %q", got, counterID)
	}
	if got := text(t, tab, "todo-id"); got != todoID {
		t.Errorf("todo id after restart = %q, want %q", got, todoID)
	}
	item := value(t, tab, chromedp.Text(chromedp.CSS("#todo-list li label")))
	if item != unicode {
		t.Errorf("todo item after restart = %q, want %q", item, unicode)
	}
	clickIncrement(t, tab, 1)
	if got := text(t, tab, "counter-count"); got != "4" {
		t.Errorf("count after restart and a click = %q, want 4", got)
	}
}

func (e *e2e) testTwoTabs(t *testing.T) {
	data := t.TempDir()
	srv := e.startData(t, "tabs", data, nil)
	browser := newBrowser(t)
	first := browser
	second := newTab(t, browser)
	openDemo(t, first, srv)
	openDemo(t, second, srv)

	clickIncrement(t, first, 2)
	clickIncrement(t, second, 1)
	if got := text(t, first, "counter-count"); got != "2" {
		t.Errorf("first tab's count = %q after the second tab clicked, want 2", got)
	}
	if text(t, first, "client-id") != text(t, second, "client-id") {
		t.Error("two tabs of one profile have different client ids")
	}
	if text(t, first, "counter-id") == text(t, second, "counter-id") {
		t.Error("two tabs share one counter component")
	}

	srv = e.restart(t, srv, data)
	waitBanner(t, first, "open")
	waitBanner(t, second, "open")
	waitCount(t, first, 2)
	waitCount(t, second, 1)
	_ = srv
}

func (e *e2e) testExpiredSession(t *testing.T) {
	data := t.TempDir()
	flags := []string{"--max-age", "2s", "--age-sweep", "@every 1s"}
	srv := e.startData(t, "expired", data, nil, flags...)
	tab := newBrowser(t)
	openDemo(t, tab, srv)
	clickIncrement(t, tab, 2)
	oldID := text(t, tab, "counter-id")

	srv.kill(t)
	waitBanner(t, tab, "reconnecting")
	time.Sleep(3 * time.Second) // longer than --max-age while disconnected
	srv = e.start(t, "expired-2", nil, append([]string{"--addr", srv.addr, "--data", data}, flags...)...)

	waitBanner(t, tab, "open")
	waitJS(t, tab, "the session expired notice", `!document.getElementById('notice').hidden && document.getElementById('notice-text').textContent.includes('expired')`)
	waitCount(t, tab, 0)
	if got := text(t, tab, "counter-id"); got == oldID {
		t.Errorf("counter kept its expired id %q", got)
	}
	clickIncrement(t, tab, 1)
	_ = srv
}

func (e *e2e) testDashboard(t *testing.T) {
	srv := e.startData(t, "dashboard", t.TempDir(), nil)
	demo := newBrowser(t)
	openDemo(t, demo, srv)
	clickIncrement(t, demo, 1)

	dash := newTab(t, demo)
	browse(t, dash, chromedp.Navigate(srv.url("/dashboard?interval=250")))
	waitJS(t, dash, "five samples", `Number(document.body.dataset.samples) >= 5`)
	for _, chart := range []string{"instances", "sessions", "clients", "heap", "removed"} {
		points := value(t, dash, chromedp.Evaluate[int](fmt.Sprintf(`document.getElementById('line-%s-0').getAttribute('points').trim().split(' ').length`, chart)))
		if points < 5 {
			t.Errorf("chart %s has %d points, want at least 5", chart, points)
		}
	}
	if got := text(t, dash, "value-instances"); got != "3" {
		t.Errorf("instances chart shows %q, want 3", got)
	}
	buckets := value(t, dash, chromedp.Evaluate[int](`document.querySelectorAll('#buckets tr').length`))
	jobs := value(t, dash, chromedp.Evaluate[int](`document.querySelectorAll('#jobs tr').length`))
	if buckets != 7 {
		t.Errorf("bucket table has %d rows, want 7", buckets)
	}
	if jobs != 2 {
		t.Errorf("jobs table has %d rows, want 2", jobs)
	}

	shot := value(t, dash, chromedp.FullScreenshot(100))
	path := filepath.Join(t.TempDir(), "dashboard.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s is not a PNG: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() < 800 || b.Dy() < 600 {
		t.Errorf("screenshot is %dx%d, want at least 800x600", b.Dx(), b.Dy())
	}
	t.Logf("dashboard screenshot: %s", path)
}

func (e *e2e) testClientLibrary(t *testing.T) {
	srv := e.startData(t, "client", t.TempDir(), nil)
	tab := newBrowser(t)
	openDemo(t, tab, srv)
	evalAsync := func(expr string) string {
		t.Helper()
		return value(t, tab, chromedp.Evaluate[string](expr, chromedp.EvalAwaitPromise))
	}

	// Backoff grows exponentially from 250 ms, is capped at 5 s, and the
	// jitter stays within its bounds.
	got := evalAsync(`import('/live.js').then(({ backoffDelay }) =>
		JSON.stringify([0, 1, 2, 5, 20].map((n) => [backoffDelay(n, 250, 5000, 0), backoffDelay(n, 250, 5000, 0.999)])))`)
	if want := `[[125,374.75],[125,624.5],[125,1124],[125,5120],[125,5120]]`; got != want {
		t.Errorf("backoff delays %s, want %s", got, want)
	}

	// A server error rejects the call's promise with the code.
	got = evalAsync(`import('/live.js').then(async ({ connect }) => {
		const live = await connect('/live');
		const todo = await live.mount('todo', {}, { key: 'probe' });
		window.probe = { live, todo };
		try { await todo.call('remove', 5); return 'resolved'; } catch (err) { return err.name + ':' + err.code; }
	})`)
	if got != "LiveError:bad_args" {
		t.Errorf("call with a bad index: %s, want LiveError:bad_args", got)
	}

	// Two mounts of one slot share one component; a slot holds one type.
	got = evalAsync(`(async () => {
		const { live } = window.probe;
		const [a, b] = await Promise.all([live.mount('counter', {}, { key: 'twice' }), live.mount('counter', {}, { key: 'twice' })]);
		let other;
		try { await live.mount('toggle', {}, { key: 'twice' }); other = 'resolved'; } catch (err) { other = err.code; }
		await a.unmount();
		let after;
		try { await a.call('increment'); after = 'resolved'; } catch (err) { after = err.code; }
		return [a === b, a.id === null && b.state === null, other, after].join(',');
	})()`)
	if got != "true,true,bad_args,unmounted" {
		t.Errorf("mount and unmount: %s, want true,true,bad_args,unmounted", got)
	}

	// While the server is down, calls reject at once with "offline".
	srv.kill(t)
	waitJS(t, tab, "the probe client to notice", `window.probe.live.status === 'reconnecting'`)
	got = evalAsync(`(async () => {
		const start = performance.now();
		try { await window.probe.todo.call('add', 'x'); return 'resolved'; }
		catch (err) { return err.code + ':' + (performance.now() - start < 100); }
	})()`)
	if got != "offline:true" {
		t.Errorf("call while offline: %s, want offline:true (rejected within 100 ms)", got)
	}
}

// testPatches checks that the browser client asks for patches, follows
// them to the server's state, and fetches the full state when it missed a
// version.
func (e *e2e) testPatches(t *testing.T) {
	srv := e.startData(t, "patches", t.TempDir(), nil)
	tab := newBrowser(t)
	openDemo(t, tab, srv)
	got := value(t, tab, chromedp.Evaluate[string](`import('/live.js').then(async ({ connect, applyJSONPatch }) => {
		const live = await connect('/live');
		const types = [];
		const receive = live.receive.bind(live);
		live.receive = (data) => { types.push(JSON.parse(data).type); receive(data); };
		const todo = await live.mount('todo', {}, { key: 'patches' });
		for (let i = 0; i < 30; i++) await todo.call('add', 'item ' + i);
		await todo.call('toggle', 3);
		await todo.call('toggle', 17);
		await todo.call('remove', 0);
		const patched = types.filter((t) => t === 'patch').length;

		// Pretend a version was missed: the next patch does not apply, so
		// the client hydrates and still ends at the server's state.
		todo.version -= 1;
		const states = types.filter((t) => t === 'state').length;
		const after = await todo.call('toggle', 5);
		const resynced = types.filter((t) => t === 'state').length - states;

		// A second connection of the same client hydrates the full state to
		// compare with. That moves the component, and this client then mounts
		// a fresh one in the slot, so keep what it had first.
		const afterVersion = todo.version;
		const other = await connect('/live');
		const full = await other.send({ type: 'hydrate', id: todo.id, fingerprint: todo.fingerprint });

		let threw = false;
		const doc = { items: [1] };
		try { applyJSONPatch(doc, [{ op: 'remove', path: '/items/1' }]); } catch { threw = true; }
		// A member named __proto__ stays a member, as JSON.parse keeps it.
		const proto = applyJSONPatch(JSON.parse('{"a":1}'), [{ op: 'add', path: '/__proto__', value: { admin: true } }]);
		const protoOK = JSON.stringify(proto) === '{"a":1,"__proto__":{"admin":true}}' && proto.admin === undefined;
		return JSON.stringify({
			patched, resynced,
			same: JSON.stringify(after) === JSON.stringify(full.state) && afterVersion === full.version,
			items: after.items.length, done: after.items.filter((i) => i.done).map((i) => i.text),
			threw, unchanged: JSON.stringify(doc), protoOK,
		});
	})`, chromedp.EvalAwaitPromise))
	want := `{"patched":33,"resynced":1,"same":true,"items":29,"done":["item 3","item 6","item 17"],"threw":true,"unchanged":"{\"items\":[1]}","protoOK":true}`
	if got != want {
		t.Errorf("patches in the browser:\n got %s\nwant %s", got, want)
	}
}
