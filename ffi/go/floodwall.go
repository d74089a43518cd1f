// Package floodwall wraps floodwall's C ABI (include/floodwall.h, libfloodwall.a) for Go:
// an Engine that authenticates bearer tokens, decides on requests against layered rate
// limits, and picks upstreams; its HTTP layer (Engine.HTTP), which decides on a request as
// the server received it and makes the answers; and Middleware, the http.Handler that puts
// that layer in front of a handler.
//
// Build the library first (`cargo build -p floodwall-ffi`, which `make test` does): cgo links
// target/debug/libfloodwall.a from the repository.
package floodwall

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: ${SRCDIR}/../../target/debug/libfloodwall.a -lpthread -ldl -lm
#include <stdlib.h>
#include "floodwall.h"
*/
import "C"

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Code is the outcome of a call into floodwall, one per error kind of the core.
type Code uint32

// The codes of include/floodwall.h.
const (
	OK                  Code = C.FW_OK
	NullArgument        Code = C.FW_NULL_ARGUMENT
	InvalidUTF8         Code = C.FW_INVALID_UTF8
	InvalidArgument     Code = C.FW_INVALID_ARGUMENT
	BufferTooSmall      Code = C.FW_BUFFER_TOO_SMALL
	Panic               Code = C.FW_PANIC
	UnknownError        Code = C.FW_UNKNOWN_ERROR
	InvalidConfig       Code = C.FW_INVALID_CONFIG
	CostExceedsLimit    Code = C.FW_COST_EXCEEDS_LIMIT
	InvalidCost         Code = C.FW_INVALID_COST
	UnknownRule         Code = C.FW_UNKNOWN_RULE
	MissingToken        Code = C.FW_MISSING_TOKEN
	MalformedToken      Code = C.FW_MALFORMED_TOKEN
	TokenTooLarge       Code = C.FW_TOKEN_TOO_LARGE
	AlgorithmNotAllowed Code = C.FW_ALGORITHM_NOT_ALLOWED
	UnknownKey          Code = C.FW_UNKNOWN_KEY
	BadSignature        Code = C.FW_BAD_SIGNATURE
	Expired             Code = C.FW_EXPIRED
	NotYetValid         Code = C.FW_NOT_YET_VALID
	WrongIssuer         Code = C.FW_WRONG_ISSUER
	WrongAudience       Code = C.FW_WRONG_AUDIENCE
	MissingClaim        Code = C.FW_MISSING_CLAIM
	InvalidClaim        Code = C.FW_INVALID_CLAIM
	NoUpstreamAvailable Code = C.FW_NO_UPSTREAM_AVAILABLE
	UnknownService      Code = C.FW_UNKNOWN_SERVICE
	UnknownUpstream     Code = C.FW_UNKNOWN_UPSTREAM
	StoreFailed         Code = C.FW_STORE_FAILED
)

// IsAuth reports whether the code is an authentication rejection (a 401).
func (c Code) IsAuth() bool { return c >= 400 && c < 500 }

// Error is a failed call: its code, the library's message and, for authentication
// rejections, the WWW-Authenticate value to send with the 401.
type Error struct {
	Code            Code
	Message         string
	WWWAuthenticate string
}

func (e *Error) Error() string { return fmt.Sprintf("floodwall: %s (code %d)", e.Message, e.Code) }

// Is makes errors.Is(err, &Error{Code: X}) compare codes.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code
}

func lastString(f func(*C.char, C.size_t, *C.size_t) C.fw_result) string {
	var n C.size_t
	f(nil, 0, &n)
	if n == 0 {
		return ""
	}
	buf := make([]byte, int(n)+1)
	if f((*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &n) != C.FW_OK {
		return ""
	}
	return string(buf[:n])
}

// fail turns a code into an error, reading the thread's last message (the caller is locked
// to its OS thread for the call and the read).
func fail(code C.fw_result) error {
	if code == C.FW_OK {
		return nil
	}
	e := &Error{
		Code: Code(code),
		Message: lastString(func(b *C.char, l C.size_t, n *C.size_t) C.fw_result {
			return C.fw_last_error_message(b, l, n)
		}),
	}
	if e.Code.IsAuth() {
		e.WWWAuthenticate = lastString(func(b *C.char, l C.size_t, n *C.size_t) C.fw_result {
			return C.fw_last_error_www_authenticate(b, l, n)
		})
	}
	return e
}

// call runs f on a locked OS thread, so that the thread-local last error it reads is its own.
func call(f func() C.fw_result) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return fail(f())
}

// Version is the library's version.
func Version() string { return C.GoString(C.fw_version()) }

