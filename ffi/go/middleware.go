package floodwall

import (
	"context"
	"net/http"
	"strings"
)

type identityKey struct{}

// IdentityFrom returns the identity Middleware verified for the request, if any.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// Middleware is an http.Handler that puts the engine's HTTP layer (Engine.HTTP) in front of
// Next, and writes what it says: a request the layer skips goes to Next untouched; one it
// lets through goes to Next with the verified identity in its context (IdentityFrom) and the
// rate-limit headers on the response (a header of the same name Next sets itself wins); one
// it refuses gets the layer's answer — 400, 401 with WWW-Authenticate, 403, 429 with
// Retry-After, 503 — status, headers and problem+json body, the same bytes every floodwall
// host sends. Client addresses come from the connection's peer and the engine's [http]
// section (trusted proxies, forwarding header).
//
// Every response but a skipped request's is finished in the engine (Exchange.Finish): its
// status is recorded for monitoring, under the normal path, and the rules that count by
// response are settled. A handler that writes nothing answers 200; one that panics is
// finished as a 500 (or the status it had written) and the panic goes on. A request the
// engine cannot be handed (a NUL byte in a header a program built) is answered 500.
type Middleware struct {
	Engine *Engine
	Next   http.Handler
	// Authenticate verifies the bearer token (StageGuard); without it only the rate limits
	// apply (StageRateLimit, for an engine without [auth]).
	Authenticate bool
	// Cost gives the units a request takes from every matching limit; 1 when nil. Anything
	// but an integer from 0 to 2^53 is answered 400 invalid_cost.
	Cost func(*http.Request) float64
}

// ServeHTTP implements http.Handler.
func (m *Middleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req := HTTPRequest{
		Method: r.Method,
		Target: r.RequestURI,
		Peer:   r.RemoteAddr,
		Header: r.Header,
		Cost:   1,
		Stage:  StageRateLimit,
	}
	if req.Target == "" {
		req.Target = r.URL.RequestURI() // a request built for a client, not read by a server
	}
	if m.Authenticate {
		req.Stage = StageGuard
	}
	if m.Cost != nil {
		req.Cost = m.Cost(r)
		req.Peek = req.Cost == 0
	}
	x, err := m.Engine.HTTP(req)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	switch x.Verdict {
	case Refuse:
		h := w.Header()
		for _, f := range x.Headers {
			h[f.Name] = []string{f.Value}
		}
		w.WriteHeader(x.Status)
		if r.Method != http.MethodHead {
			_, _ = w.Write(x.Body)
		}
		_ = x.Finish(x.Status, nil)
	case Pass:
		if x.Identity != nil {
			r = r.WithContext(context.WithValue(r.Context(), identityKey{}, *x.Identity))
		}
		m.pass(w, r, x)
	default:
		x.Close()
		m.Next.ServeHTTP(w, r)
	}
}

// pass calls Next and finishes the exchange with the status it answered.
func (m *Middleware) pass(w http.ResponseWriter, r *http.Request, x *Exchange) {
	sw := &statusWriter{ResponseWriter: w, add: x.Headers}
	returned := false
	defer func() {
		if !returned {
			status := sw.status
			if status == 0 {
				status = http.StatusInternalServerError
			}
			_ = x.Finish(status, w.Header())
		}
	}()
	m.Next.ServeHTTP(sw, r)
	returned = true
	if sw.status == 0 {
		// net/http answers 200 for a handler that wrote nothing, with the headers set so far.
		sw.addHeaders()
		sw.status = http.StatusOK
	}
	_ = x.Finish(sw.status, w.Header())
}

// statusWriter remembers the status a handler answers with, and adds the decision's headers
// when the answer begins, but those the handler set itself.
type statusWriter struct {
	http.ResponseWriter
	status int
	add    []HeaderField
	added  bool
}

func (w *statusWriter) addHeaders() {
	if w.added {
		return
	}
	w.added = true
	h := w.ResponseWriter.Header()
	for _, f := range w.add {
		if !hasHeader(h, f.Name) {
			h[f.Name] = []string{f.Value}
		}
	}
}

// hasHeader reports whether h has a header called name, in any case.
func hasHeader(h http.Header, name string) bool {
	for key := range h {
		if strings.EqualFold(key, name) {
			return true
		}
	}
	return false
}

func (w *statusWriter) WriteHeader(code int) {
	// 1xx answers but 101 (Switching Protocols) are interim: the final status follows.
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.addHeaders()
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.addHeaders()
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush passes a flush on when the underlying writer can.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		if w.status == 0 {
			w.addHeaders()
			w.status = http.StatusOK
		}
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// MetricsHandler answers the engine's counters in the Prometheus text format (a scrape
// target: mount it at /metrics, outside Middleware).
func MetricsHandler(e *Engine) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		text, err := e.Prometheus()
		if err != nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", PrometheusContentType)
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write([]byte(text))
	})
}
