package floodwall

/*
#include <stdlib.h>
#include <string.h>
#include "floodwall.h"

// FW_GO_HEADERS headers of an exchange come back with fw_go_http itself; more are read one
// by one.
#define FW_GO_HEADERS 16

// What Go reads of a new exchange, gathered in one call from Go to C.
typedef struct {
	fw_http_verdict verdict;
	uint16_t status;
	bool touches_shared_store;
	const fw_headers *headers;
	size_t headers_len;
	const char *names[FW_GO_HEADERS];
	const char *values[FW_GO_HEADERS];
	const char *body;
	size_t body_len;
	const fw_identity *identity;
	const char *subject;
	const char *role;
	size_t claims_len;
} fw_go_exchange;

// fw_http, then every accessor of the exchange it made (which cannot fail on a live
// exchange), the identity's claims copied into claims (claims_len says how long they are:
// more than cap means call fw_identity_claims_json again).
static fw_result fw_go_http(const fw_engine *engine, const fw_http_request *request,
                            fw_http_exchange **out, fw_go_exchange *x, char *claims, size_t cap) {
	fw_result r = fw_http(engine, request, out);
	if (r != FW_OK) return r;
	fw_http_exchange_verdict(*out, &x->verdict);
	fw_http_exchange_status(*out, &x->status);
	fw_http_exchange_touches_shared_store(*out, &x->touches_shared_store);
	fw_http_exchange_headers(*out, &x->headers);
	fw_headers_len(x->headers, &x->headers_len);
	for (size_t i = 0; i < x->headers_len && i < FW_GO_HEADERS; i++) {
		fw_headers_get(x->headers, i, &x->names[i], &x->values[i]);
	}
	fw_http_exchange_body(*out, &x->body, &x->body_len);
	fw_http_exchange_identity(*out, &x->identity);
	if (x->identity != NULL) {
		fw_identity_subject(x->identity, &x->subject);
		fw_identity_role(x->identity, &x->role);
		fw_identity_claims_json(x->identity, claims, cap, &x->claims_len);
	}
	return FW_OK;
}
*/
import "C"

import (
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"
)

// Stage is which part of the HTTP layer a middleware is.
type Stage uint32

// The stages.
const (
	// StageGuard does everything in one call: the token, the allow and deny lists, every rule.
	StageGuard Stage = C.FW_HTTP_GUARD
	// StageAuthenticate is the token, the lists and the rules decided before the token.
	StageAuthenticate Stage = C.FW_HTTP_AUTHENTICATE
	// StageRateLimit is the rules only: an engine without [auth], or after StageAuthenticate
	// (see HTTPRequest.AfterAuthenticate).
	StageRateLimit Stage = C.FW_HTTP_RATE_LIMIT
)

// Verdict is what the HTTP layer says of a request.
type Verdict uint32

// The verdicts.
const (
	// Skip: not the HTTP layer's to judge (a skipped path); hand the request on untouched.
	Skip Verdict = C.FW_HTTP_SKIP
	// Pass: let it through with Exchange.Headers added to the response (a header of the same
	// name the handler sets itself wins).
	Pass Verdict = C.FW_HTTP_PASS
	// Refuse: answer with Exchange.Status, Exchange.Headers and Exchange.Body.
	Refuse Verdict = C.FW_HTTP_REFUSE
)