// Engine is a floodwall engine; safe for concurrent use. Close it when done.
type Engine struct {
	ptr *C.fw_engine
	// names holds the *headerNames the HTTP layer reads, fetched once and again after
	// SetAccessLists (under namesMu, so that an older answer never replaces a newer one).
	names   atomic.Value
	namesMu sync.Mutex
}

func newEngine(f func(*C.char, **C.fw_engine) C.fw_result, text string) (*Engine, error) {
	ctext := C.CString(text)
	defer C.free(unsafe.Pointer(ctext))
	e := &Engine{}
	if err := call(func() C.fw_result { return f(ctext, &e.ptr) }); err != nil {
		return nil, err
	}
	runtime.SetFinalizer(e, (*Engine).Close)
	return e, nil
}

// FromTOML builds an engine from a TOML configuration.
func FromTOML(toml string) (*Engine, error) {
	return newEngine(func(t *C.char, o **C.fw_engine) C.fw_result { return C.fw_engine_from_toml(t, o) }, toml)
}

// FromJSON builds an engine from a JSON configuration of the same structure.
func FromJSON(json string) (*Engine, error) {
	return newEngine(func(t *C.char, o **C.fw_engine) C.fw_result { return C.fw_engine_from_json(t, o) }, json)
}

// FromFile builds an engine from a configuration file (JSON if it ends in .json).
func FromFile(path string) (*Engine, error) {
	return newEngine(func(t *C.char, o **C.fw_engine) C.fw_result { return C.fw_engine_from_file(t, o) }, path)
}

// Close frees the engine; it may not be used afterwards. Closing twice is harmless.
func (e *Engine) Close() {
	if e.ptr != nil {
		C.fw_engine_free(e.ptr)
		e.ptr = nil
		runtime.SetFinalizer(e, nil)
	}
}

// RuleChange is what a reload did to one rule of the new configuration (or to one it
// removed): "unchanged" (as it was, wherever it now stands: its counters carry on), "kept"
// (the same limits, but what it matches or its shadow mode changed: its counters carry on),
// "restarted" (its key, policies or responses changed: it counts afresh), "added" or
// "removed".
type RuleChange struct {
	Name   string `json:"name"`
	Change string `json:"change"`
}

// UpstreamChanges count the upstreams a reload kept with their breakers and in-flight
// counts (same service, breaker settings, name, URL and weight), started afresh (new or
// changed), and removed (leases on them finish normally).
type UpstreamChanges struct {
	Kept    int `json:"kept"`
	Started int `json:"started"`
	Removed int `json:"removed"`
}

// ReloadSummary is what a reload changed.
type ReloadSummary struct {
	Rules       []RuleChange    `json:"rules"`
	Upstreams   UpstreamChanges `json:"upstreams"`
	AuthChanged bool            `json:"auth_changed"`
	// Generations is how many configurations the engine keeps so that permits, exchanges
	// and leases taken under an older one go back to it.
	Generations int `json:"generations"`
}

func (e *Engine) reload(source, format string) (ReloadSummary, error) {
	csource := C.CString(source)
	defer C.free(unsafe.Pointer(csource))
	cformat := C.CString(format)
	defer C.free(unsafe.Pointer(cformat))
	var p *C.char
	var n C.size_t
	// Under namesMu: the header names the HTTP layer reads are those of the new rules.
	e.namesMu.Lock()
	defer e.namesMu.Unlock()
	if err := call(func() C.fw_result { return C.fw_engine_reload(e.ptr, csource, cformat, &p, &n) }); err != nil {
		return ReloadSummary{}, err
	}
	text := takeString(p, n)
	_, err := e.refreshNames()
	runtime.KeepAlive(e)
	if err != nil {
		return ReloadSummary{}, err
	}
	var summary ReloadSummary
	if err := json.Unmarshal([]byte(text), &summary); err != nil {
		return ReloadSummary{}, &Error{Code: UnknownError, Message: "the reload summary is not the JSON this package knows: " + err.Error()}
	}
	return summary, nil
}

// ReloadTOML replaces the engine's whole configuration while it serves: rules, [http],
// [headers], [auth], services and the monitor's stream change at once for the requests
// decided from then on. An unchanged rule keeps its counters; a changed one starts afresh;
// unchanged upstreams keep their breakers and in-flight counts. An invalid configuration
// (or one that changes the store) is an InvalidConfig error naming the field, and nothing
// changes. A Middleware's Authenticate is the host's: set it again if [auth] came or went.
func (e *Engine) ReloadTOML(toml string) (ReloadSummary, error) { return e.reload(toml, "toml") }

// ReloadJSON is ReloadTOML for a JSON configuration of the same structure.
func (e *Engine) ReloadJSON(json string) (ReloadSummary, error) { return e.reload(json, "json") }

