package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	fastws "github.com/fasthttp/websocket"
)

// Client-side time limits. Every wait of the benchmark is bounded by one of
// them.
const (
	handshakeTimeout = 30 * time.Second
	requestTimeout   = 30 * time.Second
	callTimeout      = 10 * time.Second
	// framesPerReply bounds the frames read while waiting for one reply: the
	// reply itself, plus events pushed before it.
	framesPerReply = 64
	// connectWorkers is how many clients connect at once while a workload
	// sets up. The reconnect storm instead connects all of its clients at
	// once.
	connectWorkers = 64
)

var dialer = &fastws.Dialer{
	HandshakeTimeout: handshakeTimeout,
	ReadBufferSize:   4096,
	WriteBufferSize:  4096,
}

// dial opens a WebSocket to path on addr, which must be a 127.0.0.1 address
// of a server this program started.
func dial(addr, path string) (*fastws.Conn, error) {
	if err := checkLoopback(addr); err != nil {
		return nil, err
	}
	url := "ws://" + addr + path
	ws, resp, err := dialer.Dial(url, nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: %w (HTTP status %d)", url, err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	return ws, nil
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if host != "127.0.0.1" {
		return fmt.Errorf("refusing to connect to %s: this benchmark only talks to its own servers on 127.0.0.1", addr)
	}
	return nil
}

// reply is a server message of the livebolt protocol, with the fields the
// benchmark reads.
type reply struct {
	Type        string `json:"type"`
	Ref         *int64 `json:"ref"`
	ClientID    string `json:"clientId"`
	Token       string `json:"token"`
	Resumed     bool   `json:"resumed"`
	ID          string `json:"id"`
	Fingerprint string `json:"fingerprint"`
	Version     uint64 `json:"version"`
	Code        string `json:"code"`
	Message     string `json:"message"`
}

// protocolError is an error message from the server.
type protocolError struct {
	Code    string
	Message string
}

func (e *protocolError) Error() string { return e.Code + ": " + e.Message }

// liveClient is one livebolt WebSocket client. It is used by one goroutine
// at a time.
type liveClient struct {
	ws  *fastws.Conn
	ref int64
	// received counts the bytes of every frame read, events included.
	received int64

	clientID string
	token    string
	// id and fingerprint are those of the mounted or hydrated counter.
	id          string
	fingerprint string
}

func dialLive(addr string) (*liveClient, error) {
	ws, err := dial(addr, "/live")
	if err != nil {
		return nil, err
	}
	return &liveClient{ws: ws}, nil
}

// request sends msg with the next ref and waits for the reply to it,
// skipping pushed events.
func (c *liveClient) request(msg map[string]any, timeout time.Duration) (*reply, error) {
	c.ref++
	ref := c.ref
	msg["ref"] = ref
	deadline := time.Now().Add(timeout)
	_ = c.ws.SetWriteDeadline(deadline)
	if err := c.ws.WriteJSON(msg); err != nil {
		return nil, fmt.Errorf("send %s: %w", msg["type"], err)
	}
	_ = c.ws.SetReadDeadline(deadline)
	for range framesPerReply {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			return nil, fmt.Errorf("wait for the reply to %s: %w", msg["type"], err)
		}
		c.received += int64(len(data))
		var r reply
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, fmt.Errorf("reply to %s is not JSON: %w: %.200q", msg["type"], err, data)
		}
		if r.Ref == nil || *r.Ref != ref {
			continue
		}
		if r.Type == "error" {
			return &r, &protocolError{Code: r.Code, Message: r.Message}
		}
		return &r, nil
	}
	return nil, fmt.Errorf("no reply to %s among %d frames", msg["type"], framesPerReply)
}

// hello starts a client, or resumes the one token names when it is set.
func (c *liveClient) hello(token string, features ...string) error {
	msg := map[string]any{"type": "hello"}
	if token != "" {
		msg["token"] = token
	}
	if len(features) > 0 {
		msg["features"] = features
	}
	r, err := c.request(msg, requestTimeout)
	if err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	if token != "" && !r.Resumed {
		return &protocolError{Code: "not_resumed", Message: "hello with a stored token started a new client"}
	}
	c.clientID, c.token = r.ClientID, r.Token
	return nil
}

// mountCounter mounts a counter under key.
func (c *liveClient) mountCounter(key string) error {
	r, err := c.request(map[string]any{"type": "mount", "component": "counter", "key": key}, requestTimeout)
	if err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	c.id, c.fingerprint = r.ID, r.Fingerprint
	return nil
}

