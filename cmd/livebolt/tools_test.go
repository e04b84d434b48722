//go:build unix

// Tests of the inspect and compact subcommands and of the backup endpoint,
// on the built binary and real database files in t.TempDir().

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// toolRun is the result of one run of a subcommand.
type toolRun struct {
	stdout, stderr string
	code           int
	elapsed        time.Duration
}

// runTool runs the binary with args and waits up to 20 s for it to exit.
func (e *e2e) runTool(t *testing.T, args ...string) toolRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, args...)
	cmd.Env = childEnv(nil)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	begin := time.Now()
	_ = cmd.Run()
	run := toolRun{stdout: stdout.String(), stderr: stderr.String(), code: -1, elapsed: time.Since(begin)}
	if ctx.Err() != nil {
		t.Fatalf("livebolt %s did not exit within 20s:\n%s%s", strings.Join(args, " "), run.stdout, run.stderr)
	}
	if cmd.ProcessState != nil {
		run.code = cmd.ProcessState.ExitCode()
	}
	t.Logf("livebolt %s: exit %d after %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), run.code, run.elapsed.Round(time.Millisecond), run.stdout, run.stderr)
	return run
}

// decodeJSON parses the stdout of a --json run.
func decodeJSON(t *testing.T, run toolRun) obj {
	t.Helper()
	if run.code != 0 {
		t.Fatalf("exit %d, want 0: %s", run.code, run.stderr)
	}
	var m obj
	if err := json.Unmarshal([]byte(run.stdout), &m); err != nil {
		t.Fatalf("stdout is not a JSON object: %v\n%s", err, run.stdout)
	}
	return m
}

// toolFixture is a stopped server's data folder with a counter at count 7
// and a todo with one item, owned by one client.
type toolFixture struct {
	data    string
	token   string
	counter *comp
	todo    *comp
}

func (e *e2e) newToolFixture(t *testing.T) *toolFixture {
	t.Helper()
	f := &toolFixture{data: t.TempDir()}
	srv := e.startData(t, "fixture", f.data, nil)
	c := srv.dial(t, "client")
	f.token = c.hello(t, "")["token"].(string)
	f.counter = c.mount(t, "counter", obj{"initial": 5}, "")
	c.increment(t, f.counter)
	c.increment(t, f.counter)
	f.todo = c.mount(t, "todo", nil, "")
	c.call(t, f.todo, "add", "buy milk")
	terminate(t, srv)
	return f
}

// TestTools builds the binary once and runs the subcommand scenarios.
func TestTools(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: builds and runs the livebolt binary")
	}
	e := buildBinary(t)
	t.Run("HeldFile", e.testToolsHeldFile)
	t.Run("InspectReport", e.testInspectReport)
	t.Run("InspectSession", e.testInspectSession)
	t.Run("Compact", e.testCompact)
	t.Run("BackupWhileRunning", e.testBackupWhileRunning)
}