// HTTPRequest is a request as the server received it, for Engine.HTTP.
type HTTPRequest struct {
	// Method is the method as received.
	Method string
	// Target is the request target as received (http.Request.RequestURI): the engine
	// normalises it, so do not clean it first.
	Target string
	// Peer is the socket peer (http.Request.RemoteAddr, a port allowed); "" when unknown. The
	// client address is worked out from it and the [http] section (trusted proxies).
	Peer string
	// Header holds the request's headers by canonical name (as net/http keeps them); only
	// those Engine.HTTPHeaders names are handed over, the lines of each joined with ",".
	Header http.Header
	// Cost is the units the request takes from every matching limit: 0 means 1 (set Peek for
	// a cost of 0). Anything but an integer from 0 to 2^53 (a fraction, NaN) is answered 400.
	Cost float64
	// Peek asks without taking anything (a cost of 0).
	Peek bool
	// Stage is which part of the HTTP layer this is (StageGuard by default).
	Stage Stage
	// CallerSubject and CallerRole are, for StageRateLimit, the caller an earlier stage
	// verified ("" for none).
	CallerSubject, CallerRole string
	// AfterAuthenticate says, for StageRateLimit, that a StageAuthenticate call saw the
	// request first (it applied the rules decided before the token, and records the response).
	AfterAuthenticate bool
	// Now is an explicit time (tests, replays); zero means the engine's clock.
	Now time.Time
}

// HeaderField is one response header, its name spelt as it is to be sent.
type HeaderField struct {
	Name, Value string
}

// Exchange is one request between Engine.HTTP's verdict and its response: write what it
// says, then Finish it with the status the client got (or Close it to drop it: then nothing
// is recorded). Safe to read from any goroutine; Finish or Close it once.
type Exchange struct {
	ptr    *C.fw_http_exchange
	engine *Engine
	// Verdict says what to do with the request.
	Verdict Verdict
	// Status is the status to answer with on Refuse (400, 401, 403, 429 or 503); 0 otherwise.
	Status int
	// Headers are the headers to write, in order: on Refuse every header of the answer, on
	// Pass the rate-limit headers to add, on Skip none. Set them with their exact names
	// (w.Header()[f.Name] = []string{f.Value}): Header.Set would send WWW-Authenticate as
	// Www-Authenticate.
	Headers []HeaderField
	// Body is the body to write on Refuse (application/problem+json; not for HEAD).
	Body []byte
	// Identity is the caller verified on Pass (StageGuard, StageAuthenticate); nil on a
	// public path, in StageRateLimit and for the other verdicts.
	Identity *Identity
	// TouchesSharedStore says that Finish may write to Redis (one round trip).
	TouchesSharedStore bool
}

// headerNames are the headers the HTTP layer reads.
type headerNames struct {
	request   []string // lower-case
	canonical []string // the same in net/http's canonical form
	response  []string // lower-case
}

func (e *Engine) namesOf(f func(*C.fw_engine, **C.char, *C.size_t) C.fw_result) ([]string, error) {
	var p *C.char
	var n C.size_t
	if err := call(func() C.fw_result { return f(e.ptr, &p, &n) }); err != nil {
		return nil, err
	}
	runtime.KeepAlive(e)
	text := takeString(p, n)
	if text == "" {
		return nil, nil
	}
	return strings.Split(text, "\n"), nil
}

// refreshNames asks the engine for the header names again; the caller holds namesMu.
func (e *Engine) refreshNames() (*headerNames, error) {
	request, err := e.namesOf(func(p *C.fw_engine, o **C.char, n *C.size_t) C.fw_result {
		return C.fw_engine_http_headers(p, o, n)
	})
	if err != nil {
		return nil, err
	}
	response, err := e.namesOf(func(p *C.fw_engine, o **C.char, n *C.size_t) C.fw_result {
		return C.fw_engine_http_response_headers(p, o, n)
	})
	if err != nil {
		return nil, err
	}
	names := &headerNames{request: request, response: response}
	for _, name := range request {
		names.canonical = append(names.canonical, http.CanonicalHeaderKey(name))
	}
	e.names.Store(names)
	return names, nil
}

func (e *Engine) headerNames() (*headerNames, error) {
	if names, ok := e.names.Load().(*headerNames); ok {
		return names, nil
	}
	e.namesMu.Lock()
	defer e.namesMu.Unlock()
	if names, ok := e.names.Load().(*headerNames); ok {
		return names, nil
	}
	return e.refreshNames()
}