// ReloadFile is ReloadTOML for a configuration file (JSON if it ends in .json); relative key
// paths in it are read from its directory.
func (e *Engine) ReloadFile(path string) (ReloadSummary, error) { return e.reload(path, "file") }

// Request is one request to decide on. Method and Path are required.
type Request struct {
	Method, Path, Subject, Role, IP string
	// Cost is taken from every matching limit; 0 means 1 (use Peek for a cost of 0).
	Cost uint64
	// Peek asks without consuming (a cost of 0).
	Peek bool
	// Now is an explicit time (tests, replays); zero means the engine's clock.
	Now time.Time
	// Headers are the request's headers, for rules keyed on header:NAME (names any case).
	Headers map[string]string
}

// Store says which store decided.
type Store int

// The stores.
const (
	StoreMemory      Store = C.FW_STORE_MEMORY
	StoreRedis       Store = C.FW_STORE_REDIS
	StoreFallback    Store = C.FW_STORE_FALLBACK
	StoreUnavailable Store = C.FW_STORE_UNAVAILABLE
	StoreDenyCache   Store = C.FW_STORE_DENY_CACHE
)

// Decision is a rate-limit decision.
type Decision struct {
	Allowed    bool
	Rule       string // the deciding rule, "" when none matched
	Limit      uint64
	Remaining  uint64
	ResetAfter time.Duration
	RetryAfter time.Duration
	Store      Store
	// Blocked: denied because the key is blocked (block_for); RetryAfter is the block's end.
	Blocked bool
	// Holds: it holds places of concurrency rules until Release (or the rule's max_hold).
	Holds bool
	// Headers are the response headers to send (with CheckWithHeaders and the middleware).
	Headers map[string]string

	permit uint64
	engine *Engine
}

// Release gives back the places the decision holds of concurrency rules, once its request
// is done; nothing when it holds none. Safe from any goroutine; a second call does nothing.
func (d *Decision) Release() error {
	if d.permit == 0 || d.engine == nil {
		return nil
	}
	permit, e := d.permit, d.engine
	d.permit, d.Holds = 0, false
	err := call(func() C.fw_result { return C.fw_release(e.ptr, C.uint64_t(permit)) })
	runtime.KeepAlive(e)
	return err
}

type cRequest struct {
	req     C.fw_request
	strings []*C.char
	lines   *C.fw_header
}

func (r *Request) toC() *cRequest {
	c := &cRequest{}
	str := func(s string, optional bool) *C.char {
		if optional && s == "" {
			return nil
		}
		p := C.CString(s)
		c.strings = append(c.strings, p)
		return p
	}
	c.req.method = str(r.Method, false)
	c.req.path = str(r.Path, false)
	c.req.subject = str(r.Subject, true)
	c.req.role = str(r.Role, true)
	c.req.ip = str(r.IP, true)
	switch {
	case r.Peek:
		c.req.cost = 0
	case r.Cost == 0:
		c.req.cost = 1
	default:
		c.req.cost = C.uint64_t(r.Cost)
	}
	c.req.now_ms = -1
	if !r.Now.IsZero() {
		c.req.now_ms = C.int64_t(r.Now.UnixMilli())
	}
	if len(r.Headers) > 0 {
		// C memory: a Go pointer to Go pointers may not cross cgo.
		c.lines = (*C.fw_header)(C.malloc(C.size_t(len(r.Headers)) * C.size_t(unsafe.Sizeof(C.fw_header{}))))
		lines := unsafe.Slice(c.lines, len(r.Headers))
		i := 0
		for name, value := range r.Headers {
			lines[i].name = str(name, false)
			lines[i].value = str(value, false)
			i++
		}
		c.req.headers = c.lines
		c.req.headers_len = C.size_t(len(r.Headers))
	}
	return c
}

func (c *cRequest) free() {
	for _, p := range c.strings {
		C.free(unsafe.Pointer(p))
	}
	if c.lines != nil {
		C.free(unsafe.Pointer(c.lines))
	}
}

