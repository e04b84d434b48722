package app

import (
	"errors"
	"log/slog"
	"net"
	"net/url"
	"runtime/debug"
	"sync"
	"time"

	fastws "github.com/fasthttp/websocket"
	"github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/livebolt/livebolt/live"
)

// WebSocket close codes the server sends.
const (
	closeNormal         = websocket.CloseNormalClosure   // 1000
	closeGoingAway      = websocket.CloseGoingAway       // 1001: idle timeout
	closePolicy         = websocket.ClosePolicyViolation // 1008: client too slow
	closeServiceRestart = websocket.CloseServiceRestart  // 1012: shutdown
)

// closeGrace bounds each write once shutdown has begun, so a client that
// stopped reading cannot hold up Shutdown for the full write timeout.
const closeGrace = 2 * time.Second

// wsConn is the outbox of one WebSocket: a queue bounded in messages and
// bytes, drained by one writer goroutine. Send never blocks, so a slow
// client cannot stall the engine or a broadcast to others.
type wsConn struct {
	// ws is the fasthttp/websocket connection itself, not contrib's wrapper:
	// contrib returns the wrapper to a pool when the handler returns, while
	// Shutdown may still hold this wsConn.
	ws  *fastws.Conn
	log *slog.Logger

	queue    chan []byte
	maxBytes int           // limit of queuedBytes
	wrote    chan struct{} // closed when the writer has exited

	// ops counts goroutines that use ws outside the handler, such as the
	// abort's close frame. finish waits for them, because fasthttp reuses
	// the connection object once the handler returns.
	ops sync.WaitGroup

	mu          sync.Mutex
	released    bool // the handler is returning; ws must not be used any more
	queuedBytes int
	finished    bool      // queue closed; Send drops messages
	aborted     bool      // connection cut; queued messages are dropped
	closing     bool      // Shutdown began; writes end by closeBy
	closeBy     time.Time // write deadline once closing
	code        int       // close code to send when the queue is drained
	reason      string    // close reason
	closeSent   bool      // a close frame was already sent, or cannot be
}

func newWSConn(ws *fastws.Conn, queue, maxBytes int, log *slog.Logger) *wsConn {
	return &wsConn{
		ws: ws, log: log, queue: make(chan []byte, queue), maxBytes: maxBytes,
		wrote: make(chan struct{}), code: closeNormal,
	}
}

// Send implements live.Outbox. A full queue means the client is not reading:
// it is disconnected with 1008 rather than allowed to hold memory.
func (c *wsConn) Send(msg []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finished || c.aborted {
		return
	}
	if len(c.queue) == cap(c.queue) || c.queuedBytes+len(msg) > c.maxBytes {
		c.log.Warn("websocket send queue full; disconnecting slow client",
			"remote", c.ws.RemoteAddr().String(), "queued_messages", len(c.queue), "queued_bytes", c.queuedBytes)
		c.abortLocked(closePolicy, "send queue full")
		return
	}
	c.queuedBytes += len(msg)
	// Only Send writes to the queue, under c.mu, and it is not full.
	c.queue <- msg
}