// hydrate restores a stored component on this connection.
func (c *liveClient) hydrate(id, fingerprint string, timeout time.Duration) (*reply, error) {
	r, err := c.request(map[string]any{"type": "hydrate", "id": id, "fingerprint": fingerprint}, timeout)
	if err != nil {
		return nil, fmt.Errorf("hydrate: %w", err)
	}
	if r.Type != "state" || r.ID != id {
		return nil, fmt.Errorf("hydrate: got %s for %q, expected the state of %q", r.Type, r.ID, id)
	}
	c.id, c.fingerprint = id, fingerprint
	return r, nil
}

func (c *liveClient) close() { _ = c.ws.Close() }

// connectMounted opens a client that has sent hello and mounted a counter.
func connectMounted(addr string) (*liveClient, error) {
	c, err := dialLive(addr)
	if err != nil {
		return nil, err
	}
	if err := c.hello(""); err == nil {
		err = c.mountCounter("c")
	}
	if err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// parallel runs fn(i) for i in [0, n) on at most workers goroutines and
// returns the first error. After an error the remaining indexes are skipped.
func parallel(n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var failed atomic.Bool
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					failed.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// callConn is one connection of the throughput loop. Against livebolt it is
// a client with a mounted counter; against the echo server it sends the
// same frames and gets them back.
type callConn struct {
	ws   *fastws.Conn
	id   string
	ref  int64
	dead bool // an earlier round failed on it
	buf  bytes.Buffer
}

// loopResult is the outcome of one connection in one round.
type loopResult struct {
	calls     int
	bytesOut  int64
	bytesIn   int64
	latencies []time.Duration
	err       error
}

// appendCall appends the call frame of the counter's increment action.
func appendCall(b []byte, id string, ref int64) []byte {
	b = append(b, `{"type":"call","ref":`...)
	b = strconv.AppendInt(b, ref, 10)
	b = append(b, `,"id":"`...)
	b = append(b, id...)
	return append(b, `","action":"increment","args":[]}`...)
}

// callLoop makes one call at a time until deadline, waiting for each reply,
// at most maxCalls times.
func (c *callConn) callLoop(deadline time.Time, maxCalls int) loopResult {
	res := loopResult{latencies: make([]time.Duration, 0, 1024)}
	frame := make([]byte, 0, 128)
	for res.calls < maxCalls && time.Now().Before(deadline) {
		c.ref++
		frame = appendCall(frame[:0], c.id, c.ref)
		start := time.Now()
		_ = c.ws.SetWriteDeadline(start.Add(callTimeout))
		res.bytesOut += int64(len(frame))
		if err := c.ws.WriteMessage(fastws.TextMessage, frame); err != nil {
			res.err = fmt.Errorf("send call: %w", err)
			return res
		}
		n, err := c.awaitRef(c.ref, start.Add(callTimeout))
		res.bytesIn += n
		if err != nil {
			res.err = err
			return res
		}
		res.latencies = append(res.latencies, time.Since(start))
		res.calls++
	}
	return res
}

var errorPrefix = []byte(`{"type":"error"`)

// awaitRef reads frames until the one carrying ref, and returns the bytes
// read. An error frame for ref is returned as a protocolError.
func (c *callConn) awaitRef(ref int64, deadline time.Time) (int64, error) {
	_ = c.ws.SetReadDeadline(deadline)
	var total int64
	for range framesPerReply {
		_, r, err := c.ws.NextReader()
		if err != nil {
			return total, fmt.Errorf("wait for reply %d: %w", ref, err)
		}
		c.buf.Reset()
		n, err := c.buf.ReadFrom(r)
		total += n
		if err != nil {
			return total, fmt.Errorf("read reply %d: %w", ref, err)
		}
		msg := c.buf.Bytes()
		got, ok := frameRef(msg)
		if !ok || got != ref {
			continue
		}
		if bytes.HasPrefix(msg, errorPrefix) {
			var r reply
			if json.Unmarshal(msg, &r) != nil {
				return total, fmt.Errorf("undecodable error frame: %.200q", msg)
			}
			return total, &protocolError{Code: r.Code, Message: r.Message}
		}
		return total, nil
	}
	return total, fmt.Errorf("no reply %d among %d frames", ref, framesPerReply)
}

var refKey = []byte(`"ref":`)

// frameRef finds the first "ref" field of a frame without decoding it.
func frameRef(msg []byte) (int64, bool) {
	i := bytes.Index(msg, refKey)
	if i < 0 {
		return 0, false
	}
	rest := msg[i+len(refKey):]
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	n, err := strconv.ParseInt(string(rest[:end]), 10, 64)
	return n, err == nil
}

// isTimeout reports whether err is a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