func (e *Engine) ruleName(index C.int32_t) string {
	if index < 0 {
		return ""
	}
	var n C.size_t
	buf := make([]byte, 128)
	for {
		code := C.fw_engine_rule_name(e.ptr, C.size_t(index), (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &n)
		if code == C.FW_OK {
			return string(buf[:n])
		}
		if code != C.FW_BUFFER_TOO_SMALL {
			return ""
		}
		buf = make([]byte, int(n)+1)
	}
}

func (e *Engine) decision(d *C.fw_decision) Decision {
	return Decision{
		Allowed:    bool(d.allowed),
		Rule:       e.ruleName(d.rule_index),
		Limit:      uint64(d.limit),
		Remaining:  uint64(d.remaining),
		ResetAfter: time.Duration(d.reset_after_ms) * time.Millisecond,
		RetryAfter: time.Duration(d.retry_after_ms) * time.Millisecond,
		Store:      Store(d.store),
		Blocked:    bool(d.blocked),
		Holds:      d.permit != 0,
		permit:     uint64(d.permit),
		engine:     e,
	}
}

// Check decides on a request: every matching rule at once, all-or-nothing.
func (e *Engine) Check(r Request) (Decision, error) {
	c := r.toC()
	defer c.free()
	var d C.fw_decision
	if err := call(func() C.fw_result { return C.fw_check(e.ptr, &c.req, &d) }); err != nil {
		return Decision{}, err
	}
	runtime.KeepAlive(e)
	return e.decision(&d), nil
}

// Acquire decides like Check and, while the request is denied with a wait that fits in
// maxWait, waits for capacity and asks again (first come, first served among the engine's
// waiters for the same limits): the admission, or the last denial. It blocks the goroutine;
// it decides on the engine's clock (r.Now is ignored).
func (e *Engine) Acquire(r Request, maxWait time.Duration) (Decision, error) {
	c := r.toC()
	defer c.free()
	var d C.fw_decision
	wait := C.uint64_t(0)
	if maxWait > 0 {
		wait = C.uint64_t(maxWait.Milliseconds())
	}
	if err := call(func() C.fw_result { return C.fw_acquire(e.ptr, &c.req, wait, &d) }); err != nil {
		return Decision{}, err
	}
	runtime.KeepAlive(e)
	return e.decision(&d), nil
}

// Key names one key of one rule: the key as the rule counts it (a subject, an address, a
// header's value, "GET /path"); Absent names the requests lacking the keyed part; Role picks
// the policy ("" for the rule's default).
type Key struct {
	Rule, Key, Role string
	Absent          bool
	// Now is an explicit time (tests, replays); zero means the engine's clock.
	Now time.Time
}

// KeyStatus is what a key of a rule has left (Inspect).
type KeyStatus struct {
	// Limit is the policy's, or the key's own while it has one (SetKeyLimit).
	Limit, Remaining uint64
	ResetAfter       time.Duration
	Blocked          bool
	BlockedFor       time.Duration
	Store            Store
	// HasKeyLimit says whether the key has a limit of its own now, for KeyLimitFor more.
	HasKeyLimit bool
	KeyLimitFor time.Duration
}

func (k Key) toC() (C.fw_key, func()) {
	var c C.fw_key
	var owned []*C.char
	str := func(s string) *C.char {
		p := C.CString(s)
		owned = append(owned, p)
		return p
	}
	c.rule = str(k.Rule)
	if !k.Absent {
		c.key = str(k.Key)
	}
	if k.Role != "" {
		c.role = str(k.Role)
	}
	if !k.Now.IsZero() {
		c.now_ms = C.int64_t(k.Now.UnixMilli())
	}
	return c, func() {
		for _, p := range owned {
			C.free(unsafe.Pointer(p))
		}
	}
}

// Inspect says what a key has left now; it consumes nothing.
func (e *Engine) Inspect(k Key) (KeyStatus, error) {
	c, free := k.toC()
	defer free()
	var s C.fw_key_status
	if err := call(func() C.fw_result { return C.fw_inspect(e.ptr, &c, &s) }); err != nil {
		return KeyStatus{}, err
	}
	runtime.KeepAlive(e)
	return KeyStatus{
		Limit: uint64(s.limit), Remaining: uint64(s.remaining),
		ResetAfter: time.Duration(s.reset_after_ms) * time.Millisecond,
		Blocked:    bool(s.blocked), BlockedFor: time.Duration(s.blocked_for_ms) * time.Millisecond,
		Store:       Store(s.store),
		HasKeyLimit: bool(s.has_key_limit), KeyLimitFor: time.Duration(s.key_limit_for_ms) * time.Millisecond,
	}, nil
}

func (e *Engine) keyOp(k Key, op func(*C.fw_key) C.fw_result) error {
	c, free := k.toC()
	defer free()
	err := call(func() C.fw_result { return op(&c) })
	runtime.KeepAlive(e)
	return err
}

// ResetKey starts a key afresh: what it counted and its block are forgotten.
func (e *Engine) ResetKey(k Key) error {
	return e.keyOp(k, func(c *C.fw_key) C.fw_result { return C.fw_reset_key(e.ptr, c) })
}

// BlockKey blocks a key for d (a rule with block_for).
func (e *Engine) BlockKey(k Key, d time.Duration) error {
	return e.keyOp(k, func(c *C.fw_key) C.fw_result { return C.fw_block_key(e.ptr, c, C.uint64_t(d.Milliseconds())) })
}

// Penalize takes points from a key now, as requests would.
func (e *Engine) Penalize(k Key, points uint64) error {
	return e.keyOp(k, func(c *C.fw_key) C.fw_result { return C.fw_penalize(e.ptr, c, C.uint64_t(points)) })
}

// Reward gives points back to a key now.
func (e *Engine) Reward(k Key, points uint64) error {
	return e.keyOp(k, func(c *C.fw_key) C.fw_result { return C.fw_reward(e.ptr, c, C.uint64_t(points)) })
}

// SetKeyLimit judges a key by its own limit (a token bucket's capacity, its refill rate
// scaled with it) for lifetime (1 ms to 366 days), replacing any it had; the rule must have
// key_limits = true (an InvalidConfig error otherwise). On Redis every process sees it.
func (e *Engine) SetKeyLimit(k Key, limit uint64, lifetime time.Duration) error {
	return e.keyOp(k, func(c *C.fw_key) C.fw_result {
		return C.fw_set_key_limit(e.ptr, c, C.uint64_t(limit), C.uint64_t(lifetime.Milliseconds()))
	})
}

// ClearKeyLimit takes a key's own limit away: its policy's applies again.
func (e *Engine) ClearKeyLimit(k Key) error {
	return e.keyOp(k, func(c *C.fw_key) C.fw_result { return C.fw_clear_key_limit(e.ptr, c) })
}

// CheckWithHeaders decides and renders the response headers.
func (e *Engine) CheckWithHeaders(r Request) (Decision, error) {
	c := r.toC()
	defer c.free()
	var d C.fw_decision
	var h *C.fw_headers
	if err := call(func() C.fw_result { return C.fw_check_with_headers(e.ptr, &c.req, &d, &h) }); err != nil {
		return Decision{}, err
	}
	defer C.fw_headers_free(h)
	out := e.decision(&d)
	out.Headers = headersOf(h)
	runtime.KeepAlive(e)
	return out, nil
}

func headersOf(h *C.fw_headers) map[string]string {
	var count C.size_t
	C.fw_headers_len(h, &count)
	n := int(count)
	out := make(map[string]string, n)
	for i := 0; i < n; i++ {
		var name, value *C.char
		if C.fw_headers_get(h, C.size_t(i), &name, &value) == C.FW_OK {
			out[C.GoString(name)] = C.GoString(value)
		}
	}
	return out
}

// CheckMany decides on each request in turn (one round trip on Redis); each result has its
// decision or its error.
func (e *Engine) CheckMany(rs []Request) ([]Decision, []error) {
	if len(rs) == 0 {
		return nil, nil
	}
	cs := make([]*cRequest, len(rs))
	creqs := (*[1 << 20]C.fw_request)(C.malloc(C.size_t(len(rs)) * C.size_t(unsafe.Sizeof(C.fw_request{}))))[:len(rs):len(rs)]
	defer C.free(unsafe.Pointer(&creqs[0]))
	for i := range rs {
		cs[i] = rs[i].toC()
		defer cs[i].free()
		creqs[i] = cs[i].req
	}
	out := make([]C.fw_decision, len(rs))
	results := make([]C.fw_result, len(rs))
	decisions := make([]Decision, len(rs))
	errs := make([]error, len(rs))
	if err := call(func() C.fw_result {
		return C.fw_check_many(e.ptr, &creqs[0], C.size_t(len(rs)), &out[0], &results[0])
	}); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return decisions, errs
	}
	for i := range rs {
		if results[i] == C.FW_OK {
			decisions[i] = e.decision(&out[i])
		} else {
			errs[i] = &Error{Code: Code(results[i]), Message: fmt.Sprintf("request %d refused with code %d", i, results[i])}
		}
	}
	runtime.KeepAlive(e)
	return decisions, errs
}

