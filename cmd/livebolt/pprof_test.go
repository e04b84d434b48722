package main

import (
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestCheckPprofAddr(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:6060", "127.0.0.2:0", "[::1]:6060", "localhost:6060"} {
		if err := checkPprofAddr(addr); err != nil {
			t.Errorf("%s rejected: %v", addr, err)
		}
	}
	for addr, want := range map[string]string{
		"0.0.0.0:6060":   "not a loopback address",
		":6060":          "not a loopback address",
		"[::]:6060":      "not a loopback address",
		"10.1.2.3:6060":  "not a loopback address",
		"example.com:80": "not a loopback address",
		"6060":           "not host:port",
	} {
		err := checkPprofAddr(addr)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one saying %q", addr, err, want)
		}
	}
	if _, err := parseConfig([]string{"--pprof", "0.0.0.0:6060"}, envOf(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "--pprof") {
		t.Errorf("--pprof 0.0.0.0:6060: error %v, want one naming --pprof", err)
	}
}

var pprofAddrRE = regexp.MustCompile(`msg="pprof listening" addr=(127\.0\.0\.1:\d+)`)

// TestPprof runs the binary with --pprof, fetches profiles from it, and
// checks that the port closes with the server.
func TestPprof(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: builds and runs the livebolt binary")
	}
	e := buildBinary(t)
	plain := e.start(t, "no-pprof", nil, "--addr", "127.0.0.1:0", "--data", t.TempDir())
	if strings.Contains(plain.log.String(), "pprof") {
		t.Errorf("pprof started without --pprof:\n%s", plain.log.String())
	}

	srv := e.start(t, "pprof", nil, "--addr", "127.0.0.1:0", "--data", t.TempDir(), "--pprof", "127.0.0.1:0")
	m := pprofAddrRE.FindStringSubmatch(srv.log.String())
	if m == nil {
		t.Fatalf("no pprof listening line:\n%s", srv.log.String())
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for path, want := range map[string]string{
		"/debug/pprof/":                  "goroutine",
		"/debug/pprof/heap?debug=1":      "heap profile",
		"/debug/pprof/cmdline":           "--pprof",
		"/debug/pprof/profile?seconds=1": "",
	} {
		resp, err := client.Get("http://" + m[1] + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) || len(body) == 0 {
			t.Errorf("GET %s: status %d, %d bytes, want 200 containing %q", path, resp.StatusCode, len(body), want)
		}
	}
	// The live server's own port does not serve the profiles.
	if resp, err := client.Get(srv.url("/debug/pprof/")); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET /debug/pprof/ on the live port: status %d, want 404", resp.StatusCode)
		}
	}

	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !srv.waitExit(10 * time.Second) {
		t.Fatal("server did not exit after SIGTERM")
	}
	if srv.waitErr != nil {
		t.Errorf("exit after SIGTERM: %v\n%s", srv.waitErr, srv.log.String())
	}
	if conn, err := net.DialTimeout("tcp", m[1], time.Second); err == nil {
		conn.Close()
		t.Errorf("pprof port %s still accepts connections after the server exited", m[1])
	}
}
