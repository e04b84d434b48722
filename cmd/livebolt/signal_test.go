package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSIGINTDuringStartUp starts the binary the way a non-interactive shell
// starts a background job, with SIGINT ignored, on a data folder another
// server holds, so that it waits for the lock. A SIGINT sent while it
// waits must stop it once it is up: the handler is installed before the
// database opens, not after.
func TestSIGINTDuringStartUp(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: builds and runs the livebolt binary")
	}
	e := buildBinary(t)

	// Start a lock holder, then a second server on the same folder, the
	// way a shell starts a background job.
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	holder := e.startData(t, "lock-holder", data, nil)
	logPath := filepath.Join(dir, "server.log")
	sh := exec.Command("/bin/sh", "-c", `"$0" --addr 127.0.0.1:0 --data "$1" >"$2" 2>&1 & echo $!`,
		e.bin, data, logPath)
	out, err := sh.Output()
	if err != nil {
		t.Fatalf("start in the background: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("pid %q: %v", out, err)
	}

	logText := func() string {
		b, _ := os.ReadFile(logPath)
		return string(b)
	}
	stopped := func() bool { return strings.Contains(logText(), `msg="server stopped"`) }
	t.Cleanup(func() {
		if !stopped() {
			_ = syscall.Kill(pid, syscall.SIGKILL) // the server this test started
		}
	})
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s within 10 s; log:\n%s", what, logText())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// The second server now waits for the lock (up to 3 s).
	time.Sleep(300 * time.Millisecond)
	if strings.Contains(logText(), "msg=listening") {
		t.Fatalf("the second server started although the first holds the database:\n%s", logText())
	}
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil {
		t.Fatalf("SIGINT: %v", err)
	}

	// Free the lock: the second server starts, then must stop at once.
	if err := holder.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !holder.waitExit(10 * time.Second) {
		t.Fatal("the first server did not exit after SIGTERM")
	}
	waitFor("not stopped after a SIGINT sent during its start-up", stopped)
	if !strings.Contains(logText(), "signal=interrupt") {
		t.Errorf("the log does not name the signal:\n%s", logText())
	}
}