// Identity is a verified caller.
type Identity struct {
	Subject string
	Role    string // "" when the token carries none and no default is configured
	// Claims is the token's payload as JSON.
	Claims string
}

func identityOf(id *C.fw_identity) Identity {
	defer C.fw_identity_free(id)
	var subject, role *C.char
	C.fw_identity_subject(id, &subject)
	C.fw_identity_role(id, &role)
	out := Identity{Subject: C.GoString(subject)}
	if role != nil {
		out.Role = C.GoString(role)
	}
	out.Claims = lastString(func(b *C.char, l C.size_t, n *C.size_t) C.fw_result {
		return C.fw_identity_claims_json(id, b, l, n)
	})
	return out
}

// Authenticate verifies a bearer token (an Authorization header value).
func (e *Engine) Authenticate(authorization string) (Identity, error) {
	ch := C.CString(authorization)
	defer C.free(unsafe.Pointer(ch))
	var id *C.fw_identity
	if err := call(func() C.fw_result { return C.fw_authenticate(e.ptr, ch, &id) }); err != nil {
		return Identity{}, err
	}
	runtime.KeepAlive(e)
	return identityOf(id), nil
}

// Authorize authenticates, then checks the request under the token's subject and role.
func (e *Engine) Authorize(authorization string, r Request) (Identity, Decision, error) {
	ch := C.CString(authorization)
	defer C.free(unsafe.Pointer(ch))
	c := r.toC()
	defer c.free()
	var id *C.fw_identity
	var d C.fw_decision
	if err := call(func() C.fw_result { return C.fw_authorize(e.ptr, ch, &c.req, &id, &d) }); err != nil {
		return Identity{}, Decision{}, err
	}
	runtime.KeepAlive(e)
	return identityOf(id), e.decision(&d), nil
}