// abortLocked cuts the connection: a best-effort close frame, then deadlines
// in the past, which end both the read loop and a blocked write. Closing the
// socket itself is not possible here, because fasthttp's hijacked connection
// ignores Close and closes the socket when the handler returns. The caller
// holds c.mu.
func (c *wsConn) abortLocked(code int, reason string) {
	if c.aborted {
		return
	}
	c.aborted = true
	c.code, c.reason = code, reason
	sent := c.closeSent
	c.closeSent = true
	if c.released {
		return
	}
	c.ops.Add(1)
	go func() {
		defer c.ops.Done()
		if !sent {
			_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(100*time.Millisecond))
		}
		// The library sets the socket's write deadline again at the start of
		// every frame, so a write that began just before this could replace a
		// single past deadline. Repeat until the writer has exited, for at
		// most a second.
		for range 20 {
			_ = c.ws.NetConn().SetDeadline(time.Now())
			select {
			case <-c.wrote:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
}

// extendRead moves the read deadline to idle from now, unless the
// connection is closing; it reports whether reading may go on.
func (c *wsConn) extendRead(idle time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.aborted {
		return false
	}
	_ = c.ws.NetConn().SetReadDeadline(time.Now().Add(idle))
	return true
}

// beginClose sets the close code and ends the read loop after the frame it
// is handling. The writer then flushes the queue, within closeGrace, and
// sends the close frame.
func (c *wsConn) beginClose(code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.released {
		return // the handler already finished
	}
	c.code, c.reason = code, reason
	c.closing = true
	c.closeBy = time.Now().Add(closeGrace)
	// The socket's own deadline cuts a write already blocked; the writer
	// uses closeBy for the writes after it. Conn.SetWriteDeadline must not be
	// called here, because it is not safe alongside a running write.
	_ = c.ws.NetConn().SetWriteDeadline(c.closeBy)
	_ = c.ws.NetConn().SetReadDeadline(time.Now())
}

// writeLoop sends queued messages until the queue is closed, then the close
// frame.
func (c *wsConn) writeLoop() {
	defer close(c.wrote)
	for msg := range c.queue {
		c.mu.Lock()
		c.queuedBytes -= len(msg)
		skip := c.aborted
		deadline := time.Now().Add(DefaultWriteTimeout)
		if c.closing {
			deadline = c.closeBy
		}
		_ = c.ws.SetWriteDeadline(deadline)
		c.mu.Unlock()
		if skip {
			continue // drain, so finish does not wait for a dead peer
		}
		if err := c.ws.WriteMessage(websocket.TextMessage, msg); err != nil {
			c.log.Debug("websocket write failed; closing", "remote", c.ws.RemoteAddr().String(), "err", err)
			c.mu.Lock()
			c.closeSent = true // the peer cannot take a close frame either
			c.abortLocked(websocket.CloseAbnormalClosure, "write failed")
			c.mu.Unlock()
		}
	}
	c.mu.Lock()
	code, reason, sent := c.code, c.reason, c.closeSent
	c.mu.Unlock()
	if !sent {
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	}
}

// finish closes the queue, waits for the writer to flush it and for any
// abort in progress, and marks ws released. The handler calls it last.
func (c *wsConn) finish() {
	c.mu.Lock()
	if !c.finished {
		c.finished = true
		close(c.queue)
	}
	c.mu.Unlock()
	<-c.wrote
	c.mu.Lock()
	c.released = true
	c.mu.Unlock()
	c.ops.Wait()
}

// checkOrigin allows requests without Origin (non-browser clients), from
// the same host, or from an origin listed in AllowedOrigins.
func (s *Server) checkOrigin(c *fiber.Ctx) bool {
	origin := c.Get(fiber.HeaderOrigin)
	if origin == "" {
		return true
	}
	for _, allowed := range s.opts.AllowedOrigins {
		if allowed == "*" || allowed == origin {
			return true
		}
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host == c.Hostname()
}

// upgradeLive rejects requests that cannot become a live connection, with a
// JSON error, before the WebSocket upgrade.
func (s *Server) upgradeLive(c *fiber.Ctx) error {
	if !websocket.IsWebSocketUpgrade(c) {
		return fiber.NewError(fiber.StatusUpgradeRequired, "GET /live needs a WebSocket upgrade request")
	}
	if !s.checkOrigin(c) {
		return fiber.NewError(fiber.StatusForbidden, "origin "+c.Get(fiber.HeaderOrigin)+" is not allowed; add it to --allowed-origins")
	}
	if s.isClosing() {
		return fiber.NewError(fiber.StatusServiceUnavailable, "server is shutting down; reconnect shortly")
	}
	return s.liveHandler(c)
}

func (s *Server) newLiveHandler() fiber.Handler {
	return websocket.New(s.serveLive, websocket.Config{
		// Origins are checked by checkOrigin before the upgrade.
		Origins:          []string{"*"},
		HandshakeTimeout: 10 * time.Second,
		RecoverHandler: func(c *websocket.Conn) {
			if r := recover(); r != nil {
				s.log.Error("websocket handler panicked", "panic", r, "stack", string(debug.Stack()))
			}
		},
	})
}

// serveLive runs one live connection: a read loop that hands each text frame
// to the engine, and a writer goroutine behind the connection's outbox.
func (s *Server) serveLive(ws *websocket.Conn) {
	ws.SetReadLimit(s.opts.MaxFrameBytes)
	// Clear any deadline left by the HTTP server on the hijacked connection.
	_ = ws.SetReadDeadline(time.Time{})
	wc := newWSConn(ws.Conn, s.opts.SendQueue, s.opts.SendQueueBytes, s.log)
	go wc.writeLoop()

	// Registration and the closing check share s.mu, so either Shutdown waits
	// for this connection or this connection closes itself with 1012.
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		wc.beginClose(closeServiceRestart, "server restart")
		wc.finish()
		return
	}
	s.wsDone.Add(1)
	s.conns[wc] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, wc)
		s.mu.Unlock()
		s.wsDone.Done()
	}()

	conn := s.engine.Connect(wc)
	stopKeepalive := s.keepalive(wc, conn)
	s.readLoop(ws.Conn, wc, conn)
	stopKeepalive()
	conn.Close()
	wc.finish()
}

