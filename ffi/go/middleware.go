package floodwall

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"
)

type identityKey struct{}

// IdentityFrom returns the identity Middleware verified for the request, if any.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// Middleware is an http.Handler in front of Next: it verifies the bearer token (when
// Authenticate is set), decides on the request against the engine's rate limits — per
// subject and role from the token — and sets the rate-limit headers. A rejected token gets a
// 401 with WWW-Authenticate, a denied request a 429 with Retry-After; the verified identity
// reaches Next through the request's context (IdentityFrom).
//
// Every response — the 401s and 429s it writes and Next's — is recorded in the engine's
// monitoring (Engine.RecordResponse): its status and the time from the middleware's start to
// the handler's return, under the request's method and URL path. A handler that writes
// nothing answers 200; one that panics is recorded as a 500 unless it had begun its answer.
type Middleware struct {
	Engine       *Engine
	Next         http.Handler
	Authenticate bool
	// ClientIP gives the client address rules may key on; default, the connection's peer
	// (put your trusted-proxy logic here).
	ClientIP func(*http.Request) string
}

func peer(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// statusWriter remembers the status a handler answers with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	// 1xx answers but 101 (Switching Protocols) are interim: the final status follows.
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush passes a flush on when the underlying writer can.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		if w.status == 0 {
			w.status = http.StatusOK
		}
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (m *Middleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	started := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	returned := false
	defer func() {
		status := sw.status
		if status == 0 {
			status = http.StatusOK // what net/http answers for a handler that wrote nothing
			if !returned {
				status = http.StatusInternalServerError
			}
		}
		// The status and path cannot be refused; a method that is not UTF-8 is not counted.
		_ = m.Engine.RecordResponse(r.Method, r.URL.Path, status, time.Since(started))
	}()
	m.serve(sw, r)
	returned = true
}

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

func (m *Middleware) serve(w http.ResponseWriter, r *http.Request) {
	ip := peer(r)
	if m.ClientIP != nil {
		ip = m.ClientIP(r)
	}
	req := Request{Method: r.Method, Path: r.URL.Path, IP: ip}
	ctx := r.Context()
	if m.Authenticate {
		id, err := m.Engine.Authenticate(r.Header.Get("Authorization"))
		if err != nil {
			var fe *Error
			if errors.As(err, &fe) && fe.Code.IsAuth() {
				w.Header().Set("WWW-Authenticate", fe.WWWAuthenticate)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		req.Subject, req.Role = id.Subject, id.Role
		ctx = context.WithValue(ctx, identityKey{}, id)
	}
	d, err := m.Engine.CheckWithHeaders(req)
	if err != nil {
		var fe *Error
		if errors.As(err, &fe) && fe.Code == CostExceedsLimit {
			http.Error(w, "request too costly", http.StatusTooManyRequests)
			return
		}
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	for name, value := range d.Headers {
		w.Header().Set(name, value)
	}
	if !d.Allowed {
		if w.Header().Get("Retry-After") == "" {
			w.Header().Set("Retry-After", strconv.FormatInt(int64((d.RetryAfter.Milliseconds()+999)/1000), 10))
		}
		http.Error(w, "too many requests", http.StatusTooManyRequests)
		return
	}
	m.Next.ServeHTTP(w, r.WithContext(ctx))
}