// HTTPHeaders are the request headers the HTTP layer reads, lower-case (Engine.HTTP hands
// over only these). They change with SetAccessLists.
func (e *Engine) HTTPHeaders() ([]string, error) {
	names, err := e.headerNames()
	if err != nil {
		return nil, err
	}
	return append([]string(nil), names.request...), nil
}

// HTTPResponseHeaders are the response headers Exchange.Finish reads (the rules'
// cost_header), lower-case.
func (e *Engine) HTTPResponseHeaders() ([]string, error) {
	names, err := e.headerNames()
	if err != nil {
		return nil, err
	}
	return append([]string(nil), names.response...), nil
}

// HasAuth reports whether the engine has an [auth] section, i.e. verifies bearer tokens.
func (e *Engine) HasAuth() bool {
	var out C.bool
	if C.fw_engine_has_auth(e.ptr, &out) != C.FW_OK {
		return false
	}
	runtime.KeepAlive(e)
	return bool(out)
}

// AccessList is an allow or a deny list: a request is on it when any entry names it.
type AccessList struct {
	// Addresses are client addresses or networks (192.0.2.7, 10.0.0.0/8, 2001:db8::/32).
	Addresses []string `json:"addresses,omitempty"`
	// Subjects are verified subjects.
	Subjects []string `json:"subjects,omitempty"`
	// Roles are roles of verified callers.
	Roles []string `json:"roles,omitempty"`
	// Headers are request header values by header name (values exact, names in any case).
	Headers map[string][]string `json:"headers,omitempty"`
}

// AccessLists are the allow list (callers that skip every limit; they still need a valid
// token) and the deny list (callers answered 403).
type AccessLists struct {
	Allow AccessList `json:"allow"`
	Deny  AccessList `json:"deny"`
}

// AccessLists are the allow and deny lists in force.
func (e *Engine) AccessLists() (AccessLists, error) {
	var p *C.char
	var n C.size_t
	if err := call(func() C.fw_result { return C.fw_engine_access_lists_json(e.ptr, &p, &n) }); err != nil {
		return AccessLists{}, err
	}
	runtime.KeepAlive(e)
	var lists AccessLists
	if err := json.Unmarshal([]byte(takeString(p, n)), &lists); err != nil {
		return AccessLists{}, &Error{Code: UnknownError, Message: "the access lists are not the JSON this package knows: " + err.Error()}
	}
	return lists, nil
}

// SetAccessLists replaces the allow and deny lists while the engine serves: requests decided
// from then on see them. An entry that is not an address, a network or a header name is an
// InvalidConfig error naming it (deny.addresses[2]), and the lists in force are kept.
func (e *Engine) SetAccessLists(lists AccessLists) error {
	text, err := json.Marshal(lists)
	if err != nil {
		return &Error{Code: InvalidArgument, Message: err.Error()}
	}
	ctext := C.CString(string(text))
	defer C.free(unsafe.Pointer(ctext))
	e.namesMu.Lock()
	defer e.namesMu.Unlock()
	if err := call(func() C.fw_result { return C.fw_engine_set_access_lists_json(e.ptr, ctext) }); err != nil {
		return err
	}
	_, err = e.refreshNames()
	runtime.KeepAlive(e)
	return err
}

// cArena is one C allocation holding an fw_http_request, its header array and its strings:
// C reads no Go memory that holds Go pointers (cgo's rule), at the cost of one malloc per
// request.
type cArena struct {
	base unsafe.Pointer
	off  uintptr // where the next string goes
}

func (a *cArena) str(s string) *C.char {
	p := unsafe.Pointer(uintptr(a.base) + a.off)
	b := unsafe.Slice((*byte)(p), len(s)+1)
	copy(b, s)
	b[len(s)] = 0
	a.off += uintptr(len(s) + 1)
	return (*C.char)(p)
}

// clean makes a Go string fit the C ABI (NUL-terminated UTF-8): bytes that are not UTF-8
// (obs-text a client may send) become U+FFFD; a NUL byte is refused.
func clean(s, what string) (string, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return "", &Error{Code: InvalidArgument, Message: what + " contains a NUL byte"}
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return s, nil
}