// keepalive pings the client every PingInterval and closes the connection
// with 1008 when hello has not arrived within HelloTimeout. It returns a
// function that stops both.
func (s *Server) keepalive(wc *wsConn, conn *live.Conn) (stop func()) {
	// Any frame or pong from the client extends the read deadline.
	wc.ws.SetPongHandler(func(string) error {
		wc.extendRead(s.opts.IdleTimeout)
		return nil
	})
	helloTimer := time.AfterFunc(s.opts.HelloTimeout, func() {
		if !conn.Welcomed() {
			s.log.Debug("websocket closed: no hello in time", "remote", wc.ws.RemoteAddr().String(), "timeout", s.opts.HelloTimeout)
			wc.beginClose(closePolicy, "hello timeout")
		}
	})
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		ticker := time.NewTicker(s.opts.PingInterval)
		defer ticker.Stop()
		for {
			select {
			case <-done:
				return
			case <-ticker.C:
				// WriteControl is safe alongside the writer goroutine.
				_ = wc.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(DefaultWriteTimeout))
			}
		}
	}()
	return func() {
		helloTimer.Stop()
		close(done)
		<-stopped
	}
}

func (s *Server) readLoop(ws *fastws.Conn, wc *wsConn, conn *live.Conn) {
	for {
		if !wc.extendRead(s.opts.IdleTimeout) {
			return // shutting down
		}
		kind, frame, err := ws.ReadMessage()
		if err != nil {
			s.noteReadEnd(wc, err)
			return
		}
		if kind != websocket.TextMessage {
			wc.Send([]byte(`{"type":"error","code":"bad_json","message":"binary frames are not supported; send JSON text frames","requiresRefresh":false}`))
			continue
		}
		conn.Handle(frame)
	}
}

// noteReadEnd records why reading stopped. After a close frame from the peer
// or an oversized frame, the library has already sent a close frame.
// The error values come from fasthttp/websocket, which contrib/websocket
// wraps; contrib's own ErrReadLimit is a different value that never matches.
func (s *Server) noteReadEnd(wc *wsConn, err error) {
	var closeErr *fastws.CloseError
	var netErr net.Error
	switch {
	case errors.As(err, &closeErr), errors.Is(err, fastws.ErrReadLimit):
		wc.mu.Lock()
		wc.closeSent = true
		wc.mu.Unlock()
		if errors.Is(err, fastws.ErrReadLimit) {
			s.log.Warn("websocket frame too large; closed with 1009", "remote", wc.ws.RemoteAddr().String(), "limit_bytes", s.opts.MaxFrameBytes)
		}
	case errors.As(err, &netErr) && netErr.Timeout():
		wc.mu.Lock()
		idle := !wc.closing && !wc.aborted
		if idle {
			wc.code, wc.reason = closeGoingAway, "idle timeout"
		}
		wc.mu.Unlock()
		if idle {
			s.log.Debug("websocket closed: idle", "remote", wc.ws.RemoteAddr().String(), "timeout", s.opts.IdleTimeout)
		}
	default:
		s.log.Debug("websocket read ended", "remote", wc.ws.RemoteAddr().String(), "err", err)
	}
}
