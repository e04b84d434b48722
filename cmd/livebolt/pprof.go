package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// checkPprofAddr accepts only a loopback host:port for --pprof: profiles
// show memory contents and cost CPU, so they are never served to the
// network.
func checkPprofAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port; use for example 127.0.0.1:6060", addr)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address; pprof is served only on 127.0.0.1, ::1 or localhost", addr)
	}
	return nil
}

// pprofServer serves net/http/pprof on its own loopback listener, apart
// from the fiber server, so that profiling works even when that one is
// busy.
type pprofServer struct {
	srv    *http.Server
	ln     net.Listener
	served chan error
}

// startPprof listens on addr and serves the profiles under /debug/pprof/.
func startPprof(addr string, log *slog.Logger) (*pprofServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for pprof on %s: %w; choose another --pprof address", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	p := &pprofServer{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		ln:  ln, served: make(chan error, 1),
	}
	go func() { p.served <- p.srv.Serve(ln) }()
	log.Info("pprof listening", "addr", ln.Addr().String(), "path", "/debug/pprof/")
	return p, nil
}

// stop closes the listener and open profile requests.
func (p *pprofServer) stop(ctx context.Context, log *slog.Logger) {
	if err := p.srv.Shutdown(ctx); err != nil {
		// A CPU profile in progress holds its request open; cut it.
		_ = p.srv.Close()
	}
	if err := <-p.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("pprof server stopped with an error", "err", err)
	}
}