// pair is one header handed to C.
type pair struct{ name, value string }

// collect takes from h the headers names (lower-case; canonical their http.Header keys)
// says, the lines of each joined with ",".
func collect(h http.Header, names, canonical []string, what string) ([]pair, error) {
	var out []pair
	for i, key := range canonical {
		lines := h[key]
		if len(lines) == 0 {
			continue
		}
		value := lines[0]
		if len(lines) > 1 {
			value = strings.Join(lines, ",")
		}
		value, err := clean(value, what+" "+names[i])
		if err != nil {
			return nil, err
		}
		out = append(out, pair{names[i], value})
	}
	return out, nil
}

// pack lays out the request in C memory; free the arena with C.free(arena.base).
func (r *HTTPRequest) pack(headers []pair) (*C.fw_http_request, *cArena, error) {
	method, err := clean(r.Method, "the method")
	if err != nil {
		return nil, nil, err
	}
	target, err := clean(r.Target, "the target")
	if err != nil {
		return nil, nil, err
	}
	strs := []string{method, target, r.Peer, r.CallerSubject, r.CallerRole}
	for i := 2; i < len(strs); i++ {
		if strs[i], err = clean(strs[i], "the peer or caller"); err != nil {
			return nil, nil, err
		}
	}
	head := unsafe.Sizeof(C.fw_http_request{}) + uintptr(len(headers))*unsafe.Sizeof(C.fw_header{})
	size := head
	for _, s := range strs {
		size += uintptr(len(s) + 1)
	}
	for _, h := range headers {
		size += uintptr(len(h.name) + len(h.value) + 2)
	}
	a := &cArena{base: C.malloc(C.size_t(size)), off: head}
	req := (*C.fw_http_request)(a.base)
	*req = C.fw_http_request{}
	req.method = a.str(strs[0])
	req.target = a.str(strs[1])
	optional := func(s string) *C.char {
		if s == "" {
			return nil
		}
		return a.str(s)
	}
	req.peer = optional(strs[2])
	req.caller_subject = optional(strs[3])
	req.caller_role = optional(strs[4])
	if len(headers) > 0 {
		array := (*C.fw_header)(unsafe.Pointer(uintptr(a.base) + unsafe.Sizeof(C.fw_http_request{})))
		lines := unsafe.Slice(array, len(headers))
		for i, h := range headers {
			lines[i].name = a.str(h.name)
			lines[i].value = a.str(h.value)
		}
		req.headers = array
		req.headers_len = C.size_t(len(headers))
	}
	switch {
	case r.Peek:
		req.cost = 0
	case r.Cost == 0:
		req.cost = 1
	default:
		req.cost = C.double(r.Cost)
	}
	req.stage = C.uint32_t(r.Stage)
	req.after_authenticate = C.bool(r.AfterAuthenticate)
	req.now_ms = -1
	if !r.Now.IsZero() {
		req.now_ms = C.int64_t(r.Now.UnixMilli())
	}
	return req, a, nil
}

