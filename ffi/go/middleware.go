package floodwall

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
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

func (m *Middleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
