package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	fastws "github.com/fasthttp/websocket"
)

// idleChildCommand is the first argument with which this program runs as
// the client side of the idle workload, in a process of its own, so that
// the server's process holds nothing but the server.
const idleChildCommand = "__idle-clients"

// idleChildLifetime bounds how long a client process stays up, in case the
// parent never closes its standard input.
const idleChildLifetime = 15 * time.Minute

// IdleResult is workload 3: memory per connected client with one mounted
// counter.
type IdleResult struct {
	Notes []string  `json:"notes,omitempty"`
	Rows  []IdleRow `json:"rows"`
}

// IdleRow holds one client count.
type IdleRow struct {
	Clients          int       `json:"clients"`
	Connected        int       `json:"connected"`
	ConnectSeconds   float64   `json:"connectSeconds"`
	Before           memSample `json:"before"`
	During           memSample `json:"whileConnected"`
	AfterDisconnect  memSample `json:"afterDisconnect"`
	HeapPerClient    float64   `json:"heapInusePerClientBytes"`
	RSSPerClient     float64   `json:"rssPerClientBytes"`
	StackPerClient   float64   `json:"stackInusePerClientBytes"`
	InstancesLeft    int       `json:"instancesLeftAfterDisconnect"`
	ChildFirstError  string    `json:"clientFirstError,omitempty"`
	ChildFailedCount int       `json:"clientsFailed"`
}

func runIdle(cfg *config, dir string) (*IdleResult, error) {
	res := &IdleResult{Notes: []string{
		"clients run in a separate process, so heap and RSS are the server's alone",
		"store: bbolt without fsync (only memory is measured here)",
	}}
	for _, n := range cfg.idle {
		if need := uint64(n) + 256; cfg.fileLimit < need {
			res.Notes = append(res.Notes, fmt.Sprintf("%d clients skipped: the file limit is %d, need about %d", n, cfg.fileLimit, need))
			continue
		}
		row, err := idleAt(dir, n)
		if err != nil {
			return res, fmt.Errorf("%d clients: %w", n, err)
		}
		res.Rows = append(res.Rows, row)
	}
	return res, nil
}

// idleAt measures the server's memory before n clients connect, while they
// are connected and idle, and after they left.
func idleAt(dir string, n int) (IdleRow, error) {
	opts := newLiveOptions(filepath.Join(dir, fmt.Sprintf("idle-%d", n)))
	opts.NoSync = true
	srv, err := startLive(opts)
	if err != nil {
		return IdleRow{}, err
	}
	row := IdleRow{Clients: n}
	err = measureIdle(srv, n, &row)
	return row, errors.Join(err, srv.stop())
}

func measureIdle(srv *liveServer, n int, row *IdleRow) error {
	var err error
	if row.Before, err = sampleMemory(); err != nil {
		return err
	}
	progress("idle: connecting %d clients, each with a mounted counter", n)
	began := time.Now()
	child, err := startIdleChild(srv.addr, n)
	if err != nil {
		return err
	}
	ready, err := child.waitReady(time.Minute + time.Duration(n)*20*time.Millisecond)
	if err != nil {
		return errors.Join(err, child.stop())
	}
	row.ConnectSeconds = time.Since(began).Seconds()

	row.Connected, row.ChildFailedCount, row.ChildFirstError = ready.connected, ready.failed, ready.firstErr
	if got := srv.waitInstances(row.Connected, 30*time.Second); got != row.Connected {
		return errors.Join(fmt.Errorf("server has %d instances in memory, expected %d", got, row.Connected), child.stop())
	}
	if row.During, err = sampleMemory(); err != nil {
		return errors.Join(err, child.stop())
	}

	row.HeapPerClient = perClient(row.Before.HeapInuse, row.During.HeapInuse, row.Connected)
	row.RSSPerClient = perClient(row.Before.RSS, row.During.RSS, row.Connected)
	row.StackPerClient = perClient(row.Before.StackInuse, row.During.StackInuse, row.Connected)

	if err := child.stop(); err != nil {
		return err
	}
	row.InstancesLeft = srv.waitInstances(0, 30*time.Second)
	row.AfterDisconnect, err = sampleMemory()
	return err
}

