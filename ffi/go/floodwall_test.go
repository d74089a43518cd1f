package floodwall

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const secret = "a-go-test-secret-of-at-least-32-bytes!!"

const config = `
[auth]
algorithms = ["HS256"]
role_claim = "role"
keys = [{ kid = "k1", secret = "` + secret + `" }]

[[rules]]
name = "per-user"
key = "subject"
algorithm = "fixed_window"
limit = 2
window = "1m"
roles.premium = { limit = 5 }

[services.api]
upstreams = [{ name = "a", url = "http://127.0.0.1:9001" }, { name = "b", url = "http://127.0.0.1:9002", weight = 2 }]
`

// token mints an HS256 JWT with the standard library.
func token(t *testing.T, payload string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	msg := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT","kid":"k1"}`)) + "." + enc.EncodeToString([]byte(payload))
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(msg))
	return msg + "." + enc.EncodeToString(mac.Sum(nil))
}

func engine(t *testing.T) *Engine {
	t.Helper()
	e, err := FromTOML(config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func TestVersion(t *testing.T) {
	if Version() != "0.1.0" {
		t.Fatalf("version %q", Version())
	}
}

func TestInvalidConfigIsATypedError(t *testing.T) {
	_, err := FromTOML("[[rules]]\nname = \"x\"\nkey = \"global\"\nalgorithm = \"fixed_window\"\nlimit = 0\nwindow = \"1s\"\n")
	var fe *Error
	if !errors.As(err, &fe) || fe.Code != InvalidConfig || !strings.Contains(fe.Message, "rules[0].limit") {
		t.Fatalf("got %v", err)
	}
	if !errors.Is(err, &Error{Code: InvalidConfig}) {
		t.Fatal("errors.Is by code")
	}
	if _, err := FromFile("/nonexistent.toml"); err == nil {
		t.Fatal("a missing file is an error")
	}
	if _, err := FromJSON(`{"rules": []}`); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrencyHoldsUntilRelease(t *testing.T) {
	e, err := FromTOML("[[rules]]\nname = \"c\"\nkey = \"subject\"\nalgorithm = \"concurrency\"\nlimit = 1\nblock_for = \"1s\"\nblock_after = 100")
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	r := Request{Method: "GET", Path: "/", Subject: "alice"}
	held, err := e.Check(r)
	if err != nil || !held.Allowed || !held.Holds {
		t.Fatalf("%+v %v", held, err)
	}
	if d, _ := e.Check(r); d.Allowed || d.Holds {
		t.Fatalf("a second in flight: %+v", d)
	}
	if err := held.Release(); err != nil || held.Holds {
		t.Fatalf("release: %v %+v", err, held)
	}
	if err := held.Release(); err != nil {
		t.Fatalf("a second release: %v", err)
	}
	again, _ := e.Check(r)
	if !again.Allowed {
		t.Fatalf("released, but %+v", again)
	}
	// A goroutine waiting for the place gets it when it is released.
	done := make(chan Decision)
	go func() {
		d, err := e.Acquire(r, 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		done <- d
	}()
	time.Sleep(20 * time.Millisecond)
	if err := again.Release(); err != nil {
		t.Fatal(err)
	}
	waited := <-done
	if !waited.Allowed || !waited.Holds {
		t.Fatalf("the waiter: %+v", waited)
	}
	if err := waited.Release(); err != nil {
		t.Fatal(err)
	}
}

func TestKeyAdministration(t *testing.T) {
	e, err := FromTOML("[[rules]]\nname = \"u\"\nkey = \"subject\"\nalgorithm = \"fixed_window\"\nlimit = 5\nwindow = \"1h\"\nblock_for = \"1m\"")
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	alice := Key{Rule: "u", Key: "alice"}
	if err := e.Penalize(alice, 2); err != nil {
		t.Fatal(err)
	}
	if s, err := e.Inspect(alice); err != nil || s.Remaining != 3 || s.Limit != 5 {
		t.Fatalf("%+v %v", s, err)
	}
	if err := e.BlockKey(alice, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if d, _ := e.Check(Request{Method: "GET", Path: "/", Subject: "alice"}); d.Allowed || !d.Blocked {
		t.Fatalf("blocked: %+v", d)
	}
	if err := e.ResetKey(alice); err != nil {
		t.Fatal(err)
	}
	if err := e.Reward(alice, 1); err != nil {
		t.Fatal(err)
	}
	if s, _ := e.Inspect(alice); s.Remaining != 5 || s.Blocked {
		t.Fatalf("reset: %+v", s)
	}
	if _, err := e.Inspect(Key{Rule: "nope"}); !errors.Is(err, &Error{Code: UnknownRule}) {
		t.Fatalf("got %v", err)
	}
}

func TestKeyLimit(t *testing.T) {
	e, err := FromTOML("[[rules]]\nname = \"u\"\nkey = \"subject\"\nalgorithm = \"sliding_window\"\nlimit = 2\nwindow = \"1h\"\nkey_limits = true")
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	alice := Key{Rule: "u", Key: "alice"}
	if err := e.SetKeyLimit(alice, 4, time.Minute); err != nil {
		t.Fatal(err)
	}
	s, err := e.Inspect(alice)
	if err != nil || s.Limit != 4 || s.Remaining != 4 || !s.HasKeyLimit || s.KeyLimitFor <= 50*time.Second || s.KeyLimitFor > time.Minute {
		t.Fatalf("%+v %v", s, err)
	}
	req := Request{Method: "GET", Path: "/", Subject: "alice"}
	for i, want := range []bool{true, true, true, true, false} {
		d, err := e.Check(req)
		if err != nil || d.Allowed != want || d.Limit != 4 {
			t.Fatalf("check %d: %+v %v", i, d, err)
		}
	}
	if err := e.ClearKeyLimit(alice); err != nil {
		t.Fatal(err)
	}
	if s, _ := e.Inspect(alice); s.Limit != 2 || s.HasKeyLimit || s.Remaining != 0 {
		t.Fatalf("cleared: %+v", s)
	}
	if err := e.SetKeyLimit(alice, 0, time.Minute); !errors.Is(err, &Error{Code: InvalidConfig}) {
		t.Fatalf("a limit of 0: %v", err)
	}
	plain, err := FromTOML("[[rules]]\nname = \"p\"\nkey = \"subject\"\nalgorithm = \"fixed_window\"\nlimit = 2\nwindow = \"1h\"")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	err = plain.SetKeyLimit(Key{Rule: "p", Key: "alice"}, 4, time.Minute)
	var fe *Error
	if !errors.As(err, &fe) || fe.Code != InvalidConfig || !strings.Contains(fe.Message, "takes no key limits") {
		t.Fatalf("got %v", err)
	}
}

func TestCheckAdmitsThenDenies(t *testing.T) {
	e := engine(t)
	now := time.UnixMilli(60_000)
	r := Request{Method: "GET", Path: "/api/orders", Subject: "alice", Now: now}
	for i, want := range []bool{true, true, false} {
		d, err := e.Check(r)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed != want || d.Rule != "per-user" || d.Store != StoreMemory {
			t.Fatalf("request %d: %+v", i, d)
		}
	}
	d, err := e.CheckWithHeaders(r)
	if err != nil || d.Allowed || d.Headers["Retry-After"] != "60" || d.RetryAfter != time.Minute {
		t.Fatalf("%+v %v", d, err)
	}
	if _, err := e.Check(Request{Method: "GET", Path: "/", Subject: "bob", Cost: 3}); !errors.Is(err, &Error{Code: CostExceedsLimit}) {
		t.Fatalf("got %v", err)
	}
	ds, errs := e.CheckMany([]Request{{Method: "GET", Path: "/", Subject: "carol"}, {Method: "GET", Path: "/", Subject: "carol", Cost: 9}})
	if errs[0] != nil || !ds[0].Allowed || errs[1] == nil {
		t.Fatalf("%+v %v", ds, errs)
	}
}

func TestStoreHealth(t *testing.T) {
	h, err := engine(t).StoreHealth()
	if err != nil || h.State != StoreOK || h.State.String() != "ok" || h.Reason != "" || h.ReasonKind != "" || h.Since.Year() < 2020 {
		t.Fatalf("the memory store: %+v %v", h, err)
	}
	// Nothing listens on port 1 of the loopback: the fallback decides, and health says so.
	e, err := FromTOML("[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:1\"\ntimeout = \"200ms\"\n" +
		"on_error = \"fallback\"\n[[rules]]\nname = \"g\"\nkey = \"global\"\nalgorithm = \"fixed_window\"\nlimit = 5\nwindow = \"1s\"\n")
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for i := 0; i < 3; i++ {
		if d, err := e.Check(Request{Method: "GET", Path: "/"}); err != nil || d.Store != StoreFallback {
			t.Fatalf("decision %d: %+v %v", i, d, err)
		}
	}
	h, err = e.StoreHealth()
	if err != nil || h.State != StoreDegraded || h.State.String() != "degraded" || h.ReasonKind != "refused" || !strings.Contains(h.Reason, "refused") {
		t.Fatalf("an unreachable Redis: %+v %v", h, err)
	}
}

func TestAuthenticateAndAuthorize(t *testing.T) {
	e := engine(t)
	good := token(t, `{"sub":"dave","role":"premium","exp":4102444800}`)
	id, err := e.Authenticate("Bearer " + good)
	if err != nil || id.Subject != "dave" || id.Role != "premium" || !strings.Contains(id.Claims, `"sub":"dave"`) {
		t.Fatalf("%+v %v", id, err)
	}
	_, d, err := e.Authorize("Bearer "+good, Request{Method: "GET", Path: "/"})
	if err != nil || !d.Allowed || d.Remaining != 4 {
		t.Fatalf("%+v %v", d, err)
	}
	forged := good[:len(good)-4] + "AAAA"
	_, err = e.Authenticate("Bearer " + forged)
	var fe *Error
	if !errors.As(err, &fe) || fe.Code != BadSignature || !strings.Contains(fe.WWWAuthenticate, `error="invalid_token"`) {
		t.Fatalf("got %v", err)
	}
	if _, err := e.Authenticate(""); !errors.Is(err, &Error{Code: MissingToken}) {
		t.Fatalf("got %v", err)
	}
}

func TestPickAndFinishAcrossGoroutines(t *testing.T) {
	e := engine(t)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				l, err := e.Pick("api")
				if err != nil {
					t.Error(err)
					return
				}
				if i%5 == 0 {
					l.Release()
				} else if err := l.Finish(Success, time.Millisecond); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if _, err := e.Pick("nope"); !errors.Is(err, &Error{Code: UnknownService}) {
		t.Fatalf("got %v", err)
	}
	state, err := e.Upstreams("api")
	if err != nil || !strings.Contains(state, `"calls":`) || !strings.Contains(state, `"in_flight":0`) {
		t.Fatalf("%s %v", state, err)
	}
}

// header is a response header's value by name in any case: Middleware sets the names
// exactly as floodwall spells them (WWW-Authenticate, RateLimit-Limit), which are not
// net/http's canonical keys.
func header(h http.Header, name string) string {
	for key, values := range h {
		if strings.EqualFold(key, name) && len(values) > 0 {
			return values[0]
		}
	}
	return ""
}

func TestMiddleware(t *testing.T) {
	e := engine(t)
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := IdentityFrom(r.Context())
		w.Write([]byte("hello " + id.Subject))
	})
	h := &Middleware{Engine: e, Next: next, Authenticate: true}
	serve := func(auth string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/api/orders", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	rec := serve("")
	if rec.Code != 401 || header(rec.Header(), "WWW-Authenticate") != `Bearer realm="floodwall"` {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
	bearer := "Bearer " + token(t, `{"sub":"erin","exp":4102444800}`)
	for i, want := range []int{200, 200, 429} {
		rec = serve(bearer)
		if rec.Code != want {
			t.Fatalf("request %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	if header(rec.Header(), "Retry-After") == "" || header(rec.Header(), "RateLimit-Remaining") != "0" {
		t.Fatalf("%v", rec.Header())
	}
	if !strings.Contains(rec.Body.String(), `"code":"rate_limited","rule":"per-user"`) {
		t.Fatalf("%s", rec.Body)
	}
	rec = serve("Bearer " + token(t, `{"sub":"frank","exp":4102444800}`))
	if rec.Code != 200 || rec.Body.String() != "hello frank" || header(rec.Header(), "RateLimit-Limit") != "2" {
		t.Fatalf("%d %s %v", rec.Code, rec.Body, rec.Header())
	}

	// Every answer was recorded once: the 401, the 429 and the handler's three 200s.
	r, err := e.Report()
	if err != nil {
		t.Fatal(err)
	}
	if r.Totals.Responses != 5 || r.Totals.ClientErrors != 2 || r.Totals.ServerErrors != 0 {
		t.Fatalf("%+v", r.Totals)
	}
	if r.StatusClasses["2xx"] != 3 || r.StatusClasses["4xx"] != 2 || r.ResponseLatency.Count != 5 {
		t.Fatalf("%v %+v", r.StatusClasses, r.ResponseLatency)
	}
}

// The answers are core's, byte for byte and with core's header names; the handler's own
// header of a decision header's name wins.
func TestMiddlewareWritesCoresAnswers(t *testing.T) {
	e := engine(t)
	h := &Middleware{Engine: e, Authenticate: true, Next: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("RateLimit-Limit", "mine")
		w.WriteHeader(http.StatusCreated)
	})}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/api/orders", nil)
	req.Header.Set("Authorization", "Bearer x.y.z")
	h.ServeHTTP(rec, req)
	want := `{"type":"about:blank","title":"Unauthorized","status":401,"detail":"The bearer token is not a well-formed JWT.","code":"malformed_token"}`
	if rec.Code != 401 || rec.Body.String() != want {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	for name, value := range map[string]string{
		"WWW-Authenticate": `Bearer realm="floodwall", error="invalid_token", error_description="The access token is malformed"`,
		"Content-Type":     "application/problem+json",
		"Content-Length":   strconv.Itoa(len(want)),
	} {
		if got := rec.Header()[name]; len(got) != 1 || got[0] != value {
			t.Fatalf("%s: %q in %v", name, got, rec.Header())
		}
	}

	rec = httptest.NewRecorder()
	req = httptest.NewRequest("HEAD", "/api/orders", nil)
	req.Header.Set("Authorization", "Bearer "+token(t, `{"sub":"gina","exp":4102444800}`))
	h.ServeHTTP(rec, req)
	if rec.Code != 201 || rec.Header()["RateLimit-Remaining"][0] != "1" {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
	var limits []string
	for key, values := range rec.Header() {
		if strings.EqualFold(key, "RateLimit-Limit") {
			limits = append(limits, values...)
		}
	}
	if len(limits) != 1 || limits[0] != "mine" {
		t.Fatalf("the handler's own header wins: %v", rec.Header())
	}
}

// The cost function's answer is the request's cost; one that is no count is answered 400.
func TestMiddlewareCost(t *testing.T) {
	e, err := FromJSON(`{"rules": [{"name": "r", "key": "ip", "algorithm": "fixed_window", "limit": 3, "window": "1h"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cost := 2.0
	h := &Middleware{Engine: e, Next: http.NotFoundHandler(), Cost: func(*http.Request) float64 { return cost }}
	serve := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		return rec
	}
	if rec := serve(); rec.Code != 404 || header(rec.Header(), "RateLimit-Remaining") != "1" {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
	for _, bad := range []float64{1.5, -1, math.NaN()} {
		cost = bad
		if rec := serve(); rec.Code != 400 || !strings.Contains(rec.Body.String(), `"code":"invalid_cost"`) {
			t.Fatalf("%v: %d %s", bad, rec.Code, rec.Body)
		}
	}
	cost = 0 // takes nothing
	if rec := serve(); rec.Code != 404 || header(rec.Header(), "RateLimit-Remaining") != "1" {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
	cost = 2
	if rec := serve(); rec.Code != 429 {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
}

// Skipped paths reach the handler untouched, and nothing is recorded of them.
func TestMiddlewareSkips(t *testing.T) {
	e, err := FromTOML(config + "\n[http]\nskip_paths = [\"/metrics\"]\n")
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	h := &Middleware{Engine: e, Authenticate: true, Next: MetricsHandler(e)}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 || header(rec.Header(), "RateLimit-Limit") != "" || !strings.Contains(rec.Body.String(), "floodwall_decisions_total") {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
	if r, err := e.Report(); err != nil || r.Totals.Requests != 0 || r.Totals.Responses != 0 {
		t.Fatalf("%+v %v", r.Totals, err)
	}
}

func TestMiddlewareRecordsWhatTheHandlerAnswers(t *testing.T) {
	e, err := FromJSON(`{"rules": []}`)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/missing":
			http.NotFound(w, r)
		case "/silent":
			// Writes nothing: net/http answers 200.
		case "/broken":
			w.WriteHeader(http.StatusBadGateway)
		case "/panic":
			panic(http.ErrAbortHandler)
		}
	})
	h := &Middleware{Engine: e, Next: next}
	for _, path := range []string{"/missing?page=2", "/silent", "/broken", "/panic"} {
		func() {
			defer func() { _ = recover() }()
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
		}()
	}
	r, err := e.Report()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"2xx": 1, "4xx": 1, "5xx": 2}
	if r.Totals.Responses != 4 || len(r.StatusClasses) != len(want) {
		t.Fatalf("%+v %v", r.Totals, r.StatusClasses)
	}
	for class, n := range want {
		if r.StatusClasses[class] != n {
			t.Fatalf("%v", r.StatusClasses)
		}
	}
}

// An exchange is finished once; a finish refused for its status leaves it to finish.
func TestExchangeFinishesOnce(t *testing.T) {
	e := engine(t)
	header := http.Header{"Authorization": {"Bearer " + token(t, `{"sub":"hank","role":"premium","exp":4102444800}`)}}
	x, err := e.HTTP(HTTPRequest{Method: "GET", Target: "/api/orders", Peer: "192.0.2.1:4000", Header: header, Now: at2100})
	if err != nil {
		t.Fatal(err)
	}
	if x.Verdict != Pass || x.Status != 0 || len(x.Body) != 0 || x.TouchesSharedStore {
		t.Fatalf("%+v", x)
	}
	if x.Identity == nil || x.Identity.Subject != "hank" || x.Identity.Role != "premium" || !strings.Contains(x.Identity.Claims, `"sub":"hank"`) {
		t.Fatalf("%+v", x.Identity)
	}
	want := []HeaderField{{"RateLimit-Policy", `"per-user";q=5;w=60`}, {"RateLimit", `"per-user";r=4;t=60`}}
	for _, f := range want {
		found := false
		for _, got := range x.Headers {
			found = found || got == f
		}
		if !found {
			t.Fatalf("no %v in %v", f, x.Headers)
		}
	}
	if err := x.Finish(42, nil); !errors.Is(err, &Error{Code: InvalidArgument}) {
		t.Fatalf("got %v", err)
	}
	if err := x.Finish(200, http.Header{}); err != nil {
		t.Fatal(err)
	}
	if err := x.Finish(200, nil); !errors.Is(err, &Error{Code: InvalidArgument}) || !strings.Contains(err.Error(), "already finished") {
		t.Fatalf("got %v", err)
	}
	x.Close()

	// Dropped unfinished, a refusal records nothing.
	x, err = e.HTTP(HTTPRequest{Method: "GET", Target: "/api/orders"})
	if err != nil || x.Verdict != Refuse || x.Status != 401 {
		t.Fatalf("%+v %v", x, err)
	}
	x.Close()
	r, err := e.Report()
	if err != nil || r.Totals.Responses != 1 || r.StatusClasses["2xx"] != 1 {
		t.Fatalf("%+v %v", r.Totals, err)
	}
	if _, err := e.HTTP(HTTPRequest{Method: "GET", Target: "/api/\x00"}); !errors.Is(err, &Error{Code: InvalidArgument}) {
		t.Fatalf("got %v", err)
	}
}

// The lists change while the engine serves, and the headers the middleware hands over with
// them; a bad entry names itself and changes nothing.
func TestAccessLists(t *testing.T) {
	e, err := FromJSON(`{"rules": [{"name": "r", "key": "ip", "algorithm": "sliding_window", "limit": 100, "window": "1h"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	h := &Middleware{Engine: e, Next: http.NotFoundHandler()}
	serve := func(agent string) int {
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("User-Agent", agent)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := serve("BadBot/1.0"); code != 404 {
		t.Fatalf("%d", code)
	}
	lists, err := e.AccessLists()
	if err != nil || len(lists.Deny.Addresses) != 0 {
		t.Fatalf("%+v %v", lists, err)
	}
	lists.Deny.Headers = map[string][]string{"User-Agent": {"BadBot/1.0"}}
	lists.Allow.Subjects = []string{"ops-bot"}
	if err := e.SetAccessLists(lists); err != nil {
		t.Fatal(err)
	}
	names, err := e.HTTPHeaders()
	if err != nil || names[len(names)-1] != "user-agent" {
		t.Fatalf("%v %v", names, err)
	}
	if code := serve("BadBot/1.0"); code != 403 {
		t.Fatalf("%d", code)
	}
	if code := serve("curl/8.0"); code != 404 {
		t.Fatalf("%d", code)
	}
	got, err := e.AccessLists()
	if err != nil || got.Deny.Headers["User-Agent"][0] != "BadBot/1.0" || got.Allow.Subjects[0] != "ops-bot" {
		t.Fatalf("%+v %v", got, err)
	}
	err = e.SetAccessLists(AccessLists{Deny: AccessList{Addresses: []string{"not an address"}}})
	var fe *Error
	if !errors.As(err, &fe) || fe.Code != InvalidConfig || !strings.Contains(fe.Message, "deny.addresses[0]") {
		t.Fatalf("got %v", err)
	}
	if code := serve("BadBot/1.0"); code != 403 {
		t.Fatalf("the lists in force are kept: %d", code)
	}
	r, err := e.Report()
	if err != nil || r.Totals.Denied != 2 || r.Totals.Requests != 4 {
		t.Fatalf("%+v %v", r.Totals, err)
	}
}

// A rule that counts failed responses only gives back what a success took, and a response's
// cost header adds to the count: Middleware finishes with what the handler answered.
func TestMiddlewareFinishesWithTheResponse(t *testing.T) {
	e, err := FromJSON(`{"rules": [{"name": "r", "key": "ip", "algorithm": "sliding_window", "limit": 3,
		"window": "1h", "count_responses": "failed", "cost_header": "X-RateLimit-Cost"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if names, err := e.HTTPResponseHeaders(); err != nil || len(names) != 1 || names[0] != "x-ratelimit-cost" {
		t.Fatalf("%v %v", names, err)
	}
	status, charge := http.StatusOK, ""
	h := &Middleware{Engine: e, Next: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if charge != "" {
			w.Header().Set("X-RateLimit-Cost", charge)
		}
		w.WriteHeader(status)
	})}
	serve := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/orders", nil))
		return rec
	}
	for i := 0; i < 5; i++ {
		if rec := serve(); rec.Code != 200 || header(rec.Header(), "RateLimit-Remaining") != "2" {
			t.Fatalf("successes are given back: %d %v", rec.Code, rec.Header())
		}
	}
	status, charge = http.StatusBadGateway, "1"
	if rec := serve(); rec.Code != 502 || header(rec.Header(), "RateLimit-Remaining") != "2" {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
	// The failure and its cost header took two of the three.
	if rec := serve(); rec.Code != 502 || header(rec.Header(), "RateLimit-Remaining") != "0" {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
	if rec := serve(); rec.Code != 429 {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
}

// A forwarding header while no proxy is trusted is reported once, with how often it came.
func TestReportWarnings(t *testing.T) {
	e, err := FromJSON(`{"rules": [{"name": "r", "key": "ip", "algorithm": "sliding_window", "limit": 10, "window": "1h"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	h := &Middleware{Engine: e, Next: http.NotFoundHandler()}
	for i := 0; i < 2; i++ {
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	r, err := e.Report()
	if err != nil || len(r.Warnings) != 1 {
		t.Fatalf("%+v %v", r.Warnings, err)
	}
	if w := r.Warnings[0]; w.Code != "untrusted_forwarded_header" || w.Count != 2 || w.FirstSeenMs == 0 || w.Message == "" {
		t.Fatalf("%+v", w)
	}
}

// at2100 is a minute's start within the first hour of 2100: checks dated then land in a
// minute of their own, apart from what happens at the engine's clock — decades earlier, and
// half an hour away in the report's ring of 60 minutes, whenever the test runs.
var at2100 = func() time.Time {
	const start = 4102444800 / 60 // 2100-01-01 00:00 UTC, in minutes since the epoch
	now := time.Now().Unix() / 60
	offset := ((now+30-start)%60 + 60) % 60
	return time.Unix((start+offset)*60, 0)
}()

func TestReport(t *testing.T) {
	e := engine(t)
	r := Request{Method: "get", Path: "/api/orders?page=2", Subject: "alice", Role: "free", Now: at2100}
	for i := 0; i < 3; i++ {
		if _, err := e.Check(r); err != nil {
			t.Fatal(err)
		}
	}
	good := token(t, `{"sub":"dave","exp":4102444800}`)
	if _, err := e.Authenticate("Bearer " + good[:len(good)-4] + "AAAA"); err == nil {
		t.Fatal("a forged token is refused")
	}
	l, err := e.Pick("api")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Finish(Timeout, 3*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for _, resp := range []struct {
		status  int
		latency time.Duration
	}{{200, 1500 * time.Microsecond}, {429, 300 * time.Microsecond}, {503, 2500 * time.Millisecond}} {
		if err := e.RecordResponse("GET", "/api/orders", resp.status, resp.latency); err != nil {
			t.Fatal(err)
		}
	}

	rep, err := e.ReportAt(at2100.Add(30 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if rep.GeneratedAtMs != uint64(at2100.UnixMilli())+30_000 || rep.Source != "memory" || rep.StoreKind != "memory" || rep.StoreFailure != "" || rep.Sink != nil {
		t.Fatalf("%+v", rep)
	}
	if rep.HorizonMinutes != 60 {
		t.Fatalf("horizon %d", rep.HorizonMinutes)
	}
	if len(rep.PerMinute) != 1 {
		t.Fatalf("per minute %+v", rep.PerMinute)
	}
	if m := rep.PerMinute[0]; m.StartMs != uint64(at2100.UnixMilli()) || m.Requests != 3 || m.Admitted != 2 || m.RateLimited != 1 || m.Responses != 0 {
		t.Fatalf("minute %+v", m)
	}
	if len(rep.Peaks) != 1 || rep.Peaks[0] != rep.PerMinute[0] {
		t.Fatalf("peaks %+v", rep.Peaks)
	}
	want := MinuteCounts{
		Requests: 4, Admitted: 2, RateLimited: 1, AuthRejected: 1,
		UpstreamCalls: 1, UpstreamFailures: 1,
		Responses: 3, ClientErrors: 1, ServerErrors: 1,
		LatencyP50Us: rep.Totals.LatencyP50Us, LatencyP99Us: rep.Totals.LatencyP99Us,
		MeanLatencyUs: (1500 + 300 + 2_500_000) / 3, MaxLatencyUs: 2_500_000,
	}
	if rep.Totals != want {
		t.Fatalf("totals\n got %+v\nwant %+v", rep.Totals, want)
	}
	// The median response took 1.5 ms: its estimate lies in that bucket (1 to 2.5 ms).
	if rep.Totals.LatencyP50Us < 1000 || rep.Totals.LatencyP50Us > 2500 {
		t.Fatalf("p50 %d", rep.Totals.LatencyP50Us)
	}
	entry := func(key string, count uint64) []TopEntry { return []TopEntry{{Key: key, Count: count}} }
	for name, got := range map[string][]TopEntry{
		"top_endpoints":        rep.TopEndpoints,
		"breaches_by_subject":  rep.BreachesBySubject,
		"breaches_by_role":     rep.BreachesByRole,
		"breaches_by_endpoint": rep.BreachesByEndpoint,
		"breaches_by_rule":     rep.BreachesByRule,
		"upstream_failures":    rep.UpstreamFailures,
	} {
		wantEntries := map[string][]TopEntry{
			"top_endpoints":        entry("GET /api/orders", 3),
			"breaches_by_subject":  entry("alice", 1),
			"breaches_by_role":     entry("free", 1),
			"breaches_by_endpoint": entry("GET /api/orders", 1),
			"breaches_by_rule":     entry("per-user", 1),
			"upstream_failures":    entry("api/"+l.Upstream, 1),
		}[name]
		if len(got) != 1 || got[0] != wantEntries[0] {
			t.Fatalf("%s: %+v", name, got)
		}
	}
	if len(rep.BreakerTrips) != 0 || rep.AuthRejections["bad_signature"] != 1 || len(rep.Errors) != 0 {
		t.Fatalf("%+v %v %v", rep.BreakerTrips, rep.AuthRejections, rep.Errors)
	}
	if rep.Stores["memory"] != 3 || rep.StatusClasses["2xx"] != 1 || rep.StatusClasses["4xx"] != 1 || rep.StatusClasses["5xx"] != 1 {
		t.Fatalf("%v %v", rep.Stores, rep.StatusClasses)
	}
	h := rep.ResponseLatency
	if h.Count != 3 || h.SumUs != 1500+300+2_500_000 || len(h.Counts) != len(h.BoundsUs)+1 {
		t.Fatalf("%+v", h)
	}

	// At the engine's clock, the responses are in the current minute; the JSON is the same
	// document.
	now, err := e.Report()
	if err != nil || len(now.PerMinute) != 1 || now.PerMinute[0].Responses != 3 || now.PerMinute[0].Requests != 1 {
		t.Fatalf("%+v %v", now.PerMinute, err)
	}
	text, err := e.ReportJSON()
	if err != nil || !strings.Contains(text, `"top_endpoints":[{"key":"GET /api/orders","count":3,"error":0}]`) {
		t.Fatalf("%s %v", text, err)
	}
}

func TestRecordResponseRefusesBadInput(t *testing.T) {
	e := engine(t)
	for _, c := range []struct {
		method, path string
		status       int
		latency      time.Duration
		code         Code
		message      string
	}{
		{"GET", "/", 42, 0, InvalidArgument, "status 42"},
		{"GET", "/", 1000, 0, InvalidArgument, "status 1000"},
		{"GET", "/", 200, -time.Millisecond, InvalidArgument, "negative"},
		{"GET", "/\xff", 200, 0, InvalidUTF8, "path"},
		{"\xc3\x28", "/", 200, 0, InvalidUTF8, "method"},
	} {
		err := e.RecordResponse(c.method, c.path, c.status, c.latency)
		var fe *Error
		if !errors.As(err, &fe) || fe.Code != c.code || !strings.Contains(fe.Message, c.message) {
			t.Fatalf("%+v: got %v", c, err)
		}
	}
	r, err := e.Report()
	if err != nil || r.Totals.Responses != 0 {
		t.Fatalf("nothing refused is counted: %+v %v", r.Totals, err)
	}
}

func TestPrometheusAndMetricsHandler(t *testing.T) {
	e := engine(t)
	for i := 0; i < 3; i++ {
		if _, err := e.Check(Request{Method: "GET", Path: "/", Subject: "alice"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.RecordResponse("GET", "/", 200, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	text, err := e.Prometheus()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"# TYPE floodwall_decisions_total counter",
		`floodwall_decisions_total{outcome="admitted"} 2`,
		`floodwall_decisions_total{outcome="rate_limited"} 1`,
		`floodwall_rate_limited_total{rule="per-user"} 1`,
		`floodwall_responses_total{class="2xx"} 1`,
		"floodwall_response_duration_seconds_count 1",
		`floodwall_upstream_up{service="api",upstream="b"} 1`,
	} {
		if !strings.Contains(text, "\n"+line+"\n") && !strings.HasPrefix(text, line+"\n") {
			t.Fatalf("no line %q in\n%s", line, text)
		}
	}
	rec := httptest.NewRecorder()
	MetricsHandler(e).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 || rec.Header().Get("Content-Type") != PrometheusContentType || !strings.Contains(rec.Body.String(), `floodwall_decisions_total{outcome="admitted"} 2`) {
		t.Fatalf("%d %v %s", rec.Code, rec.Header(), rec.Body)
	}
}

// BenchmarkHTTP: what the HTTP layer costs a request through Middleware — the verdict on a
// request with a token, then the finish (`go test -run - -bench HTTP`).
func BenchmarkHTTP(b *testing.B) {
	e, err := FromTOML(strings.Replace(config, "limit = 2\n", "limit = 1000000000\n", 1))
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	enc := base64.RawURLEncoding
	msg := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT","kid":"k1"}`)) + "." + enc.EncodeToString([]byte(`{"sub":"ivy","exp":4102444800}`))
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(msg))
	header := http.Header{"Authorization": {"Bearer " + msg + "." + enc.EncodeToString(mac.Sum(nil))}}
	req := HTTPRequest{Method: "GET", Target: "/api/orders?page=2", Peer: "192.0.2.1:4000", Header: header}
	for i := 0; i < b.N; i++ {
		x, err := e.HTTP(req)
		if err != nil || x.Verdict != Pass {
			b.Fatal(x, err)
		}
		if err := x.Finish(200, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRecordResponse: recording a response the host answered itself
// (`go test -run - -bench RecordResponse`).
func BenchmarkRecordResponse(b *testing.B) {
	e, err := FromJSON(`{"rules": []}`)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	for i := 0; i < b.N; i++ {
		if err := e.RecordResponse("GET", "/api/orders", 200, time.Millisecond); err != nil {
			b.Fatal(err)
		}
	}
}

func TestReload(t *testing.T) {
	e, err := FromTOML("[[rules]]\nname = \"r\"\nkey = \"subject\"\nalgorithm = \"fixed_window\"\nlimit = 1\nwindow = \"1h\"\n" +
		"[[rules]]\nname = \"same\"\nkey = \"global\"\nalgorithm = \"fixed_window\"\nlimit = 100\nwindow = \"1h\"\n")
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	req := Request{Method: "GET", Path: "/", Subject: "alice"}
	for i, want := range []bool{true, false} {
		if d, err := e.Check(req); err != nil || d.Allowed != want {
			t.Fatalf("check %d: %+v %v", i, d, err)
		}
	}
	summary, err := e.ReloadJSON(`{"http": {"trusted_proxies": ["10.0.0.0/8"], "forwarded_header": "forwarded"}, "rules": [
		{"name": "same", "key": "global", "algorithm": "fixed_window", "limit": 100, "window": "1h"},
		{"name": "r", "key": "subject", "algorithm": "fixed_window", "limit": 3, "window": "1h"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	want := []RuleChange{{"same", "unchanged"}, {"r", "restarted"}}
	if len(summary.Rules) != 2 || summary.Rules[0] != want[0] || summary.Rules[1] != want[1] || summary.AuthChanged || summary.Generations != 2 {
		t.Fatalf("%+v", summary)
	}
	// The restarted rule counts afresh.
	d, err := e.Check(req)
	if err != nil || !d.Allowed || d.Rule != "r" || d.Remaining != 2 {
		t.Fatalf("%+v %v", d, err)
	}
	if names, err := e.HTTPHeaders(); err != nil || !containsString(names, "forwarded") {
		t.Fatalf("the HTTP layer reads the new configuration's headers: %v %v", names, err)
	}
	// An invalid configuration changes nothing and names the field.
	_, err = e.ReloadTOML("[[rules]]\nname = \"r\"\nkey = \"subject\"\nalgorithm = \"fixed_window\"\nlimit = 0\nwindow = \"1h\"\n")
	var fe *Error
	if !errors.As(err, &fe) || fe.Code != InvalidConfig || !strings.Contains(fe.Message, "rules[0].limit") {
		t.Fatalf("got %v", err)
	}
	status, err := e.Inspect(Key{Rule: "r", Key: "alice"})
	if err != nil || status.Limit != 3 || status.Remaining != 2 {
		t.Fatalf("%+v %v", status, err)
	}
	// The unchanged rule carried its count over: two admitted (the denial took nothing).
	if status, err := e.Inspect(Key{Rule: "same"}); err != nil || status.Remaining != 98 {
		t.Fatalf("%+v %v", status, err)
	}
	if _, err := e.ReloadFile("/nonexistent.toml"); !errors.Is(err, &Error{Code: InvalidConfig}) {
		t.Fatalf("got %v", err)
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
