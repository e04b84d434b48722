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

	mu          sync.Mutex
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
	go func() {
		if !sent {
			_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(100*time.Millisecond))
		}
		_ = c.ws.NetConn().SetDeadline(time.Now())
	}()
}

// beginClose sets the close code and ends the read loop after the frame it
// is handling. The writer then flushes the queue, within closeGrace, and
// sends the close frame.
func (c *wsConn) beginClose(code int, reason string) {
	c.mu.Lock()
	c.code, c.reason = code, reason
	c.closing = true
	c.closeBy = time.Now().Add(closeGrace)
	// The socket's own deadline cuts a write already blocked; the writer
	// uses closeBy for the writes after it. Conn.SetWriteDeadline must not be
	// called here, because it is not safe alongside a running write.
	_ = c.ws.NetConn().SetWriteDeadline(c.closeBy)
	c.mu.Unlock()
	_ = c.ws.SetReadDeadline(time.Now())
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

// finish closes the queue and waits for the writer to flush it.
func (c *wsConn) finish() {
	c.mu.Lock()
	if !c.finished {
		c.finished = true
		close(c.queue)
	}
	c.mu.Unlock()
	<-c.wrote
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
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
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
	s.readLoop(ws.Conn, wc, conn)
	conn.Close()
	wc.finish()
}

func (s *Server) readLoop(ws *fastws.Conn, wc *wsConn, conn *live.Conn) {
	for {
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
		// beginClose set the deadline; the close code is already chosen.
	default:
		s.log.Debug("websocket read ended", "remote", wc.ws.RemoteAddr().String(), "err", err)
	}
}