// Outcome is how a call through an upstream ended.
type Outcome uint32

// The outcomes.
const (
	Success Outcome = C.FW_OUTCOME_SUCCESS
	Failure Outcome = C.FW_OUTCOME_FAILURE
	Timeout Outcome = C.FW_OUTCOME_TIMEOUT
)

// Lease is a call in progress on one upstream: Finish it once, or Release it (a failure).
type Lease struct {
	ptr      *C.fw_lease
	Upstream string
	URL      string
}

// Pick chooses an upstream of the service.
func (e *Engine) Pick(service string) (*Lease, error) {
	cs := C.CString(service)
	defer C.free(unsafe.Pointer(cs))
	l := &Lease{}
	if err := call(func() C.fw_result { return C.fw_pick(e.ptr, cs, &l.ptr) }); err != nil {
		return nil, err
	}
	var upstream, url *C.char
	C.fw_lease_upstream(l.ptr, &upstream)
	C.fw_lease_url(l.ptr, &url)
	l.Upstream = C.GoString(upstream)
	l.URL = C.GoString(url)
	runtime.SetFinalizer(l, (*Lease).Release)
	runtime.KeepAlive(e)
	return l, nil
}

// Finish records how the call ended and how long it took. A second call does nothing.
func (l *Lease) Finish(outcome Outcome, latency time.Duration) error {
	if l.ptr == nil {
		return nil
	}
	p := l.ptr
	l.ptr = nil
	runtime.SetFinalizer(l, nil)
	return call(func() C.fw_result {
		return C.fw_lease_finish(p, C.uint32_t(outcome), C.uint64_t(latency.Microseconds()))
	})
}

// Upstreams returns the state of the service's upstreams as JSON (see fw_upstreams_json).
func (e *Engine) Upstreams(service string) (string, error) {
	cs := C.CString(service)
	defer C.free(unsafe.Pointer(cs))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var n C.size_t
	code := C.fw_upstreams_json(e.ptr, cs, nil, 0, &n)
	if code != C.FW_BUFFER_TOO_SMALL {
		return "", fail(code)
	}
	buf := make([]byte, int(n)+1)
	if err := fail(C.fw_upstreams_json(e.ptr, cs, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &n)); err != nil {
		return "", err
	}
	runtime.KeepAlive(e)
	return string(buf[:n]), nil
}

// Release gives the lease up unfinished: the call counts as a failure.
func (l *Lease) Release() {
	if l.ptr != nil {
		C.fw_lease_free(l.ptr)
		l.ptr = nil
		runtime.SetFinalizer(l, nil)
	}
}

// MinuteCounts are one minute's counters in a Report (or, as Report.Totals, everything's).
// Latencies are in microseconds, estimated from a histogram for the percentiles; 0 without
// responses.
type MinuteCounts struct {
	StartMs          uint64 `json:"start_ms"` // the minute's start, ms since the Unix epoch (0 in the totals)
	Requests         uint64 `json:"requests"` // decisions taken
	Admitted         uint64 `json:"admitted"`
	RateLimited      uint64 `json:"rate_limited"`
	AuthRejected     uint64 `json:"auth_rejected"`
	Failed           uint64 `json:"failed"`
	Denied           uint64 `json:"denied"`         // refused by a deny list (403)
	ShadowLimited    uint64 `json:"shadow_limited"` // admitted, but a rule in shadow mode would have denied them
	Allowlisted      uint64 `json:"allowlisted"`    // admitted past the limits by an allow list
	Blocked          uint64 `json:"blocked"`        // rate-limited because the key was blocked (block_for)
	UpstreamCalls    uint64 `json:"upstream_calls"`
	UpstreamFailures uint64 `json:"upstream_failures"` // failed or timed out
	BreakerTrips     uint64 `json:"breaker_trips"`
	Responses        uint64 `json:"responses"` // recorded by the host (Middleware, Exchange.Finish, RecordResponse)
	ClientErrors     uint64 `json:"client_errors"`
	ServerErrors     uint64 `json:"server_errors"`
	LatencyP50Us     uint64 `json:"latency_p50_us"`
	LatencyP99Us     uint64 `json:"latency_p99_us"`
	MeanLatencyUs    uint64 `json:"mean_latency_us"`
	MaxLatencyUs     uint64 `json:"max_latency_us"`
}