// idleChild is the client process of the idle workload.
type idleChild struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	waited chan error
}

type childReady struct {
	connected, failed int
	firstErr          string
}

func startIdleChild(addr string, n int) (*idleChild, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this program to start the client process: %w", err)
	}
	cmd := exec.Command(exe, idleChildCommand, "-addr", addr, "-n", fmt.Sprint(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the client process: %w", err)
	}
	c := &idleChild{cmd: cmd, stdin: stdin, lines: make(chan string, 16), waited: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.waited <- cmd.Wait()
	}()
	return c, nil
}

// waitReady waits for the child's "ready" line.
func (c *idleChild) waitReady(timeout time.Duration) (childReady, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				return childReady{}, errors.New("the client process exited before all clients were connected")
			}
			if r, ok := parseReady(line); ok {
				return r, nil
			}
		case <-timer.C:
			return childReady{}, fmt.Errorf("the client process did not connect its clients within %s", timeout)
		}
	}
}

func parseReady(line string) (childReady, bool) {
	var r childReady
	head, errText, _ := strings.Cut(line, " error=")
	if _, err := fmt.Sscanf(head, "ready connected=%d failed=%d", &r.connected, &r.failed); err != nil {
		return r, false
	}
	r.firstErr = errText
	return r, true
}

// stop closes the child's standard input, which makes it close its clients
// and exit, and waits at most 30 s before killing it by its process id.
func (c *idleChild) stop() error {
	_ = c.stdin.Close()
	select {
	case err := <-c.waited:
		if err != nil {
			return fmt.Errorf("client process: %w", err)
		}
		return nil
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.waited
		return errors.New("client process did not exit within 30 s after its standard input closed, so it was killed")
	}
}

// runIdleChild is the client process. It connects n clients, each sending
// hello and mounting a counter, prints "ready", and keeps them open until
// its standard input closes. A reader on each connection lets the library
// reply to the server's pings.
func runIdleChild(args []string) int {
	fs := flag.NewFlagSet(idleChildCommand, flag.ContinueOnError)
	addr := fs.String("addr", "", "server address")
	n := fs.Int("n", 0, "clients")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if _, _, err := raiseFileLimit(); err != nil {
		fmt.Fprintln(os.Stderr, "client process:", err)
	}
	clients, failed, firstErr := connectIdleClients(*addr, *n)
	line := fmt.Sprintf("ready connected=%d failed=%d", len(clients), failed)
	if firstErr != nil {
		line += " error=" + strings.ReplaceAll(firstErr.Error(), "\n", " ")
	}
	fmt.Println(line)

	closed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(idleChildLifetime):
		fmt.Fprintln(os.Stderr, "client process: no word from the benchmark within", idleChildLifetime, "; exiting")
	}
	for _, ws := range clients {
		_ = ws.WriteControl(fastws.CloseMessage, fastws.FormatCloseMessage(fastws.CloseNormalClosure, ""), time.Now().Add(time.Second))
		_ = ws.Close()
	}
	return 0
}

// connectIdleClients connects n mounted clients and starts a reader on
// each. It keeps going after a failure and counts it.
func connectIdleClients(addr string, n int) ([]*fastws.Conn, int, error) {
	var mu sync.Mutex
	clients := make([]*fastws.Conn, 0, n)
	var failed atomic.Int64
	var firstErr error
	_ = parallel(n, connectWorkers, func(i int) error {
		c, err := connectMounted(addr)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed.Add(1)
			if firstErr == nil {
				firstErr = fmt.Errorf("client %d: %w", i, err)
			}
			return nil
		}
		_ = c.ws.SetReadDeadline(time.Time{})
		clients = append(clients, c.ws)
		go drain(c.ws)
		return nil
	})
	return clients, int(failed.Load()), firstErr
}

// drain reads and drops frames until the connection closes. The library
// replies to pings while it reads.
func drain(ws *fastws.Conn) {
	for {
		if _, _, err := ws.NextReader(); err != nil {
			return
		}
	}
}
