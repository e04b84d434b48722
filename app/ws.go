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

// wsConn is the outbox of one WebSocket: a bounded queue drained by one
// writer goroutine, so a slow client never blocks the engine or others.
type wsConn struct {
	// ws is the fasthttp/websocket connection itself, not contrib's wrapper:
	// contrib returns the wrapper to a pool when the handler returns, while
	// Shutdown may still hold this wsConn.
	ws  *fastws.Conn
	log *slog.Logger

	queue chan []byte
	wrote chan struct{} // closed when the writer has exited

	mu        sync.Mutex
	finished  bool   // queue closed; Send drops messages
	code      int    // close code to send when the queue is drained
	reason    string // close reason
	closeSent bool   // the library already sent a close frame
}

func newWSConn(ws *fastws.Conn, queue int, log *slog.Logger) *wsConn {
	return &wsConn{ws: ws, log: log, queue: make(chan []byte, queue), wrote: make(chan struct{}), code: closeNormal}
}

// Send implements live.Outbox. A full queue means the client is not reading:
// it is disconnected rather than allowed to hold memory or block a
// broadcast.
func (c *wsConn) Send(msg []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finished {
		return
	}
	select {
	case c.queue <- msg:
	default:
		c.log.Warn("websocket send queue full; disconnecting slow client", "remote", c.ws.RemoteAddr().String(), "queued", len(c.queue))
		c.code, c.reason = closePolicy, "send queue full"
		_ = c.ws.NetConn().Close()
	}
}

// beginClose sets the close code and ends the read loop after the frame it
// is handling. The writer then flushes the queue and sends the close frame.
func (c *wsConn) beginClose(code int, reason string) {
	c.mu.Lock()
	c.code, c.reason = code, reason
	c.mu.Unlock()
	_ = c.ws.SetReadDeadline(time.Now())
}

// writeLoop sends queued messages until the queue is closed, then the close
// frame.
func (c *wsConn) writeLoop() {
	defer close(c.wrote)
	for msg := range c.queue {
		_ = c.ws.SetWriteDeadline(time.Now().Add(DefaultWriteTimeout))
		if err := c.ws.WriteMessage(websocket.TextMessage, msg); err != nil {
			_ = c.ws.NetConn().Close()
			for range c.queue {
				// Drain so Send never blocks; the peer is gone.
			}
			return
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
	wc := newWSConn(ws.Conn, s.opts.SendQueue, s.log)
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