// TopEntry is one key of a report's top list: its count, an upper bound, and how much of
// that count may belong to keys it replaced (0: exact).
type TopEntry struct {
	Key   string `json:"key"`
	Count uint64 `json:"count"`
	Error uint64 `json:"error"`
}

// LatencyHistogram is the response-latency histogram of everything recorded: Counts has one
// bucket per bound (µs, not cumulative) and a last, unbounded one.
type LatencyHistogram struct {
	BoundsUs []uint64 `json:"bounds_us"`
	Counts   []uint64 `json:"counts"`
	SumUs    uint64   `json:"sum_us"`
	Count    uint64   `json:"count"`
}

// SinkStats are the Redis Streams sink's counters.
type SinkStats struct {
	Stream    string `json:"stream"`
	Written   uint64 `json:"written"`
	Dropped   uint64 `json:"dropped"`
	Queued    uint64 `json:"queued"`
	Errors    uint64 `json:"errors"`
	LastError string `json:"last_error"` // "" while batches succeed
}

// Warning is something that looks wrong with how the engine is set up, seen while serving
// (Code "untrusted_forwarded_header": forwarding headers arrive while no proxy is trusted).
type Warning struct {
	Code        string `json:"code"`
	Message     string `json:"message"` // what it means and what to do
	Count       uint64 `json:"count"`
	FirstSeenMs uint64 `json:"first_seen_ms"`
}

// Report is what the engine's monitoring answers (fw_report_json): traffic per minute and
// its peaks, the most requested endpoints, rate-limit breaches, refusals, upstream failures
// and breaker trips, responses by status class and their latency. The same document in
// every binding; JSON gives it with these snake_case keys.
type Report struct {
	GeneratedAtMs  uint64 `json:"generated_at_ms"`
	HorizonMinutes uint64 `json:"horizon_minutes"`
	Source         string `json:"source"`        // "memory" (this engine's aggregate) or "stream"
	StoreKind      string `json:"store_kind"`    // "memory", "redis" or "redis_cluster"
	StoreFailure   string `json:"store_failure"` // why the shared store is failing now; "" when it is not
	// PerMinute holds every minute of the horizon that saw traffic, oldest first; Peaks the
	// busiest, busiest first; Totals everything since the engine started.
	PerMinute            []MinuteCounts    `json:"per_minute"`
	Peaks                []MinuteCounts    `json:"peaks"`
	Totals               MinuteCounts      `json:"totals"`
	TopEndpoints         []TopEntry        `json:"top_endpoints"` // "METHOD /path"
	TopSubjects          []TopEntry        `json:"top_subjects"`  // callers by decisions
	BreachesBySubject    []TopEntry        `json:"breaches_by_subject"`
	BreachesByRole       []TopEntry        `json:"breaches_by_role"`
	BreachesByEndpoint   []TopEntry        `json:"breaches_by_endpoint"`
	BreachesByRule       []TopEntry        `json:"breaches_by_rule"`
	ShadowBreachesByRule []TopEntry        `json:"shadow_breaches_by_rule"` // admitted requests by the shadow rule that would have denied them
	AuthRejections       map[string]uint64 `json:"auth_rejections"`         // by error kind
	Errors               map[string]uint64 `json:"errors"`                  // failed decisions by error kind
	UpstreamFailures     []TopEntry        `json:"upstream_failures"`       // "service/upstream"
	BreakerTrips         []TopEntry        `json:"breaker_trips"`           // "service/upstream"
	Stores               map[string]uint64 `json:"stores"`                  // decisions by the store that made them
	StatusClasses        map[string]uint64 `json:"status_classes"`          // "2xx", "4xx", …
	ResponseLatency      LatencyHistogram  `json:"response_latency"`
	Sink                 *SinkStats        `json:"sink"` // nil without a Redis Streams sink
	Warnings             []Warning         `json:"warnings"`
}

// takeString reads a string the library handed over (fw_report_json, fw_prometheus) and
// frees it.
func takeString(p *C.char, n C.size_t) string {
	defer C.fw_string_free(p)
	return C.GoStringN(p, C.int(n))
}

func (e *Engine) reportJSON(nowMs int64) (string, error) {
	var p *C.char
	var n C.size_t
	if err := call(func() C.fw_result { return C.fw_report_json(e.ptr, C.int64_t(nowMs), &p, &n) }); err != nil {
		return "", err
	}
	runtime.KeepAlive(e)
	return takeString(p, n), nil
}