// testToolsHeldFile checks that inspect and compact fail fast, with a hint
// to stop the server or use the backup endpoint, while a server runs.
func (e *e2e) testToolsHeldFile(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	e.startData(t, "holder", data, nil)
	out := filepath.Join(t.TempDir(), "out.db")
	for _, args := range [][]string{
		{"inspect", "--data", data},
		{"compact", "--data", data, "--out", out},
	} {
		run := e.runTool(t, args...)
		if run.code != 1 {
			t.Errorf("%s on a held file: exit %d, want 1", args[0], run.code)
		}
		if run.elapsed > 5*time.Second {
			t.Errorf("%s on a held file took %v, want about 1s", args[0], run.elapsed)
		}
		for _, want := range []string{"livebolt.db", "seems to be running", "stop it", "/api/admin/backup"} {
			if !strings.Contains(run.stderr, want) {
				t.Errorf("%s on a held file: message does not contain %q", args[0], want)
			}
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("compact of a held file created %s: %v", out, err)
	}
}

func (e *e2e) testInspectReport(t *testing.T) {
	t.Parallel()
	f := e.newToolFixture(t)
	path := filepath.Join(f.data, "livebolt.db")
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	text := e.runTool(t, "inspect", "--data", f.data)
	if text.code != 0 {
		t.Fatalf("inspect: exit %d", text.code)
	}
	for _, want := range []string{path, "schema version", "sessions", "oldest sessions", "newest sessions", f.counter.id, "todo", "sessions by component", "failed hydration attempts", "by_owner"} {
		if !strings.Contains(text.stdout, want) {
			t.Errorf("inspect output does not contain %q", want)
		}
	}

	rep := decodeJSON(t, e.runTool(t, "inspect", "--data", f.data, "--json"))
	if jnum(t, rep, "sessions") != 2 {
		t.Errorf("--json: sessions %v, want 2", rep["sessions"])
	}
	if jnum(t, rep, "components.counter") != 1 || jnum(t, rep, "components.todo") != 1 {
		t.Errorf("--json: components %s, want one counter and one todo", dump(rep["components"]))
	}
	if jnum(t, rep, "fileSizeBytes") != float64(len(before)) {
		t.Errorf("--json: fileSizeBytes %v, file has %d bytes", rep["fileSizeBytes"], len(before))
	}
	// The shutdown records the same moment as the last activity of both
	// sessions, so either may come first; the list must be in order.
	oldest, _ := rep["oldest"].([]any)
	if len(oldest) != 2 {
		t.Fatalf("--json: oldest %s, want both sessions", dump(rep["oldest"]))
	}
	ids := map[string]bool{jstr(t, oldest[0], "id"): true, jstr(t, oldest[1], "id"): true}
	if !ids[f.counter.id] || !ids[f.todo.id] {
		t.Errorf("--json: oldest %s, want the counter and the todo", dump(rep["oldest"]))
	}
	first, err1 := time.Parse(time.RFC3339Nano, jstr(t, oldest[0], "lastActivity"))
	second, err2 := time.Parse(time.RFC3339Nano, jstr(t, oldest[1], "lastActivity"))
	if err1 != nil || err2 != nil || first.After(second) {
		t.Errorf("--json: oldest %s is not in order of last activity", dump(rep["oldest"]))
	}

	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("inspect changed the database file")
	}
}

func (e *e2e) testInspectSession(t *testing.T) {
	t.Parallel()
	f := e.newToolFixture(t)

	text := e.runTool(t, "inspect", "--data", f.data, "--session", f.counter.id)
	if text.code != 0 {
		t.Fatalf("inspect --session: exit %d", text.code)
	}
	for _, want := range []string{f.counter.id, "counter", "version", `"count": 7`, "props", `"initial": 5`, f.counter.fp[:6] + "…"} {
		if !strings.Contains(text.stdout, want) {
			t.Errorf("inspect --session output does not contain %q", want)
		}
	}
	if strings.Contains(text.stdout, f.counter.fp) {
		t.Error("inspect --session prints the whole fingerprint")
	}

	js := e.runTool(t, "inspect", "--data", f.data, "--session", f.todo.id, "--json")
	rec := decodeJSON(t, js)
	if jstr(t, rec, "component") != "todo" || jnum(t, rec, "version") != f.todo.version {
		t.Errorf("--session --json: %s", dump(rec))
	}
	if items, _ := jget(rec, "state.items"); !strings.Contains(dump(items), "buy milk") {
		t.Errorf("--session --json: state %s, want the added item", dump(rec["state"]))
	}
	if fp := jstr(t, rec, "fingerprint"); fp != f.todo.fp[:6]+"…" {
		t.Errorf("--session --json: fingerprint %q, want the first 6 characters and …", fp)
	}
	if strings.Contains(js.stdout, f.todo.fp) {
		t.Error("inspect --session --json prints the whole fingerprint")
	}

	unknown := e.runTool(t, "inspect", "--data", f.data, "--session", "no-such-id")
	if unknown.code != 1 {
		t.Errorf("unknown session: exit %d, want 1", unknown.code)
	}
	if !strings.Contains(unknown.stderr, "no-such-id") || !strings.Contains(unknown.stderr, "not found") {
		t.Errorf("unknown session: message %q does not name the id and say not found", unknown.stderr)
	}

	missing := e.runTool(t, "inspect", "--data", t.TempDir())
	if missing.code != 1 || !strings.Contains(missing.stderr, "livebolt.db") {
		t.Errorf("inspect of an empty folder: exit %d, message %q; want 1 and the file named", missing.code, missing.stderr)
	}
	if bad := e.runTool(t, "inspect", "--data", f.data, "--limit", "-1"); bad.code != 2 {
		t.Errorf("--limit -1: exit %d, want 2", bad.code)
	}
}