// HTTP is the HTTP layer's verdict on a request as the server received it: pass it on
// untouched (Skip), call the handler with the exchange's headers added (Pass), or write the
// exchange's answer (Refuse). Every verdict is an Exchange to Finish once the response is
// written. Refusals are verdicts, not errors: the error is for a request that cannot be
// handed over (a NUL byte in it). On a Redis store it may wait on the network.
func (e *Engine) HTTP(r HTTPRequest) (*Exchange, error) {
	names, err := e.headerNames()
	if err != nil {
		return nil, err
	}
	headers, err := collect(r.Header, names.request, names.canonical, "header")
	if err != nil {
		return nil, err
	}
	req, arena, err := r.pack(headers)
	if err != nil {
		return nil, err
	}
	defer C.free(arena.base)
	var ptr *C.fw_http_exchange
	var got C.fw_go_exchange
	claims := make([]byte, 512)
	if err := call(func() C.fw_result {
		return C.fw_go_http(e.ptr, req, &ptr, &got, (*C.char)(unsafe.Pointer(&claims[0])), C.size_t(len(claims)))
	}); err != nil {
		return nil, err
	}
	x := &Exchange{
		ptr:                ptr,
		engine:             e,
		Verdict:            Verdict(got.verdict),
		Status:             int(got.status),
		TouchesSharedStore: bool(got.touches_shared_store),
	}
	runtime.SetFinalizer(x, (*Exchange).Close)
	if n := int(got.headers_len); n > 0 {
		x.Headers = make([]HeaderField, n)
		for i := range x.Headers {
			var name, value *C.char
			if i < C.FW_GO_HEADERS {
				name, value = got.names[i], got.values[i]
			} else {
				C.fw_headers_get(got.headers, C.size_t(i), &name, &value)
			}
			x.Headers[i] = HeaderField{C.GoString(name), C.GoString(value)}
		}
	}
	if got.body_len > 0 {
		x.Body = C.GoBytes(unsafe.Pointer(got.body), C.int(got.body_len))
	}
	if got.identity != nil {
		id := &Identity{Subject: C.GoString(got.subject)}
		if got.role != nil {
			id.Role = C.GoString(got.role)
		}
		if n := int(got.claims_len); n < len(claims) {
			id.Claims = string(claims[:n])
		} else {
			id.Claims = lastString(func(b *C.char, l C.size_t, n *C.size_t) C.fw_result {
				return C.fw_identity_claims_json(got.identity, b, l, n)
			})
		}
		x.Identity = id
	}
	runtime.KeepAlive(e)
	return x, nil
}

// Finish hands the response back once it is written: its status (100 to 999) and its
// headers, of which those Engine.HTTPResponseHeaders names are read (a rule's cost_header).
// It records the response, settles the rules that count by response, and releases the
// exchange; a second call is an InvalidArgument error. With a shared store it may write to
// Redis (see TouchesSharedStore).
func (x *Exchange) Finish(status int, header http.Header) error {
	if x.ptr == nil {
		return &Error{Code: InvalidArgument, Message: "the exchange is already finished"}
	}
	if status < 100 || status > 999 {
		return &Error{Code: InvalidArgument, Message: fmt.Sprintf("status %d is not an HTTP status (100 to 999)", status)}
	}
	names, err := x.engine.headerNames()
	if err != nil {
		return err
	}
	var lines []pair
	for _, name := range names.response {
		for key, values := range header {
			if strings.EqualFold(key, name) && len(values) > 0 {
				value, err := clean(strings.Join(values, ","), "response header "+name)
				if err != nil {
					return err
				}
				lines = append(lines, pair{name, value})
			}
		}
	}
	var array *C.fw_header
	if len(lines) > 0 {
		size := uintptr(len(lines)) * unsafe.Sizeof(C.fw_header{})
		for _, l := range lines {
			size += uintptr(len(l.name) + len(l.value) + 2)
		}
		head := uintptr(len(lines)) * unsafe.Sizeof(C.fw_header{})
		a := &cArena{base: C.malloc(C.size_t(size)), off: head}
		defer C.free(a.base)
		array = (*C.fw_header)(a.base)
		c := unsafe.Slice(array, len(lines))
		for i, l := range lines {
			c[i].name = a.str(l.name)
			c[i].value = a.str(l.value)
		}
	}
	err = call(func() C.fw_result {
		return C.fw_http_finish(x.engine.ptr, x.ptr, C.uint16_t(status), array, C.size_t(len(lines)))
	})
	runtime.KeepAlive(x.engine)
	if err != nil {
		return err
	}
	x.Close()
	return nil
}

// Close releases the exchange; one that was not finished records nothing. Closing twice, or
// after Finish, does nothing.
func (x *Exchange) Close() {
	if x.ptr != nil {
		C.fw_http_exchange_free(x.ptr)
		x.ptr = nil
		runtime.SetFinalizer(x, nil)
	}
}