// ReportJSON is the engine's monitoring report as JSON text (see Report), at the engine's
// clock. Computing a report merges the aggregate's shards: make one for a dashboard or a
// scrape, not per request.
func (e *Engine) ReportJSON() (string, error) { return e.reportJSON(-1) }

// Report is the engine's monitoring report, at the engine's clock.
func (e *Engine) Report() (Report, error) { return e.ReportAt(time.Time{}) }

// ReportAt is the report with its per-minute series ending at now's minute (the zero time:
// the engine's clock).
func (e *Engine) ReportAt(now time.Time) (Report, error) {
	nowMs := int64(-1)
	if !now.IsZero() {
		nowMs = now.UnixMilli()
	}
	text, err := e.reportJSON(nowMs)
	if err != nil {
		return Report{}, err
	}
	var r Report
	if err := json.Unmarshal([]byte(text), &r); err != nil {
		return Report{}, &Error{Code: UnknownError, Message: "the report is not the JSON this package knows: " + err.Error()}
	}
	return r, nil
}

// StoreState says where the store stands.
type StoreState int

// The store's states.
const (
	// StoreOK: deciding as configured (the memory store, or Redis answering).
	StoreOK StoreState = C.FW_STORE_OK
	// StoreDegraded: Redis is failing and the in-process fallback decides; limits hold per
	// process rather than across them.
	StoreDegraded StoreState = C.FW_STORE_DEGRADED
	// StoreFailing: Redis is failing and on_error (allow, deny or error) answers alone.
	StoreFailing StoreState = C.FW_STORE_FAILING
)

// String is "ok", "degraded" or "failing".
func (s StoreState) String() string {
	switch s {
	case StoreOK:
		return "ok"
	case StoreDegraded:
		return "degraded"
	case StoreFailing:
		return "failing"
	}
	return fmt.Sprintf("StoreState(%d)", int(s))
}

// StoreHealth is where the store stands, since when, and why.
type StoreHealth struct {
	State StoreState
	Since time.Time
	// Reason is the last failure in words while not ok ("" when ok); ReasonKind its kind:
	// "timeout", "refused", "out_of_memory", "noscript", "cluster_down" or "error".
	Reason     string
	ReasonKind string
}

// StoreHealth says where the engine's store stands (cheap: a health check may call it on
// every probe).
func (e *Engine) StoreHealth() (StoreHealth, error) {
	var h C.fw_store_health
	var reason *C.char
	if err := call(func() C.fw_result { return C.fw_engine_store_health(e.ptr, &h, &reason) }); err != nil {
		return StoreHealth{}, err
	}
	runtime.KeepAlive(e)
	out := StoreHealth{
		State: StoreState(h.state),
		Since: time.UnixMilli(int64(h.since_ms)),
	}
	if h.reason_kind != nil {
		out.ReasonKind = C.GoString(h.reason_kind)
	}
	if reason != nil {
		out.Reason = C.GoString(reason)
		C.fw_string_free(reason)
	}
	return out, nil
}

// PrometheusContentType is the Content-Type of Prometheus's text format, which Prometheus
// returns.
const PrometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

// Prometheus renders the engine's counters and its upstreams' state in the Prometheus text
// format (serve it with PrometheusContentType, or use MetricsHandler).
func (e *Engine) Prometheus() (string, error) {
	var p *C.char
	var n C.size_t
	if err := call(func() C.fw_result { return C.fw_prometheus(e.ptr, &p, &n) }); err != nil {
		return "", err
	}
	runtime.KeepAlive(e)
	return takeString(p, n), nil
}

// RecordResponse records how the host answered a request — its status (100 to 999) and its
// latency from the request's arrival — for the report's response counts and percentiles.
// The path's query string is ignored. Middleware and Exchange.Finish record the responses
// to the requests that went through Engine.HTTP; call this for the others only.
func (e *Engine) RecordResponse(method, path string, status int, latency time.Duration) error {
	if status < 100 || status > 999 {
		return &Error{Code: InvalidArgument, Message: fmt.Sprintf("status %d is not an HTTP status (100 to 999)", status)}
	}
	if latency < 0 {
		return &Error{Code: InvalidArgument, Message: fmt.Sprintf("latency %v is negative", latency)}
	}
	cm := C.CString(method)
	defer C.free(unsafe.Pointer(cm))
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	err := call(func() C.fw_result {
		return C.fw_record_response(e.ptr, cm, cp, C.uint32_t(status), C.uint64_t(latency.Microseconds()))
	})
	runtime.KeepAlive(e)
	return err
}