// testCompact checks the compacted copy: same report, refusal to overwrite,
// and a server started on it hydrates the components.
func (e *e2e) testCompact(t *testing.T) {
	t.Parallel()
	f := e.newToolFixture(t)
	path := filepath.Join(f.data, "livebolt.db")
	original, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	run := e.runTool(t, "compact", "--data", f.data)
	if run.code != 0 {
		t.Fatalf("compact: exit %d", run.code)
	}
	out := path + ".compact"
	for _, want := range []string{"before", "after", out} {
		if !strings.Contains(run.stdout, want) {
			t.Errorf("compact output does not contain %q", want)
		}
	}
	compacted, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("compacted copy: %v", err)
	}
	// The advice follows the sizes: replace only with a smaller copy.
	advice := "to use it, stop the server"
	if len(compacted) >= len(original) {
		advice = "the copy is not smaller; keep"
	}
	if !strings.Contains(run.stdout, advice) {
		t.Errorf("compact of %d bytes into %d: output lacks %q:\n%s", len(original), len(compacted), advice, run.stdout)
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, original) {
		t.Error("compact changed the original file")
	}

	want := decodeJSON(t, e.runTool(t, "inspect", "--data", f.data, "--json"))
	got := decodeJSON(t, e.runTool(t, "inspect", "--file", out, "--json"))
	for _, key := range []string{"sessions", "components", "buckets", "oldest", "failedAttempts"} {
		if dump(got[key]) != dump(want[key]) {
			t.Errorf("compacted %s %s, original %s", key, dump(got[key]), dump(want[key]))
		}
	}

	again := e.runTool(t, "compact", "--data", f.data)
	if again.code != 1 || !strings.Contains(again.stderr, "already exists") {
		t.Errorf("second compact: exit %d, message %q; want 1 and already exists", again.code, again.stderr)
	}
	if now, _ := os.ReadFile(out); !bytes.Equal(now, compacted) {
		t.Error("second compact changed the existing output")
	}

	// Restore as the README describes: replace the file and start the server.
	if err := os.Rename(out, path); err != nil {
		t.Fatal(err)
	}
	srv := e.startData(t, "on-compacted", f.data, nil)
	c := srv.dial(t, "client-again")
	if w := c.hello(t, f.token); w["resumed"] != true {
		t.Errorf("hello on the compacted file: %s", dump(w))
	}
	c.hydrate(t, f.counter)
	c.hydrate(t, f.todo)
}

// testBackupWhileRunning downloads a backup from a running server with the
// admin token and inspects the downloaded file while the server runs.
func (e *e2e) testBackupWhileRunning(t *testing.T) {
	t.Parallel()
	srv := e.startData(t, "backup", t.TempDir(), []string{"LIVEBOLT_ADMIN_TOKEN=" + e2eAdminToken})
	c := srv.dial(t, "client")
	c.hello(t, "")
	counter := c.mount(t, "counter", obj{"initial": 2}, "")
	c.increment(t, counter)

	for _, auth := range []string{"", "Bearer wrong-token"} {
		req, _ := http.NewRequest(http.MethodGet, srv.url("/api/admin/backup"), nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := e2eHTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("backup with Authorization %q: status %d, want 401", auth, resp.StatusCode)
		}
	}

	req, _ := http.NewRequest(http.MethodGet, srv.url("/api/admin/backup"), nil)
	req.Header.Set("Authorization", "Bearer "+e2eAdminToken)
	resp, err := e2eHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("backup: status %d, read error %v", resp.StatusCode, err)
	}
	file := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(file, body, 0o600); err != nil {
		t.Fatal(err)
	}

	rec := decodeJSON(t, e.runTool(t, "inspect", "--file", file, "--session", counter.id, "--json"))
	if got := jnum(t, rec, "state.count"); got != 3 {
		t.Errorf("counter in the backup: count %v, want 3", got)
	}
}
